#include "ops/math.hpp"

#include <cmath>
#include <memory>

#include "graph/parallel.hpp"
#include "ops/kernel_util.hpp"

namespace tbgrad {
namespace {

using detail::dispatch_float;

constexpr std::int64_t kMathGrain = 16384;  // elements per task, as ops/elementwise.cpp

enum class MathKind { kExp, kLog, kSqrt, kRsqrt, kNeg, kAbs };

class MathUnaryOp final : public Op {
 public:
  explicit MathUnaryOp(MathKind kind) : kind_(kind) {}
  // By MathKind.
  static constexpr OpTraits kKinds[] = {{.name = "exp"},   {.name = "log"}, {.name = "sqrt"},
                                        {.name = "rsqrt"}, {.name = "neg"}, {.name = "abs"}};
  const OpTraits& traits() const override { return kKinds[static_cast<int>(kind_)]; }
  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const T* x = ctx.inputs[0].data<T>();
      T* y = ctx.output.data<T>();
      parallel_for(ctx.output.numel(), kMathGrain, [&](std::int64_t lo, std::int64_t hi) {
        switch (kind_) {
          case MathKind::kExp:
            for (std::int64_t i = lo; i < hi; ++i) y[i] = std::exp(x[i]);
            break;
          case MathKind::kLog:
            for (std::int64_t i = lo; i < hi; ++i) y[i] = std::log(x[i]);
            break;
          case MathKind::kSqrt:
            for (std::int64_t i = lo; i < hi; ++i) y[i] = std::sqrt(x[i]);
            break;
          case MathKind::kRsqrt:
            for (std::int64_t i = lo; i < hi; ++i) y[i] = T(1) / std::sqrt(x[i]);
            break;
          case MathKind::kNeg:
            for (std::int64_t i = lo; i < hi; ++i) y[i] = -x[i];
            break;
          case MathKind::kAbs:
            for (std::int64_t i = lo; i < hi; ++i) y[i] = std::abs(x[i]);
            break;
        }
      });
    });
  }
  std::vector<Value> vjp(std::span<const Value> in, Value y, Value g) const override {
    switch (kind_) {
      case MathKind::kExp:
        return {exp_backward(y, g)};
      case MathKind::kLog:
        return {log_backward(in[0], g)};
      case MathKind::kSqrt:
        return {sqrt_backward(y, g)};
      case MathKind::kRsqrt:
        return {rsqrt_backward(y, g)};
      case MathKind::kNeg:
        return {neg(g)};
      case MathKind::kAbs:
        return {abs_backward(in[0], g)};
    }
    return {};
  }

 private:
  MathKind kind_;
};
TBGRAD_REGISTER_OPS(MathUnaryOp);

Value math_unary(MathKind kind, const char* op, Value x) {
  if (!x.valid()) shape_error(op, "input is an invalid (empty) Value");
  detail::require_float(op, x);
  Value ins[] = {x};
  return x.graph().add_op(std::make_shared<MathUnaryOp>(kind), ins, x.shape(), x.dtype());
}

// grad_x from (saved value, grad_y), same shapes. kNeg has no gradient kernel (its VJP is neg).
class MathBackwardOp final : public Op {
 public:
  explicit MathBackwardOp(MathKind kind) : kind_(kind) {}
  // By MathKind.
  static constexpr OpTraits kKinds[] = {{.name = "exp_backward", .has_vjp = false},
                                        {.name = "log_backward", .has_vjp = false},
                                        {.name = "sqrt_backward", .has_vjp = false},
                                        {.name = "rsqrt_backward", .has_vjp = false},
                                        {.name = "", .has_vjp = false},
                                        {.name = "abs_backward", .has_vjp = false}};
  const OpTraits& traits() const override { return kKinds[static_cast<int>(kind_)]; }
  void forward(const KernelContext& ctx) const override {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const T* s = ctx.inputs[0].data<T>();
      const T* g = ctx.inputs[1].data<T>();
      T* y = ctx.output.data<T>();
      parallel_for(ctx.output.numel(), kMathGrain, [&](std::int64_t lo, std::int64_t hi) {
        switch (kind_) {
          case MathKind::kExp:
            for (std::int64_t i = lo; i < hi; ++i) y[i] = g[i] * s[i];
            break;
          case MathKind::kLog:
            for (std::int64_t i = lo; i < hi; ++i) y[i] = g[i] / s[i];
            break;
          case MathKind::kSqrt:
            for (std::int64_t i = lo; i < hi; ++i) y[i] = g[i] / (T(2) * s[i]);
            break;
          case MathKind::kRsqrt:
            for (std::int64_t i = lo; i < hi; ++i) y[i] = T(-0.5) * g[i] * (s[i] * s[i] * s[i]);
            break;
          case MathKind::kNeg:
            break;
          case MathKind::kAbs:
            for (std::int64_t i = lo; i < hi; ++i) {
              const T sign = s[i] > T(0) ? T(1) : (s[i] < T(0) ? T(-1) : T(0));
              y[i] = g[i] * sign;
            }
            break;
        }
      });
    });
  }

 private:
  MathKind kind_;
};
// Registered kind by kind: the unused kNeg slot has no name.
[[maybe_unused]] const bool kMathBackwardRegistered = [] {
  for (const OpTraits& t : MathBackwardOp::kKinds) {
    if (*t.name != '\0') register_op(t);
  }
  return true;
}();

Value math_backward(MathKind kind, const char* op, Value saved, Value grad) {
  detail::require_same_graph(op, saved, grad);
  detail::require_float(op, saved);
  detail::require_same_dtype(op, saved, grad);
  if (!(saved.shape() == grad.shape())) {
    shape_error(op, "gradient " + grad.describe() + " must match " + saved.describe());
  }
  Value ins[] = {saved, grad};
  return saved.graph().add_op(std::make_shared<MathBackwardOp>(kind), ins, saved.shape(),
                              saved.dtype());
}

}  // namespace

Value exp(Value x) { return math_unary(MathKind::kExp, "exp", x); }
Value log(Value x) { return math_unary(MathKind::kLog, "log", x); }
Value sqrt(Value x) { return math_unary(MathKind::kSqrt, "sqrt", x); }
Value rsqrt(Value x) { return math_unary(MathKind::kRsqrt, "rsqrt", x); }
Value neg(Value x) { return math_unary(MathKind::kNeg, "neg", x); }
Value abs(Value x) { return math_unary(MathKind::kAbs, "abs", x); }

Value exp_backward(Value y, Value grad) {
  return math_backward(MathKind::kExp, "exp_backward", y, grad);
}
Value log_backward(Value x, Value grad) {
  return math_backward(MathKind::kLog, "log_backward", x, grad);
}
Value sqrt_backward(Value y, Value grad) {
  return math_backward(MathKind::kSqrt, "sqrt_backward", y, grad);
}
Value rsqrt_backward(Value y, Value grad) {
  return math_backward(MathKind::kRsqrt, "rsqrt_backward", y, grad);
}
Value abs_backward(Value x, Value grad) {
  return math_backward(MathKind::kAbs, "abs_backward", x, grad);
}

}  // namespace tbgrad
