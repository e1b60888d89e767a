// Batch normalisation with running statistics (F.batch_norm of PyTorch 1.13).
#pragma once

#include "tbgrad/graph/graph.hpp"

namespace tbgrad {

struct BatchNormOptions {
  double momentum = 0.1;  // running = (1 - momentum) * running + momentum * batch statistic
  double eps = 1e-5;      // added to the variance under the square root
};

// x [N, C, *] (rank 2 or more: [N, C], [N, C, L], [N, C, H, W], ...) normalised per channel C,
// scaled by gamma [C] and shifted by beta [C]; running_mean and running_var are [C], all of x's
// dtype. The mode is the run's (Note [Run info] in graph/op.hpp):
//   training:   y = (x - mean) / sqrt(var + eps) * gamma + beta with the batch's mean and
//               biased variance over N and *, and the running statistics updated in place:
//               running_mean = (1 - momentum) * running_mean + momentum * mean,
//               running_var = (1 - momentum) * running_var + momentum * var * M / (M - 1)
//               (the unbiased variance, M = N * prod(*)). M = 1 makes the run throw Error (as
//               PyTorch does: "Expected more than 1 value per channel when training").
//   evaluation: the same with running_mean and running_var, which are left unchanged.
// running_mean and running_var must be graph leaves (a buffer of nn::ParamStore, a constant, a
// parameter or an input), since the kernel writes them; every run in training mode updates them
// once. Batch statistics are summed in a fixed order (docs/design.md, Note [Batch statistics]):
// the bits do not depend on the thread count. The op is batch-wide (Note [Op traits]): the
// trainer keeps a graph holding it whole. Differences from PyTorch: gamma, beta and the running
// statistics are required (no None), and momentum=None (a cumulative average) is not offered.
Value batch_norm(Value x, Value gamma, Value beta, Value running_mean, Value running_var,
                 BatchNormOptions options = {});

// Gradient kernels batch_norm's VJP uses (not differentiable themselves), in the run's mode:
// d/dx, d/dgamma and d/dbeta of sum(batch_norm(x, gamma, beta, rm, rv) * grad). In training
// mode they recompute the batch's mean and variance from x (no saved state) and do not read rm
// and rv; in evaluation mode they use rm and rv.
Value batch_norm_backward_input(Value x, Value gamma, Value running_mean, Value running_var,
                                Value grad, BatchNormOptions options = {});
Value batch_norm_backward_weight(Value x, Value running_mean, Value running_var, Value grad,
                                 BatchNormOptions options = {});
Value batch_norm_backward_bias(Value grad);  // grad summed over every axis but 1: [C]

}  // namespace tbgrad
