// 2-D pooling over [N, C, H, W].
#pragma once

#include "tbgrad/graph/graph.hpp"
#include "tbgrad/ops/window.hpp"

namespace tbgrad {

struct Pool2dOptions {
  Pair2 kernel;       // required
  Pair2 stride = 0;   // 0 means "same as the kernel"
  Pair2 padding = 0;  // at most half the kernel, as in PyTorch
};

// Average pooling divides every window by KH*KW: padded cells count as zeros (PyTorch's
// count_include_pad=true). Max pooling ignores padded cells; on ties the first maximum in
// row-major window order takes the gradient.
Value avg_pool2d(Value x, Pool2dOptions options);
Value max_pool2d(Value x, Pool2dOptions options);
// Square-or-not windows with the stride equal to the kernel and no padding:
// max_pool2d(h, 2) halves H and W.
inline Value avg_pool2d(Value x, Pair2 kernel) { return avg_pool2d(x, Pool2dOptions{.kernel = kernel}); }
inline Value max_pool2d(Value x, Pair2 kernel) { return max_pool2d(x, Pool2dOptions{.kernel = kernel}); }

// Gradient kernels the VJPs use.
Value avg_pool2d_backward(Value grad_out, Shape input_shape, Pool2dOptions options);
Value max_pool2d_backward(Value x, Value grad_out, Pool2dOptions options);

}  // namespace tbgrad
