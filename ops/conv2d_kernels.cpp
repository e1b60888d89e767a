// Convolution kernels, compiled once per SIMD target (this file re-includes itself through
// Highway's foreach_target.h) and dispatched at run time. Geometry and workspace layouts:
// ops/conv2d_kernels.hpp.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/conv2d_kernels.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>

#include "graph/parallel.hpp"
#include "ops/conv2d_kernels.hpp"
#include "ops/simd-inl.hpp"
#include "ops/simd_export.hpp"

HWY_BEFORE_NAMESPACE();
namespace tbgrad::HWY_NAMESPACE {
namespace {

using detail::ConvGeometry;
using detail::PaddedInput;
using detail::Window2d;

// Copies images [n0, n1) of x into the padded buffer, with their slack. Kernels call it from
// inside their own per-image tasks: one parallel region per op rather than a separate one for
// the copy.
template <typename T>
void pad_images(const ConvGeometry& g, const PaddedInput& p, const T* x, T* out, std::int64_t n0,
                std::int64_t n1) {
  const Window2d& wn = g.win;
  for (std::int64_t n = n0; n < n1; ++n) {
    T* image = out + n * p.image_stride(g);
    std::fill(image + g.ic * p.hp * p.wp, image + p.image_stride(g), T(0));
  }
  for (std::int64_t plane = n0 * g.ic; plane < n1 * g.ic; ++plane) {
    const T* src = x + plane * g.h * g.w;
    T* dst = out + (plane / g.ic) * p.image_stride(g) + (plane % g.ic) * p.hp * p.wp;
    if (wn.pw == 0) {  // rows without a border: the plane is one run (one copy, not one per row)
      std::fill(dst, dst + wn.ph * p.wp, T(0));
      std::copy(src, src + g.h * g.w, dst + wn.ph * p.wp);
      std::fill(dst + (g.h + wn.ph) * p.wp, dst + p.hp * p.wp, T(0));
    } else {  // one fill of the plane, not two short ones per row
      std::fill(dst, dst + p.hp * p.wp, T(0));
      for (std::int64_t r = 0; r < g.h; ++r) {
        copy_row(src + r * g.w, g.w, dst + (r + wn.ph) * p.wp + wn.pw);
      }
    }
  }
}

// Lanes j of a vector of x at stride sw: x[j * sw].
template <typename T>
HWY_INLINE VecT<T> load_strided(const T* x, std::int64_t sw) {
  HWY_ALIGN T buf[detail::kMaxLanes<T>];
  const std::int64_t L = lanes<T>();
  for (std::int64_t j = 0; j < L; ++j) buf[j] = x[j * sw];
  return hn::Load(Tag<T>(), buf);
}

// y[oc0 .. oc0+OCB) of one image: for each output row, OCB channels x one vector of columns
// accumulate in registers while each input row segment is loaded once for all of them. The
// loops over the block are unrolled so the accumulators stay in registers (a rolled loop over
// an array of vectors kept them on the stack, a load and store per FMA). Each output element is
// one chain of FMAs over (c, ky, kx) in order, whatever the target's width.
template <typename T, int OCB, bool kUnitStride>
void conv_forward_rows(const ConvGeometry& g, const PaddedInput& p, const T* xn, const T* k,
                       const T* bias, T* yn, std::int64_t oc0, int ocb) {
  const Tag<T> d;
  using V = VecT<T>;
  const std::int64_t kTile = lanes<T>();
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
      for (int ob = 0; ob < OCB; ++ob) acc[ob] = hn::Set(d, b0[ob]);
      for (std::int64_t c = 0; c < g.ic; ++c) {
        const T* kc = k + (oc0 * g.ic + c) * ks;  // kernel [oc0, c, :, :]
        for (int ky = 0; ky < wn.kh; ++ky) {
          const T* xr = xn + (c * p.hp + oy * wn.sh + ky) * p.wp + ox0 * sw;
          const T* kr = kc + ky * wn.kw;
          for (int kx = 0; kx < wn.kw; ++kx) {
            V xv;
            if constexpr (kUnitStride) {
              xv = hn::LoadU(d, xr + kx);
            } else {
              xv = load_strided(xr + kx, sw);
            }
            keep_in_register(xv);
#pragma GCC unroll 8
            for (int ob = 0; ob < OCB; ++ob) {
              acc[ob] = hn::MulAdd(hn::Set(d, kr[koff[ob] + kx]), xv, acc[ob]);
            }
          }
        }
      }
      const std::int64_t n = std::min(kTile, g.ow - ox0);
      for (int ob = 0; ob < ocb; ++ob) {
        T* yr = yn + ((oc0 + ob) * g.oh + oy) * g.ow + ox0;
        if (n == kTile) {
          hn::StoreU(acc[ob], d, yr);
        } else {
          HWY_ALIGN T buf[detail::kMaxLanes<T>];
          hn::Store(acc[ob], d, buf);
          std::copy(buf, buf + n, yr);
        }
      }
    }
  }
}

// Channel blocks of a register tile: OCB output channels x NV vectors of positions take
// OCB*NV accumulators, OCB broadcast kernel values and one loaded vector of x.
constexpr int kMaxTileChannels = kVectorRegisters >= 32 ? 8 : 6;
static_assert(kMaxTileChannels <= detail::kMaxWeightGradBlock);
template <int OCB>
constexpr int tile_vectors() {
  const int nv = (kVectorRegisters - 1 - OCB) / OCB;
  constexpr int kMax = static_cast<int>(detail::kMaxTileVectors);  // the padding's slack
  return nv < 1 ? 1 : (nv > kMax ? kMax : nv);
}

// Splits `oc` channels into blocks of at most kMaxTileChannels, as even as possible (5 -> 5,
// 10 -> 5 + 5, 16 -> 6 + 5 + 5 on 16 registers), calling fn(first, count) for each.
template <typename Fn>
void for_each_channel_block(std::int64_t oc, const Fn& fn, std::int64_t max_block = kMaxTileChannels) {
  const std::int64_t blocks = (oc + max_block - 1) / max_block;
  std::int64_t first = 0;
  for (std::int64_t b = 0; b < blocks; ++b) {
    const std::int64_t count = (oc - first) / (blocks - b);
    fn(first, static_cast<int>(count));
    first += count;
  }
}

// Note [Wide planes]: with stride 1, output position (oy, ox) reads input (oy + ky, ox + kx) of
// the padded plane, that is flat index p + ky*WP + kx with p = oy*WP + ox. So the kernels run
// over the flat positions p in [0, OH*WP) of the padded plane's row grid ("wide": the WP - OW
// positions at the end of each row are computed and dropped, or multiplied by a zero
// gradient), and every tap is one contiguous vector load at a fixed offset, whatever the row.
// Vectors never stop at a row's end, so a 9-wide plane wastes 2 of 11 lanes instead of 7 of 16
// (AVX-512) in a row-by-row loop, and register tiles can span many vectors.

// y[oc0 .. oc0+OCB) of one image, stride 1 (Note [Wide planes]): tiles of OCB channels x NV
// vectors of wide positions, stored whole and unmasked into the image's wide output `wide`
// [OC, cs] (the positions past each row's OW columns included); compact_wide then moves the
// valid columns to y. Each output element is one chain of FMAs over (c, ky, kx) in order after
// the bias, as in conv_forward_rows: the same bits on every FMA target.
template <typename T, int OCB>
void conv_forward_wide(const ConvGeometry& g, const PaddedInput& p, const T* xn, const T* k,
                       const T* bias, T* wide, std::int64_t cs, std::int64_t oc0, T* yn) {
  constexpr int NV = tile_vectors<OCB>();
  const Tag<T> d;
  using V = VecT<T>;
  const std::int64_t L = lanes<T>();
  const std::int64_t wp = p.wp, plane = p.hp * p.wp, total = g.oh * wp;
  const int kh = g.win.kh, kw = g.win.kw;
  const std::int64_t ks = g.kernel_size(), per_oc = g.ic * ks;
  T b0[OCB];
#pragma GCC unroll 8
  for (int ob = 0; ob < OCB; ++ob) b0[ob] = bias ? bias[oc0 + ob] : T(0);
  T* out = wide + oc0 * cs;
  // The block's outputs in y, asked for a share per tile, so that compact_wide's stores find
  // their lines in L1 rather than all waiting for them at once at the image's end (bench_ops,
  // avx2: conv 1 forward 8% faster, the others unchanged).
  const char* pf = reinterpret_cast<const char*>(yn + oc0 * g.oh * g.ow);
  const std::int64_t pf_bytes = static_cast<std::int64_t>(OCB * g.oh * g.ow * sizeof(T));
  const std::int64_t tiles = (total + NV * L - 1) / (NV * L);
  const std::int64_t pf_step = (pf_bytes / 64 + tiles) / tiles * 64;
  std::int64_t pf_at = 0;
  for (std::int64_t p0 = 0; p0 < total; p0 += NV * L) {
    for (std::int64_t e = pf_at + pf_step; pf_at < e && pf_at < pf_bytes; pf_at += 64) {
      __builtin_prefetch(pf + pf_at, 1, 3);
    }
    V acc[OCB][NV];
#pragma GCC unroll 8
    for (int ob = 0; ob < OCB; ++ob) {
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[ob][v] = hn::Set(d, b0[ob]);
    }
    for (std::int64_t c = 0; c < g.ic; ++c) {
      const T* xc = xn + c * plane + p0;
      const T* kc = k + oc0 * per_oc + c * ks;  // kernel [oc0, c, :, :]
      for (int ky = 0; ky < kh; ++ky) {
        for (int kx = 0; kx < kw; ++kx) {
          const T* xt = xc + ky * wp + kx;
          const std::int64_t tap = ky * kw + kx;
          V kv[OCB];
#pragma GCC unroll 8
          for (int ob = 0; ob < OCB; ++ob) kv[ob] = hn::Set(d, kc[ob * per_oc + tap]);
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) {
            V xv = hn::LoadU(d, xt + v * L);
            keep_in_register(xv);
#pragma GCC unroll 8
            for (int ob = 0; ob < OCB; ++ob) acc[ob][v] = hn::MulAdd(kv[ob], xv, acc[ob][v]);
          }
        }
      }
    }
#pragma GCC unroll 8
    for (int ob = 0; ob < OCB; ++ob) {
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) hn::StoreU(acc[ob][v], d, out + ob * cs + p0 + v * L);
    }
  }
}

// y [OC, OH, OW] of one image from its wide output [OC, cs] (row r of channel c at c*cs + r*WP),
// with the ReLU applied when `relu`, in the same select as the ReLU's own kernel. Rows go in
// order, each as whole vectors: a vector past a row's end writes the start of the next row,
// which that row's own stores then overwrite. Only near the end of the image's output, past
// which another task writes, do the last elements go one at a time. (The tiles used to store
// straight into y through masks, a straddling vector's second row shifted through a buffer,
// which reloaded it at an offset the store could not forward: for the seed model's planes, 24,
// 11 and 9 wide, its three stride-1 convolutions took 9-13% longer, bench_ops on AVX2.)
template <typename T, bool kRelu>
void compact_wide(const ConvGeometry& g, std::int64_t wp, std::int64_t cs, const T* wide, T* y) {
  const Tag<T> d;
  const std::int64_t L = lanes<T>();
  const std::int64_t ow = g.ow, end = g.oc * g.oh * ow;
  const auto relu = [&](VecT<T> v) {
    if constexpr (kRelu) {
      // v <= 0 is false for NaN, which propagates (Note [Epilogues]); Highway's Max does not
      // propagate NaN on x86.
      return hn::IfThenZeroElse(hn::Le(v, hn::Zero(d)), v);
    } else {
      return v;
    }
  };
  for (std::int64_t c = 0; c < g.oc; ++c) {
    for (std::int64_t r = 0; r < g.oh; ++r) {
      const T* src = wide + c * cs + r * wp;
      const std::int64_t at = (c * g.oh + r) * ow;
      std::int64_t j = 0;
      for (; j < ow && at + j + L <= end; j += L) {
        hn::StoreU(relu(hn::LoadU(d, src + j)), d, y + at + j);
      }
      for (; j < ow; ++j) {
        const T v = src[j];
        y[at + j] = kRelu ? (v <= T(0) ? T(0) : v) : v;
      }
    }
  }
}

template <typename T>
void conv_forward_wide_block(const ConvGeometry& g, const PaddedInput& p, const T* xn, const T* k,
                             const T* bias, T* wide, std::int64_t cs, std::int64_t oc0, int ocb,
                             T* yn) {
  detail::with_tile_size<kMaxTileChannels>(
      ocb, [&]<int OCB>() { conv_forward_wide<T, OCB>(g, p, xn, k, bias, wide, cs, oc0, yn); });
}

// One task per image: pad it, then every block of output channels (wide planes for stride 1,
// then compacted into y; rows of 4 channels x one vector otherwise).
template <typename T>
void conv_forward(const ConvGeometry& g, const T* x, const T* k, const T* b, T* y, T* ws,
                  const detail::OutputEpilogue<T>& ep) {
  const PaddedInput p = PaddedInput::of(g, lanes<T>());
  const auto lay = detail::ConvForwardLayout::of<T>(g);
  const std::int64_t cs = detail::ConvForwardLayout::wide_channel(g.oh * p.wp, lanes<T>());
  const bool relu = ep.kind == detail::OutputEpilogue<T>::kRelu;
  constexpr int kBlock = 4;
  T* padded = ws;
  parallel_for(g.n, 1, [&](std::int64_t lo, std::int64_t hi) {
    pad_images(g, p, x, padded, lo, hi);
    T* wide = ws + lay.wide + lo * lay.slot;  // this task's slot
    for (std::int64_t n = lo; n < hi; ++n) {
      const T* xn = padded + n * p.image_stride(g);
      T* yn = y + n * g.oc * g.oh * g.ow;
      if (g.win.sh == 1 && g.win.sw == 1) {
        for_each_channel_block(g.oc, [&](std::int64_t oc0, int ocb) {
          conv_forward_wide_block(g, p, xn, k, b, wide, cs, oc0, ocb, yn);
        });
        if (relu) {
          compact_wide<T, true>(g, p.wp, cs, wide, yn);
        } else {
          compact_wide<T, false>(g, p.wp, cs, wide, yn);
          apply_epilogue(ep, yn, 0, g.oc * g.oh * g.ow);
        }
        continue;
      }
      for (std::int64_t oc0 = 0; oc0 < g.oc; oc0 += kBlock) {
        const int ocb = static_cast<int>(std::min<std::int64_t>(kBlock, g.oc - oc0));
        if (g.win.sw == 1) {
          conv_forward_rows<T, kBlock, true>(g, p, xn, k, b, yn, oc0, ocb);
        } else {
          conv_forward_rows<T, kBlock, false>(g, p, xn, k, b, yn, oc0, ocb);
        }
      }
      apply_epilogue(ep, yn, 0, g.oc * g.oh * g.ow);  // the image's outputs, still in cache
    }
  });
}

// gx_plane[H, W] += transpose-conv(gy_plane[OH, OW], k[KH, KW]): scatter through the window.
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

template <typename T>
void input_grad_scatter(const ConvGeometry& g, const T* gy, const T* k, T* gx) {
  const std::int64_t ks = g.kernel_size();
  const std::int64_t plane = g.h * g.w;
  parallel_for(g.n * g.ic, 1, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t t = lo; t < hi; ++t) {
      const std::int64_t n = t / g.ic, c = t % g.ic;
      T* gp = gx + t * plane;
      std::fill(gp, gp + plane, T(0));
      for (std::int64_t oc = 0; oc < g.oc; ++oc) {
        scatter_plane(g, gy + (n * g.oc + oc) * g.oh * g.ow, k + (oc * g.ic + c) * ks, gp);
      }
    }
  });
}

// Copies the output-gradient planes of images [n0, n1) into the buffer whose rows are padded
// with zeros to `owp` (whole vectors), so kernels can always load full vectors of it.
template <typename T>
void pad_rows(const ConvGeometry& g, std::int64_t owp, const T* gy, T* out, std::int64_t n0,
              std::int64_t n1) {
  for (std::int64_t plane = n0 * g.oc; plane < n1 * g.oc; ++plane) {
    for (std::int64_t r = 0; r < g.oh; ++r) {
      const T* src = gy + (plane * g.oh + r) * g.ow;
      T* dst = out + (plane * g.oh + r) * owp;
      copy_row(src, g.ow, dst);
      std::fill(dst + g.ow, dst + owp, T(0));
    }
  }
}

// out[b] += sum over the window positions of gy_plane * x shifted by b columns, for the NB
// kernel columns starting at xrow (already offset by the kernel row and first column). One
// vector of partial sums per column, summed in lane order at the end: deterministic.
template <typename T, int NB, bool kUnitStride>
void weight_grad_columns(const ConvGeometry& g, const PaddedInput& p, const T* gplane,
                         std::int64_t owp, const T* xrow, T* out) {
  const Tag<T> d;
  using V = VecT<T>;
  const std::int64_t L = lanes<T>();
  const std::int64_t sw = g.win.sw, row_step = g.win.sh * p.wp;
  V acc[NB];
#pragma GCC unroll 8
  for (int b = 0; b < NB; ++b) acc[b] = hn::Zero(d);
  for (std::int64_t oy = 0; oy < g.oh; ++oy) {
    const T* gr = gplane + oy * owp;
    const T* xr = xrow + oy * row_step;
    for (std::int64_t ox = 0; ox < owp; ox += L) {
      V gv = hn::LoadU(d, gr + ox);  // padded gradient columns are zero
      keep_in_register(gv);
#pragma GCC unroll 8
      for (int b = 0; b < NB; ++b) {
        if constexpr (kUnitStride) {
          acc[b] = hn::MulAdd(gv, hn::LoadU(d, xr + b + ox), acc[b]);
        } else {
          acc[b] = hn::MulAdd(gv, load_strided(xr + b + ox * sw, sw), acc[b]);
        }
      }
    }
  }
#pragma GCC unroll 8
  for (int b = 0; b < NB; ++b) out[b] += horizontal_sum<T>(acc[b]);
}

// Kernel columns per call: independent accumulator chains hide the FMA latency that a single
// chain per (ky, kx) was bound by; as many as the registers hold beside the loaded vectors.
constexpr int kWeightGradColumns = kVectorRegisters >= 32 ? 8 : 6;

template <typename T, int NB>
void weight_grad_columns(const ConvGeometry& g, const PaddedInput& p, const T* gplane,
                         std::int64_t owp, const T* xrow, T* out) {
  if (g.win.sw == 1) {
    weight_grad_columns<T, NB, true>(g, p, gplane, owp, xrow, out);
  } else {
    weight_grad_columns<T, NB, false>(g, p, gplane, owp, xrow, out);
  }
}

template <typename T>
void weight_grad_run(const ConvGeometry& g, const PaddedInput& p, const T* gplane, std::int64_t owp,
                     const T* xrow, T* out, int nb) {
  detail::with_tile_size<kWeightGradColumns>(
      nb, [&]<int NB>() { weight_grad_columns<T, NB>(g, p, gplane, owp, xrow, out); });
}

// vpartial [OCB, KH*KW, lanes] = for channels oc0 .. oc0+OCB, input channel c and taps
// tap0 .. tap0+TB: the sum over images n0 .. n1 and wide positions (Note [Wide planes]) of the
// wide output gradient times x at the tap's offset, one vector of partial sums per weight over
// both images of a chunk; combine_lane_sums adds its lanes in order next: deterministic.
template <typename T, int OCB, int TB>
void weight_grad_wide(const ConvGeometry& g, const PaddedInput& p, const T* gw, std::int64_t gw_len,
                      const T* xp, std::int64_t n0, std::int64_t n1, std::int64_t oc0,
                      std::int64_t c, int tap0, T* vpartial, std::int64_t vstride) {
  const Tag<T> d;
  using V = VecT<T>;
  const std::int64_t L = lanes<T>();
  const std::int64_t plane = p.hp * p.wp;
  std::int64_t off[TB];
#pragma GCC unroll 8
  for (int t = 0; t < TB; ++t) off[t] = (tap0 + t) / g.win.kw * p.wp + (tap0 + t) % g.win.kw;
  V acc[OCB][TB];
#pragma GCC unroll 8
  for (int ob = 0; ob < OCB; ++ob) {
#pragma GCC unroll 8
    for (int t = 0; t < TB; ++t) acc[ob][t] = hn::Zero(d);
  }
  for (std::int64_t n = n0; n < n1; ++n) {
    const T* gn = gw + (n * g.oc + oc0) * gw_len;
    const T* xn = xp + n * p.image_stride(g) + c * plane;
    for (std::int64_t q = 0; q < gw_len; q += L) {
      V gv[OCB];
#pragma GCC unroll 8
      for (int ob = 0; ob < OCB; ++ob) gv[ob] = hn::LoadU(d, gn + ob * gw_len + q);
#pragma GCC unroll 8
      for (int t = 0; t < TB; ++t) {
        V xv = hn::LoadU(d, xn + q + off[t]);
        keep_in_register(xv);
#pragma GCC unroll 8
        for (int ob = 0; ob < OCB; ++ob) acc[ob][t] = hn::MulAdd(gv[ob], xv, acc[ob][t]);
      }
    }
  }
#pragma GCC unroll 8
  for (int ob = 0; ob < OCB; ++ob) {
#pragma GCC unroll 8
    for (int t = 0; t < TB; ++t) {
      hn::StoreU(acc[ob][t], d, vpartial + (ob * vstride + t) * L);
    }
  }
}

// All taps of one (channel block, input channel): blocks of as many taps as the registers
// hold, the remainder one tap at a time.
template <typename T, int OCB>
void weight_grad_wide_taps(const ConvGeometry& g, const PaddedInput& p, const T* gw,
                           std::int64_t gw_len, const T* xp, std::int64_t n0, std::int64_t n1,
                           std::int64_t oc0, std::int64_t c, T* vpartial) {
  constexpr int TB = tile_vectors<OCB>();
  const int ks = static_cast<int>(g.kernel_size());
  const std::int64_t L = lanes<T>();
  int tap = 0;
  for (; tap + TB <= ks; tap += TB) {
    weight_grad_wide<T, OCB, TB>(g, p, gw, gw_len, xp, n0, n1, oc0, c, tap, vpartial + tap * L, ks);
  }
  for (; tap < ks; ++tap) {
    weight_grad_wide<T, OCB, 1>(g, p, gw, gw_len, xp, n0, n1, oc0, c, tap, vpartial + tap * L, ks);
  }
}


template <typename T>
void weight_grad_wide_block(const ConvGeometry& g, const PaddedInput& p, const T* gw,
                            std::int64_t gw_len, const T* xp, std::int64_t n0, std::int64_t n1,
                            std::int64_t oc0, int ocb, std::int64_t c, T* vpartial) {
  detail::with_tile_size<kMaxTileChannels>(ocb, [&]<int OCB>() {
    weight_grad_wide_taps<T, OCB>(g, p, gw, gw_len, xp, n0, n1, oc0, c, vpartial);
  });
}

// Copies the output gradient of images [n0, n1) into the wide layout [N, OC, gw_len]: position
// oy*WP + ox holds gy[oy, ox] for ox < OW and zero elsewhere (Note [Wide planes]).
template <typename T>
void pad_wide(const ConvGeometry& g, std::int64_t wp, std::int64_t gw_len, const T* gy, T* out,
              std::int64_t n0, std::int64_t n1) {
  for (std::int64_t plane = n0 * g.oc; plane < n1 * g.oc; ++plane) {
    T* dst = out + plane * gw_len;
    std::fill(dst, dst + gw_len, T(0));  // one fill, not a short one per row
    for (std::int64_t r = 0; r < g.oh; ++r) {
      copy_row(gy + (plane * g.oh + r) * g.ow, g.ow, dst + r * wp);
    }
  }
}

// gk[i] = the sum over chunks c, in order, of the sum of vpartial[c][i]'s lanes in lane order,
// each starting from zero: the adds horizontal_sum and the combine of the chunks made (the
// partial sums' "0 +" they also added is exact, as a sum started from +0 is never -0). The
// weight gradient calls it with one chunk per block of weights, while their vectors are in
// cache, and adds the chunks' sums in order from zero after: the same adds in the same order
// (storing every chunk's vectors and combining them at the end made the partial sums the
// kernel's memory traffic: 16x the weights per two images, 150 MB at batch 128 for 64
// channels of 7x7). It adds four weights' lanes at a time (their vectors transposed in 4 x 4
// blocks) where the target has 128-bit vectors. (With a horizontal_sum per weight inside the tap loops, its store and chain
// of scalar adds, the seed convolutions' weight gradients ran 9% and 3% longer, bench_ops avx2.)
template <typename T>
void combine_lane_sums(const T* HWY_RESTRICT vpartial, std::int64_t chunks, std::int64_t wsize,
                       T* HWY_RESTRICT gk) {
  const std::int64_t L = lanes<T>();
  std::int64_t i0 = 0;
#if HWY_TARGET != HWY_SCALAR
  if constexpr (sizeof(T) == 4) {
    const hn::Full128<T> d4;
    for (; i0 + 4 <= wsize; i0 += 4) {
      auto sum = hn::Zero(d4);
      for (std::int64_t c = 0; c < chunks; ++c) {
        const T* v = vpartial + (c * wsize + i0) * L;  // weight i0 + w's lanes at v + w*L
        auto s = hn::Zero(d4);
        for (std::int64_t l = 0; l < L; l += 4) {
          V4f t[4];  // t[j]: lane l + j of the four weights
          transpose4(hn::LoadU(d4, v + l), hn::LoadU(d4, v + L + l),
                     hn::LoadU(d4, v + 2 * L + l), hn::LoadU(d4, v + 3 * L + l), t);
          for (int j = 0; j < 4; ++j) s = hn::Add(s, t[j]);
        }
        sum = hn::Add(sum, s);
      }
      hn::StoreU(sum, d4, gk + i0);
    }
  }
#endif
  for (; i0 < wsize; ++i0) {
    T sum = 0;
    for (std::int64_t c = 0; c < chunks; ++c) {
      const T* v = vpartial + (c * wsize + i0) * L;
      T s = 0;
      for (std::int64_t l = 0; l < L; ++l) s += v[l];
      sum += s;
    }
    gk[i0] = sum;
  }
}

// Note [Whole-batch weight gradient]: for small planes with enough (channel block, input
// channel) pairs to keep every thread busy, each pair is one task that sums over every image of
// the batch in order in its registers, then adds each weight's lanes in order into gk: no
// partial sums per chunk of images and no combining them, which for small planes cost as much
// as the multiply-adds (64 channels of 7x7 at batch 32 made 16 chunks of 8 multiply-adds per
// weight, each followed by a 16-lane sum: 2.8x slower, bench_ops). Large planes keep the chunks:
// a chunk's images stay in cache while every channel reads them (16 channels of 28x28 ran 13%
// slower whole-batch). The order of the adds depends on the shapes only.
inline constexpr std::int64_t kWholeBatchTasks = 32;
inline constexpr std::int64_t kWholeBatchMaxPlane = 256;  // wide positions (Note [Wide planes])
// Its tiles: blocks of at most 4 channels x as many taps as the registers hold (6 on 32
// registers), so that each load of the output gradient feeds more taps.
inline constexpr int kWholeBatchBlock = 4;

template <typename T, int OCB>
void weight_grad_whole_batch(const ConvGeometry& g, const PaddedInput& p, const T* gw,
                             std::int64_t gw_len, const T* xp, std::int64_t oc0, std::int64_t c,
                             T* gk) {
  constexpr int TB = tile_vectors<OCB>();
  const std::int64_t L = lanes<T>();
  const int ks = static_cast<int>(g.kernel_size());
  const std::int64_t per_oc = g.ic * ks;
  HWY_ALIGN T v[OCB * TB * detail::kMaxLanes<T>];  // a tap block's vectors [OCB, TB, L]
  auto block = [&]<int B>(int tap) {
    weight_grad_wide<T, OCB, B>(g, p, gw, gw_len, xp, 0, g.n, oc0, c, tap, v, B);
    for (int ob = 0; ob < OCB; ++ob) {
      for (int t = 0; t < B; ++t) {
        const T* lanes_of = v + (ob * B + t) * L;
        T sum = 0;
        for (std::int64_t l = 0; l < L; ++l) sum += lanes_of[l];
        gk[(oc0 + ob) * per_oc + c * ks + tap + t] = sum;
      }
    }
  };
  int tap = 0;
  for (; tap + TB <= ks; tap += TB) block.template operator()<TB>(tap);
  if (tap < ks) {
    detail::with_tile_size<TB>(ks - tap, [&]<int B>() { block.template operator()<B>(tap); });
  }
}

template <typename T>
void weight_grad(const ConvGeometry& g, const T* x, const T* gy, T* gk, T* ws) {
  const std::int64_t L = lanes<T>();
  const auto lay = detail::ConvWeightGradLayout::of<T>(g);
  T* partial = ws + lay.partial;  // [chunks, OC, IC, KH, KW]
  T* vectors = ws + lay.vectors;  // [chunks, kMaxWeightGradBlock, KH*KW, L]
  T* xp = ws + lay.xp;            // [N, IC, HP, WP] + slack
  T* gyp = ws + lay.gyp;          // [N, OC, OH, OWP]
  const PaddedInput p = PaddedInput::of(g, L);
  const std::int64_t owp = detail::round_up(g.ow, L);
  const Window2d& wn = g.win;
  const std::int64_t ks = g.kernel_size();
  const std::int64_t per_oc = g.ic * ks;
  const std::int64_t wsize = g.oc * per_oc;
  const std::int64_t chunks = fixed_chunks(g.n, detail::kConvBatchChunk);
  const bool unit_stride = wn.sh == 1 && wn.sw == 1;
  const std::int64_t gw_len = detail::round_up(g.oh * p.wp, L);
  const std::int64_t blocks = (g.oc + kMaxTileChannels - 1) / kMaxTileChannels;
  if (unit_stride && blocks * g.ic >= kWholeBatchTasks && gw_len <= kWholeBatchMaxPlane) {
    // Note [Whole-batch weight gradient]: pad every image, then one task per (block, channel).
    parallel_for(chunks, 1, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t chunk = lo; chunk < hi; ++chunk) {
        const std::int64_t n0 = chunk * detail::kConvBatchChunk;
        const std::int64_t n1 = std::min(g.n, n0 + detail::kConvBatchChunk);
        pad_images(g, p, x, xp, n0, n1);
        pad_wide(g, p.wp, gw_len, gy, gyp, n0, n1);
      }
    });
    const std::int64_t wb_blocks = (g.oc + kWholeBatchBlock - 1) / kWholeBatchBlock;
    parallel_for(wb_blocks * g.ic, 1, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t t = lo; t < hi; ++t) {
        const std::int64_t b = t / g.ic, c = t % g.ic;
        std::int64_t i = 0;
        for_each_channel_block(
            g.oc,
            [&](std::int64_t oc0, int ocb) {
              if (i++ != b) return;
              detail::with_tile_size<kWholeBatchBlock>(ocb, [&]<int OCB>() {
                weight_grad_whole_batch<T, OCB>(g, p, gyp, gw_len, xp, oc0, c, gk);
              });
            },
            kWholeBatchBlock);
      }
    });
    return;
  }
  // One task per chunk of images: pad its inputs and gradients, then sum its images'
  // contributions to every weight into the chunk's own slot.
  parallel_for(chunks, 1, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t chunk = lo; chunk < hi; ++chunk) {
      const std::int64_t n0 = chunk * detail::kConvBatchChunk;
      const std::int64_t n1 = std::min(g.n, n0 + detail::kConvBatchChunk);
      pad_images(g, p, x, xp, n0, n1);
      T* pk = partial + chunk * wsize;
      if (unit_stride) {
        pad_wide(g, p.wp, gw_len, gy, gyp, n0, n1);
        T* vk = vectors + chunk * detail::kMaxWeightGradBlock * ks * L;
        for_each_channel_block(g.oc, [&](std::int64_t oc0, int ocb) {
          for (std::int64_t c = 0; c < g.ic; ++c) {
            weight_grad_wide_block(g, p, gyp, gw_len, xp, n0, n1, oc0, ocb, c, vk);
            for (int ob = 0; ob < ocb; ++ob) {
              combine_lane_sums(vk + ob * ks * L, 1, ks, pk + (oc0 + ob) * per_oc + c * ks);
            }
          }
        });
        continue;
      }
      std::fill(pk, pk + wsize, T(0));
      pad_rows(g, owp, gy, gyp, n0, n1);
      for (std::int64_t n = n0; n < n1; ++n) {
        for (std::int64_t oc = 0; oc < g.oc; ++oc) {
          const T* gplane = gyp + (n * g.oc + oc) * g.oh * owp;
          for (std::int64_t c = 0; c < g.ic; ++c) {
            const T* xplane = xp + n * p.image_stride(g) + c * p.hp * p.wp;
            for (int ky = 0; ky < wn.kh; ++ky) {
              for (int kx0 = 0; kx0 < wn.kw; kx0 += kWeightGradColumns) {
                const int nb = std::min(kWeightGradColumns, wn.kw - kx0);
                weight_grad_run(g, p, gplane, owp, xplane + ky * p.wp + kx0,
                                pk + oc * per_oc + c * ks + ky * wn.kw + kx0, nb);
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
}

// Per channel, summing in a fixed order (vector lanes, then lanes in order, then the scalar
// tails): deterministic without a workspace. A task sums up to four channels side by side, in
// the same order each, so that their chains of adds overlap (one chain per task was bound by
// the add latency: the first seed convolution's bias gradient is 1,152 dependent adds per
// channel at batch 16).
template <typename T>
void bias_grad(std::int64_t n, std::int64_t oc, std::int64_t plane, const T* gy, T* gb) {
  const Tag<T> d;
  using V = VecT<T>;
  const std::int64_t L = lanes<T>();
  const std::int64_t pv = plane / L * L;
  constexpr std::int64_t kGroup = 4;
  parallel_for((oc + kGroup - 1) / kGroup, 1, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t c0 = lo * kGroup; c0 < std::min(oc, hi * kGroup); c0 += kGroup) {
      const std::int64_t cn = std::min(kGroup, oc - c0);
      V acc[kGroup];
      T tail[kGroup];
#pragma GCC unroll 4
      for (std::int64_t c = 0; c < kGroup; ++c) {
        acc[c] = hn::Zero(d);
        tail[c] = 0;
      }
      for (std::int64_t i = 0; i < n; ++i) {
        const T* p0 = gy + (i * oc + c0) * plane;
        for (std::int64_t j = 0; j < pv; j += L) {
#pragma GCC unroll 4
          for (std::int64_t c = 0; c < kGroup; ++c) {
            if (c < cn) acc[c] = hn::Add(acc[c], hn::LoadU(d, p0 + c * plane + j));
          }
        }
        for (std::int64_t c = 0; c < cn; ++c) {
          for (std::int64_t j = pv; j < plane; ++j) tail[c] += p0[c * plane + j];
        }
      }
      for (std::int64_t c = 0; c < cn; ++c) gb[c0 + c] = horizontal_sum<T>(acc[c]) + tail[c];
    }
  });
}

}  // namespace

// Note [Kernel export] (ops/simd_export.hpp).
// NOLINTBEGIN(bugprone-macro-parentheses): T is a type.
#define TBGRAD_CONV_KERNELS(X, T, S)                                                          \
  X(ConvForward##S, conv2d_forward_kernel, conv_forward,                                      \
    (const ConvGeometry& g, const T* x, const T* k, const T* b, T* y, T* ws,                  \
     const detail::OutputEpilogue<T>& ep),                                                    \
    (g, x, k, b, y, ws, ep))                                                                  \
  X(ConvInputGradScatter##S, conv2d_input_grad_scatter_kernel, input_grad_scatter,            \
    (const ConvGeometry& g, const T* gy, const T* k, T* gx), (g, gy, k, gx))                  \
  X(ConvWeightGrad##S, conv2d_weight_grad_kernel, weight_grad,                                \
    (const ConvGeometry& g, const T* x, const T* gy, T* gk, T* ws), (g, x, gy, gk, ws))       \
  X(ConvBiasGrad##S, conv2d_bias_grad_kernel, bias_grad,                                      \
    (std::int64_t n, std::int64_t oc, std::int64_t plane, const T* gy, T* gb), (n, oc, plane, gy, gb))
// NOLINTEND(bugprone-macro-parentheses)
TBGRAD_KERNEL_ENTRIES(TBGRAD_CONV_KERNELS)

}  // namespace tbgrad::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace tbgrad {
TBGRAD_KERNEL_EXPORTS(TBGRAD_CONV_KERNELS)
}  // namespace tbgrad
#endif  // HWY_ONCE
