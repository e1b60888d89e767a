// 2-D pooling over [N, C, H, W].
#pragma once

#include "graph/graph.hpp"
#include "ops/window.hpp"

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

// Gradient kernels the VJPs use.
Value avg_pool2d_backward(Value grad_out, Shape input_shape, Pool2dOptions options);
Value max_pool2d_backward(Value x, Value grad_out, Pool2dOptions options);

}  // namespace tbgrad
