// Random initialisation of parameters, reproducible across machines and standard libraries.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <utility>

#include "tbgrad/graph/tensor.hpp"

namespace tbgrad::nn {

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

// (fan_in, fan_out) of a weight: [out, in] for linear layers, [OC, IC, KH, KW] for conv.
std::pair<std::int64_t, std::int64_t> fans(const Shape& weight);

// U(-b, b) with b = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010).
void xavier_uniform(const Tensor& w, Rng& rng);
// N(0, 2 / fan_in) (He et al. 2015), for ReLU networks.
void he_normal(const Tensor& w, Rng& rng);
void uniform(const Tensor& w, double lo, double hi, Rng& rng);
void normal(const Tensor& w, double mean, double stddev, Rng& rng);

}  // namespace tbgrad::nn
