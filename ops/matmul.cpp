#include "ops/matmul.hpp"

#include <algorithm>
#include <memory>

#include "graph/parallel.hpp"
#include "ops/elementwise.hpp"
#include "ops/kernel_util.hpp"
#include "ops/simd.hpp"

namespace tbgrad {
namespace {

using detail::dispatch_float;

// C = op(A) op(B). One micro-kernel does all the work: a tile of up to 4 rows of the result by
// up to 4 vectors of columns, kept in registers (tiles visited column block by column block, so
// each block of B is reused from cache by all rows), each element a single chain of FMAs over k in
// order (so an element's value does not depend on which tile or task computed it, nor on the
// thread count). B's rows must be contiguous along the result's columns:
//  - B not transposed: read in place; only the last N mod L columns are copied, zero-padded to
//    one vector, into the workspace ([K, L]).
//  - B transposed, A not (linear's forward, x [M, K] times weight [N, K]ᵀ): computed as
//    Cᵀ = B Aᵀ, with A (the batch: small) transposed into the workspace ([K, MP], MP = M
//    rounded up to whole vectors) and the [N, MP] result transposed back. Copying the weight
//    instead cost more than the multiplication at training batch sizes.
//  - both transposed (no model uses it): op(B) copied to [K, NP], zero-padded.
class MatmulOp final : public Op {
 public:
  MatmulOp(std::int64_t m, std::int64_t k, std::int64_t n, MatmulOptions o)
      : m_(m), k_(k), n_(n), o_(o) {}
  const char* name() const override { return "matmul"; }

  std::size_t workspace_bytes(std::span<const Value> in, Value) const override {
    const std::int64_t lanes = in[1].dtype() == DType::kF32 ? detail::Simd<float>::kLanes
                                                            : detail::Simd<double>::kLanes;
    const auto round = [&](std::int64_t x) { return (x + lanes - 1) / lanes * lanes; };
    std::int64_t elements = k_ * lanes;  // B's tail columns
    if (o_.transpose_b && !o_.transpose_a) elements = (k_ + n_) * round(m_);
    if (o_.transpose_b && o_.transpose_a) elements = k_ * round(n_);
    return static_cast<std::size_t>(elements) * dtype_size(in[1].dtype());
  }

  void forward(const KernelContext& ctx) const override {
    if (m_ == 0 || n_ == 0) return;  // an empty result (the tiling below divides by N)
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const T* a = ctx.inputs[0].data<T>();  // [M, K] or [K, M]
      const T* b = ctx.inputs[1].data<T>();  // [K, N] or [N, K]
      T* c = ctx.output.data<T>();           // [M, N]
      T* work = static_cast<T*>(ctx.workspace);
      if (o_.transpose_b && !o_.transpose_a) {
        times_transposed(a, b, c, work);
      } else {
        times_rows(a, b, c, work);
      }
    });
  }

  // With C = op(A) op(B) and G = dL/dC: dL/dop(A) = G op(B)ᵀ and dL/dop(B) = op(A)ᵀ G, each
  // written as one matmul with the right transpose flags so no transpose node is needed.
  std::vector<Value> vjp(std::span<const Value> in, Value, Value g) const override {
    const Value& a = in[0];
    const Value& b = in[1];
    const bool ta = o_.transpose_a, tb = o_.transpose_b;
    Value ga = ta ? matmul(b, g, {.transpose_a = tb, .transpose_b = true})   // [K, M]
                  : matmul(g, b, {.transpose_a = false, .transpose_b = !tb});  // [M, K]
    Value gb = tb ? matmul(g, a, {.transpose_a = true, .transpose_b = ta})   // [N, K]
                  : matmul(a, g, {.transpose_a = !ta, .transpose_b = false});  // [K, N]
    return {ga, gb};
  }

 private:
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
  };

  static constexpr std::int64_t kTileRows = 4;

  // Column block `block` of R (4 vectors of Q; the last whole vectors; or the padded tail)
  // for rows i0 .. i0+MI.
  template <typename T, int MI>
  void product_block(const Product<T>& pr, std::int64_t i0, std::int64_t block) const {
    constexpr std::int64_t L = detail::Simd<T>::kLanes;
    const std::int64_t full = pr.q_main / (4 * L);
    const std::int64_t j = block * 4 * L;
    if (block < full) return tile<T, MI, 4>(pr, i0, pr.q + j, pr.q_ld, j);
    const std::int64_t rest = (pr.q_main - full * 4 * L) / L;
    if (block == full && rest > 0) {
      switch (rest) {
        case 3: return tile<T, MI, 3>(pr, i0, pr.q + j, pr.q_ld, j);
        case 2: return tile<T, MI, 2>(pr, i0, pr.q + j, pr.q_ld, j);
        default: return tile<T, MI, 1>(pr, i0, pr.q + j, pr.q_ld, j);
      }
    }
    tile<T, MI, 1>(pr, i0, pr.q_tail, L, pr.q_main);
  }

  template <typename T>
  void product_tile(const Product<T>& pr, std::int64_t i0, std::int64_t rows,
                    std::int64_t block) const {
    switch (std::min(kTileRows, rows - i0)) {
      case 4: return product_block<T, 4>(pr, i0, block);
      case 3: return product_block<T, 3>(pr, i0, block);
      case 2: return product_block<T, 2>(pr, i0, block);
      default: return product_block<T, 1>(pr, i0, block);
    }
  }

  // r[i0 + i, j .. j + NV*L) = sum over k of p(i0 + i, k) * q[k * q_ld + 0 .. NV*L).
  template <typename T, int MI, int NV>
  void tile(const Product<T>& pr, std::int64_t i0, const T* q, std::int64_t q_ld,
            std::int64_t j) const {
    using S = detail::Simd<T>;
    using V = typename S::Vec;
    constexpr std::int64_t L = S::kLanes;
    const T* p0 = pr.p + i0 * pr.p_row;
    V acc[MI][NV];
#pragma GCC unroll 4
    for (int i = 0; i < MI; ++i) {
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = S::splat(0);
    }
    for (std::int64_t kk = 0; kk < k_; ++kk) {
      const T* qr = q + kk * q_ld;
      V qv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        qv[v] = S::load(qr + v * L);
        detail::keep_in_register(qv[v]);
      }
#pragma GCC unroll 4
      for (int i = 0; i < MI; ++i) {
        const V pv = S::splat(p0[i * pr.p_row + kk * pr.p_col]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[i][v] += pv * qv[v];
      }
    }
#pragma GCC unroll 4
    for (int i = 0; i < MI; ++i) {
      T* r_row = pr.r + (i0 + i) * pr.r_ld;
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        const std::int64_t col = j + v * L;
        if (col + L <= pr.cols) {
          S::store(r_row + col, acc[i][v]);
        } else {
          for (std::int64_t l = 0; col + l < pr.cols; ++l) r_row[col + l] = acc[i][v][l];
        }
      }
    }
  }

  // Runs the product over (column block, row tile) pairs, column blocks outermost so that a
  // block of Q (K x 4 vectors) stays in cache while every row tile uses it; in parallel when
  // it is big enough to pay.
  template <typename T>
  void run_product(const Product<T>& pr, std::int64_t rows) const {
    constexpr std::int64_t L = detail::Simd<T>::kLanes;
    const std::int64_t full = pr.q_main / (4 * L);
    const std::int64_t blocks =
        full + (pr.q_main > full * 4 * L ? 1 : 0) + (pr.q_main < pr.cols ? 1 : 0);
    const std::int64_t tiles = (rows + kTileRows - 1) / kTileRows;
    const std::int64_t grain =
        std::max<std::int64_t>(1, 32768 / std::max<std::int64_t>(1, kTileRows * k_ * 4 * L));
    parallel_for(blocks * tiles, grain, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t w = lo; w < hi; ++w) {
        product_tile(pr, (w % tiles) * kTileRows, rows, w / tiles);
      }
    });
  }

  // C = op(A) B, or op(A) op(B) through a padded copy of op(B).
  template <typename T>
  void times_rows(const T* a, const T* b, T* c, T* work) const {
    constexpr std::int64_t L = detail::Simd<T>::kLanes;
    Product<T> pr{a, o_.transpose_a ? 1 : k_, o_.transpose_a ? m_ : 1, b, n_, n_ / L * L, work,
                  c, n_, n_};
    if (o_.transpose_b) {
      // Copy op(B) to [K, NP] in 16x16 tiles (both sides stay in cache).
      const std::int64_t np = (n_ + L - 1) / L * L;
      constexpr std::int64_t kBlock = 16;
      const std::int64_t copy_grain = std::max<std::int64_t>(1, 65536 / (kBlock * np));
      parallel_for((k_ + kBlock - 1) / kBlock, copy_grain, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t kb = lo * kBlock; kb < std::min(k_, hi * kBlock); kb += kBlock) {
          const std::int64_t ke = std::min(k_, kb + kBlock);
          for (std::int64_t jb = 0; jb < n_; jb += kBlock) {
            const std::int64_t je = std::min(n_, jb + kBlock);
            for (std::int64_t jj = jb; jj < je; ++jj) {
              for (std::int64_t kk = kb; kk < ke; ++kk) work[kk * np + jj] = b[jj * k_ + kk];
            }
          }
          for (std::int64_t kk = kb; kk < ke; ++kk) {
            std::fill(work + kk * np + n_, work + (kk + 1) * np, T(0));
          }
        }
      });
      pr.q = work;
      pr.q_ld = np;
      pr.q_main = np;
    } else if (pr.q_main < n_) {
      for (std::int64_t kk = 0; kk < k_; ++kk) {
        std::fill(std::copy(b + kk * n_ + pr.q_main, b + (kk + 1) * n_, work + kk * L),
                  work + (kk + 1) * L, T(0));
      }
    }
    run_product(pr, m_);
  }

  // C = A Bᵀ as Cᵀ = B Aᵀ: B's rows are the tile rows, Aᵀ [K, MP] (zero-padded) the vectors.
  template <typename T>
  void times_transposed(const T* a, const T* b, T* c, T* work) const {
    constexpr std::int64_t L = detail::Simd<T>::kLanes;
    const std::int64_t mp = (m_ + L - 1) / L * L;
    T* at = work;            // [K, MP]
    T* ct = work + k_ * mp;  // [N, MP]
    for (std::int64_t kk = 0; kk < k_; ++kk) {
      T* row = at + kk * mp;
      for (std::int64_t i = 0; i < m_; ++i) row[i] = a[i * k_ + kk];
      std::fill(row + m_, row + mp, T(0));
    }
    run_product(Product<T>{b, k_, 1, at, mp, mp, nullptr, ct, mp, mp}, n_);
    const std::int64_t grain = std::max<std::int64_t>(1, 16384 / std::max<std::int64_t>(1, n_));
    parallel_for(m_, grain, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t i = lo; i < hi; ++i) {
        for (std::int64_t j = 0; j < n_; ++j) c[i * n_ + j] = ct[j * mp + i];
      }
    });
  }

  std::int64_t m_, k_, n_;
  MatmulOptions o_;
};
TBGRAD_REGISTER_OP("matmul", true);

}  // namespace

Value matmul(Value a, Value b, MatmulOptions o) {
  detail::require_same_graph("matmul", a, b);
  detail::require_float("matmul", a);
  detail::require_same_dtype("matmul", a, b);
  detail::require_rank("matmul", a, 2, "a");
  detail::require_rank("matmul", b, 2, "b");
  const std::int64_t m = o.transpose_a ? a.shape()[1] : a.shape()[0];
  const std::int64_t k = o.transpose_a ? a.shape()[0] : a.shape()[1];
  const std::int64_t kb = o.transpose_b ? b.shape()[1] : b.shape()[0];
  const std::int64_t n = o.transpose_b ? b.shape()[0] : b.shape()[1];
  if (k != kb) {
    shape_error("matmul", "inner dimensions differ: " + a.describe() +
                              (o.transpose_a ? " transposed" : "") + " has K=" +
                              std::to_string(k) + ", " + b.describe() +
                              (o.transpose_b ? " transposed" : "") + " has K=" +
                              std::to_string(kb));
  }
  Value ins[] = {a, b};
  return a.graph().add_op(std::make_shared<MatmulOp>(m, k, n, o), ins, Shape{m, n}, a.dtype());
}

Value linear(Value x, Value weight) {
  detail::require_same_graph("linear", x, weight);
  detail::require_float("linear", x);
  detail::require_same_dtype("linear", x, weight);
  detail::require_rank("linear", x, 2, "input");
  detail::require_rank("linear", weight, 2, "weight");
  if (x.shape()[1] != weight.shape()[1]) {
    shape_error("linear", "weight " + weight.describe() + " expects " +
                              std::to_string(weight.shape()[1]) + " input features, input " +
                              x.describe() + " has " + std::to_string(x.shape()[1]));
  }
  return matmul(x, weight, {.transpose_a = false, .transpose_b = true});
}

Value linear(Value x, Value weight, Value bias) {
  detail::require_same_graph("linear", x, bias);
  detail::require_same_graph("linear", x, weight);
  detail::require_same_dtype("linear", x, bias);
  detail::require_rank("linear", weight, 2, "weight");
  if (bias.shape().rank() != 1 || bias.shape()[0] != weight.shape()[0]) {
    shape_error("linear", "bias " + bias.describe() + " must be [" +
                              std::to_string(weight.shape()[0]) + "], one per output feature of " +
                              "weight " + weight.describe());
  }
  return add(linear(x, weight), bias);
}

}  // namespace tbgrad
