#include "nn/init.hpp"

#include <cmath>

namespace tbgrad::nn {

std::pair<std::int64_t, std::int64_t> fans(const Shape& w) {
  // A weight of rank 0 or 1 counts as [n, 1] (nn::initialize draws a rank-1 parameter only if
  // it was created with Role::kWeight).
  if (w.rank() == 0) return {1, 1};
  if (w.rank() == 1) return {1, w[0]};
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
