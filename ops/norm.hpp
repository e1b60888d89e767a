// Layer and group normalisation (F.layer_norm and F.group_norm of PyTorch 1.13).
#pragma once

#include <cstdint>
#include <initializer_list>

#include "tbgrad/graph/graph.hpp"

namespace tbgrad {

struct LayerNormOptions {
  double eps = 1e-5;  // added to the variance under the square root
};

struct GroupNormOptions {
  double eps = 1e-5;  // added to the variance under the square root
};

// y = (x - mean) / sqrt(var + eps) * weight + bias, the mean and biased variance taken over x's
// last `normalized_rank` axes (the normalized shape) for each index of the axes before them;
// weight and bias have the normalized shape, and either may be an invalid Value (PyTorch's None:
// no scale, no shift). The normalized shape may be given by its dimensions, which must be x's
// last ones (as F.layer_norm's normalized_shape), or by its rank (1 to x's rank). The
// statistics of a row are summed in a fixed order in double precision (docs/design.md, Note
// [Row statistics]): the bits do not depend on the thread count. Each example is normalised
// alone, so the op is not batch-wide (Note [Op traits]) unless the normalized shape is the whole
// of x (axis 0 included): then the statistics span the batch and the trainer keeps it whole.
// First-order gradients only: the gradient kernels below have no VJP, so a second-order
// gradient through layer_norm throws Error naming the kernel. Differences from PyTorch: the
// rank form is an addition, and the statistics are computed in double for f32 too (torch's f32
// kernel accumulates in f32): results agree to float rounding.
Value layer_norm(Value x, int normalized_rank, Value weight = {}, Value bias = {},
                 LayerNormOptions options = {});
Value layer_norm(Value x, const Shape& normalized_shape, Value weight = {}, Value bias = {},
                 LayerNormOptions options = {});
// layer_norm(x, {4, 5}, w, b): a braced list is a normalized shape ({5} is shape [5], not rank 5).
Value layer_norm(Value x, std::initializer_list<std::int64_t> normalized_shape, Value weight = {},
                 Value bias = {}, LayerNormOptions options = {});

// x [N, C, *] (rank 2 or more) with its C channels in `groups` groups of C / groups consecutive
// channels: each (example, group) normalised by its mean and biased variance over its channels
// and *, then y = normalised * weight[c] + bias[c] per channel; weight and bias are [C] or
// invalid Values (None). C must be divisible by groups. Statistics as layer_norm's (a fixed
// order, double precision); never batch-wide: each example alone. First-order gradients only,
// as layer_norm's. Differences from PyTorch 1.13: a bias without a weight is accepted (torch's
// kernel fails on it; the weight is then 1), and the statistics are double precision for f32.
Value group_norm(Value x, std::int64_t groups, Value weight = {}, Value bias = {},
                 GroupNormOptions options = {});

// Gradient kernels the VJPs use (not differentiable themselves): d/dx, d/dweight and d/dbias of
// sum(layer_norm(x, normalized_rank, weight, bias) * grad) (and group_norm's). They recompute
// each row's mean and variance from x (no saved state). weight may be an invalid Value (no
// scale). The weight and bias gradients have the normalized shape ([C] for group_norm); their
// sums over the rows run in row order for each element (a fixed order for any thread count).
Value layer_norm_backward_input(Value x, int normalized_rank, Value weight, Value grad,
                                LayerNormOptions options = {});
Value layer_norm_backward_weight(Value x, int normalized_rank, Value grad,
                                 LayerNormOptions options = {});
Value layer_norm_backward_bias(Value grad, int normalized_rank);
Value group_norm_backward_input(Value x, std::int64_t groups, Value weight, Value grad,
                                GroupNormOptions options = {});
Value group_norm_backward_weight(Value x, std::int64_t groups, Value grad,
                                 GroupNormOptions options = {});
Value group_norm_backward_bias(Value grad);  // grad summed over every axis but 1: [C]

}  // namespace tbgrad
