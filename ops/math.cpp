// The unary math ops of ops/math.hpp share one scaffold: a kind (MathKind) names the function,
// Fn<kind> holds its forward value, its gradient kernel's value (grad * f' in terms of the saved
// value) and, where the kind has one, its second-derivative kernel's (grad * f''), each written
// as torch's kernels write them. Three op classes run them: MathUnaryOp (y = f(x)),
// MathBackwardOp (the gradient kernel, differentiable) and MathDoubleBackwardOp (the second
// derivative, not). Each loop is instantiated per kind and dtype, so it vectorises like a
// hand-written one.
#include "ops/math.hpp"

#include <cmath>
#include <memory>
#include <string>

#include "graph/parallel.hpp"
#include "ops/elementwise.hpp"
#include "ops/kernel_util.hpp"

namespace tbgrad {
namespace {

using detail::dispatch_float;
using detail::kElementwiseGrain;

enum class MathKind {
  kExp,
  kLog,
  kSqrt,
  kRsqrt,
  kNeg,
  kAbs,
  kPow,
  kClamp,
  kLeakyRelu,
  kGelu,
  kSilu,
  kSoftplus
};

// A kind's attributes: pow: a = exponent; clamp: a = lo, b = hi; leaky_relu: a = slope;
// gelu: a = 1 for the tanh approximation; softplus: a = beta, b = threshold.
struct MathParams {
  double a = 0, b = 0;
};

template <typename T>
struct P {
  T a, b;
};

// Per kind: f(x, p); grad(s, g, p) = g * f'(x) in terms of the saved value s (y = f(x) for
// exp, sqrt, rsqrt; x otherwise); grad2(x, g, p) = g * f''(x) for gelu, silu and softplus.
template <MathKind K>
struct Fn;

struct NoSecond {
  template <typename T>
  static T grad2(T, T, P<T>) {
    return T(0);
  }
};

template <>
struct Fn<MathKind::kExp> : NoSecond {
  static constexpr bool kSavesOutput = true;
  template <typename T>
  static T f(T x, P<T>) {
    return std::exp(x);
  }
  template <typename T>
  static T grad(T y, T g, P<T>) {
    return g * y;
  }
};

template <>
struct Fn<MathKind::kLog> : NoSecond {
  static constexpr bool kSavesOutput = false;
  template <typename T>
  static T f(T x, P<T>) {
    return std::log(x);
  }
  template <typename T>
  static T grad(T x, T g, P<T>) {
    return g / x;
  }
};

template <>
struct Fn<MathKind::kSqrt> : NoSecond {
  static constexpr bool kSavesOutput = true;
  template <typename T>
  static T f(T x, P<T>) {
    return std::sqrt(x);
  }
  template <typename T>
  static T grad(T y, T g, P<T>) {
    return g / (T(2) * y);
  }
};

template <>
struct Fn<MathKind::kRsqrt> : NoSecond {
  static constexpr bool kSavesOutput = true;
  template <typename T>
  static T f(T x, P<T>) {
    return T(1) / std::sqrt(x);
  }
  template <typename T>
  static T grad(T y, T g, P<T>) {
    return T(-0.5) * g * (y * y * y);
  }
};

template <>
struct Fn<MathKind::kNeg> : NoSecond {  // no gradient kernel: the VJP is neg(g)
  static constexpr bool kSavesOutput = false;
  template <typename T>
  static T f(T x, P<T>) {
    return -x;
  }
  template <typename T>
  static T grad(T, T g, P<T>) {
    return -g;
  }
};

template <>
struct Fn<MathKind::kAbs> : NoSecond {
  static constexpr bool kSavesOutput = false;
  template <typename T>
  static T f(T x, P<T>) {
    return std::abs(x);
  }
  template <typename T>
  static T grad(T x, T g, P<T>) {
    const T sign = x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0));
    return g * sign;
  }
};

template <>
struct Fn<MathKind::kPow> : NoSecond {
  static constexpr bool kSavesOutput = false;
  template <typename T>
  static T f(T x, P<T> p) {
    return std::pow(x, p.a);
  }
  template <typename T>
  static T grad(T x, T g, P<T> p) {
    // torch: zero for exponent 0, even where x^-1 is infinite or x is NaN.
    return p.a == T(0) ? T(0) : g * p.a * std::pow(x, p.a - T(1));
  }
};

template <>
struct Fn<MathKind::kClamp> : NoSecond {
  static constexpr bool kSavesOutput = false;
  template <typename T>
  static T f(T x, P<T> p) {
    // NaN x stays NaN; a NaN bound gives NaN (the comparisons are false); lo > hi gives hi.
    T v = x;
    if (!(v >= p.a)) v = v != v ? v : p.a;
    if (!(v <= p.b)) v = v != v ? v : p.b;
    return v;
  }
  template <typename T>
  static T grad(T x, T g, P<T> p) {
    return p.a <= x && x <= p.b ? g : T(0);
  }
};

template <>
struct Fn<MathKind::kLeakyRelu> : NoSecond {
  static constexpr bool kSavesOutput = false;
  template <typename T>
  static T f(T x, P<T> p) {
    return x > T(0) ? x : x * p.a;
  }
  template <typename T>
  static T grad(T x, T g, P<T> p) {
    return x > T(0) ? g : g * p.a;
  }
};

// torch's constants (aten/src/ATen/native/cpu/Activation.cpp).
constexpr double kSqrt1_2 = 0.70710678118654752440;      // M_SQRT1_2
constexpr double kInvSqrt2Pi = 0.39894228040143267794;   // M_2_SQRTPI * M_SQRT1_2 * 0.5
constexpr double kSqrt2OverPi = 0.79788456080286535588;  // M_SQRT2 * M_2_SQRTPI * 0.5
constexpr double kKappa = 0.044715;

template <>
struct Fn<MathKind::kGelu> {
  static constexpr bool kSavesOutput = false;
  template <typename T>
  static T f(T x, P<T> p) {
    if (p.a != T(0)) {
      const T inner = T(kSqrt2OverPi) * (x + T(kKappa) * x * x * x);
      return T(0.5) * x * (T(1) + std::tanh(inner));
    }
    return x * T(0.5) * (T(1) + std::erf(x * T(kSqrt1_2)));
  }
  template <typename T>
  static T grad(T x, T g, P<T> p) {
    if (p.a != T(0)) {
      const T x_sq = x * x;
      const T inner = T(kSqrt2OverPi) * (x + T(kKappa) * x_sq * x);
      const T t = std::tanh(inner);
      const T left = T(0.5) * x;
      const T right = T(1) + t;
      const T left_derivative = T(0.5) * right;
      const T right_derivative =
          (T(1) - t * t) * T(kSqrt2OverPi) * (T(1) + T(3) * T(kKappa) * x_sq);
      return g * (left_derivative + left * right_derivative);
    }
    const T cdf = T(0.5) * (T(1) + std::erf(x * T(kSqrt1_2)));
    const T pdf = std::exp(T(-0.5) * x * x) * T(kInvSqrt2Pi);
    return g * (cdf + x * pdf);
  }
  template <typename T>
  static T grad2(T x, T g, P<T> p) {
    if (p.a != T(0)) {
      // u = k (x + kappa x^3), f' = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) u':
      // f'' = (1 - tanh^2 u) (u' + 0.5 x (u'' - 2 tanh(u) u'^2)).
      const T x_sq = x * x;
      const T t = std::tanh(T(kSqrt2OverPi) * (x + T(kKappa) * x_sq * x));
      const T du = T(kSqrt2OverPi) * (T(1) + T(3) * T(kKappa) * x_sq);
      const T ddu = T(kSqrt2OverPi) * T(6) * T(kKappa) * x;
      return g * ((T(1) - t * t) * (du + T(0.5) * x * (ddu - T(2) * t * du * du)));
    }
    // f'' = pdf(x) (2 - x^2).
    const T pdf = std::exp(T(-0.5) * x * x) * T(kInvSqrt2Pi);
    return g * (pdf * (T(2) - x * x));
  }
};

template <>
struct Fn<MathKind::kSilu> {
  static constexpr bool kSavesOutput = false;
  template <typename T>
  static T f(T x, P<T>) {
    return x / (T(1) + std::exp(-x));
  }
  template <typename T>
  static T grad(T x, T g, P<T>) {
    const T s = T(1) / (T(1) + std::exp(-x));
    return g * s * (T(1) + x * (T(1) - s));
  }
  template <typename T>
  static T grad2(T x, T g, P<T>) {
    // f'' = s (1 - s) (2 + x (1 - 2 s)), s = sigmoid(x).
    const T s = T(1) / (T(1) + std::exp(-x));
    return g * (s * (T(1) - s) * (T(2) + x * (T(1) - T(2) * s)));
  }
};

template <>
struct Fn<MathKind::kSoftplus> {
  static constexpr bool kSavesOutput = false;
  template <typename T>
  static T f(T x, P<T> p) {
    return x * p.a > p.b ? x : std::log1p(std::exp(x * p.a)) / p.a;
  }
  template <typename T>
  static T grad(T x, T g, P<T> p) {
    const T z = std::exp(x * p.a);
    return x * p.a > p.b ? g : g * z / (z + T(1));
  }
  template <typename T>
  static T grad2(T x, T g, P<T> p) {
    // beta s (1 - s), s = sigmoid(beta x), times 0 unless beta x < threshold (torch's
    // softplus_double_backward: strictly below, and a product, so NaN stays NaN).
    const T s = T(1) / (T(1) + std::exp(-x * p.a));
    return g * (p.a * s * (T(1) - s)) * (x * p.a < p.b ? T(1) : T(0));
  }
};

// Calls fn.template operator()<K>() for the kind.
template <typename F>
void visit_kind(MathKind kind, F&& fn) {
  switch (kind) {
    case MathKind::kExp:
      return fn.template operator()<MathKind::kExp>();
    case MathKind::kLog:
      return fn.template operator()<MathKind::kLog>();
    case MathKind::kSqrt:
      return fn.template operator()<MathKind::kSqrt>();
    case MathKind::kRsqrt:
      return fn.template operator()<MathKind::kRsqrt>();
    case MathKind::kNeg:
      return fn.template operator()<MathKind::kNeg>();
    case MathKind::kAbs:
      return fn.template operator()<MathKind::kAbs>();
    case MathKind::kPow:
      return fn.template operator()<MathKind::kPow>();
    case MathKind::kClamp:
      return fn.template operator()<MathKind::kClamp>();
    case MathKind::kLeakyRelu:
      return fn.template operator()<MathKind::kLeakyRelu>();
    case MathKind::kGelu:
      return fn.template operator()<MathKind::kGelu>();
    case MathKind::kSilu:
      return fn.template operator()<MathKind::kSilu>();
    case MathKind::kSoftplus:
      return fn.template operator()<MathKind::kSoftplus>();
  }
}

bool saves_output(MathKind kind) {
  bool saves = false;
  visit_kind(kind, [&]<MathKind K>() { saves = Fn<K>::kSavesOutput; });
  return saves;
}

// What the three classes share: the kind, its attributes, and the elementwise loop.
class MathOpBase : public Op {
 public:
  MathOpBase(MathKind kind, MathParams params) : kind_(kind), params_(params) {}

 protected:
  // y[i] = body(K, T)(inputs[0][i], inputs[1][i] or unused, params) over the output.
  template <typename Body>
  void run(const KernelContext& ctx, Body body) const {
    dispatch_float(ctx.output.dtype(), [&]<typename T>() {
      const T* x = ctx.inputs[0].data<T>();
      const T* g = ctx.inputs.size() > 1 ? ctx.inputs[1].data<T>() : nullptr;
      T* y = ctx.output.data<T>();
      const P<T> p{static_cast<T>(params_.a), static_cast<T>(params_.b)};
      visit_kind(kind_, [&]<MathKind K>() {
        parallel_for(ctx.output.numel(), kElementwiseGrain, [&](std::int64_t lo, std::int64_t hi) {
          body.template operator()<K, T>(x, g, y, lo, hi, p);
        });
      });
    });
  }

  MathKind kind_;
  MathParams params_;
};

Value math_backward(MathKind kind, MathParams p, const char* op, Value saved, Value grad);
Value math_double_backward(MathKind kind, MathParams p, const char* op, Value x, Value grad);

// Names by MathKind: the gradient kernels', "" for none.
constexpr const char* kBackwardNames[] = {
    "exp_backward",  "log_backward",     "sqrt_backward",  "rsqrt_backward",      "",
    "abs_backward",  "pow_backward",     "clamp_backward", "leaky_relu_backward", "gelu_backward",
    "silu_backward", "softplus_backward"};

class MathUnaryOp final : public MathOpBase {
 public:
  using MathOpBase::MathOpBase;
  // By MathKind.
  static constexpr OpTraits kKinds[] = {
      {.name = "exp"},        {.name = "log"},  {.name = "sqrt"}, {.name = "rsqrt"},
      {.name = "neg"},        {.name = "abs"},  {.name = "pow"},  {.name = "clamp"},
      {.name = "leaky_relu"}, {.name = "gelu"}, {.name = "silu"}, {.name = "softplus"}};
  const OpTraits& traits() const override { return kKinds[static_cast<int>(kind_)]; }
  void forward(const KernelContext& ctx) const override {
    run(ctx, []<MathKind K, typename T>(const T* x, const T*, T* y, std::int64_t lo,
                                        std::int64_t hi, P<T> p) {
      for (std::int64_t i = lo; i < hi; ++i) y[i] = Fn<K>::f(x[i], p);
    });
  }
  std::vector<Value> vjp(std::span<const Value> in, Value y, Value g) const override {
    if (kind_ == MathKind::kNeg) return {neg(g)};
    const auto k = static_cast<std::size_t>(kind_);
    return {math_backward(kind_, params_, kBackwardNames[k], saves_output(kind_) ? y : in[0], g)};
  }
};
TBGRAD_REGISTER_OPS(MathUnaryOp);

// grad_x from (saved value, grad_y), same shapes; differentiable in both.
class MathBackwardOp final : public MathOpBase {
 public:
  using MathOpBase::MathOpBase;
  // By MathKind; kNeg has no gradient kernel (its VJP is neg).
  static constexpr OpTraits kKinds[] = {
      {.name = kBackwardNames[0]}, {.name = kBackwardNames[1]},  {.name = kBackwardNames[2]},
      {.name = kBackwardNames[3]}, {.name = kBackwardNames[4]},  {.name = kBackwardNames[5]},
      {.name = kBackwardNames[6]}, {.name = kBackwardNames[7]},  {.name = kBackwardNames[8]},
      {.name = kBackwardNames[9]}, {.name = kBackwardNames[10]}, {.name = kBackwardNames[11]}};
  const OpTraits& traits() const override { return kKinds[static_cast<int>(kind_)]; }
  void forward(const KernelContext& ctx) const override {
    run(ctx, []<MathKind K, typename T>(const T* s, const T* g, T* y, std::int64_t lo,
                                        std::int64_t hi, P<T> p) {
      for (std::int64_t i = lo; i < hi; ++i) y[i] = Fn<K>::grad(s[i], g[i], p);
    });
  }
  // The kernel is g * d(s): linear in g, so g's gradient is the same kernel applied to gg; s's is
  // gg * g * d'(s), built from differentiable ops where that is short, else a second-derivative
  // kernel; none where d is piecewise constant (abs, clamp, leaky_relu, pow with exponent 0, 1).
  std::vector<Value> vjp(std::span<const Value> in, Value, Value gg) const override {
    const Value& s = in[0];
    const Value& g = in[1];
    const auto k = static_cast<std::size_t>(kind_);
    Value gs;
    switch (kind_) {
      case MathKind::kExp:  // d(y) = y
        gs = mul(gg, g);
        break;
      case MathKind::kLog:  // d(x) = 1 / x, d' = -1 / x^2
        gs = neg(div(div(mul(g, gg), s), s));
        break;
      case MathKind::kSqrt:  // d(y) = 1 / (2 y), d' = -1 / (2 y^2)
        gs = scale(div(div(mul(g, gg), s), s), -0.5);
        break;
      case MathKind::kRsqrt:  // d(y) = -0.5 y^3, d' = -1.5 y^2
        gs = scale(mul(mul(g, gg), mul(s, s)), -1.5);
        break;
      case MathKind::kPow:  // d(x) = p x^(p-1), d' = p (p - 1) x^(p-2)
        if (params_.a != 0 && params_.a != 1) {
          gs = scale(mul(mul(g, gg), pow(s, params_.a - 2)), params_.a * (params_.a - 1));
        }
        break;
      case MathKind::kGelu:
        gs = gelu_double_backward(
            s, mul(g, gg), params_.a != 0 ? GeluApproximation::kTanh : GeluApproximation::kNone);
        break;
      case MathKind::kSilu:
        gs = silu_double_backward(s, mul(g, gg));
        break;
      case MathKind::kSoftplus:
        gs = softplus_double_backward(s, mul(g, gg), params_.a, params_.b);
        break;
      case MathKind::kNeg:
      case MathKind::kAbs:
      case MathKind::kClamp:
      case MathKind::kLeakyRelu:
        break;
    }
    return {gs, math_backward(kind_, params_, kBackwardNames[k], s, gg)};
  }
};

// grad * f''(x), same shapes; gelu, silu and softplus only. Not differentiable.
class MathDoubleBackwardOp final : public MathOpBase {
 public:
  using MathOpBase::MathOpBase;
  static constexpr OpTraits kKinds[] = {{.name = "", .has_vjp = false},
                                        {.name = "", .has_vjp = false},
                                        {.name = "", .has_vjp = false},
                                        {.name = "", .has_vjp = false},
                                        {.name = "", .has_vjp = false},
                                        {.name = "", .has_vjp = false},
                                        {.name = "", .has_vjp = false},
                                        {.name = "", .has_vjp = false},
                                        {.name = "", .has_vjp = false},
                                        {.name = "gelu_double_backward", .has_vjp = false},
                                        {.name = "silu_double_backward", .has_vjp = false},
                                        {.name = "softplus_double_backward", .has_vjp = false}};
  const OpTraits& traits() const override { return kKinds[static_cast<int>(kind_)]; }
  void forward(const KernelContext& ctx) const override {
    run(ctx, []<MathKind K, typename T>(const T* x, const T* g, T* y, std::int64_t lo,
                                        std::int64_t hi, P<T> p) {
      for (std::int64_t i = lo; i < hi; ++i) y[i] = Fn<K>::grad2(x[i], g[i], p);
    });
  }
};

// Registered kind by kind: the unused slots have no name.
template <typename OpClass>
bool register_named_kinds() {
  for (const OpTraits& t : OpClass::kKinds) {
    if (*t.name != '\0') register_op(t);
  }
  return true;
}
[[maybe_unused]] const bool kMathBackwardRegistered = register_named_kinds<MathBackwardOp>();
[[maybe_unused]] const bool kMathDoubleBackwardRegistered =
    register_named_kinds<MathDoubleBackwardOp>();

Value math_unary(MathKind kind, MathParams p, const char* op, Value x) {
  if (!x.valid()) shape_error(op, "input is an invalid (empty) Value");
  detail::require_float(op, x);
  Value ins[] = {x};
  return x.graph().add_op(std::make_shared<MathUnaryOp>(kind, p), ins, x.shape(), x.dtype());
}

void require_kernel_inputs(const char* op, const Value& saved, const Value& grad) {
  detail::require_same_graph(op, saved, grad);
  detail::require_float(op, saved);
  detail::require_same_dtype(op, saved, grad);
  if (!(saved.shape() == grad.shape())) {
    shape_error(op, "gradient " + grad.describe() + " must match " + saved.describe());
  }
}

Value math_backward(MathKind kind, MathParams p, const char* op, Value saved, Value grad) {
  require_kernel_inputs(op, saved, grad);
  Value ins[] = {saved, grad};
  return saved.graph().add_op(std::make_shared<MathBackwardOp>(kind, p), ins, saved.shape(),
                              saved.dtype());
}

Value math_double_backward(MathKind kind, MathParams p, const char* op, Value x, Value grad) {
  require_kernel_inputs(op, x, grad);
  Value ins[] = {x, grad};
  return x.graph().add_op(std::make_shared<MathDoubleBackwardOp>(kind, p), ins, x.shape(),
                          x.dtype());
}

void require_finite(const char* op, const char* what, double v, const Value& x) {
  if (!std::isfinite(v)) {
    shape_error(op, std::string(what) + " must be finite, got " + std::to_string(v) + " for " +
                        x.describe());
  }
}

MathParams softplus_params(const char* op, double beta, double threshold, const Value& x) {
  require_finite(op, "beta", beta, x);
  if (beta == 0) shape_error(op, "beta must be nonzero, got 0 for " + x.describe());
  if (std::isnan(threshold)) shape_error(op, "threshold must not be NaN for " + x.describe());
  return {beta, threshold};
}

MathParams gelu_params(GeluApproximation approximate) {
  return {approximate == GeluApproximation::kTanh ? 1.0 : 0.0, 0};
}

}  // namespace

Value exp(Value x) {
  return math_unary(MathKind::kExp, {}, "exp", x);
}
Value log(Value x) {
  return math_unary(MathKind::kLog, {}, "log", x);
}
Value sqrt(Value x) {
  return math_unary(MathKind::kSqrt, {}, "sqrt", x);
}
Value rsqrt(Value x) {
  return math_unary(MathKind::kRsqrt, {}, "rsqrt", x);
}
Value neg(Value x) {
  return math_unary(MathKind::kNeg, {}, "neg", x);
}
Value abs(Value x) {
  return math_unary(MathKind::kAbs, {}, "abs", x);
}

Value pow(Value x, double exponent) {
  if (x.valid()) require_finite("pow", "exponent", exponent, x);
  return math_unary(MathKind::kPow, {exponent, 0}, "pow", x);
}
Value clamp(Value x, double lo, double hi) {
  return math_unary(MathKind::kClamp, {lo, hi}, "clamp", x);
}
Value leaky_relu(Value x, double negative_slope) {
  if (x.valid()) require_finite("leaky_relu", "negative_slope", negative_slope, x);
  return math_unary(MathKind::kLeakyRelu, {negative_slope, 0}, "leaky_relu", x);
}
Value gelu(Value x, GeluApproximation approximate) {
  return math_unary(MathKind::kGelu, gelu_params(approximate), "gelu", x);
}
Value silu(Value x) {
  return math_unary(MathKind::kSilu, {}, "silu", x);
}
Value softplus(Value x, double beta, double threshold) {
  if (!x.valid()) shape_error("softplus", "input is an invalid (empty) Value");
  return math_unary(MathKind::kSoftplus, softplus_params("softplus", beta, threshold, x),
                    "softplus", x);
}

Value exp_backward(Value y, Value grad) {
  return math_backward(MathKind::kExp, {}, "exp_backward", y, grad);
}
Value log_backward(Value x, Value grad) {
  return math_backward(MathKind::kLog, {}, "log_backward", x, grad);
}
Value sqrt_backward(Value y, Value grad) {
  return math_backward(MathKind::kSqrt, {}, "sqrt_backward", y, grad);
}
Value rsqrt_backward(Value y, Value grad) {
  return math_backward(MathKind::kRsqrt, {}, "rsqrt_backward", y, grad);
}
Value abs_backward(Value x, Value grad) {
  return math_backward(MathKind::kAbs, {}, "abs_backward", x, grad);
}
Value pow_backward(Value x, Value grad, double exponent) {
  if (x.valid()) require_finite("pow_backward", "exponent", exponent, x);
  return math_backward(MathKind::kPow, {exponent, 0}, "pow_backward", x, grad);
}
Value clamp_backward(Value x, Value grad, double lo, double hi) {
  return math_backward(MathKind::kClamp, {lo, hi}, "clamp_backward", x, grad);
}
Value leaky_relu_backward(Value x, Value grad, double negative_slope) {
  if (x.valid()) require_finite("leaky_relu_backward", "negative_slope", negative_slope, x);
  return math_backward(MathKind::kLeakyRelu, {negative_slope, 0}, "leaky_relu_backward", x, grad);
}
Value gelu_backward(Value x, Value grad, GeluApproximation approximate) {
  return math_backward(MathKind::kGelu, gelu_params(approximate), "gelu_backward", x, grad);
}
Value silu_backward(Value x, Value grad) {
  return math_backward(MathKind::kSilu, {}, "silu_backward", x, grad);
}
Value softplus_backward(Value x, Value grad, double beta, double threshold) {
  if (!x.valid()) shape_error("softplus_backward", "an input is an invalid (empty) Value");
  return math_backward(MathKind::kSoftplus,
                       softplus_params("softplus_backward", beta, threshold, x),
                       "softplus_backward", x, grad);
}

Value gelu_double_backward(Value x, Value grad, GeluApproximation approximate) {
  return math_double_backward(MathKind::kGelu, gelu_params(approximate), "gelu_double_backward", x,
                              grad);
}
Value silu_double_backward(Value x, Value grad) {
  return math_double_backward(MathKind::kSilu, {}, "silu_double_backward", x, grad);
}
Value softplus_double_backward(Value x, Value grad, double beta, double threshold) {
  if (!x.valid()) shape_error("softplus_double_backward", "an input is an invalid (empty) Value");
  return math_double_backward(MathKind::kSoftplus,
                              softplus_params("softplus_double_backward", beta, threshold, x),
                              "softplus_double_backward", x, grad);
}

}  // namespace tbgrad
