// C = op(A) op(B), compiled once per SIMD target (this file re-includes itself through
// Highway's foreach_target.h) and dispatched at run time.
//
// One micro-kernel does all the work: a tile of up to kTileRows rows of the result by up to
// kTileVectors vectors of columns, kept in registers (tiles visited column block by column
// block, so each block of B is reused from cache by all rows), each element a single chain of
// FMAs over k in order (so an element's value does not depend on which tile or task computed
// it, nor on the thread count, nor on the vector width of the target: AVX2 and AVX-512 give
// the same bits). The tile's size comes from the target's register count (kTileRows,
// kTileVectors below). B's rows must be contiguous along the result's columns:
//  - B not transposed: read in place; only the last N mod L columns are copied, zero-padded to
//    one vector, into the workspace ([K, L]).
//  - B transposed, A not (linear's forward, x [M, K] times weight [N, K]ᵀ): computed as
//    Cᵀ = B Aᵀ, with A (the batch: small) transposed into the workspace ([K, MP], MP = M
//    rounded up to whole vectors) and the [N, MP] result transposed back. Copying the weight
//    instead cost more than the multiplication at training batch sizes.
//  - both transposed (no model uses it): op(B) copied to [K, NP], zero-padded.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/matmul_kernels.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>

#include "graph/parallel.hpp"
#include "ops/matmul_kernels.hpp"
#include "ops/simd-inl.hpp"
#include "ops/simd_export.hpp"

HWY_BEFORE_NAMESPACE();
namespace tbgrad::HWY_NAMESPACE {
namespace {

// 4 x 4 vectors on 32 registers (16 accumulators, 4 loaded vectors of B, a broadcast); 6 x 2 on
// 16 (12 accumulators, 2 vectors of B, a broadcast: the shape of the classic AVX2 SGEMM kernel,
// whose 2-vector column blocks also divide the models' widths more evenly than 3 would).
constexpr std::int64_t kTileRows = kVectorRegisters >= 32 ? 4 : 6;
constexpr int kTileVectors = kVectorRegisters >= 32 ? 4 : 2;

// The operands of one product R [rows, cols] = P [rows, K] Q [K, cols]: p(i, k) is
// p[i * p_row + k * p_col]; Q's rows are contiguous, q_ld apart, whole vectors up to
// q_main columns, then (if q_main < cols) the last columns zero-padded in q_tail [K, L];
// R's rows are r_ld apart and hold cols valid columns.
template <typename T>
struct Product {
  const T* p;
  std::int64_t p_row, p_col;
  const T* q;
  std::int64_t q_ld, q_main;
  const T* q_tail;
  T* r;
  std::int64_t r_ld, cols;
  std::int64_t k;
};

// r[i0 + i, j .. j + NV*L) = sum over k of p(i0 + i, k) * q[k * q_ld + 0 .. NV*L).
template <typename T, int MI, int NV>
HWY_INLINE void tile(const Product<T>& pr, std::int64_t i0, const T* HWY_RESTRICT q,
                     std::int64_t q_ld, std::int64_t j) {
  const Tag<T> d;
  using V = VecT<T>;
  const std::int64_t L = lanes<T>();
  // The loop reads locals only and steps its pointers: indexing through pr's fields left GCC a
  // register short on AVX2, reloading a stride from the stack every step.
  const T* HWY_RESTRICT pk = pr.p + i0 * pr.p_row;
  const std::int64_t p_row = pr.p_row, p_col = pr.p_col, steps = pr.k;
  V acc[MI][NV];
#pragma GCC unroll 8
  for (int i = 0; i < MI; ++i) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = hn::Zero(d);
  }
  const T* HWY_RESTRICT qr = q;
  for (std::int64_t kk = 0; kk < steps; ++kk, qr += q_ld, pk += p_col) {
    V qv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      qv[v] = hn::LoadU(d, qr + v * L);
      keep_in_register(qv[v]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < MI; ++i) {
      const V pv = hn::Set(d, pk[i * p_row]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] = hn::MulAdd(pv, qv[v], acc[i][v]);
    }
  }
  const std::int64_t cols = pr.cols, r_ld = pr.r_ld;
  T* HWY_RESTRICT r_row = pr.r + i0 * r_ld;
#pragma GCC unroll 8
  for (int i = 0; i < MI; ++i, r_row += r_ld) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      const std::int64_t col = j + v * L;
      if (col + L <= cols) {
        hn::StoreU(acc[i][v], d, r_row + col);
      } else if (col < cols) {
        HWY_ALIGN T buf[detail::kMaxLanes<T>];
        hn::Store(acc[i][v], d, buf);
        std::copy(buf, buf + (cols - col), r_row + col);
      }
    }
  }
}

// Column block `block` of R (kTileVectors vectors of Q; the last whole vectors; or the padded
// tail) for rows i0 .. i0+MI.
template <typename T, int MI>
HWY_INLINE void product_block(const Product<T>& pr, std::int64_t i0, std::int64_t block) {
  const std::int64_t L = lanes<T>();
  constexpr int NV = kTileVectors;
  const std::int64_t full = pr.q_main / (NV * L);
  const std::int64_t j = block * NV * L;
  if (block < full) return tile<T, MI, NV>(pr, i0, pr.q + j, pr.q_ld, j);
  const std::int64_t rest = (pr.q_main - full * NV * L) / L;
  if (block == full && rest > 0) {
    if constexpr (NV > 3) {
      if (rest == 3) return tile<T, MI, 3>(pr, i0, pr.q + j, pr.q_ld, j);
    }
    if (rest == 2) return tile<T, MI, 2>(pr, i0, pr.q + j, pr.q_ld, j);
    return tile<T, MI, 1>(pr, i0, pr.q + j, pr.q_ld, j);
  }
  tile<T, MI, 1>(pr, i0, pr.q_tail, L, pr.q_main);
}

template <typename T>
void product_tile(const Product<T>& pr, std::int64_t i0, std::int64_t rows, std::int64_t block) {
  switch (std::min(kTileRows, rows - i0)) {
    case 6:
      if constexpr (kTileRows >= 6) return product_block<T, 6>(pr, i0, block);
      [[fallthrough]];
    case 5:
      if constexpr (kTileRows >= 5) return product_block<T, 5>(pr, i0, block);
      [[fallthrough]];
    case 4: return product_block<T, 4>(pr, i0, block);
    case 3: return product_block<T, 3>(pr, i0, block);
    case 2: return product_block<T, 2>(pr, i0, block);
    default: return product_block<T, 1>(pr, i0, block);
  }
}

// Runs the product over (column block, row tile) pairs, column blocks outermost so that a
// block of Q (K x kTileVectors vectors) stays in cache while every row tile uses it; in
// parallel when it is big enough to pay.
template <typename T>
void run_product(const Product<T>& pr, std::int64_t rows) {
  const std::int64_t L = lanes<T>();
  constexpr int NV = kTileVectors;
  const std::int64_t full = pr.q_main / (NV * L);
  const std::int64_t blocks =
      full + (pr.q_main > full * NV * L ? 1 : 0) + (pr.q_main < pr.cols ? 1 : 0);
  const std::int64_t tiles = (rows + kTileRows - 1) / kTileRows;
  const std::int64_t grain =
      std::max<std::int64_t>(1, 32768 / std::max<std::int64_t>(1, kTileRows * pr.k * NV * L));
  parallel_for(blocks * tiles, grain, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t w = lo; w < hi; ++w) {
      product_tile(pr, (w % tiles) * kTileRows, rows, w / tiles);
    }
  });
}

// dst[c * dst_ld + r] = src[r * src_ld + c] for r in [0, rows), c in [0, cols). For float on
// targets with 128-bit vectors, 4 x 4 blocks, each four loads, eight shuffles and four stores;
// element by element for the edges, for double and on the scalar target. (An element-by-element
// loop, one strided access per element, took a third of the seed model's FC2 forward time.)
template <typename T>
void transpose(const T* HWY_RESTRICT src, std::int64_t src_ld, std::int64_t rows,
               std::int64_t cols, T* HWY_RESTRICT dst, std::int64_t dst_ld) {
  std::int64_t r0 = 0;
#if HWY_TARGET != HWY_SCALAR
  if constexpr (sizeof(T) == 4) {
    const hn::Full128<T> d4;
    for (; r0 + 4 <= rows; r0 += 4) {
      const T* HWY_RESTRICT s = src + r0 * src_ld;
      std::int64_t c0 = 0;
      for (; c0 + 4 <= cols; c0 += 4) {
        V4f t[4];
        transpose4(hn::LoadU(d4, s + c0), hn::LoadU(d4, s + src_ld + c0),
                   hn::LoadU(d4, s + 2 * src_ld + c0), hn::LoadU(d4, s + 3 * src_ld + c0), t);
        T* HWY_RESTRICT o = dst + c0 * dst_ld + r0;
        for (int j = 0; j < 4; ++j) hn::StoreU(t[j], d4, o + j * dst_ld);
      }
      for (; c0 < cols; ++c0) {
        for (std::int64_t r = r0; r < r0 + 4; ++r) dst[c0 * dst_ld + r] = src[r * src_ld + c0];
      }
    }
  }
#endif
  for (; r0 < rows; ++r0) {
    for (std::int64_t c = 0; c < cols; ++c) dst[c * dst_ld + r0] = src[r0 * src_ld + c];
  }
}

// C = op(A) B, or op(A) op(B) through a padded copy of op(B).
template <typename T>
void times_rows(const detail::MatmulDims& dm, const T* a, const T* b, T* c, T* work) {
  const std::int64_t L = lanes<T>();
  const std::int64_t m = dm.m, k = dm.k, n = dm.n;
  Product<T> pr{a, dm.transpose_a ? 1 : k, dm.transpose_a ? m : 1, b, n, n / L * L, work,
                c, n, n, k};
  if (dm.transpose_b) {
    // Copy op(B) to [K, NP] in 16x16 tiles (both sides stay in cache).
    const std::int64_t np = detail::round_up(n, L);
    constexpr std::int64_t kBlock = 16;
    const std::int64_t copy_grain = std::max<std::int64_t>(1, 65536 / (kBlock * np));
    parallel_for((k + kBlock - 1) / kBlock, copy_grain, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t kb = lo * kBlock; kb < std::min(k, hi * kBlock); kb += kBlock) {
        const std::int64_t ke = std::min(k, kb + kBlock);
        for (std::int64_t jb = 0; jb < n; jb += kBlock) {
          const std::int64_t je = std::min(n, jb + kBlock);
          for (std::int64_t jj = jb; jj < je; ++jj) {
            for (std::int64_t kk = kb; kk < ke; ++kk) work[kk * np + jj] = b[jj * k + kk];
          }
        }
        for (std::int64_t kk = kb; kk < ke; ++kk) {
          std::fill(work + kk * np + n, work + (kk + 1) * np, T(0));
        }
      }
    });
    pr.q = work;
    pr.q_ld = np;
    pr.q_main = np;
  } else if (pr.q_main < n) {
    for (std::int64_t kk = 0; kk < k; ++kk) {
      std::fill(std::copy(b + kk * n + pr.q_main, b + (kk + 1) * n, work + kk * L),
                work + (kk + 1) * L, T(0));
    }
  }
  run_product(pr, m);
}

// C = A Bᵀ as Cᵀ = B Aᵀ: B's rows are the tile rows, Aᵀ [K, MP] (zero-padded) the vectors.
template <typename T>
void times_transposed(const detail::MatmulDims& dm, const T* a, const T* b, T* c, T* work) {
  const std::int64_t L = lanes<T>();
  const std::int64_t m = dm.m, k = dm.k, n = dm.n;
  const std::int64_t mp = detail::round_up(m, L);
  T* at = work;           // [K, MP]
  T* ct = work + k * mp;  // [N, MP]
  // Aᵀ in blocks of rows of at, over the threads: with seed-nopool's 2,420 inputs to FC1 the
  // serial copy was about a fifth of the product's time at two threads (bench_ops, avx2).
  const std::int64_t copy_grain = std::max<std::int64_t>(16, 16384 / std::max<std::int64_t>(1, mp));
  parallel_for(k, copy_grain, [&](std::int64_t lo, std::int64_t hi) {
    transpose(a + lo, k, m, hi - lo, at + lo * mp, mp);
    for (std::int64_t kk = lo; kk < hi; ++kk) std::fill(at + kk * mp + m, at + (kk + 1) * mp, T(0));
  });
  run_product(Product<T>{b, k, 1, at, mp, mp, nullptr, ct, mp, mp, k}, n);
  const std::int64_t grain = std::max<std::int64_t>(1, 16384 / std::max<std::int64_t>(1, n));
  parallel_for(m, grain, [&](std::int64_t lo, std::int64_t hi) {
    transpose(ct + lo, mp, n, hi - lo, c + lo * n, n);
  });
}

template <typename T>
void matmul(const detail::MatmulDims& d, const T* a, const T* b, T* c, T* work) {
  if (d.m == 0 || d.n == 0) return;
  if (d.k == 0) {
    std::fill(c, c + d.m * d.n, T(0));
    return;
  }
  if (d.transpose_b && !d.transpose_a) {
    times_transposed(d, a, b, c, work);
  } else {
    times_rows(d, a, b, c, work);
  }
}

}  // namespace

// Note [Kernel export] (ops/simd_export.hpp).
// NOLINTBEGIN(bugprone-macro-parentheses): T is a type.
#define TBGRAD_MATMUL_KERNELS(X, T, S)                                                        \
  X(Matmul##S, matmul_kernel, matmul,                                                         \
    (const detail::MatmulDims& d, const T* a, const T* b, T* c, T* work), (d, a, b, c, work))
// NOLINTEND(bugprone-macro-parentheses)
TBGRAD_KERNEL_ENTRIES(TBGRAD_MATMUL_KERNELS)

}  // namespace tbgrad::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace tbgrad {
TBGRAD_KERNEL_EXPORTS(TBGRAD_MATMUL_KERNELS)
}  // namespace tbgrad
#endif  // HWY_ONCE
