#include "ops/conv2d_general.hpp"

#include <algorithm>
#include <cstdint>

#include "graph/parallel.hpp"

namespace tbgrad::detail {
namespace {

// Smallest block of planes worth a task: about 16k multiply-adds.
std::int64_t grain_for(std::int64_t work_per_item) {
  return std::max<std::int64_t>(1, 16384 / std::max<std::int64_t>(1, work_per_item));
}

// The valid output ranges of tap (ky, kx): rows [oy_lo, oy_hi), columns [ox_lo, ox_hi).
struct TapRange {
  std::int64_t oy_lo, oy_hi, ox_lo, ox_hi;
  TapRange(const ConvGeometry& g, int ky, int kx) {
    const Window2d& wn = g.win;
    Window2d::valid_range(std::int64_t{ky} * wn.dh, wn.sh, wn.ph, g.h, g.oh, oy_lo, oy_hi);
    Window2d::valid_range(std::int64_t{kx} * wn.dw, wn.sw, wn.pw, g.w, g.ow, ox_lo, ox_hi);
  }
  bool empty() const { return oy_lo >= oy_hi || ox_lo >= ox_hi; }
};

// The input offset of output (oy, 0) at tap (ky, kx) within a plane: row oy*sh - ph + ky*dh,
// column -pw + kx*dw (ox*sw is added by the caller).
inline std::int64_t tap_offset(const ConvGeometry& g, std::int64_t oy, int ky, int kx) {
  const Window2d& wn = g.win;
  return (oy * wn.sh - wn.ph + std::int64_t{ky} * wn.dh) * g.w - wn.pw + std::int64_t{kx} * wn.dw;
}

template <typename T>
void forward(const ConvGeometry& g, const T* x, const T* k, const T* b, T* y) {
  const std::int64_t icg = g.ic_per_group(), ocg = g.oc_per_group();
  const std::int64_t ks = g.kernel_size(), plane = g.oh * g.ow, in_plane = g.h * g.w;
  const std::int64_t sw = g.win.sw;
  parallel_for(g.n * g.oc, grain_for(plane * icg * ks), [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t t = lo; t < hi; ++t) {
      const std::int64_t n = t / g.oc, oc = t % g.oc, c0 = oc / ocg * icg;
      T* __restrict yp = y + t * plane;
      std::fill(yp, yp + plane, b ? b[oc] : T(0));
      for (std::int64_t cg = 0; cg < icg; ++cg) {
        const T* xp = x + (n * g.ic + c0 + cg) * in_plane;
        const T* kc = k + (oc * icg + cg) * ks;
        for (int ky = 0; ky < g.win.kh; ++ky) {
          for (int kx = 0; kx < g.win.kw; ++kx) {
            const TapRange r(g, ky, kx);
            if (r.empty()) continue;
            const T kv = kc[ky * g.win.kw + kx];
            const std::int64_t len = r.ox_hi - r.ox_lo;
            for (std::int64_t oy = r.oy_lo; oy < r.oy_hi; ++oy) {
              const T* __restrict xr = xp + tap_offset(g, oy, ky, kx) + r.ox_lo * sw;
              T* __restrict yr = yp + oy * g.ow + r.ox_lo;
              if (sw == 1) {
                for (std::int64_t i = 0; i < len; ++i) yr[i] += kv * xr[i];
              } else {
                for (std::int64_t i = 0; i < len; ++i) yr[i] += kv * xr[i * sw];
              }
            }
          }
        }
      }
    }
  });
}

template <typename T>
void input_grad(const ConvGeometry& g, const T* gy, const T* k, T* gx) {
  const std::int64_t icg = g.ic_per_group(), ocg = g.oc_per_group();
  const std::int64_t ks = g.kernel_size(), plane = g.oh * g.ow, in_plane = g.h * g.w;
  const std::int64_t sw = g.win.sw;
  parallel_for(g.n * g.ic, grain_for(plane * ocg * ks), [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t t = lo; t < hi; ++t) {
      const std::int64_t n = t / g.ic, c = t % g.ic, cg = c % icg, oc0 = c / icg * ocg;
      T* __restrict gp = gx + t * in_plane;
      std::fill(gp, gp + in_plane, T(0));
      for (std::int64_t o = 0; o < ocg; ++o) {
        const std::int64_t oc = oc0 + o;
        const T* gyp = gy + (n * g.oc + oc) * plane;
        const T* kc = k + (oc * icg + cg) * ks;
        for (int ky = 0; ky < g.win.kh; ++ky) {
          for (int kx = 0; kx < g.win.kw; ++kx) {
            const TapRange r(g, ky, kx);
            if (r.empty()) continue;
            const T kv = kc[ky * g.win.kw + kx];
            const std::int64_t len = r.ox_hi - r.ox_lo;
            for (std::int64_t oy = r.oy_lo; oy < r.oy_hi; ++oy) {
              T* __restrict xr = gp + tap_offset(g, oy, ky, kx) + r.ox_lo * sw;
              const T* __restrict gr = gyp + oy * g.ow + r.ox_lo;
              if (sw == 1) {
                for (std::int64_t i = 0; i < len; ++i) xr[i] += kv * gr[i];
              } else {
                for (std::int64_t i = 0; i < len; ++i) xr[i * sw] += kv * gr[i];
              }
            }
          }
        }
      }
    }
  });
}

// Interleaved partial sums of a row's products: lane j takes columns lo + j, lo + j + kLanes,
// ...; the lanes are added in order at the end. A fixed order (the geometry's alone) that the
// compiler can vectorise, unlike one chain of adds.
constexpr int kLanes = 8;

template <typename T>
void weight_grad(const ConvGeometry& g, const T* x, const T* gy, T* gk) {
  const std::int64_t icg = g.ic_per_group(), ocg = g.oc_per_group();
  const std::int64_t ks = g.kernel_size(), plane = g.oh * g.ow, in_plane = g.h * g.w;
  const std::int64_t sw = g.win.sw;
  // One task per (output channel, input channel of its group): its KH*KW weights, each summed
  // over the whole batch by that task alone.
  parallel_for(g.oc * icg, grain_for(g.n * plane * ks), [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t t = lo; t < hi; ++t) {
      const std::int64_t oc = t / icg, cg = t % icg, c = oc / ocg * icg + cg;
      for (int ky = 0; ky < g.win.kh; ++ky) {
        for (int kx = 0; kx < g.win.kw; ++kx) {
          const TapRange r(g, ky, kx);
          T lane[kLanes] = {};
          T tail = 0;
          if (!r.empty()) {
            const std::int64_t len = r.ox_hi - r.ox_lo, body = len / kLanes * kLanes;
            for (std::int64_t n = 0; n < g.n; ++n) {
              const T* xp = x + (n * g.ic + c) * in_plane;
              const T* gyp = gy + (n * g.oc + oc) * plane;
              for (std::int64_t oy = r.oy_lo; oy < r.oy_hi; ++oy) {
                const T* __restrict xr = xp + tap_offset(g, oy, ky, kx) + r.ox_lo * sw;
                const T* __restrict gr = gyp + oy * g.ow + r.ox_lo;
                for (std::int64_t i = 0; i < body; i += kLanes) {
                  if (sw == 1) {
                    for (int j = 0; j < kLanes; ++j) lane[j] += gr[i + j] * xr[i + j];
                  } else {
                    for (int j = 0; j < kLanes; ++j) lane[j] += gr[i + j] * xr[(i + j) * sw];
                  }
                }
                for (std::int64_t i = body; i < len; ++i) tail += gr[i] * xr[i * sw];
              }
            }
          }
          T sum = 0;
          for (int j = 0; j < kLanes; ++j) sum += lane[j];
          gk[t * ks + ky * g.win.kw + kx] = sum + tail;
        }
      }
    }
  });
}

}  // namespace

void conv2d_general_forward(const ConvGeometry& g, const float* x, const float* k, const float* b,
                            float* y) {
  forward(g, x, k, b, y);
}
void conv2d_general_forward(const ConvGeometry& g, const double* x, const double* k,
                            const double* b, double* y) {
  forward(g, x, k, b, y);
}
void conv2d_general_input_grad(const ConvGeometry& g, const float* gy, const float* k,
                               float* gx) {
  input_grad(g, gy, k, gx);
}
void conv2d_general_input_grad(const ConvGeometry& g, const double* gy, const double* k,
                               double* gx) {
  input_grad(g, gy, k, gx);
}
void conv2d_general_weight_grad(const ConvGeometry& g, const float* x, const float* gy,
                                float* gk) {
  weight_grad(g, x, gy, gk);
}
void conv2d_general_weight_grad(const ConvGeometry& g, const double* x, const double* gy,
                                double* gk) {
  weight_grad(g, x, gy, gk);
}

}  // namespace tbgrad::detail
