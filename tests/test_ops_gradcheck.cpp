// Gradient checks for every op the library registers, read from the op table
// (tests/op_cases.hpp).
//
// Every case whose op has a vector-Jacobian product is checked against central finite
// differences with tbgrad::gradcheck on a float64 graph, at the default tolerances (eps 1e-6,
// atol 1e-5, rtol 1e-3), with respect to every float input. The gradient kernels of nonlinear ops
// have no VJP: for each of their cases, differentiating through the kernel must throw an error
// naming it, and the kernel's value must equal the numeric vector-Jacobian product of the forward
// op it is the gradient of (OpCase::gradient_of). Hand-written tests follow: kernel values worked
// out by hand, fan-out, second order, the reference CNN end to end.
//
// The coverage tests at the end (AllRegisteredOps) fail for a registered op without a case in the
// table, and for one whose cases are not all checked here.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <ostream>
#include <regex>
#include <set>
#include <string>
#include <tbgrad.hpp>
#include <utility>
#include <vector>

#include "op_cases.hpp"

namespace {

using tbgrad::Conv2dOptions;
using tbgrad::DType;
using tbgrad::Executor;
using tbgrad::GradcheckOptions;
using tbgrad::GradcheckResult;
using tbgrad::Graph;
using tbgrad::Shape;
using tbgrad::Tensor;
using tbgrad::Value;
using tbgrad::testing::OpCase;
using Feeds = std::vector<std::pair<Value, Tensor>>;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

// How many elements of each input the table's checks perturb: all of them, or, in a case with an
// input of more than kAllElementsUpTo (a pooling over 51200 cells, fc1's 24500 weights: sizes for
// the forward kernels' parallel paths), kSampledElements spread evenly over each input.
constexpr std::int64_t kAllElementsUpTo = 2000;
constexpr std::int64_t kSampledElements = 200;

// gradcheck's max_elements_per_input for inputs of these shapes (0: all).
std::int64_t elements_to_check(const std::vector<Shape>& inputs) {
  for (const Shape& s : inputs) {
    if (s.numel() > kAllElementsUpTo) return kSampledElements;
  }
  return 0;
}

Tensor uniform_tensor(const Shape& shape, tbgrad::nn::Rng& rng, double lo = -1.0, double hi = 1.0) {
  Tensor t(shape, DType::kF64);
  tbgrad::nn::uniform(t, lo, hi, rng);
  return t;
}

// Values with |v| in [0.1, 1] and random signs: away from the kink of relu.
Tensor away_from_zero_tensor(const Shape& shape, tbgrad::nn::Rng& rng) {
  Tensor t(shape, DType::kF64);
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    const double magnitude = rng.uniform(0.1, 1.0);
    t.set(i, rng.below(2) ? magnitude : -magnitude);
  }
  return t;
}

Value uniform_param(Graph& g, const std::string& name, const Shape& shape, tbgrad::nn::Rng& rng,
                    double lo = -1.0, double hi = 1.0) {
  Value p = g.param(name, shape);
  tbgrad::nn::uniform(g.value(p), lo, hi, rng);
  return p;
}

Value uniform_constant(Graph& g, const Shape& shape, tbgrad::nn::Rng& rng) {
  return g.constant(uniform_tensor(shape, rng), "R");
}

// gradcheck at the default tolerances; on failure the message is the gradcheck report.
::testing::AssertionResult PassesGradcheck(Value out, const std::vector<Value>& wrt,
                                           const Feeds& feeds = {},
                                           const GradcheckOptions& options = {}) {
  const GradcheckResult r = tbgrad::gradcheck(
      out, std::span<const Value>(wrt), std::span<const std::pair<Value, Tensor>>(feeds), options);
  if (!r.reentrant) {
    return ::testing::AssertionFailure() << "backward is not reentrant\n" << r.report();
  }
  if (!r.ok) return ::testing::AssertionFailure() << r.report();
  if (r.inputs.size() != wrt.size()) {
    return ::testing::AssertionFailure()
           << "gradcheck reported " << r.inputs.size() << " inputs for " << wrt.size() << "\n"
           << r.report();
  }
  for (const auto& in : r.inputs) {
    if (in.checked == 0 && in.shape.numel() > 0) {
      return ::testing::AssertionFailure() << "no element of " << in.name << " was checked\n"
                                           << r.report();
    }
  }
  return ::testing::AssertionSuccess();
}

// Runs `out` with the given feeds and returns a copy of its value.
Tensor run_value(Value out, const Feeds& feeds) {
  Executor ex(out.graph(), {out});
  for (const auto& [v, t] : feeds) ex.bind(v, t);
  ex.run();
  return ex.get(out).clone();
}

// d/dx sum(forward(x) * gy) by central differences at the elements of x elements_to_check picks:
// the numeric VJP of `forward_out` (a function of the input `x`) against gy, as (index, value)
// pairs.
std::vector<std::pair<std::int64_t, double>> numeric_vjp(Value forward_out, Value x,
                                                         const Tensor& x_value, const Tensor& gy,
                                                         const Feeds& other_feeds = {}) {
  Graph& g = forward_out.graph();
  Value objective = tbgrad::sum(tbgrad::mul(forward_out, g.constant(gy, "gy")));
  Tensor xv = x_value.clone();
  Executor ex(g, {objective});
  ex.bind(x, xv);
  for (const auto& [v, t] : other_feeds) ex.bind(v, t);
  const std::int64_t n = xv.numel();
  const std::int64_t most = elements_to_check({xv.shape()});
  const std::int64_t step = most > 0 && n > most ? (n + most - 1) / most : 1;
  std::vector<std::pair<std::int64_t, double>> result;
  const double eps = 1e-6;
  for (std::int64_t i = 0; i < n; i += step) {
    const double orig = xv.at(i);
    xv.set(i, orig + eps);
    ex.run();
    const double fp = ex.get(objective).at(0);
    xv.set(i, orig - eps);
    ex.run();
    const double fm = ex.get(objective).at(0);
    xv.set(i, orig);
    result.emplace_back(i, (fp - fm) / (2 * eps));
  }
  return result;
}

// The kernel's values at the numeric VJP's elements, at gradcheck's default tolerances.
::testing::AssertionResult MatchesNumeric(
    const Tensor& kernel, const std::vector<std::pair<std::int64_t, double>>& numeric,
    const Shape& x_shape) {
  if (!(kernel.shape() == x_shape)) {
    return ::testing::AssertionFailure()
           << "shape " << kernel.shape().str() << ", the input's " << x_shape.str();
  }
  for (const auto& [i, n] : numeric) {
    const double a = kernel.at(i);
    if (!(std::abs(a - n) <= 1e-5 + 1e-3 * std::abs(n))) {
      return ::testing::AssertionFailure()
             << "element " << i << ": kernel " << a << ", numeric " << n;
    }
  }
  return ::testing::AssertionSuccess();
}

Tensor f64_tensor(const Shape& shape, std::initializer_list<double> values) {
  Tensor t(shape, DType::kF64);
  std::int64_t i = 0;
  for (double v : values) t.set(i++, v);
  EXPECT_EQ(i, t.numel()) << "test data does not fill " << shape.str();
  return t;
}

void ExpectValues(const Tensor& t, std::initializer_list<double> expected, double tol = 1e-12) {
  ASSERT_EQ(t.numel(), static_cast<std::int64_t>(expected.size()));
  std::int64_t i = 0;
  for (double e : expected) {
    EXPECT_NEAR(t.at(i), e, tol) << "element " << i;
    ++i;
  }
}

// ---------------------------------------------------------------------------------------------
// The op table
// ---------------------------------------------------------------------------------------------

std::vector<const OpCase*> cases_whose_op_has_vjp(bool has_vjp) {
  std::vector<const OpCase*> cases;
  for (const OpCase& c : tbgrad::testing::op_cases()) {
    if (tbgrad::testing::op_has_vjp(c.op) == has_vjp) cases.push_back(&c);
  }
  return cases;
}

std::string case_id(const ::testing::TestParamInfo<const OpCase*>& info) {
  return info.param->id();
}

// The case in a float64 graph, with its input values.
struct Built {
  tbgrad::testing::CaseGraph cg;
  Feeds feeds;             // every input
  std::vector<Value> wrt;  // the float inputs
};

Built build(const OpCase& c) {
  Built b{tbgrad::testing::build_case(c, DType::kF64), {}, {}};
  const std::vector<Tensor> values = tbgrad::testing::make_inputs(c, DType::kF64);
  for (std::size_t i = 0; i < values.size(); ++i) {
    b.feeds.emplace_back(b.cg.inputs[i], values[i]);
    if (c.inputs[i].is_float()) b.wrt.push_back(b.cg.inputs[i]);
  }
  return b;
}

class OpGradcheck : public ::testing::TestWithParam<const OpCase*> {};

TEST_P(OpGradcheck, GradientsWrtEveryFloatInputMatchFiniteDifferences) {
  const OpCase& c = *GetParam();
  Built b = build(c);
  std::vector<Shape> shapes;
  for (Value v : b.wrt) shapes.push_back(v.shape());
  EXPECT_TRUE(PassesGradcheck(b.cg.out, b.wrt, b.feeds,
                              {.max_elements_per_input = elements_to_check(shapes)}))
      << c.id();
}

INSTANTIATE_TEST_SUITE_P(Table, OpGradcheck, ::testing::ValuesIn(cases_whose_op_has_vjp(true)),
                         case_id);

// Gradient kernels without a VJP.
class GradientKernel : public ::testing::TestWithParam<const OpCase*> {};

TEST_P(GradientKernel, CannotBeDifferentiated) {
  const OpCase& c = *GetParam();
  Built b = build(c);
  Graph& g = b.cg.graph;
  tbgrad::nn::Rng rng(99);
  Value loss = tbgrad::sum(tbgrad::mul(b.cg.out, uniform_constant(g, b.cg.out.shape(), rng)));
  try {
    (void)tbgrad::grad(loss, b.wrt);
    ADD_FAILURE() << "grad() through " << c.op << " did not throw";
  } catch (const tbgrad::Error& e) {
    EXPECT_NE(std::string(e.what()).find(c.op), std::string::npos)
        << "message does not name " << c.op << ": " << e.what();
  }
}

TEST_P(GradientKernel, EqualsNumericVjpOfItsForwardOp) {
  const OpCase& c = *GetParam();
  ASSERT_TRUE(c.gradient_of) << c.id() << ": a case of an op without a VJP needs gradient_of";
  Built b = build(c);
  const Tensor kernel = run_value(b.cg.out, b.feeds);
  // d/d inputs[0] of sum(gradient_of(inputs) * inputs.back()); the inputs between stay fed.
  Value forward = c.gradient_of(b.cg.graph, b.cg.inputs);
  const Feeds others(b.feeds.begin() + 1, b.feeds.end() - 1);
  EXPECT_TRUE(MatchesNumeric(
      kernel,
      numeric_vjp(forward, b.cg.inputs[0], b.feeds.front().second, b.feeds.back().second, others),
      b.cg.inputs[0].shape()))
      << c.id();
}

INSTANTIATE_TEST_SUITE_P(Table, GradientKernel, ::testing::ValuesIn(cases_whose_op_has_vjp(false)),
                         case_id);

// ---------------------------------------------------------------------------------------------
// linear, mean, reshape of a parameter: compositions, and parameters instead of inputs
// ---------------------------------------------------------------------------------------------

TEST(LinearGradcheck, GradientsWrtInputWeightAndBiasMatchFiniteDifferences) {
  tbgrad::nn::Rng rng(62);
  Graph g(DType::kF64);
  Value x = g.input("x", {4, 6});
  Value w = uniform_param(g, "w", {3, 6}, rng);
  Value b = uniform_param(g, "b", {3}, rng);
  EXPECT_TRUE(
      PassesGradcheck(tbgrad::linear(x, w, b), {x, w, b}, {{x, uniform_tensor({4, 6}, rng)}}));
}

TEST(LinearGradcheck, GradientsWithoutBiasMatchFiniteDifferences) {
  tbgrad::nn::Rng rng(63);
  Graph g(DType::kF64);
  Value x = g.input("x", {5, 2});
  Value w = uniform_param(g, "w", {7, 2}, rng);
  EXPECT_TRUE(PassesGradcheck(tbgrad::linear(x, w), {x, w}, {{x, uniform_tensor({5, 2}, rng)}}));
}

TEST(MeanGradcheck, GradientMatchesFiniteDifferences) {
  for (const Shape& shape : {Shape{}, Shape{7}, Shape{2, 3, 4}}) {
    SCOPED_TRACE(shape.str());
    tbgrad::nn::Rng rng(72);
    Graph g(DType::kF64);
    Value x = g.input("x", shape);
    EXPECT_TRUE(PassesGradcheck(tbgrad::mean(x), {x}, {{x, uniform_tensor(shape, rng)}}));
  }
}

TEST(ReshapeGradcheck, GradientThroughTwoReshapesMatchesFiniteDifferences) {
  tbgrad::nn::Rng rng(76);
  Graph g(DType::kF64);
  Value x = uniform_param(g, "x", {6, 2}, rng);
  Value y = tbgrad::reshape(tbgrad::reshape(x, Shape{3, 4}), Shape{12});
  EXPECT_TRUE(PassesGradcheck(y, {x}));
}

// ---------------------------------------------------------------------------------------------
// Fan-out: a value read by several ops receives the sum of their gradients
// ---------------------------------------------------------------------------------------------

TEST(FanOutGradcheck, ValueMultipliedByItselfGetsBothContributions) {
  tbgrad::nn::Rng rng(81);
  Graph g(DType::kF64);
  Value x = g.input("x", {3, 4});
  EXPECT_TRUE(PassesGradcheck(tbgrad::mul(x, x), {x}, {{x, uniform_tensor({3, 4}, rng)}}));
}

TEST(FanOutGradcheck, ValueReadByReluAndAddGetsBothContributions) {
  tbgrad::nn::Rng rng(82);
  Graph g(DType::kF64);
  Value x = g.input("x", {3, 4});
  EXPECT_TRUE(PassesGradcheck(tbgrad::add(tbgrad::relu(x), x), {x},
                              {{x, away_from_zero_tensor({3, 4}, rng)}}));
}

TEST(FanOutGradcheck, ValueReadByThreeOpsGetsAllContributions) {
  tbgrad::nn::Rng rng(83);
  Graph g(DType::kF64);
  Value x = g.input("x", {2, 5});
  Value w = uniform_param(g, "w", {2, 5}, rng);
  Value y = tbgrad::add(tbgrad::mul(x, w), tbgrad::sub(tbgrad::tanh(x), tbgrad::scale(x, 3.0)));
  EXPECT_TRUE(PassesGradcheck(y, {x, w}, {{x, uniform_tensor({2, 5}, rng)}}));
}

TEST(FanOutGradcheck, WeightSharedByTwoConvolutionsGetsBothContributions) {
  tbgrad::nn::Rng rng(84);
  Graph g(DType::kF64);
  Value x1 = g.input("x1", {1, 2, 6, 6});
  Value x2 = g.input("x2", {2, 2, 5, 7});
  Value w = uniform_param(g, "w", {3, 2, 3, 3}, rng);
  Value y = tbgrad::add(tbgrad::sum(tbgrad::conv2d(x1, w, {.stride = 2, .padding = 1})),
                        tbgrad::mean(tbgrad::conv2d(x2, w)));
  EXPECT_TRUE(PassesGradcheck(
      y, {x1, x2, w},
      {{x1, uniform_tensor({1, 2, 6, 6}, rng)}, {x2, uniform_tensor({2, 2, 5, 7}, rng)}}));
}

// ---------------------------------------------------------------------------------------------
// Second order: gradients of gradients, through the gradient kernels' own VJPs
// ---------------------------------------------------------------------------------------------

TEST(SecondOrderGradcheck, GradientOfConvWeightGradientMatchesFiniteDifferences) {
  // out = sum(d/dw sum(conv2d(x, w) * R) * S): linear in x, so its x-gradient is exact.
  tbgrad::nn::Rng rng(91);
  Graph g(DType::kF64);
  const Conv2dOptions o{.stride = {2, 1}, .padding = {1, 0}};
  Value x = g.input("x", {2, 2, 6, 5});
  Value w = uniform_param(g, "w", {3, 2, 3, 2}, rng);
  Value c = tbgrad::conv2d(x, w, o);
  Value inner = tbgrad::sum(tbgrad::mul(c, uniform_constant(g, c.shape(), rng)));
  Value gw = tbgrad::grad(inner, w);
  Value out = tbgrad::sum(tbgrad::mul(gw, uniform_constant(g, gw.shape(), rng)));
  EXPECT_TRUE(PassesGradcheck(out, {x, w}, {{x, uniform_tensor({2, 2, 6, 5}, rng)}}));
}

TEST(SecondOrderGradcheck, GradientsOfAllConvGradientsOfANonlinearLossMatchFiniteDifferences) {
  // inner = sum(conv2d(x, w, b)^2 * R) is quadratic, so its gradients depend on x, w and b, and
  // differentiating them again goes through the VJPs of conv2d_backward_input,
  // conv2d_backward_weight, conv2d_backward_bias, broadcast_to, sum_to and mul.
  tbgrad::nn::Rng rng(92);
  Graph g(DType::kF64);
  const Conv2dOptions o{.stride = {2, 1}, .padding = {1, 0}};
  Value x = g.input("x", {2, 2, 6, 5});
  Value w = uniform_param(g, "w", {3, 2, 3, 2}, rng);
  Value b = uniform_param(g, "b", {3}, rng);
  Value c = tbgrad::conv2d(x, w, b, o);
  Value inner = tbgrad::sum(tbgrad::mul(tbgrad::mul(c, c), uniform_constant(g, c.shape(), rng)));
  std::vector<Value> grads = tbgrad::grad(inner, {x, w, b});
  Value out = tbgrad::sum(tbgrad::mul(grads[0], uniform_constant(g, grads[0].shape(), rng)));
  out = tbgrad::add(out,
                    tbgrad::sum(tbgrad::mul(grads[1], uniform_constant(g, grads[1].shape(), rng))));
  out = tbgrad::add(out,
                    tbgrad::sum(tbgrad::mul(grads[2], uniform_constant(g, grads[2].shape(), rng))));
  EXPECT_TRUE(PassesGradcheck(out, {x, w, b}, {{x, uniform_tensor({2, 2, 6, 5}, rng)}}));
}

TEST(SecondOrderGradcheck, GradientOfAvgPoolGradientMatchesFiniteDifferences) {
  tbgrad::nn::Rng rng(93);
  Graph g(DType::kF64);
  Value x = g.input("x", {1, 2, 7, 7});
  Value p = tbgrad::avg_pool2d(x, {.kernel = 3, .stride = 2, .padding = 1});
  Value inner = tbgrad::sum(tbgrad::mul(tbgrad::mul(p, p), uniform_constant(g, p.shape(), rng)));
  Value gx = tbgrad::grad(inner, x);
  Value out = tbgrad::sum(tbgrad::mul(gx, uniform_constant(g, gx.shape(), rng)));
  EXPECT_TRUE(PassesGradcheck(out, {x}, {{x, uniform_tensor({1, 2, 7, 7}, rng)}}));
}

// ---------------------------------------------------------------------------------------------
// End to end: the reference CNN
// ---------------------------------------------------------------------------------------------

TEST(ReferenceCnnGradcheck, GradientsWrtAllParametersMatchFiniteDifferences) {
  constexpr int kBatch = 3;
  Graph g(DType::kF64);
  Value x = g.input("x", {kBatch, 1, 28, 28});
  Value labels = g.input_labels("labels", {kBatch});
  Value w1 = g.param("conv1.w", {3, 1, 5, 5});
  Value b1 = g.param("conv1.b", {3});
  Value w2 = g.param("conv2.w", {5, 3, 3, 3});
  Value b2 = g.param("conv2.b", {5});
  Value f1 = g.param("fc1.w", {100, 245});
  Value c1 = g.param("fc1.b", {100});
  Value f2 = g.param("fc2.w", {64, 100});
  Value c2 = g.param("fc2.b", {64});
  Value f3 = g.param("fc3.w", {10, 64});
  Value c3 = g.param("fc3.b", {10});

  Value h = tbgrad::relu(tbgrad::conv2d(x, w1, b1));      // [B, 3, 24, 24]
  h = tbgrad::avg_pool2d(h, {.kernel = 4, .stride = 2});  // [B, 3, 11, 11]
  h = tbgrad::relu(tbgrad::conv2d(h, w2, b2));            // [B, 5, 9, 9]
  h = tbgrad::avg_pool2d(h, {.kernel = 3, .stride = 1});  // [B, 5, 7, 7]
  h = tbgrad::flatten(h);                                 // [B, 245]
  ASSERT_EQ(h.shape(), (Shape{kBatch, 245}));
  h = tbgrad::relu(tbgrad::linear(h, f1, c1));  // [B, 100]
  h = tbgrad::relu(tbgrad::linear(h, f2, c2));  // [B, 64]
  Value logits = tbgrad::linear(h, f3, c3);     // [B, 10]
  Value loss = tbgrad::softmax_cross_entropy(logits, labels);

  tbgrad::nn::Rng rng(2024);
  for (Value p : g.params()) {
    if (p.shape().rank() > 1) {
      tbgrad::nn::xavier_uniform(g.value(p), rng);
    } else {
      tbgrad::nn::uniform(g.value(p), -0.1, 0.1, rng);
    }
  }
  Tensor images = uniform_tensor({kBatch, 1, 28, 28}, rng, 0.0, 1.0);
  Tensor label_values({kBatch}, DType::kI32);
  for (int i = 0; i < kBatch; ++i) label_values.set(i, static_cast<double>((3 * i + 1) % 10));

  GradcheckOptions options;
  options.max_elements_per_input = 200;  // every conv element; a spread sample of the fc weights
  const std::vector<Value> params = g.params();
  const GradcheckResult r = tbgrad::gradcheck(
      loss, std::span<const Value>(params),
      std::span<const std::pair<Value, Tensor>>(Feeds{{x, images}, {labels, label_values}}),
      options);
  EXPECT_TRUE(r.ok) << r.report();
  EXPECT_TRUE(r.reentrant) << r.report();
  ASSERT_EQ(r.inputs.size(), params.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    const std::string& name = r.inputs[i].name;
    if (name.rfind("conv", 0) == 0) {
      EXPECT_EQ(r.inputs[i].checked, params[i].shape().numel())
          << name << ": every element of the conv weights and biases is checked";
    } else {
      EXPECT_GE(r.inputs[i].checked, std::min<std::int64_t>(params[i].shape().numel(), 100))
          << name;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Gradient kernels without a VJP, by hand: small inputs worked out by hand (the table checks
// them against the numeric VJP of their forward op)
// ---------------------------------------------------------------------------------------------

TEST(ReluBackward, PassesTheGradientWherePositiveAndZeroElsewhere) {
  Graph g(DType::kF64);
  Value x = g.input("x", {2, 3});
  Value gy = g.input("gy", {2, 3});
  Tensor out = run_value(tbgrad::relu_backward(x, gy),
                         {{x, f64_tensor({2, 3}, {-1.5, 0.5, 0.0, 2.0, -0.1, 3.0})},
                          {gy, f64_tensor({2, 3}, {10, 20, 30, 40, 50, 60})}});
  ExpectValues(out, {0, 20, 0, 40, 0, 60});
}

TEST(SigmoidBackward, IsGradientTimesYTimesOneMinusY) {
  Graph g(DType::kF64);
  Value y = g.input("y", {3});
  Value gy = g.input("gy", {3});
  Tensor out = run_value(tbgrad::sigmoid_backward(y, gy), {{y, f64_tensor({3}, {0.5, 0.25, 0.9})},
                                                           {gy, f64_tensor({3}, {2, 4, -1})}});
  ExpectValues(out, {0.5, 0.75, -0.09});
}

TEST(TanhBackward, IsGradientTimesOneMinusYSquared) {
  Graph g(DType::kF64);
  Value y = g.input("y", {3});
  Value gy = g.input("gy", {3});
  Tensor out = run_value(tbgrad::tanh_backward(y, gy), {{y, f64_tensor({3}, {0.5, -0.2, 0.0})},
                                                        {gy, f64_tensor({3}, {2, 3, -4})}});
  ExpectValues(out, {1.5, 2.88, -4.0});
}

TEST(SoftmaxBackward, IsYTimesGradientMinusItsWeightedSum) {
  // y = [0.2, 0.3, 0.5], g = [1, 2, 3]: sum(g * y) = 2.3, y * (g - 2.3).
  Graph g(DType::kF64);
  Value y = g.input("y", {1, 3});
  Value gy = g.input("gy", {1, 3});
  Tensor out = run_value(tbgrad::softmax_backward(y, gy), {{y, f64_tensor({1, 3}, {0.2, 0.3, 0.5})},
                                                           {gy, f64_tensor({1, 3}, {1, 2, 3})}});
  ExpectValues(out, {-0.26, -0.09, 0.35});
}

TEST(LogSoftmaxBackward, IsGradientMinusSoftmaxTimesGradientSum) {
  // y = log([0.2, 0.3, 0.5]), g = [1, 2, 3]: g - exp(y) * 6.
  Graph g(DType::kF64);
  Value y = g.input("y", {1, 3});
  Value gy = g.input("gy", {1, 3});
  Tensor out = run_value(tbgrad::log_softmax_backward(y, gy),
                         {{y, f64_tensor({1, 3}, {std::log(0.2), std::log(0.3), std::log(0.5)})},
                          {gy, f64_tensor({1, 3}, {1, 2, 3})}});
  ExpectValues(out, {-0.2, 0.2, 0.0});
}

TEST(SoftmaxCrossEntropyBackward, IsSoftmaxMinusOneHotTimesGradientOverBatch) {
  // Row 0: logits [0, 0], label 1 -> softmax [1/2, 1/2] - [0, 1].
  // Row 1: logits [ln 3, 0], label 0 -> softmax [3/4, 1/4] - [1, 0].
  // Gradient 2 over a batch of 2 scales by 1.
  Graph g(DType::kF64);
  Value logits = g.input("logits", {2, 2});
  Value labels = g.input_labels("labels", {2});
  Tensor label_values({2}, DType::kI32);
  label_values.set(0, 1);
  label_values.set(1, 0);
  Tensor out = run_value(
      tbgrad::softmax_cross_entropy_backward(logits, labels, g.scalar(2.0)),
      {{logits, f64_tensor({2, 2}, {0.0, 0.0, std::log(3.0), 0.0})}, {labels, label_values}});
  ExpectValues(out, {0.5, -0.5, -0.25, 0.25});
}

TEST(MaxPool2dBackward, RoutesEachGradientToItsWindowsMaximum) {
  Graph g(DType::kF64);
  Value x = g.input("x", {1, 1, 4, 4});
  Value gy = g.input("gy", {1, 1, 2, 2});
  Tensor out = run_value(tbgrad::max_pool2d_backward(x, gy, {.kernel = 2}),
                         {{x, f64_tensor({1, 1, 4, 4}, {1, 9, 2, 3,  //
                                                        4, 5, 8, 6,  //
                                                        7, 0, 1, 1,  //
                                                        2, 3, 4, 9})},
                          {gy, f64_tensor({1, 1, 2, 2}, {10, 20, 30, 40})}});
  ExpectValues(out, {0, 10, 0, 0,  //
                     0, 0, 20, 0,  //
                     30, 0, 0, 0,  //
                     0, 0, 0, 40});
}

TEST(MaxPool2dBackward, AddsGradientsOfOverlappingWindowsSharingAMaximum) {
  // 3x3 input with its maximum in the centre, kernel 2, stride 1: all four windows pick it.
  Graph g(DType::kF64);
  Value x = g.input("x", {1, 1, 3, 3});
  Value gy = g.input("gy", {1, 1, 2, 2});
  Tensor out = run_value(tbgrad::max_pool2d_backward(x, gy, {.kernel = 2, .stride = 1}),
                         {{x, f64_tensor({1, 1, 3, 3}, {1, 2, 3, 4, 9, 5, 6, 7, 8})},
                          {gy, f64_tensor({1, 1, 2, 2}, {1, 2, 3, 4})}});
  ExpectValues(out, {0, 0, 0, 0, 10, 0, 0, 0, 0});
}

TEST(MaxPool2dBackward, GivesTiesToTheFirstMaximumInRowMajorOrder) {
  Graph g(DType::kF64);
  Value x = g.input("x", {1, 1, 2, 2});
  Value gy = g.input("gy", {1, 1, 1, 1});
  Tensor out =
      run_value(tbgrad::max_pool2d_backward(x, gy, {.kernel = 2}),
                {{x, f64_tensor({1, 1, 2, 2}, {1, 3, 3, 3})}, {gy, f64_tensor({1, 1, 1, 1}, {5})}});
  ExpectValues(out, {0, 5, 0, 0});
}

TEST(MaxPool2dBackward, IgnoresPaddingEvenWhenTheImageIsNegative) {
  // All values negative, kernel 2, stride 1, padding 1: a 3x3 output whose windows each hold
  // 1, 2 or 4 real cells. Padded zeros never win, so all nine gradients land on real cells:
  // x00 wins 1 window, x01 and x10 win 2 each, x11 wins 4.
  Graph g(DType::kF64);
  Value x = g.input("x", {1, 1, 2, 2});
  Value gy = g.input("gy", {1, 1, 3, 3});
  Tensor out =
      run_value(tbgrad::max_pool2d_backward(x, gy, {.kernel = 2, .stride = 1, .padding = 1}),
                {{x, f64_tensor({1, 1, 2, 2}, {-4, -3, -2, -1})},
                 {gy, f64_tensor({1, 1, 3, 3}, {1, 1, 1, 1, 1, 1, 1, 1, 1})}});
  ExpectValues(out, {1, 2, 2, 4});
}

// PyTorch's adaptive_max_pool2d (torch 1.13) gives a tie's gradient to the first maximum in
// row-major order and a NaN plane's to its last NaN (`val > maxval || isnan(val)`); so does
// global_max_pool2d.
TEST(GlobalMaxPool2dBackward, GivesTiesToTheFirstMaximumInRowMajorOrder) {
  Graph g(DType::kF64);
  Value x = g.input("x", {1, 1, 2, 3});
  Value gy = g.input("gy", {1, 1, 1, 1});
  Tensor out = run_value(tbgrad::global_max_pool2d_backward(x, gy),
                         {{x, f64_tensor({1, 1, 2, 3}, {1, 3, 2, 3, 0, 3})},
                          {gy, f64_tensor({1, 1, 1, 1}, {5})}});
  ExpectValues(out, {0, 5, 0, 0, 0, 0});
}

TEST(GlobalMaxPool2d, ANaNIsTheMaximumAndTheLastNaNTakesTheGradient) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Graph g(DType::kF64);
  // 2 planes of 11 (longer than the interleaved partial maxima): NaNs at 1 and 9 of the first.
  Value x = g.input("x", {1, 2, 1, 11});
  Value gy = g.input("gy", {1, 2, 1, 1});
  Tensor xs({1, 2, 1, 11}, DType::kF64);
  for (std::int64_t i = 0; i < xs.numel(); ++i) xs.set(i, static_cast<double>(i % 7));
  xs.set(1, nan);
  xs.set(9, nan);
  Feeds feeds = {{x, xs}, {gy, f64_tensor({1, 2, 1, 1}, {2, 3})}};
  Tensor y = run_value(tbgrad::global_max_pool2d(x), feeds);
  EXPECT_TRUE(std::isnan(y.at(0)));
  EXPECT_EQ(y.at(1), 6.0);  // 11..21 % 7: the first 6 at 13
  Tensor gx = run_value(tbgrad::global_max_pool2d_backward(x, gy), feeds);
  for (std::int64_t i = 0; i < 22; ++i) {
    EXPECT_EQ(gx.at(i), i == 9 ? 2.0 : i == 13 ? 3.0 : 0.0) << i;
  }
}

// ---------------------------------------------------------------------------------------------
// Every registered op has cases, and they are checked
// ---------------------------------------------------------------------------------------------

// Names of the tests of this binary's suite `suite` (a parameterized suite is registered as
// "Prefix/Suite").
std::set<std::string> tests_of_suite(const std::string& suite) {
  std::set<std::string> names;
  const ::testing::UnitTest& unit = *::testing::UnitTest::GetInstance();
  for (int i = 0; i < unit.total_test_suite_count(); ++i) {
    const ::testing::TestSuite& s = *unit.GetTestSuite(i);
    const std::string name = s.name();
    const bool match = name == suite || (name.size() > suite.size() &&
                                         name.compare(name.size() - suite.size() - 1,
                                                      std::string::npos, "/" + suite) == 0);
    if (!match) continue;
    for (int j = 0; j < s.total_test_count(); ++j) names.insert(s.GetTestInfo(j)->name());
  }
  return names;
}

TEST(MaxAxesBackward, SplitsTiesEvenly) {
  // torch.amax's rule: rows [1, 3, 3] and [2, 0, 2] have two maxima each, which share the row's
  // gradient; the other elements get 0.
  Graph g(DType::kF64);
  Value x = g.input("x", {2, 3});
  Value gy = g.input("gy", {2});
  Value gx = tbgrad::max_backward(x, tbgrad::max(x, {1}), gy, {1});
  Tensor xv({2, 3}, DType::kF64), gv({2}, DType::kF64);
  const double xs[] = {1, 3, 3, 2, 0, 2};
  for (int i = 0; i < 6; ++i) xv.set(i, xs[i]);
  gv.set(0, 4.0);
  gv.set(1, -1.0);
  Executor ex(g, {gx});
  ex.bind(x, xv).bind(gy, gv).run();
  const double expected[] = {0, 2, 2, -0.5, 0, -0.5};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(ex[gx].at(i), expected[i]) << "element " << i;
}

TEST(SecondOrderGradcheck, GradientsOfBroadcastBatchedMatmulGradientsMatchFiniteDifferences) {
  // inner = sum(matmul(a, b)^2 * R): quadratic, so both gradients depend on a and b; a's batch
  // axis of 1 and b's missing one are broadcast, so the gradients are summed over them (sum_to)
  // and their gradients broadcast back.
  tbgrad::nn::Rng rng(17);
  for (const bool ta : {false, true}) {
    for (const bool tb : {false, true}) {
      Graph g(DType::kF64);
      Value a = uniform_param(g, "a", ta ? Shape{2, 1, 4, 3} : Shape{2, 1, 3, 4}, rng);
      Value b = uniform_param(g, "b", tb ? Shape{5, 2, 4} : Shape{5, 4, 2}, rng);
      Value c = tbgrad::matmul(a, b, {.transpose_a = ta, .transpose_b = tb});
      ASSERT_EQ(c.shape(), (Shape{2, 5, 3, 2}));
      Value inner =
          tbgrad::sum(tbgrad::mul(tbgrad::mul(c, c), uniform_constant(g, c.shape(), rng)));
      const std::vector<Value> gs = tbgrad::grad(inner, {a, b});
      Value out = tbgrad::add(tbgrad::sum(tbgrad::mul(gs[0], uniform_constant(g, a.shape(), rng))),
                              tbgrad::sum(tbgrad::mul(gs[1], uniform_constant(g, b.shape(), rng))));
      EXPECT_TRUE(PassesGradcheck(out, {a, b})) << "ta " << ta << " tb " << tb;
    }
  }
}

// Note [Batched matmul] (ops/matmul.cpp): every matrix of a batched product is the 2-D kernel's
// product of its operands' matrices, bit for bit, at any thread count.
TEST(BatchedMatmulThreads, EachMatrixIsThe2dProductBitForBitAtAnyThreadCount) {
  struct Shapes {
    Shape a, b;
    bool ta, tb;
  };
  const Shapes kShapes[] = {
      {{70, 9, 33}, {1, 33, 17}, false, false},       // b broadcast; more matrices than slots
      {{2, 3, 40, 20}, {2, 3, 40, 20}, false, true},  // attention's scores
      {{12, 33}, {6, 12, 40}, true, false},           // a 2-D a for every matrix of b
      {{3, 64, 100}, {100, 70}, false, false},        // a stack times a 2-D b: one 2-D product
  };
  tbgrad::nn::Rng rng(5);
  auto f32 = [&rng](const Shape& s) {
    const Tensor d = uniform_tensor(s, rng);
    Tensor t(s, DType::kF32);
    for (std::int64_t i = 0; i < t.numel(); ++i) t.set(i, d.at(i));
    return t;
  };
  // The matrix of t at batch index i of its own batch axes.
  auto matrix = [](const Tensor& t, std::int64_t i) {
    const Shape& s = t.shape();
    const Shape ms{s[s.rank() - 2], s[s.rank() - 1]};
    Tensor m(ms, DType::kF32);
    for (std::int64_t e = 0; e < m.numel(); ++e) m.set(e, t.at(i * m.numel() + e));
    return m;
  };
  for (const Shapes& sh : kShapes) {
    const tbgrad::MatmulOptions o{.transpose_a = sh.ta, .transpose_b = sh.tb};
    Graph g(DType::kF32);
    Value a = g.input("a", sh.a);
    Value b = g.input("b", sh.b);
    Value c = tbgrad::matmul(a, b, o);
    const Tensor av = f32(sh.a), bv = f32(sh.b);
    Tensor first;
    for (const int threads : {1, 2, 4}) {
      tbgrad::ThreadScope scope(threads);
      Executor ex(g, {c});
      ex.bind(a, av).bind(b, bv).run();
      if (threads == 1) {
        first = ex[c].clone();
        continue;
      }
      for (std::int64_t i = 0; i < first.numel(); ++i) {
        ASSERT_EQ(ex[c].at(i), first.at(i))
            << c.describe() << " element " << i << " at " << threads << " threads";
      }
    }
    // The first and the last matrix against the 2-D op on their operands' matrices.
    const Shape& cs = first.shape();
    const std::int64_t mn = cs[cs.rank() - 2] * cs[cs.rank() - 1];
    const std::int64_t count = first.numel() / mn;
    for (const std::int64_t i : {std::int64_t{0}, count - 1}) {
      const std::int64_t na = av.numel() / (sh.a[sh.a.rank() - 2] * sh.a[sh.a.rank() - 1]);
      const std::int64_t nb = bv.numel() / (sh.b[sh.b.rank() - 2] * sh.b[sh.b.rank() - 1]);
      // The shapes above broadcast only whole operands (a batch of 1, or none).
      const Tensor am = matrix(av, na == 1 ? 0 : i), bm = matrix(bv, nb == 1 ? 0 : i);
      Graph g2(DType::kF32);
      Value a2 = g2.input("a", am.shape());
      Value b2 = g2.input("b", bm.shape());
      Value c2 = tbgrad::matmul(a2, b2, o);
      Executor ex(g2, {c2});
      ex.bind(a2, am).bind(b2, bm).run();
      for (std::int64_t e = 0; e < mn; ++e) {
        ASSERT_EQ(ex[c2].at(e), first.at(i * mn + e))
            << c.describe() << " matrix " << i << " element " << e;
      }
    }
  }
}

TEST(ReduceAxesThreads, ResultsAreBitIdenticalForAnyThreadCount) {
  Graph g(DType::kF32);
  Value x = g.input("x", {64, 33, 40});
  std::vector<Value> outs = {tbgrad::sum(x, {0}), tbgrad::mean(x, {0, 2}, true),
                             tbgrad::var(x, {1}), tbgrad::max(x, {2}),
                             tbgrad::permute(x, {2, 0, 1}), tbgrad::sum(x, {1, 2})};
  tbgrad::nn::Rng rng(3);
  Tensor xv = uniform_tensor({64, 33, 40}, rng);
  Tensor xf({64, 33, 40}, DType::kF32);
  for (std::int64_t i = 0; i < xv.numel(); ++i) xf.set(i, xv.at(i));
  std::vector<Tensor> first;
  for (const int threads : {1, 2, 4}) {
    tbgrad::ThreadScope scope(threads);
    Executor ex(g, outs);
    ex.bind(x, xf).run();
    for (std::size_t k = 0; k < outs.size(); ++k) {
      const Tensor& t = ex[outs[k]];
      if (threads == 1) {
        first.push_back(t.clone());
        continue;
      }
      for (std::int64_t i = 0; i < t.numel(); ++i) {
        ASSERT_EQ(t.at(i), first[k].at(i)) << "output " << k << " element " << i << " at "
                                           << threads << " threads";
      }
    }
  }
}

TEST(AllRegisteredOps, HaveCasesInTheOpTable) {
  std::map<std::string, int> cases;
  for (const OpCase& c : tbgrad::testing::op_cases()) ++cases[c.op];
  std::set<std::string> registered;
  ASSERT_FALSE(tbgrad::registered_ops().empty());
  for (const tbgrad::OpInfo& info : tbgrad::registered_ops()) {
    EXPECT_TRUE(registered.insert(info.name).second)
        << "op " << info.name << " is registered twice";
    EXPECT_GT(cases[info.name], 0) << "op " << info.name << " (has_vjp=" << info.has_vjp
                                   << ") has no case: add its rows to tests/op_cases.cpp";
  }
  for (const auto& [op, count] : cases) {
    EXPECT_TRUE(registered.count(op)) << "tests/op_cases.cpp has " << count << " cases of " << op
                                      << ", which is not a registered op";
  }
}

TEST(AllRegisteredOps, HaveAGradcheckOrANumericVjpCheckOfEveryCase) {
  const std::set<std::string> gradchecks = tests_of_suite("OpGradcheck");
  const std::set<std::string> kernels = tests_of_suite("GradientKernel");
  for (const OpCase& c : tbgrad::testing::op_cases()) {
    if (tbgrad::testing::op_has_vjp(c.op)) {
      EXPECT_TRUE(gradchecks.count("GradientsWrtEveryFloatInputMatchFiniteDifferences/" + c.id()))
          << c.id() << ": op " << c.op << " has a VJP, but the case has no gradcheck";
    } else {
      EXPECT_TRUE(c.gradient_of) << c.id() << ": op " << c.op
                                 << " has no VJP, and the case does not name the forward op "
                                    "whose gradient it is (gradient_of)";
      EXPECT_TRUE(kernels.count("CannotBeDifferentiated/" + c.id()) &&
                  kernels.count("EqualsNumericVjpOfItsForwardOp/" + c.id()))
          << c.id() << ": op " << c.op << " has no VJP, but the case is not a GradientKernel test";
    }
  }
}

TEST(OpCases, HaveUniqueIdsAndInputNamesAndAPyTorchExpression) {
  const std::regex identifier("[A-Za-z_][A-Za-z0-9_]*");
  std::set<std::string> ids;
  for (const OpCase& c : tbgrad::testing::op_cases()) {
    EXPECT_TRUE(ids.insert(c.id()).second) << c.id() << " is in the table twice";
    EXPECT_TRUE(std::regex_match(c.id(), identifier)) << c.id() << ": not a valid test name";
    EXPECT_FALSE(c.torch.empty()) << c.id() << ": no PyTorch expression";
    EXPECT_TRUE(c.build) << c.id() << ": no builder";
    std::set<std::string> names;
    for (const tbgrad::testing::CaseInput& in : c.inputs) {
      EXPECT_TRUE(names.insert(in.name).second) << c.id() << ": two inputs named " << in.name;
      EXPECT_TRUE(std::regex_match(in.name, identifier)) << c.id() << ": input " << in.name;
      EXPECT_NE(in.name, "torch") << c.id();
      EXPECT_NE(in.name, "F") << c.id();
      EXPECT_NE(in.name, "vjp") << c.id();
      if (!in.is_float()) {
        EXPECT_GT(in.classes, 0) << c.id() << ": labels of no class";
      }
    }
  }
}

}  // namespace
