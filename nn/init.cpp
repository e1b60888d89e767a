#include "nn/init.hpp"

#include <cmath>

namespace tbgrad::nn {

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
