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

class MatmulOp final : public Op {
 public:
  MatmulOp(std::int64_t m, std::int64_t k, std::int64_t n, MatmulOptions o)
      : m_(m), k_(k), n_(n), o_(o) {}
  const char* name() const override { return "matmul"; }

  // op(b) is first copied to [K, NP], NP = N rounded up to a whole vector with zero columns, so
  // the inner loop only ever loads whole vectors along contiguous rows.
  std::size_t workspace_bytes(std::span<const Value> in, Value) const override {
    const std::int64_t lanes = in[1].dtype() == DType::kF32 ? detail::Simd<float>::kLanes
                                                            : detail::Simd<double>::kLanes;
    return static_cast<std::size_t>(k_ * ((n_ + lanes - 1) / lanes * lanes)) *
           dtype_size(in[1].dtype());
  }

  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      constexpr std::int64_t L = detail::Simd<T>::kLanes;
      const T* a = ctx.inputs[0].data<T>();  // [M, K] or [K, M]
      const T* b = ctx.inputs[1].data<T>();  // [K, N] or [N, K]
      T* c = ctx.output.data<T>();           // [M, N]
      const std::int64_t np = (n_ + L - 1) / L * L;
      T* bp = static_cast<T*>(ctx.workspace);  // [K, NP]
      // Serial below ~64K elements: a few microseconds, less than another parallel region.
      constexpr std::int64_t kBlock = 16;  // transpose in 16x16 tiles: both sides stay in cache
      const std::int64_t copy_grain = std::max<std::int64_t>(1, 65536 / (kBlock * np));
      parallel_for((k_ + kBlock - 1) / kBlock, copy_grain, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t kb = lo * kBlock; kb < std::min(k_, hi * kBlock); kb += kBlock) {
          const std::int64_t ke = std::min(k_, kb + kBlock);
          if (o_.transpose_b) {
            for (std::int64_t jb = 0; jb < n_; jb += kBlock) {
              const std::int64_t je = std::min(n_, jb + kBlock);
              for (std::int64_t j = jb; j < je; ++j) {
                for (std::int64_t kk = kb; kk < ke; ++kk) bp[kk * np + j] = b[j * k_ + kk];
              }
            }
          } else {
            for (std::int64_t kk = kb; kk < ke; ++kk) {
              std::copy(b + kk * n_, b + (kk + 1) * n_, bp + kk * np);
            }
          }
          for (std::int64_t kk = kb; kk < ke; ++kk) std::fill(bp + kk * np + n_, bp + (kk + 1) * np, T(0));
        }
      });
      // Each row of c is one task's, each element summed over k in a fixed order: deterministic.
      const std::int64_t a_step = o_.transpose_a ? m_ : 1;  // stride between a(i, k) and a(i, k+1)
      const std::int64_t grain = std::max<std::int64_t>(1, 32768 / std::max<std::int64_t>(1, k_ * np));
      parallel_for(m_, grain, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t i = lo; i < hi; ++i) {
          axpy_rows(o_.transpose_a ? a + i : a + i * k_, a_step, bp, np, c + i * n_);
        }
      });
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
  // c_row[N] = sum over k of a_row[k * a_step] * b[k, :] (b is [K, NP], zero past N), with the
  // row kept in registers: blocks of four vectors, then one block of the remaining one to
  // three, each vector its own accumulator chain (one chain alone would be bound by the FMA
  // latency).
  template <typename T>
  void axpy_rows(const T* a_row, std::int64_t a_step, const T* b, std::int64_t np,
                 T* c_row) const {
    constexpr std::int64_t L = detail::Simd<T>::kLanes;
    std::int64_t j = 0;
    for (; j + 4 * L <= np; j += 4 * L) axpy_block<T, 4>(a_row, a_step, b, np, c_row, j);
    switch ((np - j) / L) {
      case 3: axpy_block<T, 3>(a_row, a_step, b, np, c_row, j); break;
      case 2: axpy_block<T, 2>(a_row, a_step, b, np, c_row, j); break;
      case 1: axpy_block<T, 1>(a_row, a_step, b, np, c_row, j); break;
      default: break;
    }
  }

  template <typename T, int NV>
  void axpy_block(const T* a_row, std::int64_t a_step, const T* b, std::int64_t np, T* c_row,
                  std::int64_t j) const {
    using S = detail::Simd<T>;
    using V = typename S::Vec;
    constexpr std::int64_t L = S::kLanes;
    V acc[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[v] = S::splat(0);
    for (std::int64_t kk = 0; kk < k_; ++kk) {
      const V av = S::splat(a_row[kk * a_step]);
      const T* br = b + kk * np + j;
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[v] += av * S::load(br + v * L);
    }
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) store_row(c_row, j + v * L, acc[v]);
  }

  // Stores the part of vector v that lies inside the row's N columns.
  template <typename T, typename V>
  void store_row(T* c_row, std::int64_t j, V v) const {
    constexpr std::int64_t L = detail::Simd<T>::kLanes;
    if (j + L <= n_) {
      detail::Simd<T>::store(c_row + j, v);
    } else {
      for (std::int64_t l = 0; j + l < n_; ++l) c_row[j + l] = v[l];
    }
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
