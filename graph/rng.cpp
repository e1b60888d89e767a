#include "graph/rng.hpp"

#include <cmath>
#include <numbers>
#include <sstream>

#include "graph/tensor.hpp"

namespace tbgrad {

double Rng::uniform() {
  return static_cast<double>(engine_() >> 11) * 0x1.0p-53;
}

double Rng::uniform(double lo, double hi) {
  return lo + (hi - lo) * uniform();
}

double Rng::normal() {
  // Box-Muller; 1 - u keeps the logarithm's argument in (0, 1].
  const double u1 = 1.0 - uniform();
  const double u2 = uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

std::uint64_t Rng::below(std::uint64_t n) {
  if (n <= 1) return 0;
  // Rejection sampling: draws above the largest multiple of n would bias the result.
  const std::uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  std::uint64_t r;
  do {
    r = engine_();
  } while (r >= limit);
  return r % n;
}

std::string Rng::state() const {
  std::ostringstream s;
  s << engine_;
  return s.str();
}

void Rng::set_state(const std::string& state) {
  std::istringstream s(state);
  std::mt19937_64 e;
  s >> e;
  if (s.fail()) throw Error("random generator state is malformed");
  engine_ = e;
}

}  // namespace tbgrad
