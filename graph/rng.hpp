// The random generator of the whole library, reproducible across machines and standard
// libraries: initialisers draw weights from it (nn/init.hpp) and the batcher draws the data
// order (data/dataset.hpp). It lives here, in the bottom layer, so that data/ and nn/ both reach
// it without one including the other (docs/design.md, Layers); nn::Rng names the same class.
#pragma once

#include <cstdint>
#include <random>
#include <string>

namespace tbgrad {

// mt19937_64 with our own conversions to uniform and normal numbers: the standard library's
// distributions are implementation-defined, and a seed must give the same weights everywhere.
class Rng {
 public:
  explicit Rng(std::uint64_t seed = 0) : engine_(seed) {}
  std::uint64_t next() { return engine_(); }
  double uniform();                          // [0, 1)
  double uniform(double lo, double hi);      // [lo, hi)
  double normal();                           // N(0, 1), Box-Muller
  std::uint64_t below(std::uint64_t n);      // uniform integer in [0, n), unbiased
  std::string state() const;                 // for checkpoints
  void set_state(const std::string& state);  // throws tbgrad::Error on a malformed state

 private:
  std::mt19937_64 engine_;
};

}  // namespace tbgrad
