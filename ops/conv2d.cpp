#include "ops/conv2d.hpp"

#include <algorithm>
#include <memory>
#include <optional>

#include "graph/checked.hpp"
#include "graph/parallel.hpp"
#include "ops/kernel_util.hpp"
#include "ops/reduce.hpp"
#include "ops/shape.hpp"
#include "ops/simd.hpp"

namespace tbgrad {
namespace {

using detail::dispatch_float;
using detail::Window2d;

// Images per chunk of the weight-gradient reduction over the batch (Note [Determinism]).
constexpr std::int64_t kBatchChunk = 2;

struct ConvGeometry {
  std::int64_t n, ic, h, w;  // input  [N, IC, H, W]
  std::int64_t oc, oh, ow;   // output [N, OC, OH, OW]
  Window2d win;              // kernel [OC, IC, KH, KW]

  ConvGeometry(const Shape& x, const Shape& weight, const Conv2dOptions& o)
      : n(x[0]),
        ic(x[1]),
        h(x[2]),
        w(x[3]),
        oc(weight[0]),
        oh(Window2d::out_size(x[2], static_cast<int>(weight[2]), o.stride.h, o.padding.h)),
        ow(Window2d::out_size(x[3], static_cast<int>(weight[3]), o.stride.w, o.padding.w)),
        win{static_cast<int>(weight[2]), static_cast<int>(weight[3]), o.stride.h, o.stride.w,
            o.padding.h, o.padding.w} {}
  std::int64_t kernel_size() const { return static_cast<std::int64_t>(win.kh) * win.kw; }
};

// The input copied into a zero-bordered buffer [N, IC, HP, WP] (HP = H + 2*ph, WP = W + 2*pw),
// each image followed by `slack` zeroed elements: kernels then need no bounds logic for
// padding, and may read a whole register-width tile past a row's end (the extra lanes are
// computed and dropped, or multiplied by zero). The slack is per image, not after the whole
// buffer, so those reads never reach the next image, which another task may be writing at the
// time (ThreadSanitizer found that race; it was harmless only while the stale bytes there
// happened to be finite, since 0 * inf is NaN).
template <typename T>
struct PaddedInput {
  static constexpr std::int64_t kTile = 64 / sizeof(T);  // one 512-bit register of T
  std::int64_t hp, wp, slack;
  static PaddedInput of(const ConvGeometry& g) {
    const std::int64_t hp = g.h + 2 * std::int64_t{g.win.ph}, wp = g.w + 2 * std::int64_t{g.win.pw};
    return {hp, wp, kTile * g.win.sw + g.win.kw};
  }
  std::int64_t elements(const ConvGeometry& g) const { return g.n * image_stride(g); }
  std::int64_t image_stride(const ConvGeometry& g) const { return g.ic * hp * wp + slack; }
};

// Copies images [n0, n1) of x into the padded buffer, with their slack. Kernels call it from
// inside their own per-image tasks: one parallel region per op rather than a separate one for
// the copy.
template <typename T>
void pad_images(const ConvGeometry& g, const PaddedInput<T>& p, const T* x, T* out,
                std::int64_t n0, std::int64_t n1) {
  const Window2d& wn = g.win;
  for (std::int64_t n = n0; n < n1; ++n) {
    T* image = out + n * p.image_stride(g);
    std::fill(image + g.ic * p.hp * p.wp, image + p.image_stride(g), T(0));
  }
  for (std::int64_t plane = n0 * g.ic; plane < n1 * g.ic; ++plane) {
    const T* src = x + plane * g.h * g.w;
    T* dst = out + (plane / g.ic) * p.image_stride(g) + (plane % g.ic) * p.hp * p.wp;
    std::fill(dst, dst + wn.ph * p.wp, T(0));
    for (std::int64_t r = 0; r < g.h; ++r) {
      T* row = dst + (r + wn.ph) * p.wp;
      std::fill(row, row + wn.pw, T(0));
      std::copy(src + r * g.w, src + (r + 1) * g.w, row + wn.pw);
      std::fill(row + wn.pw + g.w, row + p.wp, T(0));
    }
    std::fill(dst + (g.h + wn.ph) * p.wp, dst + p.hp * p.wp, T(0));
  }
}

// y[oc0 .. oc0+OCB) of one image: for each output row, OCB channels x one register of columns
// accumulate in registers while each input row segment is loaded once for all of them. The
// loops over the block are unrolled so the accumulators stay in registers (a rolled loop over
// an array of vectors kept them on the stack, a load and store per FMA).
template <typename T, int OCB, bool kUnitStride>
void conv_forward_rows(const ConvGeometry& g, const PaddedInput<T>& p, const T* xn, const T* k,
                       const T* bias, T* yn, std::int64_t oc0, int ocb) {
  using S = detail::Simd<T>;
  using V = typename S::Vec;
  constexpr std::int64_t kTile = S::kLanes;
  const Window2d& wn = g.win;
  const std::int64_t ks = g.kernel_size();
  const std::int64_t sw = wn.sw;
  // Kernel offsets of each channel in the block; channels past ocb reuse the last real one and
  // are computed but never stored.
  std::int64_t koff[OCB];
  T b0[OCB];
#pragma GCC unroll 8
  for (int ob = 0; ob < OCB; ++ob) {
    koff[ob] = std::min(ob, ocb - 1) * g.ic * ks;
    b0[ob] = bias ? bias[oc0 + std::min(ob, ocb - 1)] : T(0);
  }
  for (std::int64_t oy = 0; oy < g.oh; ++oy) {
    for (std::int64_t ox0 = 0; ox0 < g.ow; ox0 += kTile) {
      V acc[OCB];
#pragma GCC unroll 8
      for (int ob = 0; ob < OCB; ++ob) acc[ob] = S::splat(b0[ob]);
      for (std::int64_t c = 0; c < g.ic; ++c) {
        const T* kc = k + (oc0 * g.ic + c) * ks;  // kernel [oc0, c, :, :]
        for (int ky = 0; ky < wn.kh; ++ky) {
          const T* xr = xn + (c * p.hp + oy * wn.sh + ky) * p.wp + ox0 * sw;
          const T* kr = kc + ky * wn.kw;
          for (int kx = 0; kx < wn.kw; ++kx) {
            V xv;
            if constexpr (kUnitStride) {
              xv = S::load(xr + kx);
            } else {
              for (std::int64_t j = 0; j < kTile; ++j) xv[j] = xr[kx + j * sw];
            }
#pragma GCC unroll 8
            for (int ob = 0; ob < OCB; ++ob) acc[ob] += kr[koff[ob] + kx] * xv;
          }
        }
      }
      const std::int64_t n = std::min(kTile, g.ow - ox0);
      for (int ob = 0; ob < ocb; ++ob) {
        T* yr = yn + ((oc0 + ob) * g.oh + oy) * g.ow + ox0;
        if (n == kTile) {
          S::store(yr, acc[ob]);
        } else {
          for (std::int64_t j = 0; j < n; ++j) yr[j] = acc[ob][j];
        }
      }
    }
  }
}

// y = conv(x, k) + b for geometry g, using `padded` (PaddedInput<T>::of(g).elements(g)
// elements) as scratch. One task per (image, block of 4 output channels).
template <typename T>
void conv_forward(const ConvGeometry& g, const T* x, const T* k, const T* b, T* y, T* padded) {
  const PaddedInput<T> p = PaddedInput<T>::of(g);
  constexpr int kBlock = 4;
  // One task per image: pad it, then every block of 4 output channels.
  parallel_for(g.n, 1, [&](std::int64_t lo, std::int64_t hi) {
    pad_images(g, p, x, padded, lo, hi);
    for (std::int64_t n = lo; n < hi; ++n) {
      const T* xn = padded + n * p.image_stride(g);
      T* yn = y + n * g.oc * g.oh * g.ow;
      for (std::int64_t oc0 = 0; oc0 < g.oc; oc0 += kBlock) {
        const int ocb = static_cast<int>(std::min<std::int64_t>(kBlock, g.oc - oc0));
        if (g.win.sw == 1) {
          conv_forward_rows<T, kBlock, true>(g, p, xn, k, b, yn, oc0, ocb);
        } else {
          conv_forward_rows<T, kBlock, false>(g, p, xn, k, b, yn, oc0, ocb);
        }
      }
    }
  });
}

// gx_plane[H, W] += transpose-conv(gy_plane[OH, OW], k[KH, KW]): scatter through the window.
// The general input-gradient kernel, for strides above 1 and paddings of a kernel's size or more.
template <typename T>
void scatter_plane(const ConvGeometry& g, const T* gy, const T* k, T* gx) {
  const Window2d& wn = g.win;
  for (int ky = 0; ky < wn.kh; ++ky) {
    std::int64_t oy_lo, oy_hi;
    Window2d::valid_range(ky, wn.sh, wn.ph, g.h, g.oh, oy_lo, oy_hi);
    for (int kx = 0; kx < wn.kw; ++kx) {
      std::int64_t ox_lo, ox_hi;
      Window2d::valid_range(kx, wn.sw, wn.pw, g.w, g.ow, ox_lo, ox_hi);
      const T kv = k[ky * wn.kw + kx];
      for (std::int64_t oy = oy_lo; oy < oy_hi; ++oy) {
        const std::int64_t xoff = (oy * wn.sh - wn.ph + ky) * g.w + kx - wn.pw;
        const T* gr = gy + oy * g.ow;
        for (std::int64_t ox = ox_lo; ox < ox_hi; ++ox) gx[xoff + ox * wn.sw] += kv * gr[ox];
      }
    }
  }
}

// Element offsets of the parts of a workspace, each rounded up to a full cache line.
inline std::int64_t align_elements(std::int64_t n, std::int64_t lanes) {
  return (n + lanes - 1) / lanes * lanes;
}

// The output gradient with each row padded with zeros to a whole number of registers:
// [N, OC, OH, OWP], so kernels can always load full vectors of it.
template <typename T>
std::int64_t padded_row(const ConvGeometry& g) {
  return align_elements(g.ow, detail::Simd<T>::kLanes);
}

// Copies the output-gradient planes of images [n0, n1) into the row-padded buffer.
template <typename T>
void pad_rows(const ConvGeometry& g, const T* gy, T* out, std::int64_t n0, std::int64_t n1) {
  const std::int64_t owp = padded_row<T>(g);
  for (std::int64_t plane = n0 * g.oc; plane < n1 * g.oc; ++plane) {
    for (std::int64_t r = 0; r < g.oh; ++r) {
      const T* src = gy + (plane * g.oh + r) * g.ow;
      T* dst = out + (plane * g.oh + r) * owp;
      std::copy(src, src + g.ow, dst);
      std::fill(dst + g.ow, dst + owp, T(0));
    }
  }
}

template <typename T>
T horizontal_sum(typename detail::Simd<T>::Vec v) {
  T s = 0;
  for (int l = 0; l < detail::Simd<T>::kLanes; ++l) s += v[l];  // fixed lane order
  return s;
}

Conv2dOptions options_of(const Window2d& w) {
  return Conv2dOptions{Pair2(w.sh, w.sw), Pair2(w.ph, w.pw)};
}

class Conv2dOp final : public Op {
 public:
  Conv2dOp(ConvGeometry geom, bool has_bias) : g_(geom), has_bias_(has_bias) {}
  const char* name() const override { return "conv2d"; }

  std::size_t workspace_bytes(std::span<const Value> in, Value) const override {
    const std::size_t size = dtype_size(in[0].dtype());
    return static_cast<std::size_t>(size == 4 ? PaddedInput<float>::of(g_).elements(g_)
                                              : PaddedInput<double>::of(g_).elements(g_)) *
           size;
  }

  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const T* x = ctx.inputs[0].data<T>();   // [N, IC, H, W]
      const T* k = ctx.inputs[1].data<T>();   // [OC, IC, KH, KW]
      const T* b = has_bias_ ? ctx.inputs[2].data<T>() : nullptr;  // [OC]
      T* y = ctx.output.data<T>();            // [N, OC, OH, OW]
      conv_forward(g_, x, k, b, y, static_cast<T*>(ctx.workspace));
    });
  }

  std::vector<Value> vjp(std::span<const Value> in, Value, Value gy) const override {
    const Conv2dOptions o = options_of(g_.win);
    std::vector<Value> grads = {conv2d_backward_input(gy, in[1], in[0].shape(), o),
                                conv2d_backward_weight(in[0], gy, in[1].shape(), o)};
    if (has_bias_) grads.push_back(conv2d_backward_bias(gy));
    return grads;
  }

 private:
  ConvGeometry g_;
  bool has_bias_;
};
TBGRAD_REGISTER_OP("conv2d", true);

// With stride 1, the input gradient is itself a convolution: the output gradient, padded by
// (KH-1-ph, KW-1-pw), correlated with the kernel flipped in space and transposed in channels.
// That reuses the register-blocked forward kernel and writes every element once. Other strides
// (and paddings of a kernel's size or more) scatter through the window instead.
class Conv2dBackwardInputOp final : public Op {
 public:
  explicit Conv2dBackwardInputOp(ConvGeometry geom)
      : g_(geom), as_conv_(transposed_geometry(geom)) {}
  const char* name() const override { return "conv2d_backward_input"; }

  std::size_t workspace_bytes(std::span<const Value> in, Value) const override {
    if (!as_conv_) return 0;
    const std::size_t size = dtype_size(in[0].dtype());
    const std::int64_t kernel = g_.oc * g_.ic * g_.kernel_size();
    const std::int64_t padded = size == 4 ? PaddedInput<float>::of(*as_conv_).elements(*as_conv_)
                                          : PaddedInput<double>::of(*as_conv_).elements(*as_conv_);
    return static_cast<std::size_t>(align_elements(kernel, 16) + padded) * size;
  }

  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const T* gy = ctx.inputs[0].data<T>();  // [N, OC, OH, OW]
      const T* k = ctx.inputs[1].data<T>();   // [OC, IC, KH, KW]
      T* gx = ctx.output.data<T>();           // [N, IC, H, W]
      const std::int64_t ks = g_.kernel_size();
      if (as_conv_) {
        T* flipped = static_cast<T*>(ctx.workspace);  // [IC, OC, KH, KW]
        T* padded = flipped + align_elements(g_.oc * g_.ic * ks, 16);
        for (std::int64_t oc = 0; oc < g_.oc; ++oc) {
          for (std::int64_t c = 0; c < g_.ic; ++c) {
            const T* src = k + (oc * g_.ic + c) * ks;
            T* dst = flipped + (c * g_.oc + oc) * ks;
            for (std::int64_t i = 0; i < ks; ++i) dst[i] = src[ks - 1 - i];
          }
        }
        conv_forward<T>(*as_conv_, gy, flipped, nullptr, gx, padded);
        return;
      }
      const std::int64_t plane = g_.h * g_.w;
      parallel_for(g_.n * g_.ic, 1, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t t = lo; t < hi; ++t) {
          const std::int64_t n = t / g_.ic, c = t % g_.ic;
          T* gp = gx + t * plane;
          std::fill(gp, gp + plane, T(0));
          for (std::int64_t oc = 0; oc < g_.oc; ++oc) {
            scatter_plane(g_, gy + (n * g_.oc + oc) * g_.oh * g_.ow, k + (oc * g_.ic + c) * ks, gp);
          }
        }
      });
    });
  }

  // gx is linear in gy and in k: its adjoints are the forward conv and the weight gradient.
  std::vector<Value> vjp(std::span<const Value> in, Value, Value g) const override {
    const Conv2dOptions o = options_of(g_.win);
    return {conv2d(g, in[1], o), conv2d_backward_weight(g, in[0], in[1].shape(), o)};
  }

 private:
  // The forward-conv geometry computing this gradient, when stride is 1 and padding < kernel.
  static std::optional<ConvGeometry> transposed_geometry(const ConvGeometry& g) {
    const Window2d& w = g.win;
    if (w.sh != 1 || w.sw != 1 || w.ph >= w.kh || w.pw >= w.kw) return std::nullopt;
    const Conv2dOptions o{1, Pair2(w.kh - 1 - w.ph, w.kw - 1 - w.pw)};
    return ConvGeometry(Shape{g.n, g.oc, g.oh, g.ow}, Shape{g.ic, g.oc, w.kh, w.kw}, o);
  }

  ConvGeometry g_;
  std::optional<ConvGeometry> as_conv_;
};
TBGRAD_REGISTER_OP("conv2d_backward_input", true);

// out[b] += sum over the window positions of gy_plane * x shifted by b columns, for the NB
// kernel columns starting at xrow (already offset by the kernel row and first column). One
// vector of partial sums per column, summed in lane order at the end: deterministic.
template <typename T, int NB, bool kUnitStride>
void weight_grad_columns(const ConvGeometry& g, const PaddedInput<T>& p, const T* gplane,
                         std::int64_t owp, const T* xrow, T* out) {
  using S = detail::Simd<T>;
  using V = typename S::Vec;
  constexpr std::int64_t L = S::kLanes;
  const std::int64_t sw = g.win.sw, row_step = g.win.sh * p.wp;
  V acc[NB];
#pragma GCC unroll 8
  for (int b = 0; b < NB; ++b) acc[b] = S::splat(T(0));
  for (std::int64_t oy = 0; oy < g.oh; ++oy) {
    const T* gr = gplane + oy * owp;
    const T* xr = xrow + oy * row_step;
    for (std::int64_t ox = 0; ox < owp; ox += L) {
      const V gv = S::load(gr + ox);  // padded gradient columns are zero
#pragma GCC unroll 8
      for (int b = 0; b < NB; ++b) {
        if constexpr (kUnitStride) {
          acc[b] += gv * S::load(xr + b + ox);
        } else {
          V xv;
          for (std::int64_t j = 0; j < L; ++j) xv[j] = xr[b + (ox + j) * sw];
          acc[b] += gv * xv;
        }
      }
    }
  }
#pragma GCC unroll 8
  for (int b = 0; b < NB; ++b) out[b] += horizontal_sum<T>(acc[b]);
}

template <typename T, int NB>
void weight_grad_columns(const ConvGeometry& g, const PaddedInput<T>& p, const T* gplane,
                         std::int64_t owp, const T* xrow, T* out) {
  if (g.win.sw == 1) {
    weight_grad_columns<T, NB, true>(g, p, gplane, owp, xrow, out);
  } else {
    weight_grad_columns<T, NB, false>(g, p, gplane, owp, xrow, out);
  }
}

class Conv2dBackwardWeightOp final : public Op {
 public:
  explicit Conv2dBackwardWeightOp(ConvGeometry geom) : g_(geom) {}
  const char* name() const override { return "conv2d_backward_weight"; }

  // Workspace: [chunks, OC, IC, KH, KW] partial sums, the padded input, the padded gradient.
  template <typename T>
  struct Layout {
    std::int64_t partial, xp, gyp, total;
    explicit Layout(const ConvGeometry& g) {
      constexpr std::int64_t L = detail::Simd<T>::kLanes;
      partial = 0;
      xp = align_elements(fixed_chunks(g.n, kBatchChunk) * g.oc * g.ic * g.kernel_size(), L);
      gyp = xp + align_elements(PaddedInput<T>::of(g).elements(g), L);
      total = gyp + g.n * g.oc * g.oh * padded_row<T>(g);
    }
  };

  std::size_t workspace_bytes(std::span<const Value> in, Value) const override {
    return in[0].dtype() == DType::kF32
               ? static_cast<std::size_t>(Layout<float>(g_).total) * sizeof(float)
               : static_cast<std::size_t>(Layout<double>(g_).total) * sizeof(double);
  }

  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const Layout<T> lay(g_);
      T* ws = static_cast<T*>(ctx.workspace);
      T* partial = ws + lay.partial;  // [chunks, OC, IC, KH, KW]
      T* xp = ws + lay.xp;            // [N, IC, HP, WP] + slack
      T* gyp = ws + lay.gyp;          // [N, OC, OH, OWP]
      T* gk = ctx.output.data<T>();   // [OC, IC, KH, KW]
      const PaddedInput<T> p = PaddedInput<T>::of(g_);
      const T* x = ctx.inputs[0].data<T>();
      const T* gy = ctx.inputs[1].data<T>();
      const std::int64_t owp = padded_row<T>(g_);
      const Window2d& wn = g_.win;
      const std::int64_t ks = g_.kernel_size();
      const std::int64_t per_oc = g_.ic * ks;
      const std::int64_t wsize = g_.oc * per_oc;
      const std::int64_t chunks = fixed_chunks(g_.n, kBatchChunk);
      // One task per chunk of images: pad its inputs and gradients, then sum its images'
      // contributions to every weight into the chunk's own slot.
      parallel_for(chunks, 1, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t chunk = lo; chunk < hi; ++chunk) {
          const std::int64_t n0 = chunk * kBatchChunk, n1 = std::min(g_.n, n0 + kBatchChunk);
          pad_images(g_, p, x, xp, n0, n1);
          pad_rows(g_, gy, gyp, n0, n1);
          T* pk = partial + chunk * wsize;
          std::fill(pk, pk + wsize, T(0));
          for (std::int64_t n = n0; n < n1; ++n) {
            for (std::int64_t oc = 0; oc < g_.oc; ++oc) {
              const T* gplane = gyp + (n * g_.oc + oc) * g_.oh * owp;
              for (std::int64_t c = 0; c < g_.ic; ++c) {
                const T* xplane = xp + n * p.image_stride(g_) + c * p.hp * p.wp;
                for (int ky = 0; ky < wn.kh; ++ky) {
                  // Up to 8 kernel columns at once: independent accumulator chains hide the
                  // FMA latency that a single chain per (ky, kx) was bound by.
                  for (int kx0 = 0; kx0 < wn.kw; kx0 += 8) {
                    const int nb = std::min(8, wn.kw - kx0);
                    const T* xrow = xplane + ky * p.wp + kx0;
                    T* out = pk + oc * per_oc + c * ks + ky * wn.kw + kx0;
                    switch (nb) {
                      case 1: weight_grad_columns<T, 1>(g_, p, gplane, owp, xrow, out); break;
                      case 2: weight_grad_columns<T, 2>(g_, p, gplane, owp, xrow, out); break;
                      case 3: weight_grad_columns<T, 3>(g_, p, gplane, owp, xrow, out); break;
                      case 4: weight_grad_columns<T, 4>(g_, p, gplane, owp, xrow, out); break;
                      case 5: weight_grad_columns<T, 5>(g_, p, gplane, owp, xrow, out); break;
                      case 6: weight_grad_columns<T, 6>(g_, p, gplane, owp, xrow, out); break;
                      case 7: weight_grad_columns<T, 7>(g_, p, gplane, owp, xrow, out); break;
                      default: weight_grad_columns<T, 8>(g_, p, gplane, owp, xrow, out); break;
                    }
                  }
                }
              }
            }
          }
        }
      });
      // Combine the chunks in order (small: the kernel's size times the chunk count).
      for (std::int64_t i = 0; i < wsize; ++i) {
        T sum = 0;
        for (std::int64_t c = 0; c < chunks; ++c) sum += partial[c * wsize + i];
        gk[i] = sum;
      }
    });
  }

  // gk is linear in x and in gy.
  std::vector<Value> vjp(std::span<const Value> in, Value, Value g) const override {
    const Conv2dOptions o = options_of(g_.win);
    return {conv2d_backward_input(in[1], g, in[0].shape(), o), conv2d(in[0], g, o)};
  }

 private:
  ConvGeometry g_;
};
TBGRAD_REGISTER_OP("conv2d_backward_weight", true);

class Conv2dBackwardBiasOp final : public Op {
 public:
  const char* name() const override { return "conv2d_backward_bias"; }
  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const Shape& s = ctx.inputs[0].shape();  // [N, OC, OH, OW]
      const T* gy = ctx.inputs[0].data<T>();
      T* gb = ctx.output.data<T>();  // [OC]
      const std::int64_t n = s[0], oc = s[1], plane = s[2] * s[3];
      // One task per channel, summing in a fixed order (vector lanes, then lanes in order, then
      // the scalar tails): deterministic without a workspace.
      using S = detail::Simd<T>;
      constexpr std::int64_t L = S::kLanes;
      const std::int64_t pv = plane / L * L;
      parallel_for(oc, 1, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t c = lo; c < hi; ++c) {
          typename S::Vec acc = S::splat(T(0));
          T tail = 0;
          for (std::int64_t i = 0; i < n; ++i) {
            const T* p = gy + (i * oc + c) * plane;
            for (std::int64_t j = 0; j < pv; j += L) acc += S::load(p + j);
            for (std::int64_t j = pv; j < plane; ++j) tail += p[j];
          }
          gb[c] = horizontal_sum<T>(acc) + tail;
        }
      });
    });
  }
  std::vector<Value> vjp(std::span<const Value> in, Value, Value g) const override {
    const Shape& s = in[0].shape();
    return {broadcast_to(reshape(g, Shape{s[1], 1, 1}), s)};
  }
};
TBGRAD_REGISTER_OP("conv2d_backward_bias", true);

// Shape rule shared by the forward op and the gradient kernels.
ConvGeometry check_conv(const char* op, const Shape& x, const std::string& x_desc,
                        const Shape& weight, const std::string& w_desc, const Conv2dOptions& o) {
  if (x.rank() != 4) {
    shape_error(op, "input " + x_desc + " must be [N, C, H, W] (rank 4), got rank " +
                        std::to_string(x.rank()));
  }
  if (weight.rank() != 4) {
    shape_error(op, "weight " + w_desc + " must be [OC, IC, KH, KW] (rank 4), got rank " +
                        std::to_string(weight.rank()));
  }
  if (weight[1] != x[1]) {
    shape_error(op, "weight expects " + std::to_string(weight[1]) + " input channels, input " +
                        x_desc + " has " + std::to_string(x[1]) + " (weight " + w_desc + ")");
  }
  if (weight[0] < 1 || weight[2] < 1 || weight[3] < 1) {
    shape_error(op, "weight " + w_desc + " must have at least one output channel and a kernel "
                    "of at least 1x1");
  }
  if (o.stride.h < 1 || o.stride.w < 1) {
    shape_error(op, "stride must be >= 1, got " + o.stride.str());
  }
  if (o.padding.h < 0 || o.padding.w < 0) {
    shape_error(op, "padding must be >= 0, got " + o.padding.str());
  }
  // Sizes (graph/checked.hpp): geometry fits in int, the padded input [N, IC, HP, WP] and the
  // window view [N, IC, OH, OW, KH, KW] have countable elements.
  checked::to_int(weight[2], op, "kernel height");
  checked::to_int(weight[3], op, "kernel width");
  const int hp = checked::padded_extent(x[2], o.padding.h, op, "height");
  const int wp = checked::padded_extent(x[3], o.padding.w, op, "width");
  checked::numel({x[0], x[1], hp, wp}, op);
  ConvGeometry g(x, weight, o);
  if (g.oh < 1 || g.ow < 1) {
    shape_error(op, "kernel " + std::to_string(weight[2]) + "x" + std::to_string(weight[3]) +
                        " with padding " + o.padding.str() + " does not fit input " + x_desc);
  }
  checked::numel({g.n, g.ic, g.oh, g.ow, weight[2], weight[3]}, op);
  return g;
}

}  // namespace

Value conv2d(Value x, Value weight, Value bias, Conv2dOptions options) {
  detail::require_same_graph("conv2d", x, weight);
  detail::require_float("conv2d", x);
  detail::require_same_dtype("conv2d", x, weight);
  ConvGeometry g =
      check_conv("conv2d", x.shape(), x.describe(), weight.shape(), weight.describe(), options);
  std::vector<Value> ins = {x, weight};
  if (bias.valid()) {
    detail::require_same_graph("conv2d", x, bias);
    detail::require_same_dtype("conv2d", x, bias);
    if (bias.shape().rank() != 1 || bias.shape()[0] != g.oc) {
      shape_error("conv2d", "bias " + bias.describe() + " must be [" + std::to_string(g.oc) +
                                "], one value per output channel of weight " + weight.describe());
    }
    ins.push_back(bias);
  }
  return x.graph().add_op(std::make_shared<Conv2dOp>(g, bias.valid()), ins,
                          Shape{g.n, g.oc, g.oh, g.ow}, x.dtype());
}

Value conv2d(Value x, Value weight, Conv2dOptions options) {
  return conv2d(x, weight, Value(), options);
}

Value conv2d_backward_input(Value grad_out, Value weight, Shape input_shape,
                            Conv2dOptions options) {
  const char* op = "conv2d_backward_input";
  detail::require_same_graph(op, grad_out, weight);
  detail::require_same_dtype(op, grad_out, weight);
  ConvGeometry g = check_conv(op, input_shape, input_shape.str(), weight.shape(),
                              weight.describe(), options);
  const Shape expect{g.n, g.oc, g.oh, g.ow};
  if (!(grad_out.shape() == expect)) {
    shape_error(op, "output gradient " + grad_out.describe() + " must be " + expect.str());
  }
  Value ins[] = {grad_out, weight};
  return grad_out.graph().add_op(std::make_shared<Conv2dBackwardInputOp>(g), ins, input_shape,
                                 grad_out.dtype());
}

Value conv2d_backward_weight(Value x, Value grad_out, Shape weight_shape, Conv2dOptions options) {
  const char* op = "conv2d_backward_weight";
  detail::require_same_graph(op, x, grad_out);
  detail::require_same_dtype(op, x, grad_out);
  ConvGeometry g =
      check_conv(op, x.shape(), x.describe(), weight_shape, weight_shape.str(), options);
  const Shape expect{g.n, g.oc, g.oh, g.ow};
  if (!(grad_out.shape() == expect)) {
    shape_error(op, "output gradient " + grad_out.describe() + " must be " + expect.str());
  }
  Value ins[] = {x, grad_out};
  return x.graph().add_op(std::make_shared<Conv2dBackwardWeightOp>(g), ins, weight_shape,
                          x.dtype());
}

Value conv2d_backward_bias(Value grad_out) {
  const char* op = "conv2d_backward_bias";
  if (!grad_out.valid()) shape_error(op, "input is an invalid (empty) Value");
  detail::require_float(op, grad_out);
  detail::require_rank(op, grad_out, 4, "output gradient");
  Value ins[] = {grad_out};
  return grad_out.graph().add_op(std::make_shared<Conv2dBackwardBiasOp>(), ins,
                                 Shape{grad_out.shape()[1]}, grad_out.dtype());
}

}  // namespace tbgrad
