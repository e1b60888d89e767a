// Average pooling, compiled once per SIMD target (this file re-includes itself through
// Highway's foreach_target.h): plain loops over flat arrays, which the compiler vectorises for
// each target in turn.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/pool2d_kernels.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>

#include "graph/parallel.hpp"
#include "ops/pool2d_kernels.hpp"

HWY_BEFORE_NAMESPACE();
namespace tbgrad::HWY_NAMESPACE {
namespace {

using detail::FlatPlane;
using detail::PoolGeometry;
using detail::Window2d;
using detail::flat_plane;

// Average pooling is separable: a window sum is a sum over rows of sums over columns. The
// planes of these models are tiny (24x24 and 9x9), so any loop over one output row, or one
// window, is mostly loop overhead and short vector tails. Instead each pass runs over a whole
// plane as one flat array of H*W values:
//   t[i] = sum over kx of x[i + kx]      (horizontal window sums at every position)
//   u[i] = sum over ky of t[i + ky*W]    (then vertical: u[oy*sh*W + ox*sw] is a window sum)
//   y[oy, ox] = u[oy*sh*W + ox*sw] / (kh*kw)
// Sums at positions whose window would wrap around a row end are computed and never read,
// which costs less than the loop structure that would skip them. Each pass writes its whole
// array before the next reads it, so no load waits on a store still in flight (a partial
// store-to-load forwarding stall, which the row-by-row version of this kernel spent most of
// its time in). Padding is handled by first copying the plane into a zero-padded one.
//
// Backward runs the transposed passes over the (padded) input plane:
//   gu = zero except gu[oy*sh*W + ox*sw] = gy[oy, ox] / (kh*kw)
//   gt[i] = sum over ky of gu[i - ky*W],  gx[i] = sum over kx of gt[i - kx]  (in-range terms)
// and so writes every input-gradient element, in a fixed order. Windows of up to 7 are summed
// in registers, one store per element (window_sum).
//
// Both use a per-plane slice of the workspace, so the result does not depend on how planes are
// split over threads.

// out[i] = s[i] + s[i + stride] + ... + s[i + (k-1)*stride] for i in [0, n), added in that
// order. Window sizes up to 7 keep the k terms in registers (one store per element instead of
// k); larger ones add one term per pass over out.
template <int K, typename T>
void window_sum_fixed(const T* __restrict s, std::int64_t stride, std::int64_t n,
                      T* __restrict out) {
  for (std::int64_t i = 0; i < n; ++i) {
    T acc = s[i];
    for (int k = 1; k < K; ++k) acc += s[i + k * stride];
    out[i] = acc;
  }
}

template <typename T>
void window_sum(const T* __restrict s, int k, std::int64_t stride, std::int64_t n,
                T* __restrict out) {
  switch (k) {
    case 1: return window_sum_fixed<1>(s, stride, n, out);
    case 2: return window_sum_fixed<2>(s, stride, n, out);
    case 3: return window_sum_fixed<3>(s, stride, n, out);
    case 4: return window_sum_fixed<4>(s, stride, n, out);
    case 5: return window_sum_fixed<5>(s, stride, n, out);
    case 6: return window_sum_fixed<6>(s, stride, n, out);
    case 7: return window_sum_fixed<7>(s, stride, n, out);
    default:
      for (std::int64_t i = 0; i < n; ++i) out[i] = s[i];
      for (int j = 1; j < k; ++j) {
        const T* __restrict sj = s + j * stride;
        for (std::int64_t i = 0; i < n; ++i) out[i] += sj[i];
      }
  }
}

template <typename T>
void avg_pool_plane(const PoolGeometry& g, const T* __restrict x, T* __restrict y,
                    T* __restrict work, T inv) {
  const Window2d& wn = g.win;
  const FlatPlane f = flat_plane(g);
  const std::int64_t n = f.size();
  T* __restrict t = work;
  T* __restrict u = work + n;
  const T* __restrict src = x;
  if (f.padded) {
    T* __restrict p = work + 2 * n;
    std::fill(p, p + n, T(0));
    for (std::int64_t r = 0; r < g.h; ++r) {
      std::copy(x + r * g.w, x + (r + 1) * g.w, p + (r + wn.ph) * f.w + wn.pw);
    }
    src = p;
  }
  const std::int64_t nt = n - wn.kw + 1;
  window_sum(src, wn.kw, 1, nt, t);
  const std::int64_t nu = nt - static_cast<std::int64_t>(wn.kh - 1) * f.w;
  window_sum(t, wn.kh, f.w, nu, u);
  for (std::int64_t oy = 0; oy < g.oh; ++oy) {
    const T* __restrict ur = u + oy * wn.sh * f.w;
    T* __restrict yr = y + oy * g.ow;
    for (std::int64_t ox = 0; ox < g.ow; ++ox) yr[ox] = ur[ox * wn.sw] * inv;
  }
}

template <typename T>
void avg_pool_backward_plane(const PoolGeometry& g, const T* __restrict gy, T* __restrict gx,
                             T* __restrict work, T inv) {
  const Window2d& wn = g.win;
  const FlatPlane f = flat_plane(g);
  const std::int64_t n = f.size();
  // [zeros (kh-1)*W | gu n | zeros kw-1 | gt n | padded gradient n]: with the zeros in front,
  // gt[i] = sum over ky of gu[i - ky*W] and gx[i] = sum over kx of gt[i - kx] need no bounds.
  const std::int64_t gu_front = static_cast<std::int64_t>(wn.kh - 1) * f.w;
  const std::int64_t gt_front = wn.kw - 1;
  T* __restrict gu = work + gu_front;
  T* __restrict gt = gu + n + gt_front;
  T* __restrict out = f.padded ? gt + n : gx;
  std::fill(work, gu + n, T(0));
  for (std::int64_t oy = 0; oy < g.oh; ++oy) {
    T* __restrict ur = gu + oy * wn.sh * f.w;
    const T* __restrict gr = gy + oy * g.ow;
    for (std::int64_t ox = 0; ox < g.ow; ++ox) ur[ox * wn.sw] = gr[ox] * inv;
  }
  window_sum(gu - gu_front, wn.kh, f.w, n, gt);
  std::fill(gt - gt_front, gt, T(0));
  window_sum(gt - gt_front, wn.kw, 1, n, out);
  if (f.padded) {
    for (std::int64_t r = 0; r < g.h; ++r) {
      const T* row = out + (r + wn.ph) * f.w + wn.pw;
      std::copy(row, row + g.w, gx + r * g.w);
    }
  }
}

// plane_fn(p, its slice of work, 1 / window size) for every plane p, over the threads.
template <typename T, typename PlaneFn>
void for_each_plane(const PoolGeometry& g, T* work, const PlaneFn& plane_fn) {
  const std::int64_t per_plane = detail::avg_pool_work(g);
  const T inv = T(1) / static_cast<T>(g.win.kh * g.win.kw);
  parallel_for(g.planes, detail::plane_grain(g), [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t p = lo; p < hi; ++p) plane_fn(p, work + p * per_plane, inv);
  });
}

template <typename T>
void avg_pool(const PoolGeometry& g, const T* x, T* y, T* work) {
  for_each_plane(g, work, [&](std::int64_t p, T* scratch, T inv) {
    avg_pool_plane(g, x + p * g.h * g.w, y + p * g.oh * g.ow, scratch, inv);
  });
}

template <typename T>
void avg_pool_backward(const PoolGeometry& g, const T* gy, T* gx, T* work) {
  for_each_plane(g, work, [&](std::int64_t p, T* scratch, T inv) {
    avg_pool_backward_plane(g, gy + p * g.oh * g.ow, gx + p * g.h * g.w, scratch, inv);
  });
}

}  // namespace

void AvgPoolF32(const PoolGeometry& g, const float* x, float* y, float* work) {
  avg_pool(g, x, y, work);
}
void AvgPoolF64(const PoolGeometry& g, const double* x, double* y, double* work) {
  avg_pool(g, x, y, work);
}
void AvgPoolBackwardF32(const PoolGeometry& g, const float* gy, float* gx, float* work) {
  avg_pool_backward(g, gy, gx, work);
}
void AvgPoolBackwardF64(const PoolGeometry& g, const double* gy, double* gx, double* work) {
  avg_pool_backward(g, gy, gx, work);
}

}  // namespace tbgrad::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace tbgrad {
HWY_EXPORT(AvgPoolF32);
HWY_EXPORT(AvgPoolF64);
HWY_EXPORT(AvgPoolBackwardF32);
HWY_EXPORT(AvgPoolBackwardF64);

namespace detail {
void avg_pool_kernel(const PoolGeometry& g, const float* x, float* y, float* work) {
  HWY_DYNAMIC_DISPATCH(AvgPoolF32)(g, x, y, work);
  end_vector_kernel();  // Note [Upper vector state] (graph/parallel.hpp)
}
void avg_pool_kernel(const PoolGeometry& g, const double* x, double* y, double* work) {
  HWY_DYNAMIC_DISPATCH(AvgPoolF64)(g, x, y, work);
  end_vector_kernel();  // Note [Upper vector state] (graph/parallel.hpp)
}
void avg_pool_backward_kernel(const PoolGeometry& g, const float* gy, float* gx, float* work) {
  HWY_DYNAMIC_DISPATCH(AvgPoolBackwardF32)(g, gy, gx, work);
  end_vector_kernel();  // Note [Upper vector state] (graph/parallel.hpp)
}
void avg_pool_backward_kernel(const PoolGeometry& g, const double* gy, double* gx,
                              double* work) {
  HWY_DYNAMIC_DISPATCH(AvgPoolBackwardF64)(g, gy, gx, work);
  end_vector_kernel();  // Note [Upper vector state] (graph/parallel.hpp)
}
}  // namespace detail
}  // namespace tbgrad
#endif  // HWY_ONCE
