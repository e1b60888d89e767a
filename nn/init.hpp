// Random initialisation of parameters, reproducible across machines and standard libraries.
#pragma once

#include <cstdint>
#include <utility>

#include "tbgrad/graph/rng.hpp"
#include "tbgrad/graph/tensor.hpp"

namespace tbgrad::nn {

// The library's random generator (graph/rng.hpp), under the name this header always gave it.
using Rng = tbgrad::Rng;

// (fan_in, fan_out) of a weight: [out, in] for linear layers, [OC, IC, KH, KW] for conv; a
// weight of rank 0 or 1 as [n, 1].
std::pair<std::int64_t, std::int64_t> fans(const Shape& weight);

// U(-b, b) with b = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010).
void xavier_uniform(const Tensor& w, Rng& rng);
// N(0, 2 / fan_in) (He et al. 2015), for ReLU networks.
void he_normal(const Tensor& w, Rng& rng);
void uniform(const Tensor& w, double lo, double hi, Rng& rng);
void normal(const Tensor& w, double mean, double stddev, Rng& rng);

}  // namespace tbgrad::nn
