// The convolution kernels' interface to their ops (ops/conv2d.cpp): compiled once per SIMD
// target in ops/conv2d_kernels.cpp and dispatched at run time (Note [Vector widths] in
// ops/simd.hpp). Workspace sizes here hold for every target.
#pragma once

#include <algorithm>
#include <cstdint>

#include "graph/tensor.hpp"
#include "ops/conv2d.hpp"
#include "ops/simd.hpp"
#include "ops/window.hpp"

namespace tbgrad::detail {

// Images per chunk of the weight-gradient reduction over the batch (Note [Determinism]).
inline constexpr std::int64_t kConvBatchChunk = 2;

struct ConvGeometry {
  std::int64_t n, ic, h, w;  // input  [N, IC, H, W]
  std::int64_t oc, oh, ow;   // output [N, OC, OH, OW]
  Window2d win;              // kernel [OC, IC/groups, KH, KW], with its dilation
  std::int64_t groups = 1;

  ConvGeometry(const Shape& x, const Shape& weight, const Conv2dOptions& o)
      : n(x[0]),
        ic(x[1]),
        h(x[2]),
        w(x[3]),
        oc(weight[0]),
        oh(Window2d::out_size(x[2], static_cast<int>(weight[2]), o.stride.h, o.padding.h,
                              o.dilation.h)),
        ow(Window2d::out_size(x[3], static_cast<int>(weight[3]), o.stride.w, o.padding.w,
                              o.dilation.w)),
        win{static_cast<int>(weight[2]), static_cast<int>(weight[3]), o.stride.h, o.stride.w,
            o.padding.h, o.padding.w, o.dilation.h, o.dilation.w},
        groups(o.groups) {}
  std::int64_t kernel_size() const { return static_cast<std::int64_t>(win.kh) * win.kw; }
  // groups == 1 and no dilation: the register-blocked kernels of this file's interface. Every
  // other geometry runs the direct kernels of ops/conv2d_general.hpp.
  bool dense() const { return groups == 1 && !win.dilated(); }
  std::int64_t ic_per_group() const { return ic / groups; }
  std::int64_t oc_per_group() const { return oc / groups; }
};

// The input copied into a zero-bordered buffer [N, IC, HP, WP] (HP = H + 2*ph, WP = W + 2*pw),
// each image followed by `slack` zeroed elements: kernels then need no bounds logic for
// padding, and may read a whole vector past a row's end (the extra lanes are computed and
// dropped, or multiplied by zero). The slack is per image, not after the whole buffer, so those
// reads never reach the next image, which another task may be writing at the time
// (ThreadSanitizer found that race; it was harmless only while the stale bytes there happened
// to be finite, since 0 * inf is NaN). `lanes`: the vector width of the kernel reading it.
// The stride-1 kernels' tiles span up to kMaxTileVectors vectors of positions, so their last
// tile may read that many vectors past the plane's last output position (found by ASan).
inline constexpr std::int64_t kMaxTileVectors = 8;
struct PaddedInput {
  std::int64_t hp, wp, slack;
  static PaddedInput of(const ConvGeometry& g, std::int64_t lanes) {
    const std::int64_t hp = g.h + 2 * std::int64_t{g.win.ph}, wp = g.w + 2 * std::int64_t{g.win.pw};
    return {hp, wp, lanes * std::max<std::int64_t>(kMaxTileVectors, g.win.sw) + g.win.kw};
  }
  std::int64_t elements(const ConvGeometry& g) const { return g.n * image_stride(g); }
  std::int64_t image_stride(const ConvGeometry& g) const { return g.ic * hp * wp + slack; }
};

// Workspace of the forward kernel: the padded input, then for stride 1 one slot per image for
// its output on the padded row grid [OC, channel] (Note [Wide planes] in
// ops/conv2d_kernels.cpp), of which each task uses the slot of its first image. `channel` bounds
// every target's channel stride there: the plane's wide positions rounded up to a vector, plus
// a tile's worth of positions past them. Offsets are those of the widest vector.
struct ConvForwardLayout {
  std::int64_t wide, slot, total;
  template <typename T>
  static ConvForwardLayout of(const ConvGeometry& g) {
    constexpr std::int64_t L = kMaxLanes<T>;
    ConvForwardLayout lay{};
    lay.wide = round_up(PaddedInput::of(g, L).elements(g), L);
    const bool unit_stride = g.win.sh == 1 && g.win.sw == 1;
    const std::int64_t wp = g.w + 2 * std::int64_t{g.win.pw};
    lay.slot = unit_stride ? g.oc * wide_channel(g.oh * wp, L) : 0;
    lay.total = lay.wide + g.n * lay.slot;
    return lay;
  }
  // The channel stride of the wide output for vectors of `lanes`.
  static constexpr std::int64_t wide_channel(std::int64_t positions, std::int64_t lanes) {
    return round_up(positions, lanes) + kMaxTileVectors * lanes;
  }
};
template <typename T>
std::int64_t conv_forward_workspace(const ConvGeometry& g) {
  return ConvForwardLayout::of<T>(g).total;
}

// Channels of a block of the weight-gradient kernel's tiles, at most (kMaxTileChannels in
// ops/conv2d_kernels.cpp, for any target).
inline constexpr std::int64_t kMaxWeightGradBlock = 8;

// Workspace of the weight-gradient kernel: [chunks, OC, IC, KH, KW] partial sums, for stride 1
// each chunk's vectors of partial sums of a channel block [kMaxWeightGradBlock, KH*KW, lanes]
// (summed into the chunk's partial sums while in cache), the padded
// input, the output gradient with rows padded to whole vectors [N, OC, OH, OWP] (or, for
// stride 1, laid out on the padded input's row grid [N, OC, OH*WP rounded up to a vector]:
// Note [Wide planes] in ops/conv2d_kernels.cpp). Offsets are those of the widest vector; a
// narrower kernel uses a prefix of each part.
struct ConvWeightGradLayout {
  std::int64_t partial, vectors, xp, gyp, total;
  template <typename T>
  static ConvWeightGradLayout of(const ConvGeometry& g) {
    constexpr std::int64_t L = kMaxLanes<T>;
    ConvWeightGradLayout lay{};
    lay.partial = 0;
    const std::int64_t chunks = (g.n + kConvBatchChunk - 1) / kConvBatchChunk;
    lay.vectors = round_up(chunks * g.oc * g.ic * g.kernel_size(), L);
    lay.xp = lay.vectors + chunks * kMaxWeightGradBlock * g.kernel_size() * L;
    lay.gyp = lay.xp + round_up(PaddedInput::of(g, L).elements(g), L);
    const std::int64_t wp = g.w + 2 * std::int64_t{g.win.pw};
    const std::int64_t plane = std::max(g.oh * round_up(g.ow, L), round_up(g.oh * wp, L));
    lay.total = lay.gyp + g.n * g.oc * plane;
    return lay;
  }
};

// y = conv(x, k) + b (b may be null), then `ep` (Note [Epilogues] in graph/op.hpp), image by
// image; `ws`: conv_forward_workspace<T>(g) elements.
void conv2d_forward_kernel(const ConvGeometry& g, const float* x, const float* k, const float* b,
                           float* y, float* ws, const OutputEpilogue<float>& ep = {});
void conv2d_forward_kernel(const ConvGeometry& g, const double* x, const double* k,
                           const double* b, double* y, double* ws,
                           const OutputEpilogue<double>& ep = {});

// gx = the input gradient, by scattering gy through the window (any stride and padding).
void conv2d_input_grad_scatter_kernel(const ConvGeometry& g, const float* gy, const float* k,
                                      float* gx);
void conv2d_input_grad_scatter_kernel(const ConvGeometry& g, const double* gy, const double* k,
                                      double* gx);

// gk = the weight gradient; `ws`: ConvWeightGradLayout::of<T>(g).total elements.
void conv2d_weight_grad_kernel(const ConvGeometry& g, const float* x, const float* gy, float* gk,
                               float* ws);
void conv2d_weight_grad_kernel(const ConvGeometry& g, const double* x, const double* gy,
                               double* gk, double* ws);

// gb[c] = sum of gy [N, OC, plane] over n and the plane, in a fixed order.
void conv2d_bias_grad_kernel(std::int64_t n, std::int64_t oc, std::int64_t plane, const float* gy,
                             float* gb);
void conv2d_bias_grad_kernel(std::int64_t n, std::int64_t oc, std::int64_t plane,
                             const double* gy, double* gb);

}  // namespace tbgrad::detail
