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

// Average pooling is separable: a window sum is a sum over columns of sums over rows. The
// planes of these models are tiny (24x24 and 9x9), so any loop over one output column, or one
// window, is mostly loop overhead and short vector tails. Instead each pass runs over whole
// rows of the plane (W values; with the padding, if any, copied in first), or over several
// rows as one flat array:
//   v[oy, x] = sum over ky of x[oy*sh + ky, x]        (vertical sums, at the output rows only)
//   h[i] = sum over kx of v[i + kx]                    (horizontal, over v as one flat array)
//   y[oy, ox] = h[oy*W + ox*sw] / (kh*kw)
// Vertical first, because only the output rows need it: with stride 2 that is half the rows,
// and the horizontal pass then runs over those rows only. (Horizontal first, over every row,
// did about twice the work for the seed model's 4x4 windows at stride 2.) Sums at positions
// whose window would wrap around a row end are computed and never read, which costs less than
// the loop structure that would skip them. Each pass writes its whole array before the next
// reads it, so no load waits on a store still in flight (a partial store-to-load forwarding
// stall, which an earlier row-by-row version of this kernel spent most of its time in).
//
// Backward runs the transposed passes, in reverse:
//   gh = zero except gh[oy*W + ox*sw] = gy[oy, ox] / (kh*kw)      (output rows only)
//   gv[i] = sum over kx of gh[i - kx]                             (in-range terms)
//   gx[r, x] = sum over the output rows oy whose window covers row r, in increasing oy, of
//              gv[oy, x]
// and so writes every input-gradient element, in a fixed order. Windows of up to 7 are summed
// in registers, one store per element (window_sum).
//
// Both use a per-plane slice of the workspace (avg_pool_work), so the result does not depend
// on how planes are split over threads, and the same adds in the same order on every target.

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
  const std::int64_t n = f.size(), rows = g.oh * f.w;
  T* __restrict v = work;
  T* __restrict h = work + rows;
  const T* __restrict src = x;
  if (f.padded) {
    T* __restrict p = work + 2 * rows;
    std::fill(p, p + n, T(0));
    for (std::int64_t r = 0; r < g.h; ++r) {
      std::copy(x + r * g.w, x + (r + 1) * g.w, p + (r + wn.ph) * f.w + wn.pw);
    }
    src = p;
  }
  if (wn.sh == 1) {  // the output rows are consecutive: one flat pass
    window_sum(src, wn.kh, f.w, rows, v);
  } else {
    for (std::int64_t oy = 0; oy < g.oh; ++oy) {
      window_sum(src + oy * wn.sh * f.w, wn.kh, f.w, f.w, v + oy * f.w);
    }
  }
  window_sum(v, wn.kw, 1, rows - wn.kw + 1, h);
  for (std::int64_t oy = 0; oy < g.oh; ++oy) {
    const T* __restrict hr = h + oy * f.w;
    T* __restrict yr = y + oy * g.ow;
    for (std::int64_t ox = 0; ox < g.ow; ++ox) yr[ox] = hr[ox * wn.sw] * inv;
  }
}

template <typename T>
void avg_pool_backward_plane(const PoolGeometry& g, const T* __restrict gy, T* __restrict gx,
                             T* __restrict work, T inv) {
  const Window2d& wn = g.win;
  const FlatPlane f = flat_plane(g);
  const std::int64_t rows = g.oh * f.w;
  // [zeros kw-1 | gh rows | zeros (kh-1)*W | gv rows | zeros (kh-1)*W | padded gradient]: with
  // the zeros around them, gv[i] = sum over kx of gh[i - kx] and (stride 1) gx[i] = sum over
  // ky of gv[i - ky*W] need no bounds.
  const std::int64_t gh_front = wn.kw - 1;
  const std::int64_t gv_front = static_cast<std::int64_t>(wn.kh - 1) * f.w;
  T* __restrict gh = work + gh_front;
  T* __restrict gv = gh + rows + gv_front;
  T* __restrict out = f.padded ? gv + rows + gv_front : gx;
  std::fill(work, gh + rows, T(0));
  for (std::int64_t oy = 0; oy < g.oh; ++oy) {
    T* __restrict hr = gh + oy * f.w;
    const T* __restrict gr = gy + oy * g.ow;
    for (std::int64_t ox = 0; ox < g.ow; ++ox) hr[ox * wn.sw] = gr[ox] * inv;
  }
  window_sum(gh - gh_front, wn.kw, 1, rows, gv);
  if (wn.sh == 1) {
    std::fill(gv - gv_front, gv, T(0));
    std::fill(gv + rows, gv + rows + gv_front, T(0));
    window_sum(gv - gv_front, wn.kh, f.w, f.size(), out);
  } else {
    // Row r gets the output rows oy with r - oy*sh in [0, kh), in increasing oy.
    for (std::int64_t r = 0; r < f.h; ++r) {
      const std::int64_t lo = r < wn.kh ? 0 : (r - wn.kh) / wn.sh + 1;
      const std::int64_t hi = std::min<std::int64_t>(g.oh, r / wn.sh + 1);
      T* __restrict o = out + r * f.w;
      if (lo >= hi) {
        std::fill(o, o + f.w, T(0));
        continue;
      }
      const T* __restrict first = gv + lo * f.w;
      if (hi - lo == 1) {
        std::copy(first, first + f.w, o);
      } else {
        window_sum(first, static_cast<int>(hi - lo), f.w, f.w, o);
      }
    }
  }
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
