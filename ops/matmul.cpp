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

  // A transposed b with a transposed a is first copied to [K, N]; the other cases read their
  // operands in place.
  std::size_t workspace_bytes(std::span<const Value> in, Value) const override {
    return o_.transpose_a && o_.transpose_b
               ? static_cast<std::size_t>(k_ * n_) * dtype_size(in[1].dtype())
               : 0;
  }

  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const T* a = ctx.inputs[0].data<T>();  // [M, K] or [K, M]
      const T* b = ctx.inputs[1].data<T>();  // [K, N] or [N, K]
      T* c = ctx.output.data<T>();           // [M, N]
      // Each row of c is one task's, each element summed over k in a fixed order: deterministic.
      const std::int64_t grain = std::max<std::int64_t>(1, 32768 / std::max<std::int64_t>(1, k_ * n_));
      if (o_.transpose_b && !o_.transpose_a) {
        parallel_for(m_, grain, [&](std::int64_t lo, std::int64_t hi) {
          for (std::int64_t i = lo; i < hi; ++i) dot_rows(a + i * k_, b, c + i * n_);
        });
        return;
      }
      if (o_.transpose_b) {  // and transpose_a
        T* bt = static_cast<T*>(ctx.workspace);
        for (std::int64_t j = 0; j < n_; ++j) {
          for (std::int64_t kk = 0; kk < k_; ++kk) bt[kk * n_ + j] = b[j * k_ + kk];
        }
        b = bt;
      }
      const std::int64_t a_step = o_.transpose_a ? m_ : 1;  // stride between a(i, k) and a(i, k+1)
      parallel_for(m_, grain, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t i = lo; i < hi; ++i) {
          axpy_rows(o_.transpose_a ? a + i : a + i * k_, a_step, b, c + i * n_);
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
  // c_row[N] = sum over k of a_row[k * a_step] * b[k, :], with the row kept in registers one
  // block of up to four vectors at a time.
  template <typename T>
  void axpy_rows(const T* a_row, std::int64_t a_step, const T* b, T* c_row) const {
    using S = detail::Simd<T>;
    using V = typename S::Vec;
    constexpr std::int64_t L = S::kLanes;
    std::int64_t j = 0;
    for (; j + 4 * L <= n_; j += 4 * L) {
      V acc[4] = {S::splat(0), S::splat(0), S::splat(0), S::splat(0)};
      for (std::int64_t kk = 0; kk < k_; ++kk) {
        const V av = S::splat(a_row[kk * a_step]);
        const T* br = b + kk * n_ + j;
        for (int t = 0; t < 4; ++t) acc[t] += av * S::load(br + t * L);
      }
      for (int t = 0; t < 4; ++t) S::store(c_row + j + t * L, acc[t]);
    }
    for (; j + L <= n_; j += L) {
      V acc = S::splat(0);
      for (std::int64_t kk = 0; kk < k_; ++kk) acc += S::splat(a_row[kk * a_step]) * S::load(b + kk * n_ + j);
      S::store(c_row + j, acc);
    }
    for (; j < n_; ++j) {
      T acc = 0;
      for (std::int64_t kk = 0; kk < k_; ++kk) acc += a_row[kk * a_step] * b[kk * n_ + j];
      c_row[j] = acc;
    }
  }

  // c_row[j] = dot(a_row[K], b[j, :]) for every j (b is [N, K]): vector partial sums over k,
  // added in lane order, then the scalar tail.
  template <typename T>
  void dot_rows(const T* a_row, const T* b, T* c_row) const {
    using S = detail::Simd<T>;
    using V = typename S::Vec;
    constexpr std::int64_t L = S::kLanes;
    const std::int64_t kv = k_ / L * L;
    for (std::int64_t j = 0; j < n_; ++j) {
      const T* br = b + j * k_;
      V acc = S::splat(0);
      for (std::int64_t kk = 0; kk < kv; kk += L) acc += S::load(a_row + kk) * S::load(br + kk);
      T sum = 0;
      for (int l = 0; l < L; ++l) sum += acc[l];
      for (std::int64_t kk = kv; kk < k_; ++kk) sum += a_row[kk] * br[kk];
      c_row[j] = sum;
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
