#include "nn/init.hpp"

#include <cmath>
#include <numbers>
#include <sstream>

namespace tbgrad::nn {

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

std::pair<std::int64_t, std::int64_t> fans(const Shape& w) {
  if (w.rank() < 2) throw Error("fans: weight " + w.str() + " must have rank >= 2");
  std::int64_t receptive = 1;
  for (int i = 2; i < w.rank(); ++i) receptive *= w[i];
  return {w[1] * receptive, w[0] * receptive};
}

void uniform(const Tensor& w, double lo, double hi, Rng& rng) {
  for (std::int64_t i = 0; i < w.numel(); ++i) w.set(i, rng.uniform(lo, hi));
}

void normal(const Tensor& w, double mean, double stddev, Rng& rng) {
  for (std::int64_t i = 0; i < w.numel(); ++i) w.set(i, mean + stddev * rng.normal());
}

void xavier_uniform(const Tensor& w, Rng& rng) {
  const auto [fan_in, fan_out] = fans(w.shape());
  const double bound = std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
  uniform(w, -bound, bound, rng);
}

void he_normal(const Tensor& w, Rng& rng) {
  const auto [fan_in, fan_out] = fans(w.shape());
  (void)fan_out;
  normal(w, 0.0, std::sqrt(2.0 / static_cast<double>(fan_in)), rng);
}

}  // namespace tbgrad::nn
