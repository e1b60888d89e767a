// Shape rules: every public op function rejects bad shapes and dtypes when the graph is built,
// with a tbgrad::ShapeError whose message names the op and the offending shapes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <ostream>
#include <string>
#include <vector>

#include <tbgrad.hpp>

namespace {

using tbgrad::DType;
using tbgrad::Executor;
using tbgrad::Graph;
using tbgrad::Shape;
using tbgrad::Tensor;
using tbgrad::Value;

// Runs `build` and checks that it throws exactly a tbgrad::ShapeError whose message contains
// every fragment.
::testing::AssertionResult ThrowsShapeError(const std::function<void()>& build,
                                            const std::vector<std::string>& fragments) {
  try {
    build();
  } catch (const tbgrad::ShapeError& e) {
    const std::string msg = e.what();
    for (const std::string& f : fragments) {
      if (msg.find(f) == std::string::npos) {
        return ::testing::AssertionFailure() << "message \"" << msg << "\" lacks \"" << f << "\"";
      }
    }
    return ::testing::AssertionSuccess() << msg;
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw something other than ShapeError: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

// A parameter of another dtype than the graph's default.
Value param_of(Graph& g, const std::string& name, const Shape& shape, DType dtype) {
  return g.param(name, Tensor(shape, dtype));
}

// ---------------------------------------------------------------------------------------------
// conv2d
// ---------------------------------------------------------------------------------------------

TEST(Conv2dShapeErrors, WeightInputChannelsMustMatchTheInput) {
  Graph g;
  Value x = g.input("x", {32, 1, 28, 28});
  Value w = g.param("w", {3, 2, 5, 5});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::conv2d(x, w); },
                               {"conv2d", "weight expects 2 input channels", "[32,1,28,28]"}));
}

TEST(Conv2dShapeErrors, InputMustHaveRank4) {
  Graph g;
  Value x = g.input("x", {1, 28, 28});
  Value w = g.param("w", {3, 1, 5, 5});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::conv2d(x, w); },
                               {"conv2d", "input x ([1,28,28])", "rank 4", "rank 3"}));
}

TEST(Conv2dShapeErrors, WeightMustHaveRank4) {
  Graph g;
  Value x = g.input("x", {1, 1, 28, 28});
  Value w = g.param("w", {3, 25});
  EXPECT_TRUE(
      ThrowsShapeError([&] { tbgrad::conv2d(x, w); }, {"conv2d", "weight w ([3,25])", "rank 4"}));
}

TEST(Conv2dShapeErrors, BiasMustHaveOneValuePerOutputChannel) {
  Graph g;
  Value x = g.input("x", {2, 1, 28, 28});
  Value w = g.param("w", {3, 1, 5, 5});
  Value b = g.param("b", {4});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::conv2d(x, w, b); },
                               {"conv2d", "bias b ([4])", "must be [3]", "[3,1,5,5]"}));
}

TEST(Conv2dShapeErrors, BiasMustHaveRank1) {
  Graph g;
  Value x = g.input("x", {2, 1, 28, 28});
  Value w = g.param("w", {3, 1, 5, 5});
  Value b = g.param("b", {3, 1, 1});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::conv2d(x, w, b); },
                               {"conv2d", "bias b ([3,1,1])", "must be [3]"}));
}

TEST(Conv2dShapeErrors, KernelMustFitThePaddedInput) {
  Graph g;
  Value x = g.input("x", {1, 1, 4, 4});
  Value w = g.param("w", {1, 1, 5, 5});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::conv2d(x, w); },
                               {"conv2d", "kernel 5x5", "does not fit input x ([1,1,4,4])"}));
  // With padding 1 the 6x6 padded input fits the kernel.
  EXPECT_NO_THROW(tbgrad::conv2d(x, w, {.padding = 1}));
}

TEST(Conv2dShapeErrors, StrideMustBePositive) {
  Graph g;
  Value x = g.input("x", {1, 1, 8, 8});
  Value w = g.param("w", {1, 1, 3, 3});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::conv2d(x, w, {.stride = {0, 1}}); },
                               {"conv2d", "stride must be >= 1", "(0,1)"}));
}

TEST(Conv2dShapeErrors, PaddingMustBeNonNegative) {
  Graph g;
  Value x = g.input("x", {1, 1, 8, 8});
  Value w = g.param("w", {1, 1, 3, 3});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::conv2d(x, w, {.padding = {-1, 0}}); },
                               {"conv2d", "padding must be >= 0", "(-1,0)"}));
}

TEST(Conv2dShapeErrors, WeightNeedsAnOutputChannel) {
  Graph g;
  Value x = g.input("x", {1, 1, 8, 8});
  Value w = g.param("w", {0, 1, 3, 3});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::conv2d(x, w); },
                               {"conv2d", "weight w ([0,1,3,3])", "at least one output channel"}));
}

TEST(Conv2dShapeErrors, InputAndWeightMustShareADtype) {
  Graph g;  // f32
  Value x = g.input("x", {1, 1, 8, 8});
  Value w = param_of(g, "w", {1, 1, 3, 3}, DType::kF64);
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::conv2d(x, w); },
                               {"conv2d", "same dtype", "f32", "x ([1,1,8,8])", "f64"}));
}

TEST(Conv2dShapeErrors, InputMustBeFloatingPoint) {
  Graph g;
  Value x = g.input("x", {1, 1, 8, 8}, DType::kI32);
  Value w = g.param("w", {1, 1, 3, 3});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::conv2d(x, w); },
                               {"conv2d", "x ([1,1,8,8] i32)", "floating point"}));
}

TEST(Conv2dShapeErrors, InputsMustBelongToOneGraph) {
  Graph g1, g2;
  Value x = g1.input("x", {1, 1, 8, 8});
  Value w = g2.param("w", {1, 1, 3, 3});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::conv2d(x, w); }, {"conv2d", "different graphs"}));
}

// ---------------------------------------------------------------------------------------------
// conv2d with groups and dilation, conv_transpose2d, global pooling
// ---------------------------------------------------------------------------------------------

TEST(Conv2dShapeErrors, InputChannelsMustBeDivisibleByGroups) {
  Graph g;
  Value x = g.input("x", {2, 6, 8, 8});
  Value w = g.param("w", {4, 1, 3, 3});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::conv2d(x, w, {.groups = 4}); },
                               {"conv2d", "input x ([2,6,8,8])", "6 channels",
                                "not divisible by groups 4"}));
}

TEST(Conv2dShapeErrors, OutputChannelsMustBeDivisibleByGroups) {
  Graph g;
  Value x = g.input("x", {2, 6, 8, 8});
  Value w = g.param("w", {4, 2, 3, 3});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::conv2d(x, w, {.groups = 3}); },
                               {"conv2d", "weight w ([4,2,3,3])", "4 output channels",
                                "not divisible by groups 3"}));
}

TEST(Conv2dShapeErrors, GroupedWeightMustHaveTheChannelsOfOneGroup) {
  Graph g;
  Value x = g.input("x", {2, 6, 8, 8});
  Value w = g.param("w", {6, 6, 3, 3});  // the weight of groups=1
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::conv2d(x, w, {.groups = 3}); },
                               {"conv2d", "weight w ([6,6,3,3])", "input x ([2,6,8,8])",
                                "6 / groups 3 = 2", "[OC, IC/groups, KH, KW]"}));
  Value dw = g.param("dw", {6, 1, 3, 3});
  EXPECT_NO_THROW(tbgrad::conv2d(x, dw, {.groups = 6}));
  EXPECT_NO_THROW(tbgrad::conv2d(x, w, {.groups = 1}));
}

TEST(Conv2dShapeErrors, GroupsAndDilationMustBePositive) {
  Graph g;
  Value x = g.input("x", {1, 2, 8, 8});
  Value w = g.param("w", {2, 2, 3, 3});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::conv2d(x, w, {.groups = 0}); },
                               {"conv2d", "groups must be >= 1", "0"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::conv2d(x, w, {.dilation = {1, 0}}); },
                               {"conv2d", "dilation must be >= 1", "(1,0)"}));
}

TEST(Conv2dShapeErrors, DilatedKernelMustFitThePaddedInput) {
  Graph g;
  Value x = g.input("x", {1, 1, 6, 6});
  Value w = g.param("w", {1, 1, 3, 3});
  // Dilation 3 spans 7x7: more than 6, fits with padding 1.
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::conv2d(x, w, {.dilation = 3}); },
                               {"conv2d", "kernel 3x3 dilated by (3,3) (spanning 7x7)",
                                "does not fit input x ([1,1,6,6])"}));
  EXPECT_NO_THROW(tbgrad::conv2d(x, w, {.padding = 1, .dilation = 3}));
}

TEST(Conv2dShapeErrors, GradientKernelsCheckGroupsToo) {
  Graph g;
  Value gy = g.input("gy", {1, 4, 6, 6});
  Value w = g.param("w", {4, 2, 3, 3});
  EXPECT_TRUE(
      ThrowsShapeError([&] { tbgrad::conv2d_backward_input(gy, w, {1, 6, 8, 8}, {.groups = 2}); },
                       {"conv2d_backward_input", "expects 2 input channels per group",
                        "6 / groups 2 = 3"}));
  Value x = g.input("x", {1, 4, 8, 8});
  EXPECT_TRUE(ThrowsShapeError(
      [&] { tbgrad::conv2d_backward_weight(x, gy, {4, 4, 3, 3}, {.dilation = 2}); },
      {"conv2d_backward_weight", "output gradient gy ([1,4,6,6])", "must be [1,4,4,4]"}));
}

TEST(ConvTranspose2dShapeErrors, WeightMustHaveTheInputChannelsFirst) {
  Graph g;
  Value x = g.input("x", {2, 4, 5, 5});
  Value w = g.param("w", {3, 4, 3, 3});  // a conv2d weight [OC, IC, ...]: the wrong way round
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::conv_transpose2d(x, w); },
                               {"conv_transpose2d", "weight w ([3,4,3,3]) expects 3 input channels",
                                "input x ([2,4,5,5]) has 4", "[IC, OC/groups, KH, KW]"}));
}

TEST(ConvTranspose2dShapeErrors, GroupsMustDivideTheInputChannels) {
  Graph g;
  Value x = g.input("x", {2, 4, 5, 5});
  Value w = g.param("w", {4, 1, 3, 3});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::conv_transpose2d(x, w, {.groups = 3}); },
                               {"conv_transpose2d", "input x ([2,4,5,5])", "4 channels",
                                "not divisible by groups 3"}));
}

TEST(ConvTranspose2dShapeErrors, OutputPaddingMustBeSmallerThanTheStride) {
  Graph g;
  Value x = g.input("x", {1, 2, 5, 5});
  Value w = g.param("w", {2, 2, 3, 3});
  EXPECT_TRUE(ThrowsShapeError(
      [&] { tbgrad::conv_transpose2d(x, w, {.stride = 2, .output_padding = {0, 2}}); },
      {"conv_transpose2d", "output_padding", "smaller than the stride (2,2)", "(0,2)",
       "x ([1,2,5,5])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::conv_transpose2d(x, w, {.output_padding = 1}); },
                               {"conv_transpose2d", "output_padding", "(1,1)"}));
  EXPECT_NO_THROW(tbgrad::conv_transpose2d(x, w, {.stride = 2, .output_padding = {0, 1}}));
}

TEST(ConvTranspose2dShapeErrors, PaddingMayNotRemoveTheWholeOutput) {
  Graph g;
  Value x = g.input("x", {1, 2, 2, 2});
  Value w = g.param("w", {2, 2, 3, 3});
  // (2-1)*1 - 2*2 + 2 + 1 = 0 rows.
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::conv_transpose2d(x, w, {.padding = 2}); },
                               {"conv_transpose2d", "input x ([1,2,2,2])", "empty output",
                                "0x0"}));
}

TEST(ConvTranspose2dShapeErrors, BiasHasOneValuePerOutputChannel) {
  Graph g;
  Value x = g.input("x", {1, 4, 5, 5});
  Value w = g.param("w", {4, 3, 3, 3});
  Value b = g.param("b", {3});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::conv_transpose2d(x, w, b, {.groups = 2}); },
                               {"conv_transpose2d", "bias b ([3])", "must be [6]", "groups 2"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::conv_transpose2d(x, g.input("x3", {4, 5, 5}), b); },
                               {"conv_transpose2d", "weight x3 ([4,5,5])", "rank 4"}));
}

TEST(GlobalPoolShapeErrors, InputMustBeNCHW) {
  Graph g;
  Value x = g.input("x", {2, 3, 4});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::global_avg_pool2d(x); },
                               {"global_avg_pool2d", "input x ([2,3,4])", "rank 4"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::global_max_pool2d(x); },
                               {"global_max_pool2d", "input x ([2,3,4])", "rank 4"}));
  Value empty = g.input("empty", {2, 3, 0, 4});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::global_max_pool2d(empty); },
                               {"global_max_pool2d", "empty ([2,3,0,4])", "empty plane"}));
  Value x4 = g.input("x4", {2, 3, 4, 4});
  Value gy = g.input("gy", {2, 3, 2, 2});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::global_max_pool2d_backward(x4, gy); },
                               {"global_max_pool2d_backward", "gy ([2,3,2,2])", "must be [2,3,1,1]"}));
}

// ---------------------------------------------------------------------------------------------
// Pooling: avg_pool2d and max_pool2d share their shape rule
// ---------------------------------------------------------------------------------------------

struct PoolFn {
  const char* name;
  Value (*fn)(Value, tbgrad::Pool2dOptions);
};

void PrintTo(const PoolFn& op, std::ostream* os) { *os << op.name; }

class Pool2dShapeErrors : public ::testing::TestWithParam<PoolFn> {};

TEST_P(Pool2dShapeErrors, InputMustHaveRank4) {
  const PoolFn& p = GetParam();
  Graph g;
  Value x = g.input("x", {1, 28, 28});
  EXPECT_TRUE(ThrowsShapeError([&] { p.fn(x, {.kernel = 2}); },
                               {p.name, "input x ([1,28,28])", "rank 4", "rank 3"}));
}

TEST_P(Pool2dShapeErrors, KernelMustBePositive) {
  const PoolFn& p = GetParam();
  Graph g;
  Value x = g.input("x", {1, 1, 8, 8});
  EXPECT_TRUE(ThrowsShapeError([&] { p.fn(x, {.kernel = {0, 2}}); },
                               {p.name, "kernel must be >= 1", "(0,2)"}));
}

TEST_P(Pool2dShapeErrors, StrideMustBePositive) {
  const PoolFn& p = GetParam();
  Graph g;
  Value x = g.input("x", {1, 1, 8, 8});
  EXPECT_TRUE(ThrowsShapeError([&] { p.fn(x, {.kernel = 2, .stride = {-1, 1}}); },
                               {p.name, "stride must be >= 1", "(-1,1)"}));
}

TEST_P(Pool2dShapeErrors, PaddingMustBeAtMostHalfTheKernel) {
  const PoolFn& p = GetParam();
  Graph g;
  Value x = g.input("x", {1, 1, 8, 8});
  EXPECT_TRUE(ThrowsShapeError([&] { p.fn(x, {.kernel = 3, .padding = 2}); },
                               {p.name, "half the kernel (3,3)", "(2,2)"}));
  EXPECT_NO_THROW(p.fn(x, {.kernel = 4, .padding = 2}));
}

TEST_P(Pool2dShapeErrors, PaddingMustBeNonNegative) {
  const PoolFn& p = GetParam();
  Graph g;
  Value x = g.input("x", {1, 1, 8, 8});
  EXPECT_TRUE(ThrowsShapeError([&] { p.fn(x, {.kernel = 3, .padding = {0, -1}}); },
                               {p.name, "padding", "(0,-1)"}));
}

TEST_P(Pool2dShapeErrors, KernelMustFitThePaddedInput) {
  const PoolFn& p = GetParam();
  Graph g;
  Value x = g.input("x", {2, 3, 3, 5});
  EXPECT_TRUE(ThrowsShapeError([&] { p.fn(x, {.kernel = 4}); },
                               {p.name, "kernel (4,4)", "does not fit input x ([2,3,3,5])"}));
}

TEST_P(Pool2dShapeErrors, InputMustBeFloatingPoint) {
  const PoolFn& p = GetParam();
  Graph g;
  Value x = g.input("x", {1, 1, 8, 8}, DType::kI32);
  EXPECT_TRUE(ThrowsShapeError([&] { p.fn(x, {.kernel = 2}); },
                               {p.name, "x ([1,1,8,8] i32)", "floating point"}));
}

INSTANTIATE_TEST_SUITE_P(Ops, Pool2dShapeErrors,
                         ::testing::Values(PoolFn{"avg_pool2d", &tbgrad::avg_pool2d},
                                           PoolFn{"max_pool2d", &tbgrad::max_pool2d}),
                         [](const ::testing::TestParamInfo<PoolFn>& info) {
                           return std::string(info.param.name);
                         });

// ---------------------------------------------------------------------------------------------
// matmul and linear
// ---------------------------------------------------------------------------------------------

TEST(MatmulShapeErrors, InnerDimensionsMustAgree) {
  Graph g;
  Value a = g.input("a", {3, 4});
  Value b = g.input("b", {5, 6});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::matmul(a, b); },
                               {"matmul", "inner dimensions differ", "a ([3,4]) has K=4",
                                "b ([5,6]) has K=5"}));
}

TEST(MatmulShapeErrors, InnerDimensionsAreReadThroughTheTransposes) {
  Graph g;
  Value a = g.input("a", {4, 3});
  Value b = g.input("b", {6, 5});
  EXPECT_TRUE(ThrowsShapeError(
      [&] { tbgrad::matmul(a, b, {.transpose_a = true, .transpose_b = true}); },
      {"matmul", "a ([4,3]) transposed has K=4", "b ([6,5]) transposed has K=5"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::matmul(a, b, {.transpose_a = true}); },
                               {"matmul", "a ([4,3]) transposed has K=4", "b ([6,5]) has K=6"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::matmul(a, b, {.transpose_b = true}); },
                               {"matmul", "a ([4,3]) has K=3", "b ([6,5]) transposed has K=5"}));
}

TEST(MatmulShapeErrors, OperandsMustBeMatrices) {
  Graph g;
  Value v = g.input("v", {3});
  Value m = g.input("m", {3, 4});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::matmul(v, m); }, {"matmul", "v ([3])", "rank 2"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::matmul(m, v); }, {"matmul", "v ([3])", "rank 2"}));
}

TEST(MatmulShapeErrors, BatchedInnerDimensionsMustAgree) {
  Graph g;
  Value a = g.input("a", {2, 3, 4});
  Value b = g.input("b", {2, 5, 6});
  EXPECT_TRUE(ThrowsShapeError(
      [&] { tbgrad::matmul(a, b); },
      {"matmul", "inner dimensions differ", "a ([2,3,4]) has K=4", "b ([2,5,6]) has K=5"}));
  Value w = g.input("w", {6, 5});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::matmul(w, a, {.transpose_b = true}); },
                               {"matmul", "w ([6,5]) has K=5", "a ([2,3,4]) transposed has K=4"}));
}

TEST(MatmulShapeErrors, BatchDimensionsMustBroadcast) {
  Graph g;
  Value a = g.input("a", {2, 3, 3, 4});
  Value b = g.input("b", {4, 4, 5});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::matmul(a, b); },
                               {"matmul", "batch dimensions do not broadcast", "a ([2,3,3,4])",
                                "b ([4,4,5])", "3 against 4"}));
  Value c = g.input("c", {5, 1, 4, 5});
  EXPECT_TRUE(ThrowsShapeError(
      [&] { tbgrad::matmul(a, c); },
      {"matmul", "a ([2,3,3,4]) has batch [2,3]", "c ([5,1,4,5]) has batch [5,1]", "2 against 5"}));
}

TEST(MatmulShapeErrors, VectorsAreRefusedWithAHint) {
  Graph g;
  Value v = g.input("v", {4});
  Value s = g.input("s", {2, 4, 5});
  EXPECT_TRUE(
      ThrowsShapeError([&] { tbgrad::matmul(v, s); },
                       {"matmul", "a must have rank 2 or more", "v ([4]) has rank 1", "[1, K]"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::matmul(s, v); },
                               {"matmul", "b must have rank 2 or more", "v ([4]) has rank 1"}));
}

TEST(MatmulShapeErrors, OperandsMustShareADtype) {
  Graph g;
  Value a = g.input("a", {3, 4});
  Value b = param_of(g, "b", {4, 5}, DType::kF64);
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::matmul(a, b); },
                               {"matmul", "same dtype", "a ([3,4])", "b ([4,5] f64)"}));
}

TEST(MatmulShapeErrors, OperandsMustBeFloatingPoint) {
  Graph g;
  Value a = g.input("a", {3, 4}, DType::kI32);
  Value b = g.input("b", {4, 5}, DType::kI32);
  EXPECT_TRUE(
      ThrowsShapeError([&] { tbgrad::matmul(a, b); }, {"matmul", "a ([3,4] i32)", "floating point"}));
}

TEST(LinearShapeErrors, WeightInputFeaturesMustMatchTheInput) {
  Graph g;
  Value x = g.input("x", {32, 245});
  Value w = g.param("w", {100, 244});
  Value b = g.param("b", {100});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::linear(x, w, b); },
                               {"linear", "w ([100,244]) expects 244 input features",
                                "x ([32,245]) has 245"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::linear(x, w); },
                               {"linear", "expects 244 input features", "[32,245]"}));
}

TEST(LinearShapeErrors, BiasMustHaveOneValuePerOutputFeature) {
  Graph g;
  Value x = g.input("x", {32, 245});
  Value w = g.param("w", {100, 245});
  Value b = g.param("b", {99});
  EXPECT_TRUE(
      ThrowsShapeError([&] { tbgrad::linear(x, w, b); }, {"linear", "bias b ([99])", "must be [100]"}));
}

TEST(LinearShapeErrors, InputMustBeFlattenedFirst) {
  Graph g;
  Value x = g.input("x", {32, 5, 7, 7});
  Value w = g.param("w", {100, 245});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::linear(x, w); },
                               {"linear", "input", "x ([32,5,7,7])", "rank 2", "rank 4"}));
}

TEST(LinearShapeErrors, WeightMustBeAMatrix) {
  Graph g;
  Value x = g.input("x", {32, 245});
  Value w = g.param("w", {245});
  EXPECT_TRUE(
      ThrowsShapeError([&] { tbgrad::linear(x, w); }, {"linear", "weight", "w ([245])", "rank 2"}));
}

TEST(LinearShapeErrors, InputWeightAndBiasMustShareADtype) {
  Graph g;
  Value x = g.input("x", {4, 6});
  Value w64 = param_of(g, "w64", {3, 6}, DType::kF64);
  Value w = g.param("w", {3, 6});
  Value b64 = param_of(g, "b64", {3}, DType::kF64);
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::linear(x, w64); },
                               {"linear", "same dtype", "x ([4,6])", "w64 ([3,6] f64)"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::linear(x, w, b64); },
                               {"linear", "same dtype", "x ([4,6])", "b64 ([3] f64)"}));
}

TEST(LinearShapeErrors, InputMustBeFloatingPoint) {
  Graph g;
  Value x = g.input("x", {4, 6}, DType::kI32);
  Value w = g.param("w", {3, 6});
  EXPECT_TRUE(
      ThrowsShapeError([&] { tbgrad::linear(x, w); }, {"linear", "x ([4,6] i32)", "floating point"}));
}

// ---------------------------------------------------------------------------------------------
// Broadcasting binary ops
// ---------------------------------------------------------------------------------------------

struct BinaryFn {
  const char* name;
  Value (*fn)(Value, Value);
};

void PrintTo(const BinaryFn& op, std::ostream* os) { *os << op.name; }

class BinaryShapeErrors : public ::testing::TestWithParam<BinaryFn> {};

TEST_P(BinaryShapeErrors, ShapesMustBroadcast) {
  const BinaryFn& op = GetParam();
  Graph g;
  Value a = g.input("a", {2, 3});
  Value b = g.input("b", {4});
  EXPECT_TRUE(ThrowsShapeError([&] { op.fn(a, b); },
                               {op.name, "cannot broadcast a ([2,3]) with b ([4])",
                                "dimension 1 is 3 vs 4"}));
}

TEST_P(BinaryShapeErrors, ChannelBiasMustMatchTheChannels) {
  const BinaryFn& op = GetParam();
  Graph g;
  Value x = g.input("x", {2, 3, 5, 5});
  Value b = g.param("b", {4, 1, 1});
  EXPECT_TRUE(ThrowsShapeError([&] { op.fn(x, b); },
                               {op.name, "x ([2,3,5,5])", "b ([4,1,1])", "3 vs 4"}));
}

TEST_P(BinaryShapeErrors, OperandsMustShareADtype) {
  const BinaryFn& op = GetParam();
  Graph g;
  Value a = g.input("a", {2, 3});
  Value b = param_of(g, "b", {2, 3}, DType::kF64);
  EXPECT_TRUE(
      ThrowsShapeError([&] { op.fn(a, b); }, {op.name, "same dtype", "a ([2,3])", "b ([2,3] f64)"}));
}

TEST_P(BinaryShapeErrors, OperandsMustBeFloatingPoint) {
  const BinaryFn& op = GetParam();
  Graph g;
  Value a = g.input("a", {2, 3});
  Value b = g.input("b", {2, 3}, DType::kI32);
  EXPECT_TRUE(ThrowsShapeError([&] { op.fn(a, b); }, {op.name, "b ([2,3] i32)", "floating point"}));
}

TEST_P(BinaryShapeErrors, OperandsMustBelongToOneGraph) {
  const BinaryFn& op = GetParam();
  Graph g1, g2;
  Value a = g1.input("a", {2, 3});
  Value b = g2.input("b", {2, 3});
  EXPECT_TRUE(ThrowsShapeError([&] { op.fn(a, b); }, {op.name, "different graphs"}));
}

INSTANTIATE_TEST_SUITE_P(Ops, BinaryShapeErrors,
                         ::testing::Values(BinaryFn{"add", &tbgrad::add},
                                           BinaryFn{"sub", &tbgrad::sub},
                                           BinaryFn{"mul", &tbgrad::mul},
                                           BinaryFn{"div", &tbgrad::div},
                                           BinaryFn{"maximum", &tbgrad::maximum},
                                           BinaryFn{"minimum", &tbgrad::minimum},
                                           BinaryFn{"maximum_grad_share", &tbgrad::maximum_grad_share}),
                         [](const ::testing::TestParamInfo<BinaryFn>& info) {
                           return std::string(info.param.name);
                         });

TEST(WhereShapeErrors, MaskMustBroadcastWithTheOperands) {
  Graph g;
  Value m = g.input("m", {4, 1}, DType::kI32);
  Value a = g.input("a", {2, 3});
  Value b = g.input("b", {3});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::where(m, a, b); },
                               {"where", "mask m ([4,1] i32)", "a ([2,3])", "b ([3])",
                                "dimension 0 is 4 vs 2"}));
}

TEST(WhereShapeErrors, OperandsMustBroadcast) {
  Graph g;
  Value m = g.input("m", {2, 3}, DType::kI32);
  Value a = g.input("a", {2, 3});
  Value b = g.input("b", {4});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::where(m, a, b); },
                               {"where", "cannot broadcast a ([2,3]) with b ([4])"}));
}

TEST(WhereShapeErrors, MaskMustBeI32OrOfTheOperandsDtype) {
  Graph g;
  Value m = g.input("m", {2, 3}, DType::kF64);
  Value a = g.input("a", {2, 3});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::where(m, a, a); },
                               {"where", "mask m ([2,3] f64)", "i32", "a ([2,3])"}));
}

TEST(WhereShapeErrors, OperandsMustBeFloatingPointOfOneDtype) {
  Graph g;
  Value m = g.input("m", {2, 3}, DType::kI32);
  Value a = g.input("a", {2, 3});
  Value b = g.input("b", {2, 3}, DType::kF64);
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::where(m, a, b); }, {"where", "same dtype"}));
  EXPECT_TRUE(
      ThrowsShapeError([&] { tbgrad::where(m, m, a); }, {"where", "m ([2,3] i32)", "floating point"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::where(Value(), a, a); }, {"where", "invalid"}));
}

TEST(MathAttributeErrors, ExponentSlopeAndBetaMustBeUsable) {
  Graph g;
  Value x = g.input("x", {2, 3});
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::pow(x, std::nan("")); },
                               {"pow", "exponent must be finite", "x ([2,3])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::pow_backward(x, x, inf); },
                               {"pow_backward", "exponent must be finite"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::leaky_relu(x, inf); },
                               {"leaky_relu", "negative_slope must be finite", "x ([2,3])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::softplus(x, 0.0); },
                               {"softplus", "beta must be nonzero", "x ([2,3])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::softplus(x, 1.0, std::nan("")); },
                               {"softplus", "threshold must not be NaN"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::softplus_backward(x, x, -inf); },
                               {"softplus_backward", "beta must be finite"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::softplus(Value()); }, {"softplus", "invalid"}));
}

// ---------------------------------------------------------------------------------------------
// scale and the activations
// ---------------------------------------------------------------------------------------------

TEST(ScaleShapeErrors, FactorMustBeFinite) {
  Graph g;
  Value x = g.input("x", {2, 3});
  for (double f : {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
                   -std::numeric_limits<double>::infinity()}) {
    SCOPED_TRACE(f);
    EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::scale(x, f); }, {"scale", "factor must be finite"}));
  }
}

TEST(ScaleShapeErrors, InputMustBeFloatingPoint) {
  Graph g;
  Value x = g.input("x", {2, 3}, DType::kI32);
  EXPECT_TRUE(
      ThrowsShapeError([&] { tbgrad::scale(x, 2.0); }, {"scale", "x ([2,3] i32)", "floating point"}));
}

struct UnaryFn {
  const char* name;
  Value (*fn)(Value);
};

void PrintTo(const UnaryFn& op, std::ostream* os) { *os << op.name; }

class UnaryShapeErrors : public ::testing::TestWithParam<UnaryFn> {};

TEST_P(UnaryShapeErrors, InputMustBeFloatingPoint) {
  const UnaryFn& op = GetParam();
  Graph g;
  Value x = g.input("x", {2, 3}, DType::kI32);
  EXPECT_TRUE(ThrowsShapeError([&] { op.fn(x); }, {op.name, "x ([2,3] i32)", "floating point"}));
}

TEST_P(UnaryShapeErrors, InputMustBeAValidValue) {
  const UnaryFn& op = GetParam();
  EXPECT_TRUE(ThrowsShapeError([&] { op.fn(Value()); }, {op.name, "invalid"}));
}

TEST(FlattenShapeErrors, InputMustBeAValidValue) {
  EXPECT_TRUE(ThrowsShapeError([] { tbgrad::flatten(Value()); }, {"flatten", "invalid"}));
}

INSTANTIATE_TEST_SUITE_P(Ops, UnaryShapeErrors,
                         ::testing::Values(UnaryFn{"relu", &tbgrad::relu},
                                           UnaryFn{"sigmoid", &tbgrad::sigmoid},
                                           UnaryFn{"tanh", &tbgrad::tanh},
                                           UnaryFn{"exp", &tbgrad::exp},
                                           UnaryFn{"log", &tbgrad::log},
                                           UnaryFn{"sqrt", &tbgrad::sqrt},
                                           UnaryFn{"rsqrt", &tbgrad::rsqrt},
                                           UnaryFn{"neg", &tbgrad::neg},
                                           UnaryFn{"abs", &tbgrad::abs},
                                           UnaryFn{"pow", [](Value x) { return tbgrad::pow(x, 2.0); }},
                                           UnaryFn{"clamp", [](Value x) { return tbgrad::clamp(x, 0, 1); }},
                                           UnaryFn{"leaky_relu", [](Value x) { return tbgrad::leaky_relu(x); }},
                                           UnaryFn{"gelu", [](Value x) { return tbgrad::gelu(x); }},
                                           UnaryFn{"silu", &tbgrad::silu},
                                           UnaryFn{"softplus", [](Value x) { return tbgrad::softplus(x); }},
                                           UnaryFn{"softmax", &tbgrad::softmax},
                                           UnaryFn{"log_softmax", &tbgrad::log_softmax},
                                           UnaryFn{"sum", &tbgrad::sum},
                                           UnaryFn{"mean", &tbgrad::mean}),
                         [](const ::testing::TestParamInfo<UnaryFn>& info) {
                           return std::string(info.param.name);
                         });

// ---------------------------------------------------------------------------------------------
// Softmax family
// ---------------------------------------------------------------------------------------------

struct SoftmaxFn {
  const char* name;
  Value (*fn)(Value);
};

void PrintTo(const SoftmaxFn& op, std::ostream* os) { *os << op.name; }

class SoftmaxShapeErrors : public ::testing::TestWithParam<SoftmaxFn> {};

TEST_P(SoftmaxShapeErrors, ScalarInputHasNoDimensionToNormalise) {
  const SoftmaxFn& op = GetParam();
  Graph g;
  Value x = g.input("x", {});
  EXPECT_TRUE(
      ThrowsShapeError([&] { op.fn(x); }, {op.name, "x ([])", "non-empty last dimension"}));
}

TEST_P(SoftmaxShapeErrors, EmptyLastDimensionHasNothingToNormalise) {
  const SoftmaxFn& op = GetParam();
  Graph g;
  Value x = g.input("x", {3, 0});
  EXPECT_TRUE(
      ThrowsShapeError([&] { op.fn(x); }, {op.name, "x ([3,0])", "non-empty last dimension"}));
}

INSTANTIATE_TEST_SUITE_P(Ops, SoftmaxShapeErrors,
                         ::testing::Values(SoftmaxFn{"softmax", &tbgrad::softmax},
                                           SoftmaxFn{"log_softmax", &tbgrad::log_softmax}),
                         [](const ::testing::TestParamInfo<SoftmaxFn>& info) {
                           return std::string(info.param.name);
                         });

TEST(SoftmaxCrossEntropyShapeErrors, LabelsMustHaveOneEntryPerRow) {
  Graph g;
  Value logits = g.input("logits", {32, 10});
  Value y = g.input_labels("y", {31});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::softmax_cross_entropy(logits, y); },
                               {"softmax_cross_entropy", "labels y ([31] i32)", "must be [32]",
                                "logits ([32,10])"}));
}

TEST(SoftmaxCrossEntropyShapeErrors, LabelsMustBeAVector) {
  Graph g;
  Value logits = g.input("logits", {32, 10});
  Value y = g.input_labels("y", {32, 1});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::softmax_cross_entropy(logits, y); },
                               {"softmax_cross_entropy", "labels y ([32,1] i32)", "must be [32]"}));
}

TEST(SoftmaxCrossEntropyShapeErrors, LabelsMustBeInt32) {
  Graph g;
  Value logits = g.input("logits", {32, 10});
  Value y = g.input("y", {32});  // f32, not i32
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::softmax_cross_entropy(logits, y); },
                               {"softmax_cross_entropy", "labels y ([32])", "i32"}));
}

TEST(SoftmaxCrossEntropyShapeErrors, LogitsMustBeAMatrix) {
  Graph g;
  Value logits = g.input("logits", {32, 10, 1});
  Value y = g.input_labels("y", {32});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::softmax_cross_entropy(logits, y); },
                               {"softmax_cross_entropy", "logits ([32,10,1])", "rank 2"}));
}

TEST(SoftmaxCrossEntropyShapeErrors, LogitsNeedAClass) {
  Graph g;
  Value logits = g.input("logits", {4, 0});
  Value y = g.input_labels("y", {4});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::softmax_cross_entropy(logits, y); },
                               {"softmax_cross_entropy", "logits ([4,0])", "at least one row and one class"}));
}

TEST(SoftmaxCrossEntropyShapeErrors, LogitsMustBeFloatingPoint) {
  Graph g;
  Value logits = g.input("logits", {4, 3}, DType::kI32);
  Value y = g.input_labels("y", {4});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::softmax_cross_entropy(logits, y); },
                               {"softmax_cross_entropy", "logits ([4,3] i32)", "floating point"}));
}

// ---------------------------------------------------------------------------------------------
// Reductions and shape ops
// ---------------------------------------------------------------------------------------------

TEST(MeanShapeErrors, InputMustHaveElements) {
  Graph g;
  Value x = g.input("x", {0, 3});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::mean(x); }, {"mean", "x ([0,3])", "no elements"}));
}

TEST(SumToShapeErrors, TargetMustBroadcastBackToTheInput) {
  Graph g;
  Value x = g.input("x", {2, 3, 4});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::sum_to(x, {5, 4}); },
                               {"sum_to", "cannot sum x ([2,3,4]) down to [5,4]"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::sum_to(x, {1, 2, 3, 4}); },
                               {"sum_to", "x ([2,3,4])", "[1,2,3,4]"}));
}

TEST(SumToShapeErrors, InputMustBeFloatingPoint) {
  Graph g;
  Value x = g.input("x", {2, 3}, DType::kI32);
  EXPECT_TRUE(
      ThrowsShapeError([&] { tbgrad::sum_to(x, {3}); }, {"sum_to", "x ([2,3] i32)", "floating point"}));
}

TEST(BroadcastToShapeErrors, InputMustBroadcastToTheTarget) {
  Graph g;
  Value x = g.input("x", {3, 4});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::broadcast_to(x, {3, 5}); },
                               {"broadcast_to", "cannot broadcast x ([3,4]) to [3,5]"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::broadcast_to(x, {4}); },
                               {"broadcast_to", "x ([3,4])", "[4]"}));
}

TEST(BroadcastToShapeErrors, InputMustBeFloatingPoint) {
  Graph g;
  Value x = g.input("x", {3}, DType::kI32);
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::broadcast_to(x, {2, 3}); },
                               {"broadcast_to", "x ([3] i32)", "floating point"}));
}

TEST(ReshapeShapeErrors, ElementCountMustBeKept) {
  Graph g;
  Value x = g.input("x", {2, 3, 4});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::reshape(x, Shape{5, 5}); },
                               {"reshape", "x ([2,3,4]) (24 elements)", "[5,5] (25 elements)"}));
}

TEST(ReshapeShapeErrors, AtMostOneDimensionMayBeInferred) {
  Graph g;
  Value x = g.input("x", {2, 3, 4});
  EXPECT_TRUE(
      ThrowsShapeError([&] { tbgrad::reshape(x, {-1, -1}); }, {"reshape", "at most one dimension"}));
}

TEST(ReshapeShapeErrors, InferredDimensionMustDivideTheElementCount) {
  Graph g;
  Value x = g.input("x", {2, 3, 4});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::reshape(x, {5, -1}); },
                               {"reshape", "cannot infer the -1 dimension", "x ([2,3,4])"}));
}

TEST(ReshapeShapeErrors, DimensionsMustNotBeNegative) {
  Graph g;
  Value x = g.input("x", {2, 3, 4});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::reshape(x, {-2, -12}); },
                               {"reshape", "dimension -2 is negative"}));
}

TEST(FlattenShapeErrors, ScalarHasNoBatchDimension) {
  Graph g;
  Value x = g.input("x", {});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::flatten(x); }, {"flatten", "x ([])", "scalar"}));
}

// ---------------------------------------------------------------------------------------------
// Gradient kernels
// ---------------------------------------------------------------------------------------------

TEST(Conv2dBackwardInputShapeErrors, OutputGradientMustMatchTheConvolutionsOutput) {
  Graph g;
  Value gy = g.input("gy", {1, 2, 3, 3});
  Value w = g.param("w", {2, 1, 3, 3});
  EXPECT_TRUE(ThrowsShapeError(
      [&] { tbgrad::conv2d_backward_input(gy, w, {1, 1, 6, 6}, {}); },
      {"conv2d_backward_input", "output gradient gy ([1,2,3,3])", "must be [1,2,4,4]"}));
}

TEST(Conv2dBackwardInputShapeErrors, InputShapeMustMatchTheWeightsChannels) {
  Graph g;
  Value gy = g.input("gy", {1, 2, 4, 4});
  Value w = g.param("w", {2, 1, 3, 3});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::conv2d_backward_input(gy, w, {1, 3, 6, 6}, {}); },
                               {"conv2d_backward_input", "weight expects 1 input channels",
                                "[1,3,6,6]"}));
}

TEST(Conv2dBackwardWeightShapeErrors, OutputGradientMustMatchTheConvolutionsOutput) {
  Graph g;
  Value x = g.input("x", {2, 1, 6, 6});
  Value gy = g.input("gy", {2, 2, 5, 5});
  EXPECT_TRUE(ThrowsShapeError(
      [&] { tbgrad::conv2d_backward_weight(x, gy, {2, 1, 3, 3}, {}); },
      {"conv2d_backward_weight", "output gradient gy ([2,2,5,5])", "must be [2,2,4,4]"}));
}

TEST(Conv2dBackwardWeightShapeErrors, WeightShapeMustHaveRank4) {
  Graph g;
  Value x = g.input("x", {2, 1, 6, 6});
  Value gy = g.input("gy", {2, 2, 4, 4});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::conv2d_backward_weight(x, gy, {2, 3, 3}, {}); },
                               {"conv2d_backward_weight", "weight [2,3,3]", "rank 4"}));
}

TEST(Conv2dBackwardBiasShapeErrors, OutputGradientMustHaveRank4) {
  Graph g;
  Value gy = g.input("gy", {2, 3});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::conv2d_backward_bias(gy); },
                               {"conv2d_backward_bias", "gy ([2,3])", "rank 4"}));
}

TEST(AvgPool2dBackwardShapeErrors, OutputGradientMustMatchThePoolingsOutput) {
  Graph g;
  Value gy = g.input("gy", {1, 1, 3, 3});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::avg_pool2d_backward(gy, {1, 1, 4, 4}, {.kernel = 2}); },
                               {"avg_pool2d_backward", "gy ([1,1,3,3])", "must be [1,1,2,2]"}));
}

TEST(AvgPool2dBackwardShapeErrors, InputShapeMustHaveRank4) {
  Graph g;
  Value gy = g.input("gy", {1, 2, 2});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::avg_pool2d_backward(gy, {1, 4, 4}, {.kernel = 2}); },
                               {"avg_pool2d_backward", "[1,4,4]", "rank 4"}));
}

TEST(MaxPool2dBackwardShapeErrors, OutputGradientMustMatchThePoolingsOutput) {
  Graph g;
  Value x = g.input("x", {1, 1, 4, 4});
  Value gy = g.input("gy", {1, 1, 4, 4});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::max_pool2d_backward(x, gy, {.kernel = 2}); },
                               {"max_pool2d_backward", "gy ([1,1,4,4])", "must be [1,1,2,2]"}));
}

TEST(MaxPool2dBackwardShapeErrors, InputMustHaveRank4) {
  Graph g;
  Value x = g.input("x", {4, 4});
  Value gy = g.input("gy", {2, 2});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::max_pool2d_backward(x, gy, {.kernel = 2}); },
                               {"max_pool2d_backward", "x ([4,4])", "rank 4"}));
}

using SavedGradFn = Value (*)(Value, Value);

struct ActivationBackwardFn {
  const char* name;
  SavedGradFn fn;
};

void PrintTo(const ActivationBackwardFn& op, std::ostream* os) { *os << op.name; }

class ActivationBackwardShapeErrors : public ::testing::TestWithParam<ActivationBackwardFn> {};

TEST_P(ActivationBackwardShapeErrors, GradientMustMatchTheSavedValue) {
  const ActivationBackwardFn& op = GetParam();
  Graph g;
  Value saved = g.input("saved", {2, 3});
  Value gy = g.input("gy", {2, 4});
  EXPECT_TRUE(ThrowsShapeError([&] { op.fn(saved, gy); },
                               {op.name, "gy ([2,4])", "saved ([2,3])"}));
}

TEST_P(ActivationBackwardShapeErrors, GradientMustShareTheSavedValuesDtype) {
  const ActivationBackwardFn& op = GetParam();
  Graph g;
  Value saved = g.input("saved", {2, 3});
  Value gy = g.input("gy", {2, 3}, DType::kF64);
  EXPECT_TRUE(ThrowsShapeError([&] { op.fn(saved, gy); }, {op.name, "same dtype", "gy ([2,3] f64)"}));
}

INSTANTIATE_TEST_SUITE_P(
    Ops, ActivationBackwardShapeErrors,
    ::testing::Values(ActivationBackwardFn{"relu_backward", &tbgrad::relu_backward},
                      ActivationBackwardFn{"sigmoid_backward", &tbgrad::sigmoid_backward},
                      ActivationBackwardFn{"tanh_backward", &tbgrad::tanh_backward},
                      ActivationBackwardFn{"exp_backward", &tbgrad::exp_backward},
                      ActivationBackwardFn{"log_backward", &tbgrad::log_backward},
                      ActivationBackwardFn{"sqrt_backward", &tbgrad::sqrt_backward},
                      ActivationBackwardFn{"rsqrt_backward", &tbgrad::rsqrt_backward},
                      ActivationBackwardFn{"abs_backward", &tbgrad::abs_backward},
                      ActivationBackwardFn{"pow_backward",
                                           [](Value x, Value g) { return tbgrad::pow_backward(x, g, 3.0); }},
                      ActivationBackwardFn{"clamp_backward",
                                           [](Value x, Value g) { return tbgrad::clamp_backward(x, g, 0, 1); }},
                      ActivationBackwardFn{"leaky_relu_backward",
                                           [](Value x, Value g) { return tbgrad::leaky_relu_backward(x, g); }},
                      ActivationBackwardFn{"gelu_backward",
                                           [](Value x, Value g) { return tbgrad::gelu_backward(x, g); }},
                      ActivationBackwardFn{"silu_backward", &tbgrad::silu_backward},
                      ActivationBackwardFn{"softplus_backward",
                                           [](Value x, Value g) { return tbgrad::softplus_backward(x, g); }},
                      ActivationBackwardFn{"gelu_double_backward",
                                           [](Value x, Value g) { return tbgrad::gelu_double_backward(x, g); }},
                      ActivationBackwardFn{"silu_double_backward", &tbgrad::silu_double_backward},
                      ActivationBackwardFn{"softplus_double_backward",
                                           [](Value x, Value g) { return tbgrad::softplus_double_backward(x, g); }},
                      ActivationBackwardFn{"softmax_backward", &tbgrad::softmax_backward},
                      ActivationBackwardFn{"log_softmax_backward", &tbgrad::log_softmax_backward}),
    [](const ::testing::TestParamInfo<ActivationBackwardFn>& info) {
      return std::string(info.param.name);
    });

TEST(SoftmaxCrossEntropyBackwardShapeErrors, GradientMustBeAScalar) {
  Graph g;
  Value logits = g.input("logits", {4, 3});
  Value y = g.input_labels("y", {4});
  Value gy = g.input("gy", {2});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::softmax_cross_entropy_backward(logits, y, gy); },
                               {"softmax_cross_entropy_backward", "gy ([2])", "scalar"}));
}

TEST(SoftmaxCrossEntropyBackwardShapeErrors, LabelsMustHaveOneEntryPerRow) {
  Graph g;
  Value logits = g.input("logits", {4, 3});
  Value y = g.input_labels("y", {5});
  EXPECT_TRUE(ThrowsShapeError(
      [&] { tbgrad::softmax_cross_entropy_backward(logits, y, g.scalar(1.0)); },
      {"softmax_cross_entropy_backward", "labels y ([5] i32)", "must be [4]"}));
}

// ---------------------------------------------------------------------------------------------
// grad(), Executor and Shape
// ---------------------------------------------------------------------------------------------

TEST(GradShapeErrors, LossMustBeAScalar) {
  Graph g;
  Value x = g.input("x", {2, 3});
  Value y = tbgrad::relu(x);
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::grad(y, x); }, {"grad", "scalar", "relu(x) ([2,3])"}));
}

TEST(GradShapeErrors, LossWithOneElementOfAnyRankIsAccepted) {
  Graph g;
  Value x = g.input("x", {1, 1});
  EXPECT_NO_THROW(tbgrad::grad(tbgrad::relu(x), x));
}

TEST(GradShapeErrors, LossMustBeFloatingPoint) {
  Graph g;
  Value labels = g.input_labels("labels", {1});
  EXPECT_TRUE(
      ThrowsShapeError([&] { tbgrad::grad(labels, labels); }, {"grad", "labels ([1] i32)"}));
}

TEST(ExecutorShapeErrors, BindingATensorOfTheWrongShapeThrows) {
  Graph g;
  Value x = g.input("x", {2, 3});
  Value y = tbgrad::relu(x);
  Executor ex(g, {y});
  Tensor wrong({3, 2}, DType::kF32);
  EXPECT_TRUE(ThrowsShapeError([&] { ex.bind(x, wrong); },
                               {"Executor::bind", "x", "expects [2,3] f32", "got [3,2] f32"}));
}

TEST(ExecutorShapeErrors, BindingATensorOfTheWrongDtypeThrows) {
  Graph g;
  Value x = g.input("x", {2, 3});
  Value y = tbgrad::relu(x);
  Executor ex(g, {y});
  Tensor wrong({2, 3}, DType::kF64);
  EXPECT_TRUE(ThrowsShapeError([&] { ex.bind(x, wrong); },
                               {"Executor::bind", "expects [2,3] f32", "got [2,3] f64"}));
}

TEST(ExecutorErrors, BindingSomethingThatIsNotAnInputThrows) {
  Graph g;
  Value x = g.input("x", {2, 3});
  Value w = g.param("w", {2, 3});
  Value y = tbgrad::mul(x, w);
  Executor ex(g, {y});
  try {
    ex.bind(w, Tensor({2, 3}, DType::kF32));
    FAIL() << "binding a parameter did not throw";
  } catch (const tbgrad::Error& e) {
    EXPECT_NE(std::string(e.what()).find("not an input"), std::string::npos) << e.what();
  }
}

TEST(ExecutorErrors, RunningWithAnUnboundInputThrowsNamingIt) {
  Graph g;
  Value x = g.input("images", {2, 3});
  Value labels = g.input_labels("labels", {2});
  Value loss = tbgrad::softmax_cross_entropy(x, labels);
  Executor ex(g, {loss});
  Tensor xv({2, 3}, DType::kF32);
  ex.bind(x, xv);
  try {
    ex.run();
    FAIL() << "running without binding labels did not throw";
  } catch (const tbgrad::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("labels"), std::string::npos) << msg;
    EXPECT_NE(msg.find("not bound"), std::string::npos) << msg;
  }
}

// ---------------------------------------------------------------------------------------------
// Reductions over axes, permute, concat, slice, split, pad, per_channel
// ---------------------------------------------------------------------------------------------

TEST(ReduceAxesShapeErrors, AxesOutOfRangeOrRepeatedNameTheOpAndTheShape) {
  Graph g;
  Value x = g.input("x", {2, 3, 4});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::sum(x, {3}); },
                               {"sum", "axis 3 is out of range", "x ([2,3,4])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::mean(x, {-4}); },
                               {"mean", "axis -4 is out of range", "x ([2,3,4])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::max(x, {1, 1}); },
                               {"max", "axis 1 appears twice", "x ([2,3,4])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::var(x, {0, -3}); },
                               {"var", "axis -3 appears twice", "[0, -3]", "x ([2,3,4])"}));
}

TEST(ReduceAxesShapeErrors, VarNeedsMoreElementsThanTheCorrection) {
  Graph g;
  Value x = g.input("x", {2, 1, 4});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::var(x, {1}); },
                               {"var", "x ([2,1,4])", "correction 1"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::var(x, {0}, 2); }, {"var", "correction 2"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::var(x, {0}, -1); }, {"var", "negative"}));
}

TEST(ReduceAxesShapeErrors, MaxOverAnEmptyAxisAndNonFloatInputs) {
  Graph g;
  Value x = g.input("x", {2, 0, 3});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::max(x, {1}); }, {"max", "x ([2,0,3])", "no elements"}));
  Value labels = g.input_labels("labels", {4});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::sum(labels, {0}); }, {"sum", "floating point"}));
}

TEST(ReduceAxesShapeErrors, MaxBackwardNeedsTheReducedShape) {
  Graph g;
  Value x = g.input("x", {2, 3});
  Value y = g.input("y", {3});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::max_backward(x, y, y, {1}); },
                               {"max_backward", "x ([2,3])", "[2]"}));
}

TEST(PermuteShapeErrors, TheOrderMustNameEveryAxisOnce) {
  Graph g;
  Value x = g.input("x", {2, 3, 4});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::permute(x, {0, 1}); },
                               {"permute", "[0, 1]", "3 axes", "x ([2,3,4])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::permute(x, {0, 1, -2}); },
                               {"permute", "axis -2 appears twice", "x ([2,3,4])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::permute(x, {0, 1, 3}); },
                               {"permute", "axis 3 is out of range", "x ([2,3,4])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::transpose(x, 0, 5); },
                               {"transpose", "axis 5", "x ([2,3,4])"}));
}

TEST(ConcatShapeErrors, InputsMustMatchOffTheAxis) {
  Graph g;
  Value a = g.input("a", {2, 3});
  Value b = g.input("b", {4, 5});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::concat({a, b}, 1); },
                               {"concat", "input 1 b ([4,5])", "input 0 a ([2,3])"}));
  Value c = g.input("c", {2, 3, 1});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::concat({a, c}, 0); }, {"concat", "c ([2,3,1])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::concat({a, a}, 2); },
                               {"concat", "axis 2 is out of range", "a ([2,3])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::concat(std::vector<Value>{}, 0); },
                               {"concat", "at least one input"}));
  Graph other;
  Value d = other.input("d", {2, 3});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::concat({a, d}, 0); }, {"concat", "different graphs"}));
  Value e = param_of(g, "e", {2, 3}, DType::kF64);
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::concat({a, e}, 0); }, {"concat", "same dtype"}));
}

TEST(SliceShapeErrors, AxisAndStep) {
  Graph g;
  Value x = g.input("x", {2, 3});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::slice(x, 2, 0, 1); },
                               {"slice", "axis 2 is out of range", "x ([2,3])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::slice(x, 1, 0, 3, 0); },
                               {"slice", "step 0 must be positive", "x ([2,3])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::slice(x, 1, 3, 0, -1); },
                               {"slice", "step -1 must be positive"}));
  Value gy = g.input("gy", {2, 2});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::slice_backward(gy, {2, 3}, 1, 0, 3); },
                               {"slice_backward", "gy ([2,2])", "[2,3]"}));
}

TEST(SplitShapeErrors, SizesMustAddUpToTheAxis) {
  Graph g;
  Value x = g.input("x", {2, 5});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::split(x, {2, 2}, 1); },
                               {"split", "[2, 2] add up to 4", "size 5", "x ([2,5])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::split(x, {6, -1}, 1); },
                               {"split", "size -1", "negative", "x ([2,5])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::split(x, {1, 1}, -3); },
                               {"split", "axis -3 is out of range"}));
}

TEST(PadShapeErrors, PairsForExistingAxesAndNoNegativeSize) {
  Graph g;
  Value x = g.input("x", {2, 3});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::pad(x, {1}); }, {"pad", "[1]", "pairs", "x ([2,3])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::pad(x, {1, 1, 1, 1, 1, 1}); },
                               {"pad", "2 axes of x ([2,3])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::pad(x, {-2, -2}); },
                               {"pad", "axis 1 of x ([2,3])", "negative size -1"}));
}

TEST(PerChannelShapeErrors, AVectorOfTheChannelCount) {
  Graph g;
  Value x = g.input("x", {8, 16, 4, 4});
  Value gamma = g.param("gamma", {8});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::per_channel(gamma, x); },
                               {"per_channel", "gamma ([8])", "x ([8,16,4,4])"}));
  Value m = g.param("m", {16, 1});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::per_channel(m, x); }, {"per_channel", "m ([16,1])"}));
}

TEST(BroadcastShapeErrors, APerChannelVectorDoesNotBroadcastAgainstImagesWithoutItsTrailingOnes) {
  // NumPy's rule, as torch's: [16] aligns with W, not C. per_channel(gamma, x) is the fix the
  // message should lead to; sum_to(x, [C, 1, 1]) and [1, C, 1, 1] are fine.
  Graph g;
  Value x = g.input("x", {8, 16, 8, 8});
  Value gamma = g.param("gamma", {16});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::mul(x, gamma); },
                               {"mul", "x ([8,16,8,8])", "gamma ([16])"}));
  EXPECT_EQ(tbgrad::sum_to(x, {16, 1, 1}).shape(), (Shape{16, 1, 1}));
  EXPECT_EQ(tbgrad::sum_to(x, {1, 16, 1, 1}).shape(), (Shape{1, 16, 1, 1}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::sum_to(x, {16}); }, {"sum_to", "[16]"}));
}

TEST(ShapeErrors, ShapesAreLimitedToSixDimensions) {
  EXPECT_TRUE(ThrowsShapeError([] { (void)Shape{1, 2, 3, 4, 5, 6, 7}; },
                               {"rank 7", "maximum rank 6"}));
}

TEST(ShapeErrors, DimensionsMustNotBeNegative) {
  EXPECT_TRUE(ThrowsShapeError([] { (void)Shape{2, -3}; }, {"non-negative", "-3"}));
}

// ---------------------------------------------------------------------------------------------
// Losses (ops/loss.hpp)
// ---------------------------------------------------------------------------------------------

TEST(LossShapeErrors, PredictionAndTargetMustHaveTheSameShape) {
  Graph g;
  Value x = g.input("pred", {8, 3});
  Value t = g.input("target", {8, 1});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::mse_loss(x, t); },
                               {"mse_loss", "target ([8,1])", "pred ([8,3])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::l1_loss(x, t); }, {"l1_loss", "[8,1]"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::binary_cross_entropy_with_logits(x, t); },
                               {"binary_cross_entropy_with_logits", "[8,1]", "[8,3]"}));
}

TEST(LossShapeErrors, TargetsMustBeFloatingPoint) {
  Graph g;
  Value x = g.input("pred", {4});
  Value t = g.input_labels("target", {4});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::huber_loss(x, t); },
                               {"huber_loss", "target ([4] i32)", "floating point"}));
}

TEST(LossShapeErrors, HuberDeltaMustBePositive) {
  Graph g;
  Value x = g.input("pred", {4});
  Value t = g.input("target", {4});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::huber_loss(x, t, 0.0); }, {"huber_loss", "delta"}));
}

TEST(LossShapeErrors, PosWeightMustHaveOneWeightPerClass) {
  Graph g;
  Value x = g.input("logits", {8, 5});
  Value t = g.input("target", {8, 5});
  Value pw = g.input("pw", {4});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::binary_cross_entropy_with_logits(x, t, pw); },
                               {"binary_cross_entropy_with_logits", "pos_weight pw ([4])",
                                "must be [5]"}));
}

TEST(LossShapeErrors, NllLabelsAndWeightsMustMatchTheScores) {
  Graph g;
  Value lp = g.input("lp", {8, 5});
  Value y = g.input_labels("y", {7});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::nll_loss(lp, y); },
                               {"nll_loss", "labels y ([7] i32)", "must be [8]"}));
  Value y8 = g.input_labels("y8", {8});
  Value w = g.input("w", {4});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::nll_loss(lp, y8, w); },
                               {"nll_loss", "class weights w ([4])", "must be [5]"}));
  Value lp3 = g.input("lp3", {8, 5, 1});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::nll_loss(lp3, y8); }, {"nll_loss", "rank 2"}));
}

TEST(LossShapeErrors, CrossEntropyOptionsAreChecked) {
  Graph g;
  Value x = g.input("logits", {8, 5});
  Value y = g.input_labels("y", {8});
  EXPECT_TRUE(ThrowsShapeError(
      [&] { tbgrad::softmax_cross_entropy(x, y, {.label_smoothing = 1.5}); },
      {"softmax_cross_entropy", "label_smoothing", "[8,5]"}));
  Value w = g.input("w", {6});
  EXPECT_TRUE(ThrowsShapeError(
      [&] { tbgrad::softmax_cross_entropy(x, y, {.weights = w}); },
      {"softmax_cross_entropy", "class weights w ([6])", "must be [5]"}));
}

// batch_norm and dropout
// ---------------------------------------------------------------------------------------------

struct BnValues {
  Graph g;
  Value x, gamma, beta, rm, rv;
  explicit BnValues(const Shape& xs, std::int64_t c) {
    x = g.input("x", xs);
    gamma = g.param("gamma", {c});
    beta = g.param("beta", {c});
    rm = g.constant(Tensor({c}, DType::kF32), "rm");
    rv = g.constant(Tensor({c}, DType::kF32), "rv");
  }
};

TEST(BatchNormShapeErrors, InputMustHaveRank2OrMore) {
  BnValues v({8}, 8);
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::batch_norm(v.x, v.gamma, v.beta, v.rm, v.rv); },
                               {"batch_norm", "rank 2 or more", "x ([8])"}));
}

TEST(BatchNormShapeErrors, ChannelVectorsMustMatchTheChannels) {
  BnValues v({4, 3, 5, 5}, 3);
  Value wrong = v.g.param("gamma16", {16});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::batch_norm(v.x, wrong, v.beta, v.rm, v.rv); },
                               {"batch_norm", "gamma", "gamma16 ([16])", "must be [3]",
                                "x ([4,3,5,5])"}));
  Value wrong_rv = v.g.constant(Tensor({3, 1}, DType::kF32), "rv2");
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::batch_norm(v.x, v.gamma, v.beta, v.rm, wrong_rv); },
                               {"batch_norm", "running_var", "rv2 ([3,1])"}));
}

TEST(BatchNormShapeErrors, RunningStatisticsMustBeLeaves) {
  BnValues v({4, 3}, 3);
  Value computed = tbgrad::scale(v.rm, 2.0);
  EXPECT_TRUE(ThrowsShapeError(
      [&] { tbgrad::batch_norm(v.x, v.gamma, v.beta, computed, v.rv); },
      {"batch_norm", "running_mean", "must be a graph leaf"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::batch_norm(v.x, v.gamma, v.beta, v.rm, v.rm); },
                               {"batch_norm", "the same value"}));
}

TEST(BatchNormShapeErrors, DtypesMustMatch) {
  BnValues v({4, 3}, 3);
  Value f64 = param_of(v.g, "gamma64", {3}, DType::kF64);
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::batch_norm(v.x, f64, v.beta, v.rm, v.rv); },
                               {"batch_norm", "same dtype", "f64"}));
}

TEST(BatchNormShapeErrors, MomentumAndEpsMustBeInRange) {
  BnValues v({4, 3}, 3);
  EXPECT_TRUE(ThrowsShapeError(
      [&] { tbgrad::batch_norm(v.x, v.gamma, v.beta, v.rm, v.rv, {.momentum = 1.5}); },
      {"batch_norm", "momentum", "[4,3]"}));
  EXPECT_TRUE(ThrowsShapeError(
      [&] { tbgrad::batch_norm(v.x, v.gamma, v.beta, v.rm, v.rv, {.eps = -1.0}); },
      {"batch_norm", "eps"}));
  EXPECT_TRUE(ThrowsShapeError(
      [&] {
        tbgrad::batch_norm(v.x, v.gamma, v.beta, v.rm, v.rv,
                           {.eps = std::numeric_limits<double>::quiet_NaN()});
      },
      {"batch_norm", "eps"}));
}

TEST(BatchNormShapeErrors, GradientKernelsCheckTheGradientsShape) {
  BnValues v({4, 3}, 3);
  Value gy = v.g.input("gy", {4, 2});
  EXPECT_TRUE(ThrowsShapeError(
      [&] { tbgrad::batch_norm_backward_input(v.x, v.gamma, v.rm, v.rv, gy); },
      {"batch_norm_backward_input", "gy ([4,2])", "x ([4,3])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::batch_norm_backward_weight(v.x, v.rm, v.rv, gy); },
                               {"batch_norm_backward_weight", "gy ([4,2])"}));
  Value flat = v.g.input("flat", {5});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::batch_norm_backward_bias(flat); },
                               {"batch_norm_backward_bias", "flat ([5])"}));
}

TEST(BatchNormErrors, TrainingWithOneValuePerChannelThrowsWhenRun) {
  BnValues v({1, 3}, 3);
  Value y = tbgrad::batch_norm(v.x, v.gamma, v.beta, v.rm, v.rv);
  Executor ex(v.g, {y});
  Tensor x({1, 3}, DType::kF32);
  ex.bind(v.x, x);
  try {
    ex.run();
    ADD_FAILURE() << "did not throw";
  } catch (const tbgrad::Error& e) {
    EXPECT_NE(std::string(e.what()).find("more than one value per channel"), std::string::npos)
        << e.what();
  }
  ex.set_training(false);  // evaluation mode uses the running statistics: fine
  EXPECT_NO_THROW(ex.run());
}

TEST(DropoutShapeErrors, ProbabilityMustBeInZeroToOne) {
  Graph g;
  Value x = g.input("x", {4, 5});
  for (double p : {-0.1, 1.5, std::numeric_limits<double>::quiet_NaN()}) {
    EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::dropout(x, p); },
                                 {"dropout", "probability p must be in [0, 1]", "x ([4,5])"}));
  }
}

TEST(DropoutShapeErrors, InputMustBeFloatingPoint) {
  Graph g;
  Value labels = g.input_labels("labels", {4});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::dropout(labels, 0.5); },
                               {"dropout", "floating point", "labels ([4]"}));
}

// ---------------------------------------------------------------------------------------------
// layer_norm and group_norm
// ---------------------------------------------------------------------------------------------

TEST(LayerNormShapeErrors, NormalizedShapeMustBeTheLastDimensions) {
  Graph g;
  Value x = g.input("x", {2, 3, 4});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::layer_norm(x, 0); },
                               {"layer_norm", "normalized rank 0", "x ([2,3,4])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::layer_norm(x, 4); },
                               {"layer_norm", "normalized rank 4", "x ([2,3,4])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::layer_norm(x, {3}); },
                               {"layer_norm", "normalized_shape [3]", "last dimensions", "x ([2,3,4])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::layer_norm(x, Shape{}); },
                               {"layer_norm", "normalized_shape []"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::layer_norm(x, {1, 2, 3, 4}); },
                               {"layer_norm", "normalized_shape [1,2,3,4]"}));
  EXPECT_NO_THROW(tbgrad::layer_norm(x, {3, 4}));
}

TEST(LayerNormShapeErrors, WeightAndBiasMustHaveTheNormalizedShape) {
  Graph g;
  Value x = g.input("x", {2, 3, 4});
  Value w4 = g.param("w4", {4}), w34 = g.param("w34", {3, 4});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::layer_norm(x, 2, w4); },
                               {"layer_norm", "weight w4 ([4])", "must be [3,4]", "x ([2,3,4])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::layer_norm(x, 1, w4, w34); },
                               {"layer_norm", "bias w34 ([3,4])", "must be [4]"}));
  Value f64 = param_of(g, "w64", {4}, DType::kF64);
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::layer_norm(x, 1, f64); },
                               {"layer_norm", "same dtype", "f64"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::layer_norm(x, 1, w4, Value(), {.eps = -1.0}); },
                               {"layer_norm", "eps"}));
}

TEST(LayerNormShapeErrors, GradientKernelsCheckTheirInputs) {
  Graph g;
  Value x = g.input("x", {2, 3, 4});
  Value gy = g.input("gy", {2, 3, 5});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::layer_norm_backward_input(x, 1, Value(), gy); },
                               {"layer_norm_backward_input", "gy ([2,3,5])", "x ([2,3,4])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::layer_norm_backward_weight(x, 1, gy); },
                               {"layer_norm_backward_weight", "gy ([2,3,5])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::layer_norm_backward_bias(gy, 5); },
                               {"layer_norm_backward_bias", "normalized rank 5"}));
}

TEST(GroupNormShapeErrors, ChannelsMustDivideIntoGroups) {
  Graph g;
  Value x = g.input("x", {4, 6, 5, 5});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::group_norm(x, 4); },
                               {"group_norm", "C = 6", "divisible by groups = 4", "x ([4,6,5,5])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::group_norm(x, 0); },
                               {"group_norm", "groups must be positive", "x ([4,6,5,5])"}));
  EXPECT_NO_THROW(tbgrad::group_norm(x, 3));
}

TEST(GroupNormShapeErrors, InputMustHaveRank2OrMore) {
  Graph g;
  Value x = g.input("x", {8});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::group_norm(x, 1); },
                               {"group_norm", "rank 2 or more", "x ([8])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::group_norm_backward_bias(x); },
                               {"group_norm_backward_bias", "rank 2 or more", "x ([8])"}));
  Value labels = g.input_labels("labels", {4, 2});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::group_norm(labels, 1); },
                               {"group_norm", "floating point"}));
}

TEST(GroupNormShapeErrors, WeightAndBiasMustBeOnePerChannel) {
  Graph g;
  Value x = g.input("x", {4, 6, 5});
  Value w3 = g.param("w3", {3}), w6 = g.param("w6", {6});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::group_norm(x, 3, w3, w6); },
                               {"group_norm", "weight w3 ([3])", "must be [6]", "x ([4,6,5])"}));
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::group_norm(x, 3, w6, w3); },
                               {"group_norm", "bias w3 ([3])", "must be [6]"}));
  Value gy = g.input("gy", {4, 6});
  EXPECT_TRUE(ThrowsShapeError([&] { tbgrad::group_norm_backward_weight(x, 3, gy); },
                               {"group_norm_backward_weight", "gy ([4,6])", "x ([4,6,5])"}));
}

}  // namespace
