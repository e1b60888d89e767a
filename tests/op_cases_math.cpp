// The op table's cases (tests/op_cases.hpp) of the elementwise math ops (ops/math.hpp) and their
// gradient kernels. Inputs keep log, sqrt and rsqrt inside their domain and away from 0 (a pole of
// their gradients), and abs away from its kink at 0.
#include "op_case_util.hpp"

namespace tbgrad::testing::cases {

namespace {

struct MathRow {
  const char* op;
  Value (*forward)(Value x);
  Value (*kernel)(Value x, Value gy);  // the gradient kernel, given the forward op's input
  double lo, hi;                       // the inputs' range (0, 0: away from zero)
  const char* torch;                   // a Python function
};

CaseInput math_input(const MathRow& r, Shape s) {
  return r.lo == r.hi ? away_from_zero("x", s) : uniform("x", s, r.lo, r.hi);
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
  };
  for (const MathRow& r : rows) {
    const auto fwd = r.forward;
    const auto kernel = r.kernel;
    // Odd sizes, size-1 dimensions, a scalar, and 40000 elements for the parallel path.
    for (const Shape& s : {Shape{3, 4}, Shape{2, 3, 5, 7}, Shape{1, 5, 1}, Shape{}, Shape{200, 200}}) {
      t.push_back({.op = r.op,
                   .name = shape_name(s),
                   .inputs = {math_input(r, s)},
                   .build = [fwd](Graph&, Inputs in) { return fwd(in[0]); },
                   .torch = std::string(r.torch) + "(x)"});
    }
    if (kernel == nullptr) continue;
    for (const Shape& s : {Shape{3, 5}, Shape{2, 3, 4, 5}, Shape{1}}) {
      t.push_back({.op = std::string(r.op) + "_backward",
                   .name = shape_name(s),
                   .inputs = {math_input(r, s), uniform("gy", s)},
                   .build = [kernel](Graph&, Inputs in) { return kernel(in[0], in[1]); },
                   .torch = "vjp(" + std::string(r.torch) + ", x, gy)",
                   .gradient_of = [fwd](Graph&, Inputs in) { return fwd(in[0]); }});
    }
  }
}

}  // namespace tbgrad::testing::cases
