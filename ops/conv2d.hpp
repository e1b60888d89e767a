// 2-D convolution (cross-correlation, as in every deep-learning framework), NCHW.
#pragma once

#include "tbgrad/graph/graph.hpp"
#include "tbgrad/ops/window.hpp"

namespace tbgrad {

struct Conv2dOptions {
  Pair2 stride = 1;
  Pair2 padding = 0;  // zeros added on each side
  // Added after the fields above, so that every designated initializer of them still compiles.
  Pair2 dilation = 1;  // spacing of the kernel's taps (PyTorch's `dilation`)
  int groups = 1;      // input and output channels split into `groups` independent convolutions
};

// x [N, IC, H, W], weight [OC, IC/groups, KH, KW], bias [OC] -> [N, OC, OH, OW] with
// OH = (H + 2*ph - dh*(KH-1) - 1) / sh + 1 and OW likewise, as F.conv2d. With groups G, IC and OC
// are divisible by G and output channels [g*OC/G, (g+1)*OC/G) read input channels
// [g*IC/G, (g+1)*IC/G) only; G == IC == OC is a depthwise convolution (OC = k*IC: a channel
// multiplier k). groups == 1 and dilation == 1 run the register-blocked kernels
// (ops/conv2d_kernels.cpp); other groups and dilations run direct kernels
// (ops/conv2d_general.cpp).
Value conv2d(Value x, Value weight, Value bias, Conv2dOptions options = {});
Value conv2d(Value x, Value weight, Conv2dOptions options = {});

// Gradient kernels the VJP uses (themselves differentiable: they are linear in each argument).
Value conv2d_backward_input(Value grad_out, Value weight, Shape input_shape,
                            Conv2dOptions options);  // -> [N, IC, H, W]
Value conv2d_backward_weight(Value x, Value grad_out, Shape weight_shape,
                             Conv2dOptions options);  // -> [OC, IC, KH, KW]
Value conv2d_backward_bias(Value grad_out);           // [N, OC, OH, OW] -> [OC]

// Options of conv_transpose2d, in the order of F.conv_transpose2d's arguments.
struct ConvTranspose2dOptions {
  Pair2 stride = 1;
  Pair2 padding = 0;         // removed from each side of the output: dh*(KH-1) - ph zeros pad x
  Pair2 output_padding = 0;  // added to one side (bottom, right) of the output
  int groups = 1;
  Pair2 dilation = 1;
};

// The transposed convolution, F.conv_transpose2d (the gradient of conv2d with respect to its
// input): x [N, IC, H, W], weight [IC, OC/groups, KH, KW], bias [OC] -> [N, OC, OH, OW] with
// OH = (H-1)*sh - 2*ph + dh*(KH-1) + output_padding.h + 1 and OW likewise. output_padding must be
// smaller than the stride (PyTorch also accepts one smaller than the dilation but not the stride;
// tbgrad does not: a ShapeError).
Value conv_transpose2d(Value x, Value weight, Value bias, ConvTranspose2dOptions options = {});
Value conv_transpose2d(Value x, Value weight, ConvTranspose2dOptions options = {});

}  // namespace tbgrad
