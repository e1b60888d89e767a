#include "ops/elementwise.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <memory>

#include "graph/parallel.hpp"
#include "ops/kernel_util.hpp"
#include "ops/reduce.hpp"

namespace tbgrad {
namespace {

using detail::dispatch_float;

using detail::broadcast_apply;
using detail::kElementwiseGrain;

enum class BinaryKind { kAdd, kSub, kMul };

class BinaryOp final : public Op {
 public:
  BinaryOp(BinaryKind kind, const Shape& a, const Shape& b, const Shape& out)
      : kind_(kind), plan_(a, b, out) {}

  // By BinaryKind.
  // Note [Batch means]: add and sub are linear in their inputs.
  static constexpr OpTraits kKinds[] = {{.name = "add", .batch_reduce = BatchReduce::kLinear},
                                        {.name = "sub", .batch_reduce = BatchReduce::kLinear},
                                        {.name = "mul"}};
  const OpTraits& traits() const override { return kKinds[static_cast<int>(kind_)]; }
  double linear_factor(std::size_t i) const override {
    return kind_ == BinaryKind::kSub && i == 1 ? -1.0 : 1.0;
  }

  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const T* a = ctx.inputs[0].data<T>();
      const T* b = ctx.inputs[1].data<T>();
      T* y = ctx.output.data<T>();
      const std::int64_t n = ctx.output.numel();
      switch (kind_) {
        case BinaryKind::kAdd:
          broadcast_apply(plan_, a, b, y, n, [](T u, T v) { return u + v; });
          break;
        case BinaryKind::kSub:
          broadcast_apply(plan_, a, b, y, n, [](T u, T v) { return u - v; });
          break;
        case BinaryKind::kMul:
          broadcast_apply(plan_, a, b, y, n, [](T u, T v) { return u * v; });
          break;
      }
    });
  }

  // y = a + b: ga = g, gb = g; y = a - b: gb = -g; y = a * b: ga = g * b, gb = g * a. Each summed
  // back down over the dimensions its operand was stretched along.
  std::vector<Value> vjp(std::span<const Value> in, Value, Value g) const override {
    const Value& a = in[0];
    const Value& b = in[1];
    switch (kind_) {
      case BinaryKind::kAdd:
        return {sum_to(g, a.shape()), sum_to(g, b.shape())};
      case BinaryKind::kSub:
        return {sum_to(g, a.shape()), scale(sum_to(g, b.shape()), -1.0)};
      case BinaryKind::kMul:
        return {sum_to(mul(g, b), a.shape()), sum_to(mul(g, a), b.shape())};
    }
    return {};
  }

 private:
  BinaryKind kind_;
  detail::BroadcastPlan plan_;
};
TBGRAD_REGISTER_OPS(BinaryOp);

Value binary(BinaryKind kind, const char* op, Value a, Value b) {
  detail::require_same_graph(op, a, b);
  detail::require_float(op, a);
  detail::require_float(op, b);
  detail::require_same_dtype(op, a, b);
  Shape out = broadcast_shapes(op, a, b);
  Value ins[] = {a, b};
  return a.graph().add_op(std::make_shared<BinaryOp>(kind, a.shape(), b.shape(), out), ins, out,
                          a.dtype());
}

class ScaleOp final : public Op {
 public:
  explicit ScaleOp(double factor) : factor_(factor) {}
  static constexpr OpTraits kKinds[] = {{.name = "scale", .batch_reduce = BatchReduce::kLinear}};
  const OpTraits& traits() const override { return kKinds[0]; }
  double linear_factor(std::size_t) const override { return factor_; }  // Note [Batch means]
  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const T* x = ctx.inputs[0].data<T>();
      T* y = ctx.output.data<T>();
      const T f = static_cast<T>(factor_);
      parallel_for(ctx.output.numel(), kElementwiseGrain, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t i = lo; i < hi; ++i) y[i] = x[i] * f;
      });
    });
  }
  std::vector<Value> vjp(std::span<const Value>, Value, Value g) const override {
    return {scale(g, factor_)};
  }

 private:
  double factor_;
};
TBGRAD_REGISTER_OPS(ScaleOp);

// Unary activations and their gradient kernels.
enum class UnaryKind { kRelu, kSigmoid, kTanh };

class UnaryOp final : public Op {
 public:
  explicit UnaryOp(UnaryKind kind) : kind_(kind) {}
  // By UnaryKind. A ReLU can run inside the op producing its input (Note [Epilogues]).
  static constexpr OpTraits kKinds[] = {
      {.name = "relu", .epilogue = Epilogue::Kind::kRelu}, {.name = "sigmoid"}, {.name = "tanh"}};
  const OpTraits& traits() const override { return kKinds[static_cast<int>(kind_)]; }
  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const T* x = ctx.inputs[0].data<T>();
      T* y = ctx.output.data<T>();
      parallel_for(ctx.output.numel(), kElementwiseGrain, [&](std::int64_t lo, std::int64_t hi) {
        switch (kind_) {
          case UnaryKind::kRelu:
            // x <= 0 is false for NaN: NaN propagates, as torch.relu (Note [Epilogues]).
            for (std::int64_t i = lo; i < hi; ++i) y[i] = x[i] <= T(0) ? T(0) : x[i];
            break;
          case UnaryKind::kSigmoid:
            for (std::int64_t i = lo; i < hi; ++i) y[i] = T(1) / (T(1) + std::exp(-x[i]));
            break;
          case UnaryKind::kTanh:
            for (std::int64_t i = lo; i < hi; ++i) y[i] = std::tanh(x[i]);
            break;
        }
      });
    });
  }
  std::vector<Value> vjp(std::span<const Value>, Value y, Value g) const override {
    switch (kind_) {
      case UnaryKind::kRelu:
        // The mask from the output (y > 0 exactly where x > 0), so that nothing else reads the
        // input and the ReLU can run inside the op producing it (Note [Epilogues]).
        return {relu_backward(y, g)};
      case UnaryKind::kSigmoid:
        return {sigmoid_backward(y, g)};
      case UnaryKind::kTanh:
        return {tanh_backward(y, g)};
    }
    return {};
  }

 private:
  UnaryKind kind_;
};
TBGRAD_REGISTER_OPS(UnaryOp);

Value unary(UnaryKind kind, const char* op, Value x) {
  if (!x.valid()) shape_error(op, "input is an invalid (empty) Value");
  detail::require_float(op, x);
  Value ins[] = {x};
  return x.graph().add_op(std::make_shared<UnaryOp>(kind), ins, x.shape(), x.dtype());
}

// grad_x from (saved value, grad_y), same shapes.
class UnaryBackwardOp final : public Op {
 public:
  explicit UnaryBackwardOp(UnaryKind kind) : kind_(kind) {}
  // By UnaryKind. A ReLU's gradient can run inside the op producing its gradient input.
  static constexpr OpTraits kKinds[] = {
      {.name = "relu_backward", .has_vjp = false, .epilogue = Epilogue::Kind::kReluMask},
      {.name = "sigmoid_backward", .has_vjp = false},
      {.name = "tanh_backward", .has_vjp = false}};
  const OpTraits& traits() const override { return kKinds[static_cast<int>(kind_)]; }
  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const T* s = ctx.inputs[0].data<T>();
      const T* g = ctx.inputs[1].data<T>();
      T* y = ctx.output.data<T>();
      parallel_for(ctx.output.numel(), kElementwiseGrain, [&](std::int64_t lo, std::int64_t hi) {
        switch (kind_) {
          case UnaryKind::kRelu:
            // g[i] is read unconditionally: a load only under the condition cannot be
            // vectorised (the compiler may not prove it safe), and a branch on random signs
            // mispredicts half the time (it measured 60x slower).
            for (std::int64_t i = lo; i < hi; ++i) {
              const T gi = g[i];
              y[i] = s[i] <= T(0) ? T(0) : gi;  // NaN passes the gradient, as in torch
            }
            break;
          case UnaryKind::kSigmoid:
            for (std::int64_t i = lo; i < hi; ++i) y[i] = g[i] * s[i] * (T(1) - s[i]);
            break;
          case UnaryKind::kTanh:
            for (std::int64_t i = lo; i < hi; ++i) y[i] = g[i] * (T(1) - s[i] * s[i]);
            break;
        }
      });
    });
  }

 private:
  UnaryKind kind_;
};
TBGRAD_REGISTER_OPS(UnaryBackwardOp);

Value unary_backward(UnaryKind kind, const char* op, Value saved, Value grad) {
  detail::require_same_graph(op, saved, grad);
  detail::require_same_dtype(op, saved, grad);
  if (!(saved.shape() == grad.shape())) {
    shape_error(op, "gradient " + grad.describe() + " must match " + saved.describe());
  }
  Value ins[] = {saved, grad};
  return saved.graph().add_op(std::make_shared<UnaryBackwardOp>(kind), ins, saved.shape(),
                              saved.dtype());
}

}  // namespace

Shape broadcast_shapes(const char* op, const Value& a, const Value& b) {
  const Shape& sa = a.shape();
  const Shape& sb = b.shape();
  const int rank = std::max(sa.rank(), sb.rank());
  std::array<std::int64_t, Shape::kMaxRank> dims{};
  for (int i = 0; i < rank; ++i) {
    const int ia = i - (rank - sa.rank());
    const int ib = i - (rank - sb.rank());
    const std::int64_t da = ia >= 0 ? sa[ia] : 1;
    const std::int64_t db = ib >= 0 ? sb[ib] : 1;
    if (da != db && da != 1 && db != 1) {
      shape_error(op, "cannot broadcast " + a.describe() + " with " + b.describe() +
                          ": dimension " + std::to_string(i) + " is " + std::to_string(da) +
                          " vs " + std::to_string(db) + " (each must match or be 1)");
    }
    dims[static_cast<std::size_t>(i)] = da == 1 ? db : da;
  }
  return Shape(std::span<const std::int64_t>(dims.data(), static_cast<std::size_t>(rank)));
}

Value add(Value a, Value b) { return binary(BinaryKind::kAdd, "add", a, b); }
Value sub(Value a, Value b) { return binary(BinaryKind::kSub, "sub", a, b); }
Value mul(Value a, Value b) { return binary(BinaryKind::kMul, "mul", a, b); }

Value scale(Value x, double factor) {
  if (!x.valid()) shape_error("scale", "input is an invalid (empty) Value");
  detail::require_float("scale", x);
  if (!std::isfinite(factor)) {
    shape_error("scale", "factor must be finite, got " + std::to_string(factor) + " for " +
                             x.describe());
  }
  Value ins[] = {x};
  return x.graph().add_op(std::make_shared<ScaleOp>(factor), ins, x.shape(), x.dtype());
}

Value relu(Value x) { return unary(UnaryKind::kRelu, "relu", x); }
Value sigmoid(Value x) { return unary(UnaryKind::kSigmoid, "sigmoid", x); }
Value tanh(Value x) { return unary(UnaryKind::kTanh, "tanh", x); }

Value relu_backward(Value x, Value grad) {
  return unary_backward(UnaryKind::kRelu, "relu_backward", x, grad);
}
Value sigmoid_backward(Value y, Value grad) {
  return unary_backward(UnaryKind::kSigmoid, "sigmoid_backward", y, grad);
}
Value tanh_backward(Value y, Value grad) {
  return unary_backward(UnaryKind::kTanh, "tanh_backward", y, grad);
}

}  // namespace tbgrad
