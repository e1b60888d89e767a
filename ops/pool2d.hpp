// 2-D pooling over [N, C, H, W].
#pragma once

#include <concepts>
#include <limits>
#include <string>
#include <utility>

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

namespace detail {
// The kernel of the overloads below: an integer (a square window) or a Pair2. A template
// parameter is never deduced from a braced list, so a braced list stays Pool2dOptions, as it
// was before these overloads: max_pool2d(x, {2}) is {.kernel = 2}, max_pool2d(x, {2, 1}) is
// {.kernel = 2, .stride = 1} (with a plain Pair2 overload both were ambiguous).
template <typename K>
concept PoolKernel = (std::integral<K> && !std::same_as<K, bool>) || std::same_as<K, Pair2>;

// Pool2dOptions{.kernel = kernel}; an integer outside the int range is a ShapeError naming `op`
// and `x`, not truncated into a small kernel.
template <PoolKernel K>
Pool2dOptions kernel_only(const char* op, const Value& x, K kernel) {
  if constexpr (std::same_as<K, Pair2>) {
    return {.kernel = kernel};
  } else {
    if (!std::in_range<int>(kernel)) {
      throw ShapeError(std::string(op) + ": kernel " + std::to_string(kernel) +
                       " is outside the int range (at most " +
                       std::to_string(std::numeric_limits<int>::max()) + "), input " +
                       x.describe());
    }
    return {.kernel = static_cast<int>(kernel)};
  }
}
}  // namespace detail

// Square-or-not windows with the stride equal to the kernel and no padding:
// max_pool2d(h, 2) halves H and W; avg_pool2d(h, Pair2{2, 3}) pools 2x3 windows.
template <detail::PoolKernel K>
Value avg_pool2d(Value x, K kernel) {
  return avg_pool2d(x, detail::kernel_only("avg_pool2d", x, kernel));
}
template <detail::PoolKernel K>
Value max_pool2d(Value x, K kernel) {
  return max_pool2d(x, detail::kernel_only("max_pool2d", x, kernel));
}

// Gradient kernels the VJPs use.
Value avg_pool2d_backward(Value grad_out, Shape input_shape, Pool2dOptions options);
Value max_pool2d_backward(Value x, Value grad_out, Pool2dOptions options);

// Global pooling, [N, C, H, W] -> [N, C, 1, 1]: the mean (F.adaptive_avg_pool2d(x, 1)) or the
// maximum (F.adaptive_max_pool2d(x, 1)) of each plane. global_max_pool2d's gradient goes to the
// plane's first maximum in row-major order, as PyTorch's; a plane holding NaN has the maximum
// NaN and its gradient goes to its last NaN, also as PyTorch's.
Value global_avg_pool2d(Value x);
Value global_max_pool2d(Value x);
// Its gradient kernel: x [N, C, H, W], grad_out [N, C, 1, 1] -> [N, C, H, W].
Value global_max_pool2d_backward(Value x, Value grad_out);

}  // namespace tbgrad
