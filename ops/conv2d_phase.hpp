// Strided convolutions as stride-1 ones (Note [Phases]): the geometry and the copies in and out.
// Internal to ops/conv2d.cpp.
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <type_traits>
#include <cstdint>
#include <optional>

#include "graph/parallel.hpp"
#include "ops/conv2d_kernels.hpp"

namespace tbgrad::detail {

// Note [Phases]: a convolution of stride (SH, SW) reads input row SH*i + kh for output row i and
// kernel row kh. Writing kh = SH*a + p (p < SH the row's phase), that is row i + a of the input's
// phase-p rows (input rows SH*u + p, u = 0, 1, ...). So the strided convolution of x by k is the
// stride-1, unpadded convolution of
//   x' [N, IC*PH*PW, U, V]:            x'[n, (c*PH + p)*PW + q, u, v] = xpad[n, c, SH*u + p, SW*v + q]
//   k' [OC, IC*PH*PW, KH', KW']:       k'[o, (c*PH + p)*PW + q, a, b] = k[o, c, SH*a + p, SW*b + q]
// (zero where SH*a + p >= KH or SW*b + q >= KW), with KH' = ceil(KH / SH), PH = min(SH, KH) the
// phases that meet a kernel row (likewise W), U = OH + KH' - 1, V = OW + KW' - 1, and xpad the
// zero-padded input (zero outside it). The stride-1 kernels are register-blocked along output
// rows; the strided ones gather every SH-th input element and ran at a tenth of their speed
// (docs/performance.md). The zero taps cost (KH'*KW'*PH*PW) / (KH*KW) in multiply-adds: 16/9 for
// 3x3 stride 2, none for 1x1 or 2x2 stride 2.
// A zero tap multiplies an input element that the strided convolution does not read there, which
// is harmless for finite values but turns a NaN or an infinity into NaN in outputs that must not
// see it. So the ops check their input first (all_finite) and run the strided kernels (the direct
// ones: ops/conv2d_kernels.hpp) when it holds NaN or infinity: NaN lands exactly where PyTorch's
// does.
// The gradients follow: the input gradient of x' (a stride-1 input gradient) maps back to x
// element by element (each x element is one x' element, or no tap reads it and its gradient is
// 0), and the weight gradient of k' back to k tap by tap. Sums run in the stride-1 kernels' fixed
// order, so the bits do not depend on the thread count.
struct PhaseGeometry {
  ConvGeometry s1;  // x' * k', stride 1, no padding: s1.oh == OH, s1.ow == OW
  ConvGeometry g;   // the strided convolution
  int ph, pw;       // phases that meet a kernel row, column (PH, PW above)

  // For a dense convolution with a stride above 1; nullopt otherwise.
  static std::optional<PhaseGeometry> of(const ConvGeometry& g) {
    const Window2d& w = g.win;
    if (!g.dense() || (w.sh == 1 && w.sw == 1)) return std::nullopt;
    const int ph = std::min(w.sh, w.kh), pw = std::min(w.sw, w.kw);
    const std::int64_t kh = (w.kh + w.sh - 1) / w.sh, kw = (w.kw + w.sw - 1) / w.sw;
    const std::int64_t c = g.ic * ph * pw;
    const Conv2dOptions o{1, 0};
    return PhaseGeometry{ConvGeometry(Shape{g.n, c, g.oh + kh - 1, g.ow + kw - 1},
                                      Shape{g.oc, c, kh, kw}, o),
                         g, ph, pw};
  }
  std::int64_t x_elements() const { return s1.n * s1.ic * s1.h * s1.w; }
  std::int64_t k_elements() const { return s1.oc * s1.ic * s1.kernel_size(); }
};

// Elements per task of the copies.
inline constexpr std::int64_t kPhaseGrain = 16384;

// Whether p[0, n) holds neither NaN nor infinity.
template <typename T>
bool all_finite(const T* p, std::int64_t n) {
  std::atomic<bool> finite{true};
  // An all-ones exponent: NaN or infinity. Integer ors vectorise; a float sum would not.
  using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  constexpr Bits kExponent = static_cast<Bits>(sizeof(T) == 4 ? 0x7f800000ull : 0x7ff0000000000000ull);
  parallel_for(n, 4 * kPhaseGrain, [&](std::int64_t lo, std::int64_t hi) {
    Bits bad = 0;
    for (std::int64_t i = lo; i < hi; ++i) {
      bad |= (std::bit_cast<Bits>(p[i]) & kExponent) == kExponent;
    }
    if (bad) finite.store(false, std::memory_order_relaxed);
  });
  return finite.load(std::memory_order_relaxed);
}

// x [N, IC, H, W] -> x' (Note [Phases]).
template <typename T>
void phase_input(const PhaseGeometry& p, const T* x, T* xs) {
  const ConvGeometry& g = p.g;
  const std::int64_t u_n = p.s1.h, v_n = p.s1.w, plane = u_n * v_n;
  const std::int64_t planes = g.n * g.ic * p.ph * p.pw;
  parallel_for(planes, std::max<std::int64_t>(1, kPhaseGrain / std::max<std::int64_t>(1, plane)),
               [&](std::int64_t lo, std::int64_t hi) {
                 for (std::int64_t t = lo; t < hi; ++t) {
                   const std::int64_t q = t % p.pw, r = (t / p.pw) % p.ph, nc = t / (p.pw * p.ph);
                   const T* xi = x + nc * g.h * g.w;
                   T* out = xs + t * plane;
                   for (std::int64_t u = 0; u < u_n; ++u) {
                     const std::int64_t h = u * g.win.sh + r - g.win.ph;
                     T* row = out + u * v_n;
                     if (h < 0 || h >= g.h) {
                       std::fill(row, row + v_n, T(0));
                       continue;
                     }
                     const T* xr = xi + h * g.w;
                     for (std::int64_t v = 0; v < v_n; ++v) {
                       const std::int64_t w = v * g.win.sw + q - g.win.pw;
                       row[v] = w >= 0 && w < g.w ? xr[w] : T(0);
                     }
                   }
                 }
               });
}

// k [OC, IC, KH, KW] -> k' (Note [Phases]).
template <typename T>
void phase_kernel(const PhaseGeometry& p, const T* k, T* ks) {
  const ConvGeometry& g = p.g;
  const std::int64_t kh = p.s1.win.kh, kw = p.s1.win.kw;
  for (std::int64_t o = 0; o < g.oc; ++o) {
    for (std::int64_t c = 0; c < g.ic; ++c) {
      const T* src = k + (o * g.ic + c) * g.kernel_size();
      for (int r = 0; r < p.ph; ++r) {
        for (int q = 0; q < p.pw; ++q) {
          T* dst = ks + ((o * g.ic + c) * p.ph * p.pw + r * p.pw + q) * kh * kw;
          for (std::int64_t a = 0; a < kh; ++a) {
            for (std::int64_t b = 0; b < kw; ++b) {
              const std::int64_t i = a * g.win.sh + r, j = b * g.win.sw + q;
              dst[a * kw + b] = i < g.win.kh && j < g.win.kw ? src[i * g.win.kw + j] : T(0);
            }
          }
        }
      }
    }
  }
}

// The gradient of x' [N, IC*PH*PW, U, V] -> the gradient of x [N, IC, H, W].
template <typename T>
void unphase_input_grad(const PhaseGeometry& p, const T* gxs, T* gx) {
  const ConvGeometry& g = p.g;
  const std::int64_t u_n = p.s1.h, v_n = p.s1.w, plane = g.h * g.w;
  parallel_for(g.n * g.ic, std::max<std::int64_t>(1, kPhaseGrain / std::max<std::int64_t>(1, plane)),
               [&](std::int64_t lo, std::int64_t hi) {
                 for (std::int64_t nc = lo; nc < hi; ++nc) {
                   T* out = gx + nc * plane;
                   const T* in = gxs + nc * p.ph * p.pw * u_n * v_n;
                   for (std::int64_t h = 0; h < g.h; ++h) {
                     const std::int64_t hp = h + g.win.ph, r = hp % g.win.sh, u = hp / g.win.sh;
                     T* row = out + h * g.w;
                     if (r >= p.ph || u >= u_n) {
                       std::fill(row, row + g.w, T(0));
                       continue;
                     }
                     for (std::int64_t w = 0; w < g.w; ++w) {
                       const std::int64_t wp = w + g.win.pw, q = wp % g.win.sw, v = wp / g.win.sw;
                       row[w] = q < p.pw && v < v_n ? in[((r * p.pw + q) * u_n + u) * v_n + v] : T(0);
                     }
                   }
                 }
               });
}

// The gradient of k' -> the gradient of k [OC, IC, KH, KW].
template <typename T>
void unphase_kernel_grad(const PhaseGeometry& p, const T* gks, T* gk) {
  const ConvGeometry& g = p.g;
  const std::int64_t kh = p.s1.win.kh, kw = p.s1.win.kw;
  for (std::int64_t o = 0; o < g.oc; ++o) {
    for (std::int64_t c = 0; c < g.ic; ++c) {
      T* dst = gk + (o * g.ic + c) * g.kernel_size();
      for (std::int64_t i = 0; i < g.win.kh; ++i) {
        for (std::int64_t j = 0; j < g.win.kw; ++j) {
          const std::int64_t r = i % g.win.sh, q = j % g.win.sw;
          dst[i * g.win.kw + j] =
              gks[(((o * g.ic + c) * p.ph + r) * p.pw + q) * kh * kw + (i / g.win.sh) * kw +
                  j / g.win.sw];
        }
      }
    }
  }
}

}  // namespace tbgrad::detail
