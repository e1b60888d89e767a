// The op table's cases (tests/op_cases.hpp) of the elementwise math ops (ops/math.hpp) and their
// gradient kernels. Inputs keep log, sqrt, rsqrt and fractional powers inside their domain and
// away from 0 (a pole of their gradients), abs and leaky_relu away from their kink at 0, and
// divisors away from 0. The gradient kernels have VJPs: their gradchecks and their PyTorch
// comparisons (torch's double backward, vjp with create_graph) check second derivatives; the
// *_double_backward kernels are checked against the numeric VJP of the gradient kernel.
// Ties and kinks exactly, and NaN, are tested by hand against torch's values
// (tests/test_math_ops.cpp).
#include "op_case_util.hpp"

#include <cstdint>
#include <limits>
#include <string>

namespace tbgrad::testing::cases {

namespace {

struct MathRow {
  const char* op;
  Value (*forward)(Value x);
  Value (*kernel)(Value x, Value gy);  // the gradient kernel, given the forward op's input
  double lo, hi;                       // the inputs' range (0, 0: away from zero)
  const char* torch;                   // a Python function
  const char* variant = "";            // prefix of the case names, for an op's other attributes
  // The second-derivative kernel (grad * f''(x)) and the gradient kernel at grad = 1 it is the
  // derivative of; null for none.
  Value (*kernel2)(Value x, Value gy) = nullptr;
  Value (*kernel_at_one)(Value x, Value ones) = nullptr;
};

// A graph constant of ones shaped like x, of the graph's dtype.
Value ones_like(Graph& g, const Value& x) {
  Tensor t(x.shape(), g.dtype());
  for (std::int64_t i = 0; i < t.numel(); ++i) t.set(i, 1.0);
  return g.constant(t, "ones");
}

CaseInput math_input(const MathRow& r, Shape s) {
  return r.lo == r.hi ? away_from_zero("x", s) : uniform("x", s, r.lo, r.hi);
}

constexpr double kInf = std::numeric_limits<double>::infinity();

// Operand shapes of the broadcasting ops: equal, stretched both ways, a scalar, size-1 dims,
// and 40000 elements for the parallel path.
struct BinaryShapes {
  Shape a, b;
};
const BinaryShapes kBinaryShapes[] = {
    {{3, 4}, {3, 4}},       {{2, 3, 1, 5}, {3, 4, 1}}, {{}, {2, 3}},      {{4, 3}, {}},
    {{1, 5, 1}, {3, 1, 2}}, {{7}, {1}},                {{200, 200}, {200}}};

std::string binary_name(const BinaryShapes& s) {
  return shape_name(s.a) + "_by_" + shape_name(s.b);
}

void add_math_binary_cases(Table& t) {
  using BinaryFn = Value (*)(Value, Value);
  struct BinaryRow {
    const char* op;
    BinaryFn fn;
    double b_lo, b_hi;  // b's range (a is uniform in [-1, 1))
    const char* torch;  // over a and b
    const char* variant;
  };
  const BinaryRow rows[] = {
      {"div", [](Value a, Value b) { return tbgrad::div(a, b); }, 0.5, 2, "torch.div(a, b)", ""},
      {"div", [](Value a, Value b) { return tbgrad::div(a, b); }, -2, -0.5, "torch.div(a, b)",
       "negative_"},
      {"maximum", [](Value a, Value b) { return tbgrad::maximum(a, b); }, -1, 1,
       "torch.maximum(a, b)", ""},
      {"minimum", [](Value a, Value b) { return tbgrad::minimum(a, b); }, -1, 1,
       "torch.minimum(a, b)", ""},
      // Piecewise constant, so torch's expression adds 0 * (a + b) to give it a (zero) gradient.
      {"maximum_grad_share", [](Value a, Value b) { return maximum_grad_share(a, b); }, -1, 1,
       "(~(a < b)).to(a.dtype) - 0.5 * (a == b).to(a.dtype) + 0 * (a + b)", ""},
  };
  for (const BinaryRow& r : rows) {
    const BinaryFn fn = r.fn;
    for (const BinaryShapes& s : kBinaryShapes) {
      t.push_back({.op = r.op,
                   .name = r.variant + binary_name(s),
                   .inputs = {uniform("a", s.a), uniform("b", s.b, r.b_lo, r.b_hi)},
                   .build = [fn](Graph&, Inputs in) { return fn(in[0], in[1]); },
                   .torch = r.torch});
    }
  }
  // A tie everywhere: each side gets half of the gradient, which adds up to the derivative of
  // maximum(a, a) = a, so the gradcheck applies.
  for (const char* op : {"maximum", "minimum"}) {
    const bool max = std::string(op) == "maximum";
    t.push_back({.op = op,
                 .name = "tie_with_itself_3x4",
                 .inputs = {uniform("a", {3, 4})},
                 .build = [max](Graph&, Inputs in) {
                   return max ? tbgrad::maximum(in[0], in[0]) : tbgrad::minimum(in[0], in[0]);
                 },
                 .torch = std::string("torch.") + op + "(a, a)"});
  }
  // where: an i32 mask of 0s and 1s broadcasting with a and b.
  struct WhereShapes {
    Shape m, a, b;
  };
  const WhereShapes where_shapes[] = {{{3, 4}, {3, 4}, {3, 4}},
                                      {{2, 3, 1, 5}, {3, 4, 1}, {5}},
                                      {{3, 1}, {}, {1, 4}},
                                      {{}, {2, 3}, {2, 3}},
                                      {{1, 5, 1}, {1, 1, 2}, {3, 1, 1}},
                                      {{200, 200}, {200, 200}, {200}}};
  for (const WhereShapes& s : where_shapes) {
    t.push_back({.op = "where",
                 .name = shape_name(s.m) + "_" + shape_name(s.a) + "_" + shape_name(s.b),
                 .inputs = {labels("m", s.m, 2), uniform("a", s.a), uniform("b", s.b)},
                 .build = [](Graph&, Inputs in) { return tbgrad::where(in[0], in[1], in[2]); },
                 .torch = "torch.where(m != 0, a, b)"});
  }
}

}  // namespace

void add_math_cases(Table& t) {
  const MathRow rows[] = {
      {"exp", [](Value x) { return tbgrad::exp(x); },
       [](Value x, Value gy) { return exp_backward(tbgrad::exp(x), gy); }, -3, 3, "torch.exp"},
      {"log", [](Value x) { return tbgrad::log(x); },
       [](Value x, Value gy) { return log_backward(x, gy); }, 0.2, 5, "torch.log"},
      {"sqrt", [](Value x) { return tbgrad::sqrt(x); },
       [](Value x, Value gy) { return sqrt_backward(tbgrad::sqrt(x), gy); }, 0.2, 5,
       "torch.sqrt"},
      {"rsqrt", [](Value x) { return tbgrad::rsqrt(x); },
       [](Value x, Value gy) { return rsqrt_backward(tbgrad::rsqrt(x), gy); }, 0.2, 5,
       "torch.rsqrt"},
      {"neg", [](Value x) { return tbgrad::neg(x); }, nullptr, -2, 2, "torch.neg"},
      {"abs", [](Value x) { return tbgrad::abs(x); },
       [](Value x, Value gy) { return abs_backward(x, gy); }, 0, 0, "torch.abs"},
      {"pow", [](Value x) { return tbgrad::pow(x, 2.0); },
       [](Value x, Value gy) { return pow_backward(x, gy, 2.0); }, -2, 2,
       "lambda t: torch.pow(t, 2.0)", "p2_"},
      {"pow", [](Value x) { return tbgrad::pow(x, 3.0); },
       [](Value x, Value gy) { return pow_backward(x, gy, 3.0); }, -2, 2,
       "lambda t: torch.pow(t, 3.0)", "p3_"},
      {"pow", [](Value x) { return tbgrad::pow(x, 0.5); },
       [](Value x, Value gy) { return pow_backward(x, gy, 0.5); }, 0.2, 5,
       "lambda t: torch.pow(t, 0.5)", "p0_5_"},
      {"pow", [](Value x) { return tbgrad::pow(x, -1.5); },
       [](Value x, Value gy) { return pow_backward(x, gy, -1.5); }, 0.2, 5,
       "lambda t: torch.pow(t, -1.5)", "pm1_5_"},
      {"pow", [](Value x) { return tbgrad::pow(x, 1.0); },
       [](Value x, Value gy) { return pow_backward(x, gy, 1.0); }, -2, 2,
       "lambda t: torch.pow(t, 1.0)", "p1_"},
      {"pow", [](Value x) { return tbgrad::pow(x, 0.0); },
       [](Value x, Value gy) { return pow_backward(x, gy, 0.0); }, -2, 2,
       "lambda t: torch.pow(t, 0.0) + 0 * t", "p0_"},  // + 0 t: torch's gradient has a graph
      {"clamp", [](Value x) { return tbgrad::clamp(x, -0.5, 0.5); },
       [](Value x, Value gy) { return clamp_backward(x, gy, -0.5, 0.5); }, -1, 1,
       "lambda t: torch.clamp(t, -0.5, 0.5)"},
      {"clamp", [](Value x) { return tbgrad::clamp(x, -0.25, kInf); },
       [](Value x, Value gy) { return clamp_backward(x, gy, -0.25, kInf); }, -1, 1,
       "lambda t: torch.clamp(t, min=-0.25)", "min_only_"},
      {"clamp", [](Value x) { return tbgrad::clamp(x, 0.5, -0.5); },
       [](Value x, Value gy) { return clamp_backward(x, gy, 0.5, -0.5); }, -1, 1,
       "lambda t: torch.clamp(t, 0.5, -0.5)", "lo_above_hi_"},
      {"leaky_relu", [](Value x) { return tbgrad::leaky_relu(x); },
       [](Value x, Value gy) { return leaky_relu_backward(x, gy); }, 0, 0, "F.leaky_relu"},
      {"leaky_relu", [](Value x) { return tbgrad::leaky_relu(x, 0.2); },
       [](Value x, Value gy) { return leaky_relu_backward(x, gy, 0.2); }, 0, 0,
       "lambda t: F.leaky_relu(t, 0.2)", "slope0_2_"},
      {"gelu", [](Value x) { return tbgrad::gelu(x); },
       [](Value x, Value gy) { return gelu_backward(x, gy); }, -3, 3, "F.gelu", "",
       [](Value x, Value gy) { return gelu_double_backward(x, gy); },
       [](Value x, Value ones) { return gelu_backward(x, ones); }},
      {"gelu", [](Value x) { return tbgrad::gelu(x, GeluApproximation::kTanh); },
       [](Value x, Value gy) { return gelu_backward(x, gy, GeluApproximation::kTanh); }, -3, 3,
       "lambda t: F.gelu(t, approximate='tanh')", "tanh_",
       [](Value x, Value gy) { return gelu_double_backward(x, gy, GeluApproximation::kTanh); },
       [](Value x, Value ones) { return gelu_backward(x, ones, GeluApproximation::kTanh); }},
      {"silu", [](Value x) { return tbgrad::silu(x); },
       [](Value x, Value gy) { return silu_backward(x, gy); }, -4, 4, "F.silu", "",
       [](Value x, Value gy) { return silu_double_backward(x, gy); },
       [](Value x, Value ones) { return silu_backward(x, ones); }},
      {"softplus", [](Value x) { return tbgrad::softplus(x); },
       [](Value x, Value gy) { return softplus_backward(x, gy); }, -3, 3, "F.softplus", "",
       [](Value x, Value gy) { return softplus_double_backward(x, gy); },
       [](Value x, Value ones) { return softplus_backward(x, ones); }},
      // beta 2, threshold 3: x above 1.5 is in the linear region.
      {"softplus", [](Value x) { return tbgrad::softplus(x, 2.0, 3.0); },
       [](Value x, Value gy) { return softplus_backward(x, gy, 2.0, 3.0); }, -3, 3,
       "lambda t: F.softplus(t, 2.0, 3.0)", "beta2_threshold3_",
       [](Value x, Value gy) { return softplus_double_backward(x, gy, 2.0, 3.0); },
       [](Value x, Value ones) { return softplus_backward(x, ones, 2.0, 3.0); }},
  };
  for (const MathRow& r : rows) {
    const auto fwd = r.forward;
    const auto kernel = r.kernel;
    const std::string v = r.variant;
    // Odd sizes, size-1 dimensions, a scalar, and 40000 elements for the parallel path.
    for (const Shape& s : {Shape{3, 4}, Shape{2, 3, 5, 7}, Shape{1, 5, 1}, Shape{}, Shape{200, 200}}) {
      t.push_back({.op = r.op,
                   .name = v + shape_name(s),
                   .inputs = {math_input(r, s)},
                   .build = [fwd](Graph&, Inputs in) { return fwd(in[0]); },
                   .torch = "(" + std::string(r.torch) + ")(x)"});
    }
    if (kernel == nullptr) continue;
    // Differentiable gradient kernels: gradchecked, and compared with torch's double backward.
    for (const Shape& s : {Shape{3, 5}, Shape{2, 3, 4, 5}, Shape{1}, Shape{200, 200}}) {
      t.push_back({.op = std::string(r.op) + "_backward",
                   .name = v + shape_name(s),
                   .inputs = {math_input(r, s), uniform("gy", s)},
                   .build = [kernel](Graph&, Inputs in) { return kernel(in[0], in[1]); },
                   .torch = "vjp(" + std::string(r.torch) + ", x, gy)"});
    }
    if (r.kernel2 == nullptr) continue;
    const auto kernel2 = r.kernel2;
    const auto at_one = r.kernel_at_one;
    for (const Shape& s : {Shape{3, 5}, Shape{2, 3, 4, 5}, Shape{1}, Shape{200, 200}}) {
      t.push_back({.op = std::string(r.op) + "_double_backward",
                   .name = v + shape_name(s),
                   .inputs = {math_input(r, s), uniform("gy", s)},
                   .build = [kernel2](Graph&, Inputs in) { return kernel2(in[0], in[1]); },
                   .torch = "vjp(lambda t: vjp(" + std::string(r.torch) +
                            ", t, torch.ones_like(t)), x, gy)",
                   .gradient_of = [at_one](Graph& g, Inputs in) {
                     return at_one(in[0], ones_like(g, in[0]));
                   }});
    }
  }
  add_math_binary_cases(t);
}

}  // namespace tbgrad::testing::cases
