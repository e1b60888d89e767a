// Sliding-window geometry shared by convolution and pooling: the one home of stride, padding and
// dilation.
//
// Output position (oy, ox) and kernel offset (ky, kx) read input (oy*sh - ph + ky*dh,
// ox*sw - pw + kx*dw); positions outside the input are padding. Dilation (dh, dw) spreads the
// kernel's taps apart, as PyTorch's `dilation`: 1 (every kernel but a dilated convolution's) is
// the dense window. This is the as_strided view
// [N, C, OH, OW, KH, KW] of the report the project comes from, computed instead of
// materialised: kernels loop over (ky, kx) and, for each, over the contiguous range of output
// columns whose input column is inside the image, so the inner loop has no branches.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

namespace tbgrad {

// A (height, width) pair; a single number means the same for both.
struct Pair2 {
  int h = 0;
  int w = 0;
  Pair2() = default;
  Pair2(int both) : h(both), w(both) {}  // NOLINT(google-explicit-constructor)
  Pair2(int height, int width) : h(height), w(width) {}
  std::string str() const { return "(" + std::to_string(h) + "," + std::to_string(w) + ")"; }
};

namespace detail {

struct Window2d {
  int kh, kw, sh, sw, ph, pw;
  int dh = 1, dw = 1;  // dilation

  bool dilated() const { return dh != 1 || dw != 1; }

  // Output extent along one axis, or <= 0 if the window does not fit. A kernel of k taps
  // dilated by d spans d*(k-1)+1 input positions.
  static std::int64_t out_size(std::int64_t in, int k, int s, int p, int d = 1) {
    const std::int64_t span =
        in + 2 * static_cast<std::int64_t>(p) - (static_cast<std::int64_t>(d) * (k - 1) + 1);
    return span < 0 ? 0 : span / s + 1;
  }

  // Range [lo, hi) of output indices o for which o*s - p + k lands inside [0, in) (k: the tap's
  // offset in the input, ky*dh for a dilated kernel).
  static void valid_range(std::int64_t k, int s, int p, std::int64_t in, std::int64_t out,
                          std::int64_t& lo, std::int64_t& hi) {
    // o*s >= p - k  ->  o >= ceil((p - k) / s)
    const std::int64_t a = p - k;
    lo = a <= 0 ? 0 : (a + s - 1) / s;
    // o*s - p + k <= in - 1  ->  o <= floor((in - 1 + p - k) / s)
    const std::int64_t b = in - 1 + p - k;
    hi = b < 0 ? 0 : std::min<std::int64_t>(out, b / s + 1);
    lo = std::min(lo, hi);
  }
};

}  // namespace detail
}  // namespace tbgrad
