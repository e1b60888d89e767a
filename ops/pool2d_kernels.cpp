// Average pooling, compiled once per SIMD target (this file re-includes itself through
// Highway's foreach_target.h): plain loops over flat arrays, which the compiler vectorises for
// each target in turn.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/pool2d_kernels.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <type_traits>

#include "graph/parallel.hpp"
#include "ops/pool2d_kernels.hpp"
#include "ops/simd-inl.hpp"
#include "ops/simd_export.hpp"

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
// (at column strides 1 and 2 the last two are one pass, window_pick, which takes h only at the
// output columns, in the same order of adds).
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

// Rows of window sums: for r in [0, rows), out[r*out_stride + i] = the window_sum of
// s + r*in_stride (k terms, term_stride apart) at i in [0, len). One call for a plane's rows,
// the row loop inside it: a call per row of 24 or 9 values cost more than its adds. Rows that
// follow each other in both arrays run as one flat pass (no short row tails).
template <int K, typename T>
void window_sum_rows_fixed(const T* __restrict s, std::int64_t term_stride, std::int64_t rows,
                           std::int64_t len, std::int64_t in_stride, std::int64_t out_stride,
                           T* __restrict out) {
  for (std::int64_t r = 0; r < rows; ++r) {
    window_sum_fixed<K>(s + r * in_stride, term_stride, len, out + r * out_stride);
  }
}

template <typename T>
void window_sum_rows(const T* __restrict s, int k, std::int64_t term_stride, std::int64_t rows,
                     std::int64_t len, std::int64_t in_stride, std::int64_t out_stride,
                     T* __restrict out) {
  if (in_stride == len && out_stride == len) return window_sum(s, k, term_stride, rows * len, out);
  switch (k) {
    case 1: return window_sum_rows_fixed<1>(s, term_stride, rows, len, in_stride, out_stride, out);
    case 2: return window_sum_rows_fixed<2>(s, term_stride, rows, len, in_stride, out_stride, out);
    case 3: return window_sum_rows_fixed<3>(s, term_stride, rows, len, in_stride, out_stride, out);
    case 4: return window_sum_rows_fixed<4>(s, term_stride, rows, len, in_stride, out_stride, out);
    default:
      for (std::int64_t r = 0; r < rows; ++r) {
        window_sum(s + r * in_stride, k, term_stride, len, out + r * out_stride);
      }
  }
}

// fn(step) with the column stride sw as a constant where it is 1 or 2 (so the compiler
// vectorises the strided loads and stores of pick and place), as a run-time value otherwise.
template <typename Fn>
void with_column_stride(std::int64_t sw, const Fn& fn) {
  if (sw == 1) return fn(std::integral_constant<std::int64_t, 1>());
  if (sw == 2) return fn(std::integral_constant<std::int64_t, 2>());
  fn(sw);
}

// y[r, ox] = h[r*h_row + ox*sw] * inv for r in [0, rows), ox in [0, ow): the window sums at
// the output columns.
template <typename T>
void pick(const T* __restrict h, std::int64_t h_row, std::int64_t sw, std::int64_t rows,
          std::int64_t ow, T* __restrict y, T inv) {
  with_column_stride(sw, [&](auto step) {
    for (std::int64_t r = 0; r < rows; ++r) {
      const T* __restrict hr = h + r * h_row;
      T* __restrict yr = y + r * ow;
      for (std::int64_t ox = 0; ox < ow; ++ox) yr[ox] = hr[ox * step] * inv;
    }
  });
}

// y[r, ox] = (v[b] + v[b + 1] + ... + v[b + kw - 1]) * inv with b = r*v_row + ox*SW, for r in
// [0, rows), ox in [0, ow): the horizontal window sums at the output columns only, added in kx
// order, so the same adds as window_sum and then pick. Whole vectors, a vector past a row's end
// writing the start of the next row, which that row's own stores then overwrite; one element
// at a time only where a vector would read past v_len (the elements of v computed) or write
// past y_len (this task's outputs from y on). At stride 2 the even and odd columns come from
// one LoadInterleaved2 per pair of taps. (window_sum over every position and then pick, its
// strided loads and its scalar tails, took about half of the first pooling layer's time.)
template <int SW, int KW, typename T>
void window_pick(const T* HWY_RESTRICT v, std::int64_t v_row, std::int64_t v_len,
                 std::int64_t rows, std::int64_t ow, T* HWY_RESTRICT y, std::int64_t y_len,
                 T inv) {
  static_assert(SW == 1 || SW == 2);
  constexpr int kw = KW;
  const Tag<T> d;
  using V = VecT<T>;
  const std::int64_t L = lanes<T>();
  const V vinv = hn::Set(d, inv);
  // How far past b a vector's loads reach: kw shifted loads, or (kw + 1) / 2 pairs of vectors.
  const std::int64_t reach = SW == 1 ? kw - 1 + L : 2 * (std::int64_t{kw + 1} / 2 - 1) + 2 * L;
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* HWY_RESTRICT vr = v + r * v_row;
    T* HWY_RESTRICT yr = y + r * ow;
    std::int64_t ox = 0;
    for (; ox < ow; ox += L) {
      if (r * v_row + ox * SW + reach > v_len || r * ow + ox + L > y_len) break;
      const T* HWY_RESTRICT b = vr + ox * SW;
      V acc;
      if constexpr (SW == 1) {
        acc = hn::LoadU(d, b);
#pragma GCC unroll 8
        for (int kx = 1; kx < kw; ++kx) acc = hn::Add(acc, hn::LoadU(d, b + kx));
      } else {
        V even[(KW + 1) / 2], odd[(KW + 1) / 2];
#pragma GCC unroll 8
        for (int a = 0; a < (KW + 1) / 2; ++a) hn::LoadInterleaved2(d, b + 2 * a, even[a], odd[a]);
        acc = even[0];
#pragma GCC unroll 8
        for (int kx = 1; kx < kw; ++kx) {
          acc = hn::Add(acc, kx % 2 == 0 ? even[kx / 2] : odd[kx / 2]);
        }
      }
      hn::StoreU(hn::Mul(acc, vinv), d, yr + ox);
    }
    for (; ox < ow; ++ox) {
      const T* HWY_RESTRICT b = vr + ox * SW;
      T acc = b[0];
#pragma GCC unroll 8
      for (int kx = 1; kx < kw; ++kx) acc += b[kx];
      yr[ox] = acc * inv;
    }
  }
}

// Whether window_pick takes the place of window_sum and pick: column strides 1 and 2, windows
// up to 7 wide.
inline bool window_pick_covers(std::int64_t sw, int kw) { return sw <= 2 && kw <= 7; }

// window_pick with the stride and the window size as constants (window_pick_covers(sw, kw)).
template <typename T>
void window_pick_any(std::int64_t sw, int kw, const T* HWY_RESTRICT v, std::int64_t v_row,
                     std::int64_t v_len, std::int64_t rows, std::int64_t ow, T* HWY_RESTRICT y,
                     std::int64_t y_len, T inv) {
  const auto run = [&]<int SW>() {
    switch (kw) {
      case 1: return window_pick<SW, 1>(v, v_row, v_len, rows, ow, y, y_len, inv);
      case 2: return window_pick<SW, 2>(v, v_row, v_len, rows, ow, y, y_len, inv);
      case 3: return window_pick<SW, 3>(v, v_row, v_len, rows, ow, y, y_len, inv);
      case 4: return window_pick<SW, 4>(v, v_row, v_len, rows, ow, y, y_len, inv);
      case 5: return window_pick<SW, 5>(v, v_row, v_len, rows, ow, y, y_len, inv);
      case 6: return window_pick<SW, 6>(v, v_row, v_len, rows, ow, y, y_len, inv);
      default: return window_pick<SW, 7>(v, v_row, v_len, rows, ow, y, y_len, inv);
    }
  };
  if (sw == 1) {
    run.template operator()<1>();
  } else {
    run.template operator()<2>();
  }
}

// The transpose: gh[r*h_row + ox*sw] = gy[r, ox] * inv (gh's other elements untouched).
template <typename T>
void place(const T* __restrict gy, std::int64_t sw, std::int64_t rows, std::int64_t ow,
           T* __restrict gh, std::int64_t h_row, T inv) {
  with_column_stride(sw, [&](auto step) {
    for (std::int64_t r = 0; r < rows; ++r) {
      const T* __restrict gr = gy + r * ow;
      T* __restrict hr = gh + r * h_row;
      for (std::int64_t ox = 0; ox < ow; ++ox) hr[ox * step] = gr[ox] * inv;
    }
  });
}

// place for column strides 1 and 2, on a gh whose other elements are zero: whole vectors of
// gy, their lanes past the row's end set to zero, stored (at stride 2 interleaved with zeros)
// over the row and, past its end, over the start of the next row, which that row's own stores
// then overwrite. One element at a time only where a vector would read past gy_len (this
// task's gradient from gy on) or write past gh_len (the elements of its workspace from gh on
// that are zero or not yet written). (place's strided scalar stores were about two fifths of
// the first pooling layer's backward time.)
template <int SW, typename T>
void place_rows(const T* HWY_RESTRICT gy, std::int64_t gy_len, std::int64_t rows,
                std::int64_t ow, T* HWY_RESTRICT gh, std::int64_t h_row, std::int64_t gh_len,
                T inv) {
  static_assert(SW == 1 || SW == 2);
  const Tag<T> d;
  using V = VecT<T>;
  const std::int64_t L = lanes<T>();
  const V vinv = hn::Set(d, inv);
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* HWY_RESTRICT gr = gy + r * ow;
    T* HWY_RESTRICT hr = gh + r * h_row;
    std::int64_t ox = 0;
    for (; ox < ow; ox += L) {
      if (r * ow + ox + L > gy_len || r * h_row + SW * (ox + L) > gh_len) break;
      const auto valid = hn::FirstN(d, static_cast<std::size_t>(ow - ox));
      const V v = hn::Mul(hn::IfThenElseZero(valid, hn::LoadU(d, gr + ox)), vinv);
      if constexpr (SW == 1) {
        hn::StoreU(v, d, hr + ox);
      } else {
        hn::StoreInterleaved2(v, hn::Zero(d), d, hr + 2 * ox);
      }
    }
    for (; ox < ow; ++ox) hr[ox * SW] = gr[ox] * inv;
  }
}

// place_rows where the column stride is 1 or 2, place otherwise.
template <typename T>
void place_any(const T* HWY_RESTRICT gy, std::int64_t gy_len, std::int64_t sw, std::int64_t rows,
               std::int64_t ow, T* HWY_RESTRICT gh, std::int64_t h_row, std::int64_t gh_len,
               T inv) {
  if (sw == 1) return place_rows<1>(gy, gy_len, rows, ow, gh, h_row, gh_len, inv);
  if (sw == 2) return place_rows<2>(gy, gy_len, rows, ow, gh, h_row, gh_len, inv);
  place(gy, sw, rows, ow, gh, h_row, inv);
}

// Copies planes [0, np) of x into zero-padded planes of f's size at `p`.
template <typename T>
void pad_planes(const PoolGeometry& g, const FlatPlane& f, const T* __restrict x,
                std::int64_t np, T* __restrict p) {
  std::fill(p, p + np * f.size(), T(0));
  for (std::int64_t q = 0; q < np; ++q) {
    for (std::int64_t r = 0; r < g.h; ++r) {
      copy_row(x + (q * g.h + r) * g.w, g.w, p + q * f.size() + (r + g.win.ph) * f.w + g.win.pw);
    }
  }
}

// Planes [0, np) of a task, `work` its slice of the workspace (np * avg_pool_work(g)).
// Stride 1: the planes run as one flat array (Note above: what a pass computes past a plane's
// last output row is never read; between planes it reads the next plane's rows, which the
// zero rows below the output rows of each plane make harmless in the backward pass). Other
// strides: plane by plane, the vertical pass at the output rows only.
template <typename T>
void avg_pool_planes(const PoolGeometry& g, const T* __restrict x, T* __restrict y,
                     T* __restrict work, T inv, std::int64_t np) {
  const Window2d& wn = g.win;
  const FlatPlane f = flat_plane(g);
  const std::int64_t n = f.size();
  if (wn.sh == 1) {
    const std::int64_t total = np * n;
    T* __restrict v = work;
    T* __restrict h = work + total;
    const T* __restrict src = x;
    if (f.padded) {
      pad_planes(g, f, x, np, work + 2 * total);
      src = work + 2 * total;
    }
    const std::int64_t nv = total - static_cast<std::int64_t>(wn.kh - 1) * f.w;
    window_sum(src, wn.kh, f.w, nv, v);
    if (window_pick_covers(wn.sw, wn.kw)) {
      for (std::int64_t q = 0; q < np; ++q) {
        window_pick_any(wn.sw, wn.kw, v + q * n, f.w, nv - q * n, g.oh, g.ow, y + q * g.oh * g.ow,
                        (np - q) * g.oh * g.ow, inv);
      }
      return;
    }
    window_sum(v, wn.kw, 1, nv - wn.kw + 1, h);
    for (std::int64_t q = 0; q < np; ++q) {
      pick(h + q * n, f.w, wn.sw, g.oh, g.ow, y + q * g.oh * g.ow, inv);
    }
    return;
  }
  const std::int64_t per_plane = detail::avg_pool_work(g), rows = g.oh * f.w;
  for (std::int64_t q = 0; q < np; ++q) {
    T* __restrict w = work + q * per_plane;
    T* __restrict v = w;
    T* __restrict h = w + rows;
    const T* __restrict src = x + q * g.h * g.w;
    if (f.padded) {
      pad_planes(g, f, src, 1, w + 2 * rows);
      src = w + 2 * rows;
    }
    window_sum_rows(src, wn.kh, f.w, g.oh, f.w, wn.sh * f.w, f.w, v);
    if (window_pick_covers(wn.sw, wn.kw)) {
      window_pick_any(wn.sw, wn.kw, v, f.w, rows, g.oh, g.ow, y + q * g.oh * g.ow,
                      (np - q) * g.oh * g.ow, inv);
      continue;
    }
    window_sum(v, wn.kw, 1, rows - wn.kw + 1, h);
    pick(h, f.w, wn.sw, g.oh, g.ow, y + q * g.oh * g.ow, inv);
  }
}

// Copies the interiors of np padded gradient planes at `out` into gx.
template <typename T>
void unpad_planes(const PoolGeometry& g, const FlatPlane& f, const T* __restrict out,
                  std::int64_t np, T* __restrict gx) {
  for (std::int64_t q = 0; q < np; ++q) {
    for (std::int64_t r = 0; r < g.h; ++r) {
      copy_row(out + q * f.size() + (r + g.win.ph) * f.w + g.win.pw, g.w,
               gx + (q * g.h + r) * g.w);
    }
  }
}

template <typename T>
void avg_pool_backward_planes(const PoolGeometry& g, const T* __restrict gy, T* __restrict gx,
                              T* __restrict work, T inv, std::int64_t np) {
  const Window2d& wn = g.win;
  const FlatPlane f = flat_plane(g);
  const std::int64_t n = f.size();
  const std::int64_t gh_front = wn.kw - 1;
  if (wn.sh == 1) {
    // [zeros kw-1 | gh np planes | zeros (kh-1)*W | gv np planes | padded gradient np planes],
    // every array with the planes' stride n. Each plane's kh-1 rows below its output rows stay
    // zero in gh and so in gv: they are the zeros the vertical pass reads above the next
    // plane; the front zeros are those above the first.
    const std::int64_t total = np * n;
    const std::int64_t gv_front = static_cast<std::int64_t>(wn.kh - 1) * f.w;
    T* __restrict gh = work + gh_front;
    T* __restrict gv = gh + total + gv_front;
    T* __restrict out = f.padded ? gv + total : gx;
    std::fill(work, gv, T(0));
    for (std::int64_t q = 0; q < np; ++q) {
      place_any(gy + q * g.oh * g.ow, (np - q) * g.oh * g.ow, wn.sw, g.oh, g.ow, gh + q * n,
                f.w, (np - q) * n + gv_front, inv);
    }
    window_sum(gh - gh_front, wn.kw, 1, total, gv);
    window_sum(gv - gv_front, wn.kh, f.w, total, out);
    if (f.padded) unpad_planes(g, f, out, np, gx);
    return;
  }
  const std::int64_t per_plane = detail::avg_pool_work(g), rows = g.oh * f.w;
  // Row r = m*sh + j of the gradient (phase j in [0, sh)) gets gv's rows m - a_j .. m, where
  // a_j = floor((kh - 1 - j) / sh): those output rows' windows cover r. The zero rows around
  // gv (front: a_0 rows; back: enough for the last m) let every phase be one window_sum_rows
  // (adding a zero changes no sum). Layout per plane: [zeros kw-1 | gh rows | zeros front*W |
  // gv rows | zeros back*W | padded gradient]; front and back are at most kh - 1 rows.
  const std::int64_t front = (wn.kh - 1) / wn.sh;
  const std::int64_t back = std::max<std::int64_t>(0, (f.h - 1) / wn.sh - (g.oh - 1));
  for (std::int64_t q = 0; q < np; ++q) {
    T* __restrict w = work + q * per_plane;
    T* __restrict gh = w + gh_front;
    T* __restrict gv = gh + rows + front * f.w;
    T* __restrict out = f.padded ? gv + rows + back * f.w : gx + q * g.h * g.w;
    std::fill(w, gh + rows, T(0));
    place_any(gy + q * g.oh * g.ow, (np - q) * g.oh * g.ow, wn.sw, g.oh, g.ow, gh, f.w,
              per_plane - gh_front, inv);
    window_sum(gh - gh_front, wn.kw, 1, rows, gv);
    std::fill(gv - front * f.w, gv, T(0));
    std::fill(gv + rows, gv + rows + back * f.w, T(0));
    for (std::int64_t j = 0; j < std::min<std::int64_t>(wn.sh, f.h); ++j) {
      const std::int64_t a = wn.kh - 1 - j >= 0 ? (wn.kh - 1 - j) / wn.sh : -1;
      const std::int64_t m_rows = (f.h - j + wn.sh - 1) / wn.sh;  // rows j, j + sh, ... < H
      T* __restrict o = out + j * f.w;
      if (a < 0) {  // no window covers these rows
        for (std::int64_t m = 0; m < m_rows; ++m) std::fill_n(o + m * wn.sh * f.w, f.w, T(0));
        continue;
      }
      window_sum_rows(gv - a * f.w, static_cast<int>(a + 1), f.w, m_rows, f.w, f.w,
                      wn.sh * f.w, o);
    }
    if (f.padded) unpad_planes(g, f, out, 1, gx + q * g.h * g.w);
  }
}

// planes_fn(first plane, its slice of work, 1 / window size, plane count) for blocks of
// planes, over the threads.
template <typename T, typename PlanesFn>
void for_each_plane_block(const PoolGeometry& g, T* work, const PlanesFn& planes_fn) {
  const std::int64_t per_plane = detail::avg_pool_work(g);
  const T inv = T(1) / static_cast<T>(g.win.kh * g.win.kw);
  parallel_for(g.planes, detail::plane_grain(g), [&](std::int64_t lo, std::int64_t hi) {
    planes_fn(lo, work + lo * per_plane, inv, hi - lo);
  });
}

template <typename T>
void avg_pool(const PoolGeometry& g, const T* x, T* y, T* work) {
  for_each_plane_block(g, work, [&](std::int64_t p, T* scratch, T inv, std::int64_t np) {
    avg_pool_planes(g, x + p * g.h * g.w, y + p * g.oh * g.ow, scratch, inv, np);
  });
}

template <typename T>
void avg_pool_backward(const PoolGeometry& g, const T* gy, T* gx, T* work,
                       const detail::OutputEpilogue<T>& ep) {
  for_each_plane_block(g, work, [&](std::int64_t p, T* scratch, T inv, std::int64_t np) {
    avg_pool_backward_planes(g, gy + p * g.oh * g.ow, gx + p * g.h * g.w, scratch, inv, np);
    apply_epilogue(ep, gx, p * g.h * g.w, (p + np) * g.h * g.w);  // the block, still in cache
  });
}

}  // namespace

// Note [Kernel export] (ops/simd_export.hpp).
// NOLINTBEGIN(bugprone-macro-parentheses): T is a type.
#define TBGRAD_POOL_KERNELS(X, T, S)                                                          \
  X(AvgPool##S, avg_pool_kernel, avg_pool, (const PoolGeometry& g, const T* x, T* y, T* work), \
    (g, x, y, work))                                                                          \
  X(AvgPoolBackward##S, avg_pool_backward_kernel, avg_pool_backward,                          \
    (const PoolGeometry& g, const T* gy, T* gx, T* work, const detail::OutputEpilogue<T>& ep), \
    (g, gy, gx, work, ep))
// NOLINTEND(bugprone-macro-parentheses)
TBGRAD_KERNEL_ENTRIES(TBGRAD_POOL_KERNELS)

}  // namespace tbgrad::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace tbgrad {
TBGRAD_KERNEL_EXPORTS(TBGRAD_POOL_KERNELS)
}  // namespace tbgrad
#endif  // HWY_ONCE
