#include "ops/matmul.hpp"

#include <algorithm>
#include <array>
#include <memory>
#include <string>
#include <vector>

#include "graph/parallel.hpp"
#include "ops/elementwise.hpp"
#include "ops/kernel_util.hpp"
#include "ops/matmul_kernels.hpp"
#include "ops/reduce.hpp"
#include "ops/shape.hpp"

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

// Note [Batched matmul]: op(a) [..., M, K] x op(b) [..., K, N] -> [batch, M, N], the batch axes
// (all but the last two) broadcast like NumPy's. Each matrix of the result is one call of the
// 2-D kernel above on the operands' matrices, read in place: a broadcast batch axis has stride
// 0, so nothing is copied. The matrices are split into slots, a number fixed by the problem's
// size, each with its own workspace, run in parallel (and every kernel call parallel inside
// itself when its matrix is big enough); a result element is computed by one kernel call, a
// fixed-order chain over K, so the bits depend on neither the thread count nor the slots.
// Not a contraction over rows (Note [Batch contraction]): it sums over K inside each matrix,
// never over its leading (batch) axes, so its traits say nothing of the kind.
class BatchedMatmulOp final : public Op {
 public:
  using Strides = std::array<std::int64_t, Shape::kMaxRank>;
  BatchedMatmulOp(const Shape& a, const Shape& b, const Shape& out, MatmulOptions o)
      : o_(o), batch_rank_(out.rank() - 2) {
    m_ = out[out.rank() - 2];
    n_ = out[out.rank() - 1];
    k_ = o.transpose_a ? a[a.rank() - 2] : a[a.rank() - 1];
    auto strides = [&](const Shape& s, Strides& st) {
      std::int64_t stride = s[s.rank() - 2] * s[s.rank() - 1];  // one matrix
      for (int i = batch_rank_ - 1; i >= 0; --i) {
        const int j = i - (out.rank() - s.rank());
        const std::int64_t d = j >= 0 ? s[j] : 1;
        st[static_cast<std::size_t>(i)] = d == 1 ? 0 : stride;
        stride *= d;
      }
    };
    strides(a, a_stride_);
    strides(b, b_stride_);
    batch_ = 1;
    for (int i = 0; i < batch_rank_; ++i) {
      batch_dims_[static_cast<std::size_t>(i)] = out[i];
      batch_ *= out[i];
    }
  }
  static constexpr OpTraits kKinds[] = {{.name = "batched_matmul"}};
  const OpTraits& traits() const override { return kKinds[0]; }
  OpCost cost(std::span<const Shape>, const Shape&) const override {
    return {2 * static_cast<double>(batch_) * static_cast<double>(m_) * static_cast<double>(n_) *
                static_cast<double>(k_),
            "2*batch*M*N*K"};
  }

  std::size_t workspace_bytes(std::span<const Value> in, Value) const override {
    return in[1].dtype() == DType::kF32
               ? static_cast<std::size_t>(slots() * slot_elements<float>()) * 4
               : static_cast<std::size_t>(slots() * slot_elements<double>()) * 8;
  }

  void forward(const KernelContext& ctx) const override {
    if (batch_ == 0 || m_ == 0 || n_ == 0) return;
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const T* a = ctx.inputs[0].data<T>();
      const T* b = ctx.inputs[1].data<T>();
      T* c = ctx.output.data<T>();
      T* work = static_cast<T*>(ctx.workspace);
      const std::int64_t slots_n = slots(), per_slot = (batch_ + slots_n - 1) / slots_n;
      const std::int64_t ws = slot_elements<T>();
      parallel_for(slots_n, 1, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t s = lo; s < hi; ++s) {
          for (std::int64_t i = s * per_slot; i < std::min(batch_, (s + 1) * per_slot); ++i) {
            std::int64_t oa = 0, ob = 0, rest = i;
            for (int d = batch_rank_ - 1; d >= 0; --d) {
              const auto u = static_cast<std::size_t>(d);
              const std::int64_t idx = rest % batch_dims_[u];
              rest /= batch_dims_[u];
              oa += idx * a_stride_[u];
              ob += idx * b_stride_[u];
            }
            detail::matmul_kernel(dims(), a + oa, b + ob, c + i * m_ * n_, work + s * ws);
          }
        }
      });
    });
  }

  // As MatmulOp's, each product through matmul (broadcasting the batch axes: G has the result's
  // batch), then summed down to the operand's shape over the axes it was broadcast along.
  std::vector<Value> vjp(std::span<const Value> in, Value, Value g) const override {
    const Value& a = in[0];
    const Value& b = in[1];
    const bool ta = o_.transpose_a, tb = o_.transpose_b;
    Value ga = ta ? matmul(b, g, {.transpose_a = tb, .transpose_b = true})
                  : matmul(g, b, {.transpose_a = false, .transpose_b = !tb});
    Value gb = tb ? matmul(g, a, {.transpose_a = true, .transpose_b = ta})
                  : matmul(a, g, {.transpose_a = !ta, .transpose_b = false});
    return {sum_to(ga, a.shape()), sum_to(gb, b.shape())};
  }

 private:
  detail::MatmulDims dims() const { return {m_, k_, n_, o_.transpose_a, o_.transpose_b}; }
  // One matrix's workspace, rounded up to whole cache lines.
  template <typename T>
  std::int64_t slot_elements() const {
    return detail::round_up(std::max<std::int64_t>(1, detail::matmul_workspace_elements<T>(dims())),
                            64 / static_cast<std::int64_t>(sizeof(T)));
  }
  // At most 64 slots, and no more than a workspace of about 8 MiB holds (one at least).
  std::int64_t slots() const {
    const std::int64_t per = slot_elements<double>() * 8;
    return std::max<std::int64_t>(
        1, std::min({batch_, std::int64_t{64}, (std::int64_t{8} << 20) / per}));
  }

  MatmulOptions o_;
  int batch_rank_;
  std::int64_t m_ = 0, k_ = 0, n_ = 0, batch_ = 0;
  Strides batch_dims_{}, a_stride_{}, b_stride_{};
};
TBGRAD_REGISTER_OPS(BatchedMatmulOp);

std::string batch_str(const Shape& s) {
  std::string r = "[";
  for (int i = 0; i + 2 < s.rank(); ++i) r += (i ? "," : "") + std::to_string(s[i]);
  return r + "]";
}

}  // namespace

Value matmul(Value a, Value b, MatmulOptions o) {
  detail::require_same_graph("matmul", a, b);
  detail::require_float("matmul", a);
  detail::require_same_dtype("matmul", a, b);
  for (const Value* v : {&a, &b}) {
    if (v->shape().rank() < 2) {
      shape_error("matmul", std::string(v == &a ? "a" : "b") + " must have rank 2 or more, " +
                                v->describe() + " has rank " + std::to_string(v->shape().rank()) +
                                " (reshape a vector [K] to a matrix [1, K] or [K, 1])");
    }
  }
  const Shape& sa = a.shape();
  const Shape& sb = b.shape();
  const int ra = sa.rank(), rb = sb.rank();
  const std::int64_t m = o.transpose_a ? sa[ra - 1] : sa[ra - 2];
  const std::int64_t k = o.transpose_a ? sa[ra - 2] : sa[ra - 1];
  const std::int64_t kb = o.transpose_b ? sb[rb - 1] : sb[rb - 2];
  const std::int64_t n = o.transpose_b ? sb[rb - 2] : sb[rb - 1];
  if (k != kb) {
    shape_error("matmul", "inner dimensions differ: " + a.describe() +
                              (o.transpose_a ? " transposed" : "") + " has K=" +
                              std::to_string(k) + ", " + b.describe() +
                              (o.transpose_b ? " transposed" : "") + " has K=" +
                              std::to_string(kb));
  }
  if (ra == 2 && rb == 2) {
    Value ins[] = {a, b};
    return a.graph().add_op(std::make_shared<MatmulOp>(m, k, n, o), ins, Shape{m, n}, a.dtype());
  }
  // The batch axes, broadcast (NumPy's rules, aligned at the right).
  const int br = std::max(ra, rb) - 2;
  std::vector<std::int64_t> out(static_cast<std::size_t>(br) + 2);
  for (int i = 0; i < br; ++i) {
    const int ia = i - (br - (ra - 2)), ib = i - (br - (rb - 2));
    const std::int64_t da = ia >= 0 ? sa[ia] : 1, db = ib >= 0 ? sb[ib] : 1;
    if (da != db && da != 1 && db != 1) {
      shape_error("matmul", "batch dimensions do not broadcast: " + a.describe() + " has batch " +
                                batch_str(sa) + ", " + b.describe() + " has batch " +
                                batch_str(sb) + " (" + std::to_string(da) + " against " +
                                std::to_string(db) + ")");
    }
    out[static_cast<std::size_t>(i)] = da == 1 ? db : da;
  }
  out[static_cast<std::size_t>(br)] = m;
  out[static_cast<std::size_t>(br) + 1] = n;
  const Shape out_shape{std::span<const std::int64_t>(out)};
  if (rb == 2 && !o.transpose_a) {
    // a's matrices stacked are one [batch * M, K] matrix: one 2-D product (as torch.matmul
    // folds it), whose weight gradient the trainer contracts over the rows (Note [Batch
    // contraction]).
    std::int64_t rows = m;
    for (int i = 0; i < br; ++i) rows *= out[static_cast<std::size_t>(i)];
    const Value flat = matmul(reshape(a, Shape{rows, k}), b, o);
    return reshape(flat, out_shape);
  }
  Value ins[] = {a, b};
  return a.graph().add_op(std::make_shared<BatchedMatmulOp>(sa, sb, out_shape, o), ins, out_shape,
                          a.dtype());
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
