#include "ops/matmul.hpp"

#include <memory>

#include "ops/elementwise.hpp"
#include "ops/kernel_util.hpp"
#include "ops/matmul_kernels.hpp"

namespace tbgrad {
namespace {

using detail::dispatch_float;

// C = op(A) op(B); the kernel (ops/matmul_kernels.cpp) is compiled per SIMD target.
class MatmulOp final : public Op {
 public:
  MatmulOp(std::int64_t m, std::int64_t k, std::int64_t n, MatmulOptions o)
      : m_(m), k_(k), n_(n), o_(o) {}
  // Note [Batch contraction]: Aᵀ·B sums over the rows of A and B.
  static constexpr OpTraits kKinds[] = {{.name = "matmul", .sums_over_rows = true}};
  const OpTraits& traits() const override { return kKinds[0]; }
  Value apply_to(std::span<const Value> in) const override { return matmul(in[0], in[1], o_); }
  // op(a) [M,K] x op(b) [K,N] -> [M,N]
  OpCost cost(std::span<const Shape>, const Shape&) const override {
    return {2 * static_cast<double>(m_) * static_cast<double>(n_) * static_cast<double>(k_),
            "2*M*N*K"};
  }

  std::size_t workspace_bytes(std::span<const Value> in, Value) const override {
    const detail::MatmulDims d = dims();
    return in[1].dtype() == DType::kF32
               ? static_cast<std::size_t>(detail::matmul_workspace_elements<float>(d)) * 4
               : static_cast<std::size_t>(detail::matmul_workspace_elements<double>(d)) * 8;
  }

  void forward(const KernelContext& ctx) const override {
    if (m_ == 0 || n_ == 0) return;  // an empty result (the tiling below divides by N)
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      detail::matmul_kernel(dims(), ctx.inputs[0].data<T>(), ctx.inputs[1].data<T>(),
                            ctx.output.data<T>(), static_cast<T*>(ctx.workspace));
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
  detail::MatmulDims dims() const { return {m_, k_, n_, o_.transpose_a, o_.transpose_b}; }

  std::int64_t m_, k_, n_;
  MatmulOptions o_;
};
TBGRAD_REGISTER_OPS(MatmulOp);

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
