// The broadcasting ops of ops/math.hpp: div, maximum, minimum (and the gradient share kernel of
// the last two) on detail::broadcast_apply, as add/sub/mul; where on a three-operand plan.
#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>

#include "graph/parallel.hpp"
#include "ops/elementwise.hpp"
#include "ops/kernel_util.hpp"
#include "ops/math.hpp"
#include "ops/reduce.hpp"

namespace tbgrad {
namespace {

using detail::broadcast_apply;
using detail::dispatch_float;
using detail::kElementwiseGrain;

enum class MathBinaryKind { kDiv, kMaximum, kMinimum, kMaximumGradShare };

class MathBinaryOp final : public Op {
 public:
  MathBinaryOp(MathBinaryKind kind, const Shape& a, const Shape& b, const Shape& out)
      : kind_(kind), plan_(a, b, out) {}

  // By MathBinaryKind.
  static constexpr OpTraits kKinds[] = {
      {.name = "div"}, {.name = "maximum"}, {.name = "minimum"}, {.name = "maximum_grad_share"}};
  const OpTraits& traits() const override { return kKinds[static_cast<int>(kind_)]; }

  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const T* a = ctx.inputs[0].data<T>();
      const T* b = ctx.inputs[1].data<T>();
      T* y = ctx.output.data<T>();
      const std::int64_t n = ctx.output.numel();
      switch (kind_) {
        case MathBinaryKind::kDiv:
          broadcast_apply(plan_, a, b, y, n, [](T u, T v) { return u / v; });
          break;
        case MathBinaryKind::kMaximum:
          // NaN in either gives NaN (torch.maximum); otherwise std::max's choice.
          broadcast_apply(plan_, a, b, y, n,
                          [](T u, T v) { return u != u ? u : (v != v ? v : (u < v ? v : u)); });
          break;
        case MathBinaryKind::kMinimum:
          broadcast_apply(plan_, a, b, y, n,
                          [](T u, T v) { return u != u ? u : (v != v ? v : (v < u ? v : u)); });
          break;
        case MathBinaryKind::kMaximumGradShare:
          // torch 1.13: where(a == b, g / 2, g).masked_fill_(a < b, 0), per unit of g.
          broadcast_apply(plan_, a, b, y, n,
                          [](T u, T v) { return u < v ? T(0) : (u == v ? T(0.5) : T(1)); });
          break;
      }
    });
  }

  std::vector<Value> vjp(std::span<const Value> in, Value y, Value g) const override {
    const Value& a = in[0];
    const Value& b = in[1];
    switch (kind_) {
      case MathBinaryKind::kDiv:
        // torch: grad / b, and -grad * ((a / b) / b) with a / b the output.
        return {sum_to(div(g, b), a.shape()), sum_to(neg(mul(g, div(y, b))), b.shape())};
      case MathBinaryKind::kMaximum:
        return {sum_to(mul(g, maximum_grad_share(a, b)), a.shape()),
                sum_to(mul(g, maximum_grad_share(b, a)), b.shape())};
      case MathBinaryKind::kMinimum:
        return {sum_to(mul(g, maximum_grad_share(b, a)), a.shape()),
                sum_to(mul(g, maximum_grad_share(a, b)), b.shape())};
      case MathBinaryKind::kMaximumGradShare:
        return {Value(), Value()};  // piecewise constant
    }
    return {};
  }

 private:
  MathBinaryKind kind_;
  detail::BroadcastPlan plan_;
};
TBGRAD_REGISTER_OPS(MathBinaryOp);

Value math_binary(MathBinaryKind kind, const char* op, Value a, Value b) {
  detail::require_same_graph(op, a, b);
  detail::require_float(op, a);
  detail::require_float(op, b);
  detail::require_same_dtype(op, a, b);
  Shape out = broadcast_shapes(op, a, b);
  Value ins[] = {a, b};
  return a.graph().add_op(std::make_shared<MathBinaryOp>(kind, a.shape(), b.shape(), out), ins, out,
                          a.dtype());
}

// where(mask, a, b): the strides of the three operands in the output (0 on stretched dims).
class WhereOp final : public Op {
 public:
  WhereOp(const Shape& m, const Shape& a, const Shape& b, const Shape& out) : rank_(out.rank()) {
    const Shape* shapes[] = {&m, &a, &b};
    for (int i = 0; i < rank_; ++i) out_[static_cast<std::size_t>(i)] = out[i];
    for (std::size_t k = 0; k < 3; ++k) {
      const Shape& s = *shapes[k];
      std::int64_t stride = 1;
      for (int i = rank_ - 1; i >= 0; --i) {
        const int j = i - (rank_ - s.rank());
        const std::int64_t d = j >= 0 ? s[j] : 1;
        stride_[k][static_cast<std::size_t>(i)] = d == 1 ? 0 : stride;
        stride *= d;
      }
    }
  }
  static constexpr OpTraits kKinds[] = {{.name = "where"}};
  const OpTraits& traits() const override { return kKinds[0]; }

  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      if (ctx.inputs[0].dtype() == DType::kI32) {
        run<T>(ctx, ctx.inputs[0].data<std::int32_t>());
      } else {
        run<T>(ctx, ctx.inputs[0].data<T>());
      }
    });
  }

  // a's gradient is g where the mask picks a, b's where it does not; none flows to the mask.
  std::vector<Value> vjp(std::span<const Value> in, Value, Value g) const override {
    Value zero = g.graph().constant(Tensor(Shape{}, g.dtype()), "zero");
    return {Value(), sum_to(where(in[0], g, zero), in[1].shape()),
            sum_to(where(in[0], zero, g), in[2].shape())};
  }

 private:
  template <typename T, typename M>
  void run(const KernelContext& ctx, const M* m) const {
    const T* a = ctx.inputs[1].data<T>();
    const T* b = ctx.inputs[2].data<T>();
    T* y = ctx.output.data<T>();
    const std::int64_t numel = ctx.output.numel();
    const std::int64_t inner = rank_ ? out_[static_cast<std::size_t>(rank_ - 1)] : 1;
    const std::int64_t rows = inner ? numel / inner : 0;
    const auto last = static_cast<std::size_t>(rank_ ? rank_ - 1 : 0);
    const std::int64_t sm = rank_ ? stride_[0][last] : 0;
    const std::int64_t sa = rank_ ? stride_[1][last] : 0;
    const std::int64_t sb = rank_ ? stride_[2][last] : 0;
    const std::int64_t grain =
        std::max<std::int64_t>(1, kElementwiseGrain / std::max<std::int64_t>(inner, 1));
    parallel_for(rows, grain, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t r = lo; r < hi; ++r) {
        std::int64_t off[3] = {0, 0, 0};
        std::int64_t row = r;
        for (int i = rank_ - 2; i >= 0; --i) {
          const auto k = static_cast<std::size_t>(i);
          const std::int64_t idx = row % out_[k];
          row /= out_[k];
          for (std::size_t o = 0; o < 3; ++o) off[o] += idx * stride_[o][k];
        }
        const M* mr = m + off[0];
        const T* ar = a + off[1];
        const T* br = b + off[2];
        T* yr = y + r * inner;
        // A NaN mask is nonzero: it picks a, as a NaN converted to bool does in torch.
        for (std::int64_t i = 0; i < inner; ++i)
          yr[i] = mr[i * sm] != M(0) ? ar[i * sa] : br[i * sb];
      }
    });
  }

  int rank_;
  std::array<std::int64_t, Shape::kMaxRank> out_{};
  std::array<std::array<std::int64_t, Shape::kMaxRank>, 3> stride_{};
};
TBGRAD_REGISTER_OPS(WhereOp);

}  // namespace

Value div(Value a, Value b) {
  return math_binary(MathBinaryKind::kDiv, "div", a, b);
}
Value maximum(Value a, Value b) {
  return math_binary(MathBinaryKind::kMaximum, "maximum", a, b);
}
Value minimum(Value a, Value b) {
  return math_binary(MathBinaryKind::kMinimum, "minimum", a, b);
}
Value maximum_grad_share(Value a, Value b) {
  return math_binary(MathBinaryKind::kMaximumGradShare, "maximum_grad_share", a, b);
}

Value where(Value mask, Value a, Value b) {
  const char* op = "where";
  detail::require_same_graph(op, a, b);
  detail::require_same_graph(op, mask, a);
  detail::require_float(op, a);
  detail::require_float(op, b);
  detail::require_same_dtype(op, a, b);
  if (mask.dtype() != DType::kI32 && mask.dtype() != a.dtype()) {
    shape_error(op,
                "mask " + mask.describe() + " must be i32 or have the dtype of a " + a.describe());
  }
  const Shape ab = broadcast_shapes(op, a, b);
  // The mask against a and b's common shape, named in the user's terms.
  const Shape& sm = mask.shape();
  const int rank = std::max(sm.rank(), ab.rank());
  std::array<std::int64_t, Shape::kMaxRank> dims{};
  for (int i = 0; i < rank; ++i) {
    const int im = i - (rank - sm.rank());
    const int iab = i - (rank - ab.rank());
    const std::int64_t dm = im >= 0 ? sm[im] : 1;
    const std::int64_t dab = iab >= 0 ? ab[iab] : 1;
    if (dm != dab && dm != 1 && dab != 1) {
      shape_error(op, "cannot broadcast mask " + mask.describe() + " with " + a.describe() +
                          " and " + b.describe() + " (together " + ab.str() + "): dimension " +
                          std::to_string(i) + " is " + std::to_string(dm) + " vs " +
                          std::to_string(dab) + " (each must match or be 1)");
    }
    dims[static_cast<std::size_t>(i)] = dm == 1 ? dab : dm;
  }
  const Shape out(std::span<const std::int64_t>(dims.data(), static_cast<std::size_t>(rank)));
  Value ins[] = {mask, a, b};
  return a.graph().add_op(std::make_shared<WhereOp>(sm, a.shape(), b.shape(), out), ins, out,
                          a.dtype());
}

}  // namespace tbgrad
