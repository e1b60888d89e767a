// 2-D convolution (cross-correlation, as in every deep-learning framework), NCHW.
#pragma once

#include "tbgrad/graph/graph.hpp"
#include "tbgrad/ops/window.hpp"

namespace tbgrad {

struct Conv2dOptions {
  Pair2 stride = 1;
  Pair2 padding = 0;  // zeros added on each side
};

// x [N, IC, H, W], weight [OC, IC, KH, KW], bias [OC] -> [N, OC, OH, OW] with
// OH = (H + 2*ph - KH) / sh + 1 and OW likewise.
Value conv2d(Value x, Value weight, Value bias, Conv2dOptions options = {});
Value conv2d(Value x, Value weight, Conv2dOptions options = {});

// Gradient kernels the VJP uses (themselves differentiable: they are linear in each argument).
Value conv2d_backward_input(Value grad_out, Value weight, Shape input_shape,
                            Conv2dOptions options);  // -> [N, IC, H, W]
Value conv2d_backward_weight(Value x, Value grad_out, Shape weight_shape,
                             Conv2dOptions options);  // -> [OC, IC, KH, KW]
Value conv2d_backward_bias(Value grad_out);           // [N, OC, OH, OW] -> [OC]

}  // namespace tbgrad
