// Gradient checks for every op the library registers.
//
// Every op with a vector-Jacobian product is checked against central finite differences with
// tbgrad::gradcheck on float64 graphs, at the default tolerances (eps 1e-6, atol 1e-5,
// rtol 1e-3). Ops without one (the gradient kernels of nonlinear ops) are checked to refuse
// differentiation, and their values are compared with hand computations and with the numeric
// vector-Jacobian product of the forward op they differentiate.
//
// The enumeration test at the end of this file (AllRegisteredOps) fails for any registered op
// that the coverage table does not map to a test suite of this file.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <numeric>
#include <ostream>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <tbgrad.hpp>

namespace {

using tbgrad::Conv2dOptions;
using tbgrad::DType;
using tbgrad::Executor;
using tbgrad::Graph;
using tbgrad::GradcheckOptions;
using tbgrad::GradcheckResult;
using tbgrad::Pool2dOptions;
using tbgrad::Shape;
using tbgrad::Tensor;
using tbgrad::Value;
using Feeds = std::vector<std::pair<Value, Tensor>>;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

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

// A random permutation of i * 0.01 (centred on zero): all values distinct, 0.01 apart, so every
// max-pooling window has a unique maximum that a perturbation of 1e-6 cannot change.
Tensor distinct_tensor(const Shape& shape, tbgrad::nn::Rng& rng) {
  Tensor t(shape, DType::kF64);
  const std::int64_t n = t.numel();
  std::vector<std::int64_t> perm(static_cast<std::size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  for (std::int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(i + 1)));
    std::swap(perm[static_cast<std::size_t>(i)], perm[static_cast<std::size_t>(j)]);
  }
  for (std::int64_t i = 0; i < n; ++i) {
    t.set(i, (static_cast<double>(perm[static_cast<std::size_t>(i)]) - 0.5 * n) * 0.01);
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
  const GradcheckResult r = tbgrad::gradcheck(out, std::span<const Value>(wrt),
                                              std::span<const std::pair<Value, Tensor>>(feeds),
                                              options);
  if (!r.reentrant) {
    return ::testing::AssertionFailure() << "backward is not reentrant\n" << r.report();
  }
  if (!r.ok) return ::testing::AssertionFailure() << r.report();
  if (r.inputs.size() != wrt.size()) {
    return ::testing::AssertionFailure() << "gradcheck reported " << r.inputs.size()
                                         << " inputs for " << wrt.size() << "\n"
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

std::int64_t out_size(std::int64_t in, int k, int s, int p) { return (in + 2 * std::int64_t{p} - k) / s + 1; }

// ---------------------------------------------------------------------------------------------
// conv2d grid
// ---------------------------------------------------------------------------------------------

struct ConvCase {
  int n, c, h, w;  // input [N, C, H, W]
  int oc, kh, kw;  // weight [OC, C, KH, KW]
  int sh, sw;      // stride
  int ph, pw;      // padding
  bool bias;

  Shape x_shape() const { return {n, c, h, w}; }
  Shape w_shape() const { return {oc, c, kh, kw}; }
  Shape y_shape() const {
    return {n, oc, out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)};
  }
  Conv2dOptions options() const { return {.stride = {sh, sw}, .padding = {ph, pw}}; }
};

std::string conv_case_name(const ::testing::TestParamInfo<ConvCase>& info) {
  const ConvCase& k = info.param;
  auto s = [](int v) { return std::to_string(v); };
  return "n" + s(k.n) + "_c" + s(k.c) + "_in" + s(k.h) + "x" + s(k.w) + "_oc" + s(k.oc) + "_k" +
         s(k.kh) + "x" + s(k.kw) + "_s" + s(k.sh) + "x" + s(k.sw) + "_p" + s(k.ph) + "x" +
         s(k.pw) + (k.bias ? "_bias" : "_nobias");
}

void PrintTo(const ConvCase& k, std::ostream* os) {
  *os << conv_case_name(::testing::TestParamInfo<ConvCase>(k, 0));
}

const ConvCase kConvCases[] = {
    // n  c  h   w  oc kh kw sh sw ph pw bias
    {1, 1, 5, 5, 1, 3, 3, 1, 1, 0, 0, true},     // smallest useful case
    {2, 1, 8, 8, 3, 5, 5, 1, 1, 0, 0, true},     // the reference CNN's first conv (5x5, 3 maps)
    {2, 3, 9, 9, 5, 3, 3, 1, 1, 0, 0, true},     // the reference CNN's second conv (3x3, 5 maps)
    {1, 2, 7, 7, 2, 3, 3, 2, 2, 0, 0, false},    // odd input, stride 2
    {2, 2, 8, 8, 2, 3, 3, 2, 2, 1, 1, true},     // even input, stride 2, padding 1
    {1, 3, 9, 9, 2, 3, 3, 3, 3, 0, 0, true},     // stride 3 equal to the kernel
    {2, 1, 10, 10, 2, 2, 2, 3, 3, 0, 0, true},   // stride larger than the kernel
    {1, 1, 11, 11, 1, 1, 1, 3, 3, 0, 0, false},  // 1x1 kernel, stride 3
    {2, 2, 6, 6, 3, 4, 4, 2, 2, 0, 0, true},     // overlapping windows: kernel 4, stride 2
    {1, 3, 7, 7, 2, 4, 4, 2, 2, 2, 2, false},    // overlapping windows with padding 2
    {3, 1, 5, 5, 2, 3, 3, 1, 1, 2, 2, true},     // padding 2: output larger than the input
    {1, 2, 6, 9, 2, 3, 3, 1, 1, 1, 1, true},     // non-square input
    {2, 1, 7, 6, 2, 2, 4, 1, 1, 0, 0, true},     // non-square kernel
    {1, 2, 8, 7, 3, 3, 2, 2, 1, 0, 0, false},    // non-square kernel and stride
    {2, 3, 6, 7, 2, 3, 3, 1, 2, 1, 0, true},     // non-square stride and padding
    {1, 1, 5, 8, 2, 5, 3, 1, 3, 2, 1, true},     // everything non-square
    {2, 2, 9, 8, 2, 3, 5, 3, 2, 0, 2, false},    // everything non-square, stride 3
    {1, 1, 4, 4, 1, 4, 4, 1, 1, 0, 0, true},     // kernel as large as the input: 1x1 output
    {4, 1, 6, 6, 2, 3, 3, 1, 1, 0, 0, true},     // batch 4: one chunk of the batch reduction
    {5, 2, 5, 5, 2, 3, 3, 2, 2, 1, 1, true},     // batch 5: two chunks of the batch reduction
    {1, 3, 8, 8, 1, 2, 2, 2, 2, 0, 0, false},    // stride equal to an even kernel
    {2, 1, 7, 7, 1, 3, 3, 2, 2, 0, 0, true},     // stride divides H - K exactly
    {1, 2, 8, 8, 2, 3, 3, 2, 2, 0, 0, false},    // stride leaves the last row and column unread
    {1, 1, 6, 6, 1, 3, 3, 3, 3, 1, 1, true},     // stride 3 with padding
    {2, 2, 5, 6, 7, 3, 3, 1, 1, 1, 1, true},     // 7 output channels: blocks of the tiles
    {1, 2, 6, 5, 16, 2, 3, 1, 1, 0, 1, false},   // 16 output channels: several blocks
};

class Conv2dGradcheck : public ::testing::TestWithParam<ConvCase> {};

TEST_P(Conv2dGradcheck, GradientsWrtInputWeightAndBiasMatchFiniteDifferences) {
  const ConvCase& k = GetParam();
  tbgrad::nn::Rng rng(11);
  Graph g(DType::kF64);
  Value x = g.input("x", k.x_shape());
  Value w = uniform_param(g, "w", k.w_shape(), rng);
  std::vector<Value> wrt = {x, w};
  Value y;
  if (k.bias) {
    Value b = uniform_param(g, "b", {k.oc}, rng);
    wrt.push_back(b);
    y = tbgrad::conv2d(x, w, b, k.options());
  } else {
    y = tbgrad::conv2d(x, w, k.options());
  }
  ASSERT_EQ(y.shape(), k.y_shape());
  EXPECT_TRUE(PassesGradcheck(y, wrt, {{x, uniform_tensor(k.x_shape(), rng)}}));
}

INSTANTIATE_TEST_SUITE_P(Grid, Conv2dGradcheck, ::testing::ValuesIn(kConvCases), conv_case_name);

// The gradient kernels are linear in each argument and differentiable in turn: check them
// directly, with respect to both of their tensor arguments.
class Conv2dBackwardInputGradcheck : public ::testing::TestWithParam<ConvCase> {};

TEST_P(Conv2dBackwardInputGradcheck, GradientsWrtOutputGradientAndWeightMatchFiniteDifferences) {
  const ConvCase& k = GetParam();
  tbgrad::nn::Rng rng(12);
  Graph g(DType::kF64);
  Value gy = g.input("grad_out", k.y_shape());
  Value w = uniform_param(g, "w", k.w_shape(), rng);
  Value gx = tbgrad::conv2d_backward_input(gy, w, k.x_shape(), k.options());
  ASSERT_EQ(gx.shape(), k.x_shape());
  EXPECT_TRUE(PassesGradcheck(gx, {gy, w}, {{gy, uniform_tensor(k.y_shape(), rng)}}));
}

INSTANTIATE_TEST_SUITE_P(Grid, Conv2dBackwardInputGradcheck, ::testing::ValuesIn(kConvCases),
                         conv_case_name);

class Conv2dBackwardWeightGradcheck : public ::testing::TestWithParam<ConvCase> {};

TEST_P(Conv2dBackwardWeightGradcheck, GradientsWrtInputAndOutputGradientMatchFiniteDifferences) {
  const ConvCase& k = GetParam();
  tbgrad::nn::Rng rng(13);
  Graph g(DType::kF64);
  Value x = g.input("x", k.x_shape());
  Value gy = g.input("grad_out", k.y_shape());
  Value gw = tbgrad::conv2d_backward_weight(x, gy, k.w_shape(), k.options());
  ASSERT_EQ(gw.shape(), k.w_shape());
  EXPECT_TRUE(PassesGradcheck(gw, {x, gy},
                              {{x, uniform_tensor(k.x_shape(), rng)},
                               {gy, uniform_tensor(k.y_shape(), rng)}}));
}

INSTANTIATE_TEST_SUITE_P(Grid, Conv2dBackwardWeightGradcheck, ::testing::ValuesIn(kConvCases),
                         conv_case_name);

class Conv2dBackwardBiasGradcheck : public ::testing::TestWithParam<ConvCase> {};

TEST_P(Conv2dBackwardBiasGradcheck, GradientWrtOutputGradientMatchesFiniteDifferences) {
  const ConvCase& k = GetParam();
  tbgrad::nn::Rng rng(14);
  Graph g(DType::kF64);
  Value gy = g.input("grad_out", k.y_shape());
  Value gb = tbgrad::conv2d_backward_bias(gy);
  ASSERT_EQ(gb.shape(), Shape{k.oc});
  EXPECT_TRUE(PassesGradcheck(gb, {gy}, {{gy, uniform_tensor(k.y_shape(), rng)}}));
}

INSTANTIATE_TEST_SUITE_P(Grid, Conv2dBackwardBiasGradcheck, ::testing::ValuesIn(kConvCases),
                         conv_case_name);

// ---------------------------------------------------------------------------------------------
// Pooling grid
// ---------------------------------------------------------------------------------------------

struct PoolCase {
  int n, c, h, w;  // input [N, C, H, W]
  int kh, kw;      // kernel
  int sh, sw;      // stride (0: the kernel size)
  int ph, pw;      // padding, at most half the kernel

  Shape x_shape() const { return {n, c, h, w}; }
  int stride_h() const { return sh ? sh : kh; }
  int stride_w() const { return sw ? sw : kw; }
  Shape y_shape() const {
    return {n, c, out_size(h, kh, stride_h(), ph), out_size(w, kw, stride_w(), pw)};
  }
  Pool2dOptions options() const {
    return {.kernel = {kh, kw}, .stride = {sh, sw}, .padding = {ph, pw}};
  }
};

std::string pool_case_name(const ::testing::TestParamInfo<PoolCase>& info) {
  const PoolCase& k = info.param;
  auto s = [](int v) { return std::to_string(v); };
  return "n" + s(k.n) + "_c" + s(k.c) + "_in" + s(k.h) + "x" + s(k.w) + "_k" + s(k.kh) + "x" +
         s(k.kw) + (k.sh || k.sw ? "_s" + s(k.sh) + "x" + s(k.sw) : "_sdefault") + "_p" +
         s(k.ph) + "x" + s(k.pw);
}

void PrintTo(const PoolCase& k, std::ostream* os) {
  *os << pool_case_name(::testing::TestParamInfo<PoolCase>(k, 0));
}

const PoolCase kPoolCases[] = {
    // n  c  h   w  kh kw sh sw ph pw
    {1, 1, 4, 4, 2, 2, 0, 0, 0, 0},      // default stride (= kernel)
    {2, 3, 12, 12, 4, 4, 2, 2, 0, 0},    // the reference CNN's first pooling: kernel 4, stride 2
    {1, 3, 24, 24, 4, 4, 2, 2, 0, 0},    // ... at its real size (24x24 -> 11x11)
    {2, 5, 9, 9, 3, 3, 1, 1, 0, 0},      // the reference CNN's second pooling: kernel 3, stride 1
    {1, 2, 7, 7, 3, 3, 2, 2, 1, 1},      // odd input, overlapping windows, padding 1
    {2, 1, 8, 8, 4, 4, 2, 2, 2, 2},      // overlapping windows, padding 2 (half the kernel)
    {1, 1, 10, 10, 2, 2, 3, 3, 0, 0},    // stride larger than the kernel
    {1, 2, 11, 11, 3, 3, 4, 4, 1, 1},    // stride larger than the kernel, with padding
    {3, 1, 5, 5, 3, 3, 1, 1, 1, 1},      // batch 3, padding 1, stride 1
    {1, 3, 6, 9, 2, 3, 2, 3, 0, 0},      // non-square input and kernel
    {2, 1, 7, 8, 3, 2, 1, 2, 1, 1},      // non-square kernel and stride
    {1, 2, 9, 6, 4, 2, 3, 1, 2, 0},      // non-square padding
    {2, 2, 8, 8, 2, 2, 1, 1, 0, 0},      // kernel 2, stride 1
    {1, 1, 5, 5, 5, 5, 1, 1, 0, 0},      // one window covering the whole input
    {1, 1, 5, 5, 5, 5, 1, 1, 2, 2},      // kernel 5 with padding 2
    {2, 3, 7, 7, 3, 3, 3, 3, 0, 0},      // stride = kernel, last row and column unread
    {1, 1, 6, 6, 1, 1, 2, 2, 0, 0},      // 1x1 kernel, stride 2
    {4, 2, 6, 5, 3, 2, 2, 1, 1, 0},      // batch 4, everything non-square
    {1, 3, 9, 9, 3, 3, 2, 2, 0, 0},      // odd input, kernel 3, stride 2
    {2, 1, 10, 7, 4, 3, 2, 2, 1, 1},     // non-square, overlapping, padded
    {1, 2, 4, 6, 2, 4, 2, 1, 1, 2},      // padding on both axes, wide kernel
    {3, 2, 8, 6, 3, 3, 2, 2, 1, 1},      // even input, kernel 3, stride 2, padding 1
    {1, 1, 12, 12, 8, 8, 2, 2, 0, 0},    // window wider than 7: summed pass by pass
    {1, 2, 5, 37, 3, 3, 1, 1, 1, 0},     // rows of several vectors at every width, stride 1
    {1, 1, 6, 40, 2, 4, 2, 2, 0, 1},     // ... and stride 2
};

class AvgPool2dGradcheck : public ::testing::TestWithParam<PoolCase> {};

TEST_P(AvgPool2dGradcheck, GradientWrtInputMatchesFiniteDifferences) {
  const PoolCase& k = GetParam();
  tbgrad::nn::Rng rng(21);
  Graph g(DType::kF64);
  Value x = g.input("x", k.x_shape());
  Value y = tbgrad::avg_pool2d(x, k.options());
  ASSERT_EQ(y.shape(), k.y_shape());
  EXPECT_TRUE(PassesGradcheck(y, {x}, {{x, uniform_tensor(k.x_shape(), rng)}}));
}

INSTANTIATE_TEST_SUITE_P(Grid, AvgPool2dGradcheck, ::testing::ValuesIn(kPoolCases),
                         pool_case_name);

class MaxPool2dGradcheck : public ::testing::TestWithParam<PoolCase> {};

TEST_P(MaxPool2dGradcheck, GradientWrtInputWithDistinctValuesMatchesFiniteDifferences) {
  const PoolCase& k = GetParam();
  tbgrad::nn::Rng rng(22);
  Graph g(DType::kF64);
  Value x = g.input("x", k.x_shape());
  Value y = tbgrad::max_pool2d(x, k.options());
  ASSERT_EQ(y.shape(), k.y_shape());
  EXPECT_TRUE(PassesGradcheck(y, {x}, {{x, distinct_tensor(k.x_shape(), rng)}}));
}

INSTANTIATE_TEST_SUITE_P(Grid, MaxPool2dGradcheck, ::testing::ValuesIn(kPoolCases),
                         pool_case_name);

class AvgPool2dBackwardGradcheck : public ::testing::TestWithParam<PoolCase> {};

TEST_P(AvgPool2dBackwardGradcheck, GradientWrtOutputGradientMatchesFiniteDifferences) {
  const PoolCase& k = GetParam();
  tbgrad::nn::Rng rng(23);
  Graph g(DType::kF64);
  Value gy = g.input("grad_out", k.y_shape());
  Value gx = tbgrad::avg_pool2d_backward(gy, k.x_shape(), k.options());
  ASSERT_EQ(gx.shape(), k.x_shape());
  EXPECT_TRUE(PassesGradcheck(gx, {gy}, {{gy, uniform_tensor(k.y_shape(), rng)}}));
}

INSTANTIATE_TEST_SUITE_P(Grid, AvgPool2dBackwardGradcheck, ::testing::ValuesIn(kPoolCases),
                         pool_case_name);

// ---------------------------------------------------------------------------------------------
// Broadcasting binary ops
// ---------------------------------------------------------------------------------------------

struct BroadcastPair {
  const char* name;
  Shape a, b;
};

void PrintTo(const BroadcastPair& p, std::ostream* os) {
  *os << p.name << " " << p.a.str() << " with " << p.b.str();
}

const BroadcastPair kBroadcastPairs[] = {
    {"SameShape", {3, 4}, {3, 4}},
    {"ChannelBiasOverImages", {2, 3, 4, 5}, {3, 1, 1}},
    {"ImagesOverChannelBias", {3, 1, 1}, {2, 3, 4, 5}},
    {"FeatureBiasOverBatch", {4, 6}, {6}},
    {"ScalarWithMatrix", {}, {3, 4}},
    {"MatrixWithScalar", {3, 4}, {}},
    {"ColumnWithRow", {4, 1}, {1, 5}},
};

using BinaryFn = Value (*)(Value, Value);

BinaryFn binary_fn(const std::string& op) {
  if (op == "add") return &tbgrad::add;
  if (op == "sub") return &tbgrad::sub;
  return &tbgrad::mul;
}

class BroadcastingBinaryGradcheck
    : public ::testing::TestWithParam<std::tuple<std::string, BroadcastPair>> {};

TEST_P(BroadcastingBinaryGradcheck, GradientsWrtBothOperandsMatchFiniteDifferences) {
  const auto& [op, pair] = GetParam();
  tbgrad::nn::Rng rng(31);
  Graph g(DType::kF64);
  Value a = g.input("a", pair.a);
  Value b = uniform_param(g, "b", pair.b, rng);
  Value y = binary_fn(op)(a, b);
  EXPECT_TRUE(PassesGradcheck(y, {a, b}, {{a, uniform_tensor(pair.a, rng)}}));
}

INSTANTIATE_TEST_SUITE_P(
    Grid, BroadcastingBinaryGradcheck,
    ::testing::Combine(::testing::Values("add", "sub", "mul"), ::testing::ValuesIn(kBroadcastPairs)),
    [](const ::testing::TestParamInfo<std::tuple<std::string, BroadcastPair>>& info) {
      return std::get<0>(info.param) + "_" + std::get<1>(info.param).name;
    });

// ---------------------------------------------------------------------------------------------
// Elementwise unary ops
// ---------------------------------------------------------------------------------------------

TEST(ScaleGradcheck, GradientMatchesFiniteDifferencesForSeveralFactors) {
  for (double factor : {2.5, -0.75, 0.0, 1.0}) {
    SCOPED_TRACE("factor " + std::to_string(factor));
    tbgrad::nn::Rng rng(41);
    Graph g(DType::kF64);
    Value x = g.input("x", {3, 4});
    EXPECT_TRUE(PassesGradcheck(tbgrad::scale(x, factor), {x}, {{x, uniform_tensor({3, 4}, rng)}}));
  }
}

TEST(ReluGradcheck, GradientMatchesFiniteDifferencesAwayFromZero) {
  for (const Shape& shape : {Shape{3, 4}, Shape{2, 3, 4, 5}}) {
    SCOPED_TRACE(shape.str());
    tbgrad::nn::Rng rng(42);
    Graph g(DType::kF64);
    Value x = g.input("x", shape);
    EXPECT_TRUE(PassesGradcheck(tbgrad::relu(x), {x}, {{x, away_from_zero_tensor(shape, rng)}}));
  }
}

TEST(SigmoidGradcheck, GradientMatchesFiniteDifferences) {
  for (const Shape& shape : {Shape{3, 4}, Shape{2, 3, 4, 5}}) {
    SCOPED_TRACE(shape.str());
    tbgrad::nn::Rng rng(43);
    Graph g(DType::kF64);
    Value x = g.input("x", shape);
    EXPECT_TRUE(PassesGradcheck(tbgrad::sigmoid(x), {x}, {{x, uniform_tensor(shape, rng, -3, 3)}}));
  }
}

TEST(TanhGradcheck, GradientMatchesFiniteDifferences) {
  for (const Shape& shape : {Shape{3, 4}, Shape{2, 3, 4, 5}}) {
    SCOPED_TRACE(shape.str());
    tbgrad::nn::Rng rng(44);
    Graph g(DType::kF64);
    Value x = g.input("x", shape);
    EXPECT_TRUE(PassesGradcheck(tbgrad::tanh(x), {x}, {{x, uniform_tensor(shape, rng, -2, 2)}}));
  }
}

// ---------------------------------------------------------------------------------------------
// Softmax family
// ---------------------------------------------------------------------------------------------

TEST(SoftmaxGradcheck, GradientMatchesFiniteDifferencesForRank2And3) {
  for (const Shape& shape : {Shape{4, 5}, Shape{2, 3, 4}, Shape{1, 1}}) {
    SCOPED_TRACE(shape.str());
    tbgrad::nn::Rng rng(51);
    Graph g(DType::kF64);
    Value x = g.input("x", shape);
    EXPECT_TRUE(PassesGradcheck(tbgrad::softmax(x), {x}, {{x, uniform_tensor(shape, rng, -2, 2)}}));
  }
}

TEST(LogSoftmaxGradcheck, GradientMatchesFiniteDifferencesForRank2And3) {
  for (const Shape& shape : {Shape{4, 5}, Shape{2, 3, 4}, Shape{1, 1}}) {
    SCOPED_TRACE(shape.str());
    tbgrad::nn::Rng rng(52);
    Graph g(DType::kF64);
    Value x = g.input("x", shape);
    EXPECT_TRUE(
        PassesGradcheck(tbgrad::log_softmax(x), {x}, {{x, uniform_tensor(shape, rng, -2, 2)}}));
  }
}

struct CrossEntropyCase {
  int batch, classes;
};

void PrintTo(const CrossEntropyCase& k, std::ostream* os) {
  *os << "batch " << k.batch << ", classes " << k.classes;
}

class SoftmaxCrossEntropyGradcheck : public ::testing::TestWithParam<CrossEntropyCase> {};

TEST_P(SoftmaxCrossEntropyGradcheck, GradientWrtLogitsMatchesFiniteDifferences) {
  const auto [batch, classes] = GetParam();
  tbgrad::nn::Rng rng(53);
  Graph g(DType::kF64);
  Value logits = g.input("logits", {batch, classes});
  Value labels = g.input_labels("labels", {batch});
  Tensor label_values({batch}, DType::kI32);
  for (int i = 0; i < batch; ++i) label_values.set(i, static_cast<double>((7 * i + 3) % classes));
  Value loss = tbgrad::softmax_cross_entropy(logits, labels);
  EXPECT_TRUE(PassesGradcheck(loss, {logits},
                              {{logits, uniform_tensor({batch, classes}, rng, -3, 3)},
                               {labels, label_values}}));
}

INSTANTIATE_TEST_SUITE_P(Grid, SoftmaxCrossEntropyGradcheck,
                         ::testing::Values(CrossEntropyCase{1, 2}, CrossEntropyCase{1, 10},
                                           CrossEntropyCase{3, 5}, CrossEntropyCase{4, 10},
                                           CrossEntropyCase{7, 3}, CrossEntropyCase{16, 1}),
                         [](const ::testing::TestParamInfo<CrossEntropyCase>& info) {
                           return "batch" + std::to_string(info.param.batch) + "_classes" +
                                  std::to_string(info.param.classes);
                         });

// ---------------------------------------------------------------------------------------------
// Matrix products
// ---------------------------------------------------------------------------------------------

class MatmulGradcheck : public ::testing::TestWithParam<std::tuple<bool, bool>> {};

TEST_P(MatmulGradcheck, GradientsWrtBothOperandsOfNonSquareMatricesMatchFiniteDifferences) {
  const auto [ta, tb] = GetParam();
  const std::int64_t m = 3, k = 4, n = 5;
  const Shape sa = ta ? Shape{k, m} : Shape{m, k};
  const Shape sb = tb ? Shape{n, k} : Shape{k, n};
  tbgrad::nn::Rng rng(61);
  Graph g(DType::kF64);
  Value a = g.input("a", sa);
  Value b = uniform_param(g, "b", sb, rng);
  Value c = tbgrad::matmul(a, b, {.transpose_a = ta, .transpose_b = tb});
  ASSERT_EQ(c.shape(), (Shape{m, n}));
  EXPECT_TRUE(PassesGradcheck(c, {a, b}, {{a, uniform_tensor(sa, rng)}}));
}

INSTANTIATE_TEST_SUITE_P(TransposeCombinations, MatmulGradcheck,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool()),
                         [](const ::testing::TestParamInfo<std::tuple<bool, bool>>& info) {
                           return std::string(std::get<0>(info.param) ? "At" : "A") + "_" +
                                  (std::get<1>(info.param) ? "Bt" : "B");
                         });

TEST(LinearGradcheck, GradientsWrtInputWeightAndBiasMatchFiniteDifferences) {
  tbgrad::nn::Rng rng(62);
  Graph g(DType::kF64);
  Value x = g.input("x", {4, 6});
  Value w = uniform_param(g, "w", {3, 6}, rng);
  Value b = uniform_param(g, "b", {3}, rng);
  EXPECT_TRUE(PassesGradcheck(tbgrad::linear(x, w, b), {x, w, b}, {{x, uniform_tensor({4, 6}, rng)}}));
}

TEST(LinearGradcheck, GradientsWithoutBiasMatchFiniteDifferences) {
  tbgrad::nn::Rng rng(63);
  Graph g(DType::kF64);
  Value x = g.input("x", {5, 2});
  Value w = uniform_param(g, "w", {7, 2}, rng);
  EXPECT_TRUE(PassesGradcheck(tbgrad::linear(x, w), {x, w}, {{x, uniform_tensor({5, 2}, rng)}}));
}

// ---------------------------------------------------------------------------------------------
// Reductions, broadcasting and shape ops
// ---------------------------------------------------------------------------------------------

TEST(SumGradcheck, GradientMatchesFiniteDifferences) {
  for (const Shape& shape : {Shape{}, Shape{7}, Shape{2, 3, 4}}) {
    SCOPED_TRACE(shape.str());
    tbgrad::nn::Rng rng(71);
    Graph g(DType::kF64);
    Value x = g.input("x", shape);
    EXPECT_TRUE(PassesGradcheck(tbgrad::sum(x), {x}, {{x, uniform_tensor(shape, rng)}}));
  }
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

struct ReduceBroadcastCase {
  const char* name;
  Shape big, small;
};

void PrintTo(const ReduceBroadcastCase& k, std::ostream* os) {
  *os << k.name << " " << k.big.str() << " <-> " << k.small.str();
}

const ReduceBroadcastCase kReduceBroadcastCases[] = {
    {"LeadingDimension", {2, 3, 4}, {3, 4}},
    {"LeadingDimensionKept", {2, 3, 4}, {1, 3, 4}},
    {"LastDimension", {2, 3, 4}, {2, 3, 1}},
    {"MiddleDimension", {2, 3, 4}, {2, 1, 4}},
    {"ToScalar", {2, 3, 4}, {}},
    {"ToOnes", {2, 3, 4}, {1, 1, 1}},
    {"ChannelBias", {4, 3, 2, 5}, {3, 1, 1}},
    {"Rows", {5, 6}, {6}},
};

std::string reduce_broadcast_name(const ::testing::TestParamInfo<ReduceBroadcastCase>& info) {
  return info.param.name;
}

class SumToGradcheck : public ::testing::TestWithParam<ReduceBroadcastCase> {};

TEST_P(SumToGradcheck, GradientMatchesFiniteDifferences) {
  const ReduceBroadcastCase& k = GetParam();
  tbgrad::nn::Rng rng(73);
  Graph g(DType::kF64);
  Value x = g.input("x", k.big);
  Value y = tbgrad::sum_to(x, k.small);
  ASSERT_EQ(y.shape(), k.small);
  EXPECT_TRUE(PassesGradcheck(y, {x}, {{x, uniform_tensor(k.big, rng)}}));
}

INSTANTIATE_TEST_SUITE_P(Shapes, SumToGradcheck, ::testing::ValuesIn(kReduceBroadcastCases),
                         reduce_broadcast_name);

class BroadcastToGradcheck : public ::testing::TestWithParam<ReduceBroadcastCase> {};

TEST_P(BroadcastToGradcheck, GradientMatchesFiniteDifferences) {
  const ReduceBroadcastCase& k = GetParam();
  tbgrad::nn::Rng rng(74);
  Graph g(DType::kF64);
  Value x = g.input("x", k.small);
  Value y = tbgrad::broadcast_to(x, k.big);
  ASSERT_EQ(y.shape(), k.big);
  EXPECT_TRUE(PassesGradcheck(y, {x}, {{x, uniform_tensor(k.small, rng)}}));
}

INSTANTIATE_TEST_SUITE_P(Shapes, BroadcastToGradcheck, ::testing::ValuesIn(kReduceBroadcastCases),
                         reduce_broadcast_name);

TEST(ReshapeGradcheck, GradientMatchesFiniteDifferences) {
  tbgrad::nn::Rng rng(75);
  Graph g(DType::kF64);
  Value x = g.input("x", {2, 3, 4});
  Value y = tbgrad::reshape(x, {4, -1});
  ASSERT_EQ(y.shape(), (Shape{4, 6}));
  EXPECT_TRUE(PassesGradcheck(y, {x}, {{x, uniform_tensor({2, 3, 4}, rng)}}));
}

TEST(ReshapeGradcheck, GradientThroughTwoReshapesMatchesFiniteDifferences) {
  tbgrad::nn::Rng rng(76);
  Graph g(DType::kF64);
  Value x = uniform_param(g, "x", {6, 2}, rng);
  Value y = tbgrad::reshape(tbgrad::reshape(x, Shape{3, 4}), Shape{12});
  EXPECT_TRUE(PassesGradcheck(y, {x}));
}

TEST(FlattenGradcheck, GradientMatchesFiniteDifferences) {
  tbgrad::nn::Rng rng(77);
  Graph g(DType::kF64);
  Value x = g.input("x", {2, 3, 4, 5});
  Value y = tbgrad::flatten(x);
  ASSERT_EQ(y.shape(), (Shape{2, 60}));
  EXPECT_TRUE(PassesGradcheck(y, {x}, {{x, uniform_tensor({2, 3, 4, 5}, rng)}}));
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
  EXPECT_TRUE(PassesGradcheck(y, {x1, x2, w},
                              {{x1, uniform_tensor({1, 2, 6, 6}, rng)},
                               {x2, uniform_tensor({2, 2, 5, 7}, rng)}}));
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
  out = tbgrad::add(out, tbgrad::sum(tbgrad::mul(grads[1], uniform_constant(g, grads[1].shape(), rng))));
  out = tbgrad::add(out, tbgrad::sum(tbgrad::mul(grads[2], uniform_constant(g, grads[2].shape(), rng))));
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
  const GradcheckResult r =
      tbgrad::gradcheck(loss, std::span<const Value>(params),
                        std::span<const std::pair<Value, Tensor>>(
                            Feeds{{x, images}, {labels, label_values}}),
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
// Gradient kernels without a VJP
//
// Each is checked three ways: differentiating through it throws tbgrad::Error naming it; its
// value on a small input matches a hand computation; and its value matches the numeric
// vector-Jacobian product of the forward op it is the gradient of.
// ---------------------------------------------------------------------------------------------

// Builds loss = sum(kernel * R) and asserts that grad(loss, wrt) throws tbgrad::Error whose
// message names `op`.
void ExpectGradThrowsNaming(Value kernel_out, Value wrt, const std::string& op) {
  Graph& g = kernel_out.graph();
  tbgrad::nn::Rng rng(99);
  Value loss = tbgrad::sum(tbgrad::mul(kernel_out, uniform_constant(g, kernel_out.shape(), rng)));
  try {
    (void)tbgrad::grad(loss, wrt);
    ADD_FAILURE() << "grad() through " << op << " did not throw";
  } catch (const tbgrad::Error& e) {
    EXPECT_NE(std::string(e.what()).find(op), std::string::npos)
        << "message does not name " << op << ": " << e.what();
  }
}

// Runs `out` with the given feeds and returns a copy of its value.
Tensor run_value(Value out, const Feeds& feeds) {
  Executor ex(out.graph(), {out});
  for (const auto& [v, t] : feeds) ex.bind(v, t);
  ex.run();
  return ex.get(out).clone();
}

// d/dx sum(forward(x) * gy) by central differences, element by element: the numeric VJP of
// `forward_out` (a function of the input `x`) against gy.
Tensor numeric_vjp(Value forward_out, Value x, const Tensor& x_value, const Tensor& gy,
                   const Feeds& other_feeds = {}) {
  Graph& g = forward_out.graph();
  Value objective = tbgrad::sum(tbgrad::mul(forward_out, g.constant(gy, "gy")));
  Tensor xv = x_value.clone();
  Executor ex(g, {objective});
  ex.bind(x, xv);
  for (const auto& [v, t] : other_feeds) ex.bind(v, t);
  Tensor result(x_value.shape(), DType::kF64);
  const double eps = 1e-6;
  for (std::int64_t i = 0; i < xv.numel(); ++i) {
    const double orig = xv.at(i);
    xv.set(i, orig + eps);
    ex.run();
    const double fp = ex.get(objective).at(0);
    xv.set(i, orig - eps);
    ex.run();
    const double fm = ex.get(objective).at(0);
    xv.set(i, orig);
    result.set(i, (fp - fm) / (2 * eps));
  }
  return result;
}

// Elementwise comparison at gradcheck's default tolerances.
::testing::AssertionResult MatchesNumeric(const Tensor& analytic, const Tensor& numeric) {
  if (!(analytic.shape() == numeric.shape())) {
    return ::testing::AssertionFailure() << "shape " << analytic.shape().str() << " vs "
                                         << numeric.shape().str();
  }
  for (std::int64_t i = 0; i < analytic.numel(); ++i) {
    const double a = analytic.at(i), n = numeric.at(i);
    if (!(std::abs(a - n) <= 1e-5 + 1e-3 * std::abs(n))) {
      return ::testing::AssertionFailure() << "element " << i << ": kernel " << a << ", numeric "
                                           << n;
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

// relu_backward ----------------------------------------------------------------------------------

TEST(ReluBackward, CannotBeDifferentiated) {
  Graph g(DType::kF64);
  Value x = g.input("x", {2, 3});
  Value gy = g.input("gy", {2, 3});
  ExpectGradThrowsNaming(tbgrad::relu_backward(x, gy), x, "relu_backward");
}

TEST(ReluBackward, PassesTheGradientWherePositiveAndZeroElsewhere) {
  Graph g(DType::kF64);
  Value x = g.input("x", {2, 3});
  Value gy = g.input("gy", {2, 3});
  Tensor out = run_value(tbgrad::relu_backward(x, gy),
                         {{x, f64_tensor({2, 3}, {-1.5, 0.5, 0.0, 2.0, -0.1, 3.0})},
                          {gy, f64_tensor({2, 3}, {10, 20, 30, 40, 50, 60})}});
  ExpectValues(out, {0, 20, 0, 40, 0, 60});
}

TEST(ReluBackward, EqualsNumericVjpOfRelu) {
  tbgrad::nn::Rng rng(101);
  Graph g(DType::kF64);
  const Shape s{3, 5};
  Value x = g.input("x", s);
  Value gy = g.input("gy", s);
  Tensor xv = away_from_zero_tensor(s, rng), gv = uniform_tensor(s, rng);
  Tensor kernel = run_value(tbgrad::relu_backward(x, gy), {{x, xv}, {gy, gv}});
  EXPECT_TRUE(MatchesNumeric(kernel, numeric_vjp(tbgrad::relu(x), x, xv, gv)));
}

// sigmoid_backward -------------------------------------------------------------------------------

TEST(SigmoidBackward, CannotBeDifferentiated) {
  Graph g(DType::kF64);
  Value x = g.input("x", {2, 3});
  Value gy = g.input("gy", {2, 3});
  ExpectGradThrowsNaming(tbgrad::sigmoid_backward(tbgrad::sigmoid(x), gy), x, "sigmoid_backward");
}

TEST(SigmoidBackward, IsGradientTimesYTimesOneMinusY) {
  Graph g(DType::kF64);
  Value y = g.input("y", {3});
  Value gy = g.input("gy", {3});
  Tensor out = run_value(tbgrad::sigmoid_backward(y, gy),
                         {{y, f64_tensor({3}, {0.5, 0.25, 0.9})}, {gy, f64_tensor({3}, {2, 4, -1})}});
  ExpectValues(out, {0.5, 0.75, -0.09});
}

TEST(SigmoidBackward, EqualsNumericVjpOfSigmoid) {
  tbgrad::nn::Rng rng(102);
  Graph g(DType::kF64);
  const Shape s{3, 5};
  Value x = g.input("x", s);
  Value gy = g.input("gy", s);
  Tensor xv = uniform_tensor(s, rng, -3, 3), gv = uniform_tensor(s, rng);
  Tensor kernel = run_value(tbgrad::sigmoid_backward(tbgrad::sigmoid(x), gy), {{x, xv}, {gy, gv}});
  EXPECT_TRUE(MatchesNumeric(kernel, numeric_vjp(tbgrad::sigmoid(x), x, xv, gv)));
}

// tanh_backward ----------------------------------------------------------------------------------

TEST(TanhBackward, CannotBeDifferentiated) {
  Graph g(DType::kF64);
  Value x = g.input("x", {2, 3});
  Value gy = g.input("gy", {2, 3});
  ExpectGradThrowsNaming(tbgrad::tanh_backward(tbgrad::tanh(x), gy), x, "tanh_backward");
}

TEST(TanhBackward, IsGradientTimesOneMinusYSquared) {
  Graph g(DType::kF64);
  Value y = g.input("y", {3});
  Value gy = g.input("gy", {3});
  Tensor out = run_value(tbgrad::tanh_backward(y, gy),
                         {{y, f64_tensor({3}, {0.5, -0.2, 0.0})}, {gy, f64_tensor({3}, {2, 3, -4})}});
  ExpectValues(out, {1.5, 2.88, -4.0});
}

TEST(TanhBackward, EqualsNumericVjpOfTanh) {
  tbgrad::nn::Rng rng(103);
  Graph g(DType::kF64);
  const Shape s{3, 5};
  Value x = g.input("x", s);
  Value gy = g.input("gy", s);
  Tensor xv = uniform_tensor(s, rng, -2, 2), gv = uniform_tensor(s, rng);
  Tensor kernel = run_value(tbgrad::tanh_backward(tbgrad::tanh(x), gy), {{x, xv}, {gy, gv}});
  EXPECT_TRUE(MatchesNumeric(kernel, numeric_vjp(tbgrad::tanh(x), x, xv, gv)));
}

// softmax_backward -------------------------------------------------------------------------------

TEST(SoftmaxBackward, CannotBeDifferentiated) {
  Graph g(DType::kF64);
  Value x = g.input("x", {2, 3});
  Value gy = g.input("gy", {2, 3});
  ExpectGradThrowsNaming(tbgrad::softmax_backward(tbgrad::softmax(x), gy), x, "softmax_backward");
}

TEST(SoftmaxBackward, IsYTimesGradientMinusItsWeightedSum) {
  // y = [0.2, 0.3, 0.5], g = [1, 2, 3]: sum(g * y) = 2.3, y * (g - 2.3).
  Graph g(DType::kF64);
  Value y = g.input("y", {1, 3});
  Value gy = g.input("gy", {1, 3});
  Tensor out = run_value(tbgrad::softmax_backward(y, gy),
                         {{y, f64_tensor({1, 3}, {0.2, 0.3, 0.5})}, {gy, f64_tensor({1, 3}, {1, 2, 3})}});
  ExpectValues(out, {-0.26, -0.09, 0.35});
}

TEST(SoftmaxBackward, EqualsNumericVjpOfSoftmaxForRank2And3) {
  for (const Shape& s : {Shape{3, 5}, Shape{2, 3, 4}}) {
    SCOPED_TRACE(s.str());
    tbgrad::nn::Rng rng(104);
    Graph g(DType::kF64);
    Value x = g.input("x", s);
    Value gy = g.input("gy", s);
    Tensor xv = uniform_tensor(s, rng, -2, 2), gv = uniform_tensor(s, rng);
    Tensor kernel = run_value(tbgrad::softmax_backward(tbgrad::softmax(x), gy), {{x, xv}, {gy, gv}});
    EXPECT_TRUE(MatchesNumeric(kernel, numeric_vjp(tbgrad::softmax(x), x, xv, gv)));
  }
}

// log_softmax_backward ---------------------------------------------------------------------------

TEST(LogSoftmaxBackward, CannotBeDifferentiated) {
  Graph g(DType::kF64);
  Value x = g.input("x", {2, 3});
  Value gy = g.input("gy", {2, 3});
  ExpectGradThrowsNaming(tbgrad::log_softmax_backward(tbgrad::log_softmax(x), gy), x,
                         "log_softmax_backward");
}

TEST(LogSoftmaxBackward, IsGradientMinusSoftmaxTimesGradientSum) {
  // y = log([0.2, 0.3, 0.5]), g = [1, 2, 3]: g - exp(y) * 6.
  Graph g(DType::kF64);
  Value y = g.input("y", {1, 3});
  Value gy = g.input("gy", {1, 3});
  Tensor out = run_value(
      tbgrad::log_softmax_backward(y, gy),
      {{y, f64_tensor({1, 3}, {std::log(0.2), std::log(0.3), std::log(0.5)})},
       {gy, f64_tensor({1, 3}, {1, 2, 3})}});
  ExpectValues(out, {-0.2, 0.2, 0.0});
}

TEST(LogSoftmaxBackward, EqualsNumericVjpOfLogSoftmaxForRank2And3) {
  for (const Shape& s : {Shape{3, 5}, Shape{2, 3, 4}}) {
    SCOPED_TRACE(s.str());
    tbgrad::nn::Rng rng(105);
    Graph g(DType::kF64);
    Value x = g.input("x", s);
    Value gy = g.input("gy", s);
    Tensor xv = uniform_tensor(s, rng, -2, 2), gv = uniform_tensor(s, rng);
    Tensor kernel =
        run_value(tbgrad::log_softmax_backward(tbgrad::log_softmax(x), gy), {{x, xv}, {gy, gv}});
    EXPECT_TRUE(MatchesNumeric(kernel, numeric_vjp(tbgrad::log_softmax(x), x, xv, gv)));
  }
}

// softmax_cross_entropy_backward -----------------------------------------------------------------

TEST(SoftmaxCrossEntropyBackward, CannotBeDifferentiated) {
  Graph g(DType::kF64);
  Value logits = g.input("logits", {2, 3});
  Value labels = g.input_labels("labels", {2});
  ExpectGradThrowsNaming(tbgrad::softmax_cross_entropy_backward(logits, labels, g.scalar(1.0)),
                         logits, "softmax_cross_entropy_backward");
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
  Tensor out = run_value(tbgrad::softmax_cross_entropy_backward(logits, labels, g.scalar(2.0)),
                         {{logits, f64_tensor({2, 2}, {0.0, 0.0, std::log(3.0), 0.0})},
                          {labels, label_values}});
  ExpectValues(out, {0.5, -0.5, -0.25, 0.25});
}

TEST(SoftmaxCrossEntropyBackward, EqualsNumericVjpOfSoftmaxCrossEntropy) {
  for (const auto& [batch, classes] : {std::pair{1, 4}, std::pair{5, 3}, std::pair{4, 10}}) {
    SCOPED_TRACE("batch " + std::to_string(batch) + ", classes " + std::to_string(classes));
    tbgrad::nn::Rng rng(106);
    Graph g(DType::kF64);
    Value logits = g.input("logits", {batch, classes});
    Value labels = g.input_labels("labels", {batch});
    Tensor label_values({batch}, DType::kI32);
    for (int i = 0; i < batch; ++i) label_values.set(i, static_cast<double>((5 * i + 2) % classes));
    Tensor lv = uniform_tensor({batch, classes}, rng, -3, 3);
    const double gy = -1.75;
    Tensor kernel = run_value(tbgrad::softmax_cross_entropy_backward(logits, labels, g.scalar(gy)),
                              {{logits, lv}, {labels, label_values}});
    Tensor g_scalar({}, DType::kF64);
    g_scalar.set(0, gy);
    EXPECT_TRUE(MatchesNumeric(kernel, numeric_vjp(tbgrad::softmax_cross_entropy(logits, labels),
                                                   logits, lv, g_scalar, {{labels, label_values}})));
  }
}

// max_pool2d_backward ----------------------------------------------------------------------------

TEST(MaxPool2dBackward, CannotBeDifferentiated) {
  Graph g(DType::kF64);
  Value x = g.input("x", {1, 1, 4, 4});
  Value gy = g.input("gy", {1, 1, 2, 2});
  ExpectGradThrowsNaming(tbgrad::max_pool2d_backward(x, gy, {.kernel = 2}), gy,
                         "max_pool2d_backward");
}

TEST(MaxPool2dBackward, RoutesEachGradientToItsWindowsMaximum) {
  Graph g(DType::kF64);
  Value x = g.input("x", {1, 1, 4, 4});
  Value gy = g.input("gy", {1, 1, 2, 2});
  Tensor out = run_value(tbgrad::max_pool2d_backward(x, gy, {.kernel = 2}),
                         {{x, f64_tensor({1, 1, 4, 4}, {1, 9, 2, 3,   //
                                                        4, 5, 8, 6,   //
                                                        7, 0, 1, 1,   //
                                                        2, 3, 4, 9})},
                          {gy, f64_tensor({1, 1, 2, 2}, {10, 20, 30, 40})}});
  ExpectValues(out, {0, 10, 0, 0,   //
                     0, 0, 20, 0,   //
                     30, 0, 0, 0,   //
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
  Tensor out = run_value(tbgrad::max_pool2d_backward(x, gy, {.kernel = 2}),
                         {{x, f64_tensor({1, 1, 2, 2}, {1, 3, 3, 3})},
                          {gy, f64_tensor({1, 1, 1, 1}, {5})}});
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

TEST(MaxPool2dBackward, EqualsNumericVjpOfMaxPoolOnDistinctValues) {
  for (const PoolCase& k : kPoolCases) {
    SCOPED_TRACE(pool_case_name(::testing::TestParamInfo<PoolCase>(k, 0)));
    tbgrad::nn::Rng rng(107);
    Graph g(DType::kF64);
    Value x = g.input("x", k.x_shape());
    Value gy = g.input("gy", k.y_shape());
    Tensor xv = distinct_tensor(k.x_shape(), rng), gv = uniform_tensor(k.y_shape(), rng);
    Tensor kernel = run_value(tbgrad::max_pool2d_backward(x, gy, k.options()), {{x, xv}, {gy, gv}});
    EXPECT_TRUE(MatchesNumeric(kernel, numeric_vjp(tbgrad::max_pool2d(x, k.options()), x, xv, gv)));
  }
}

// ---------------------------------------------------------------------------------------------
// Every registered op is covered
// ---------------------------------------------------------------------------------------------

enum class Coverage {
  kGradcheck,            // has_vjp: a gradcheck test suite checks it
  kCannotDifferentiate,  // no VJP: its suite has a CannotBeDifferentiated test
};

struct OpCoverage {
  const char* op;
  Coverage coverage;
  const char* suite;  // the test suite of this file that covers it
};

constexpr OpCoverage kCoverage[] = {
    {"conv2d", Coverage::kGradcheck, "Conv2dGradcheck"},
    {"conv2d_backward_input", Coverage::kGradcheck, "Conv2dBackwardInputGradcheck"},
    {"conv2d_backward_weight", Coverage::kGradcheck, "Conv2dBackwardWeightGradcheck"},
    {"conv2d_backward_bias", Coverage::kGradcheck, "Conv2dBackwardBiasGradcheck"},
    {"avg_pool2d", Coverage::kGradcheck, "AvgPool2dGradcheck"},
    {"avg_pool2d_backward", Coverage::kGradcheck, "AvgPool2dBackwardGradcheck"},
    {"max_pool2d", Coverage::kGradcheck, "MaxPool2dGradcheck"},
    {"max_pool2d_backward", Coverage::kCannotDifferentiate, "MaxPool2dBackward"},
    {"add", Coverage::kGradcheck, "BroadcastingBinaryGradcheck"},
    {"sub", Coverage::kGradcheck, "BroadcastingBinaryGradcheck"},
    {"mul", Coverage::kGradcheck, "BroadcastingBinaryGradcheck"},
    {"scale", Coverage::kGradcheck, "ScaleGradcheck"},
    {"relu", Coverage::kGradcheck, "ReluGradcheck"},
    {"sigmoid", Coverage::kGradcheck, "SigmoidGradcheck"},
    {"tanh", Coverage::kGradcheck, "TanhGradcheck"},
    {"relu_backward", Coverage::kCannotDifferentiate, "ReluBackward"},
    {"sigmoid_backward", Coverage::kCannotDifferentiate, "SigmoidBackward"},
    {"tanh_backward", Coverage::kCannotDifferentiate, "TanhBackward"},
    {"softmax", Coverage::kGradcheck, "SoftmaxGradcheck"},
    {"log_softmax", Coverage::kGradcheck, "LogSoftmaxGradcheck"},
    {"softmax_backward", Coverage::kCannotDifferentiate, "SoftmaxBackward"},
    {"log_softmax_backward", Coverage::kCannotDifferentiate, "LogSoftmaxBackward"},
    {"softmax_cross_entropy", Coverage::kGradcheck, "SoftmaxCrossEntropyGradcheck"},
    {"softmax_cross_entropy_backward", Coverage::kCannotDifferentiate,
     "SoftmaxCrossEntropyBackward"},
    {"matmul", Coverage::kGradcheck, "MatmulGradcheck"},
    {"sum", Coverage::kGradcheck, "SumGradcheck"},
    {"sum_to", Coverage::kGradcheck, "SumToGradcheck"},
    {"broadcast_to", Coverage::kGradcheck, "BroadcastToGradcheck"},
    {"reshape", Coverage::kGradcheck, "ReshapeGradcheck"},
};

// Names of the tests in this binary's suite `suite` (a parameterized suite is registered as
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

TEST(AllRegisteredOps, HaveAGradcheckOrACannotDifferentiateTest) {
  std::map<std::string, const OpCoverage*> table;
  for (const OpCoverage& c : kCoverage) table[c.op] = &c;

  std::set<std::string> registered;
  ASSERT_FALSE(tbgrad::registered_ops().empty());
  for (const tbgrad::OpInfo& info : tbgrad::registered_ops()) {
    EXPECT_TRUE(registered.insert(info.name).second) << "op " << info.name << " is registered twice";
    auto it = table.find(info.name);
    if (it == table.end()) {
      ADD_FAILURE() << "op " << info.name << " (has_vjp=" << info.has_vjp << ") has no "
                    << (info.has_vjp ? "gradcheck test" : "\"cannot differentiate\" test")
                    << ": add one and list it in kCoverage";
      continue;
    }
    const OpCoverage& c = *it->second;
    if (info.has_vjp) {
      EXPECT_EQ(c.coverage, Coverage::kGradcheck)
          << "op " << info.name << " has a VJP but is listed as not differentiable";
    } else {
      EXPECT_EQ(c.coverage, Coverage::kCannotDifferentiate)
          << "op " << info.name << " has no VJP but is listed as gradchecked";
    }
    const std::set<std::string> tests = tests_of_suite(c.suite);
    EXPECT_FALSE(tests.empty()) << "op " << info.name << ": test suite " << c.suite
                                << " does not exist";
    if (!info.has_vjp) {
      EXPECT_TRUE(tests.count("CannotBeDifferentiated"))
          << "op " << info.name << " has no VJP, but " << c.suite
          << " has no CannotBeDifferentiated test";
    }
  }
  for (const OpCoverage& c : kCoverage) {
    EXPECT_TRUE(registered.count(c.op)) << "kCoverage lists " << c.op << ", which is not registered";
  }
}

}  // namespace
