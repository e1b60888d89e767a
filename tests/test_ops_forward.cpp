// Forward values of the ops, checked against plain nested-loop reference implementations written
// here (obviously correct, slow) in float64 (tolerance 1e-12) and float32 (tolerance 1e-5).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include <tbgrad.hpp>

namespace tbgrad {
// Readable test parameters: "f32" rather than "1-byte object <00>".
void PrintTo(DType t, std::ostream* os) { *os << dtype_name(t); }
}  // namespace tbgrad

namespace {

using tbgrad::Conv2dOptions;
using tbgrad::DType;
using tbgrad::Executor;
using tbgrad::Graph;
using tbgrad::Pool2dOptions;
using tbgrad::Shape;
using tbgrad::Tensor;
using tbgrad::Value;
using Feeds = std::vector<std::pair<Value, Tensor>>;

constexpr double kTolF64 = 1e-12;
constexpr double kTolF32 = 1e-5;

double tolerance(DType t) { return t == DType::kF64 ? kTolF64 : kTolF32; }

// For logits of magnitude 1e4: the log-sum-exp (about 1e4) that the kernels subtract before
// exponentiating is itself rounded to about 1e4 * machine epsilon, and so are the results.
double huge_logit_tolerance(DType t) {
  const double eps = t == DType::kF64 ? std::numeric_limits<double>::epsilon()
                                      : static_cast<double>(std::numeric_limits<float>::epsilon());
  return 4 * 1e4 * eps;
}

Tensor random_tensor(const Shape& shape, DType dtype, tbgrad::nn::Rng& rng, double lo = -0.5,
                     double hi = 0.5) {
  Tensor t(shape, dtype);
  tbgrad::nn::uniform(t, lo, hi, rng);
  return t;
}

Value random_param(Graph& g, const std::string& name, const Shape& shape, tbgrad::nn::Rng& rng) {
  Value p = g.param(name, shape);
  tbgrad::nn::uniform(g.value(p), -0.5, 0.5, rng);
  return p;
}

Tensor run_value(Value out, const Feeds& feeds = {}) {
  Executor ex(out.graph(), {out});
  for (const auto& [v, t] : feeds) ex.bind(v, t);
  ex.run();
  return ex.get(out).clone();
}

// |actual - expected| <= tol everywhere, same shapes; names the first offending element.
::testing::AssertionResult AllNear(const Tensor& actual, const Tensor& expected, double tol) {
  if (!(actual.shape() == expected.shape())) {
    return ::testing::AssertionFailure() << "shape " << actual.shape().str() << ", expected "
                                         << expected.shape().str();
  }
  for (std::int64_t i = 0; i < actual.numel(); ++i) {
    const double a = actual.at(i), e = expected.at(i);
    if (!(std::abs(a - e) <= tol)) {
      return ::testing::AssertionFailure() << "element " << i << " is " << a << ", expected " << e
                                           << " (tolerance " << tol << ")";
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

std::int64_t out_size(std::int64_t in, int k, int s, int p) { return (in + 2 * std::int64_t{p} - k) / s + 1; }

const DType kFloatTypes[] = {DType::kF64, DType::kF32};

std::string dtype_suffix(DType t) { return tbgrad::dtype_name(t); }

// ---------------------------------------------------------------------------------------------
// conv2d
// ---------------------------------------------------------------------------------------------

struct ConvCase {
  int n, c, h, w;  // input [N, C, H, W]
  int oc, kh, kw;  // weight [OC, C, KH, KW]
  int sh, sw;      // stride
  int ph, pw;      // padding
  bool bias;

  Shape x_shape() const { return {n, c, h, w}; }
  Shape w_shape() const { return {oc, c, kh, kw}; }
  Shape y_shape() const { return {n, oc, out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)}; }
  Conv2dOptions options() const { return {.stride = {sh, sw}, .padding = {ph, pw}}; }
  std::string name() const {
    auto s = [](int v) { return std::to_string(v); };
    return "n" + s(n) + "_c" + s(c) + "_in" + s(h) + "x" + s(w) + "_oc" + s(oc) + "_k" + s(kh) +
           "x" + s(kw) + "_s" + s(sh) + "x" + s(sw) + "_p" + s(ph) + "x" + s(pw) +
           (bias ? "_bias" : "_nobias");
  }
};

void PrintTo(const ConvCase& k, std::ostream* os) { *os << k.name(); }

const ConvCase kConvCases[] = {
    // n  c  h   w  oc kh kw sh sw ph pw bias
    {1, 1, 5, 5, 1, 3, 3, 1, 1, 0, 0, true},     // smallest useful case
    {4, 1, 28, 28, 3, 5, 5, 1, 1, 0, 0, true},   // the reference CNN's first conv
    {4, 3, 11, 11, 5, 3, 3, 1, 1, 0, 0, true},   // the reference CNN's second conv
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
    {1, 1, 4, 4, 1, 4, 4, 1, 1, 0, 0, true},     // kernel as large as the input
    {5, 2, 5, 5, 2, 3, 3, 2, 2, 1, 1, true},     // batch 5
    {1, 2, 8, 8, 2, 3, 3, 2, 2, 0, 0, false},    // stride leaves the last row and column unread
    {1, 1, 6, 6, 1, 3, 3, 3, 3, 1, 1, true},     // stride 3 with padding
    {2, 3, 32, 30, 4, 5, 3, 2, 1, 2, 1, true},   // larger, enough work to run in parallel
    // Output channels in register-tile blocks of several sizes (ops/conv2d_kernels.cpp).
    {2, 3, 9, 10, 7, 3, 3, 1, 1, 1, 1, true},    // 7 channels: one block, or 3 + 4
    {2, 2, 10, 9, 8, 2, 3, 1, 1, 0, 1, true},    // 8 channels
    {1, 4, 12, 12, 16, 3, 3, 1, 1, 0, 0, false}, // 16 channels: 8 + 8, or 5 + 5 + 6
    {1, 2, 3, 40, 6, 1, 5, 1, 1, 0, 0, true},    // wide rows, a single output row
};

// y[n, o, i, j] = b[o] + sum over c, ky, kx of x[n, c, i*sh - ph + ky, j*sw - pw + kx] *
// w[o, c, ky, kx], skipping positions outside the input (zero padding). Computed in double.
Tensor reference_conv2d(const Tensor& x, const Tensor& w, const Tensor* b, const ConvCase& k) {
  const Shape ys = k.y_shape();
  Tensor y(ys, DType::kF64);
  for (std::int64_t n = 0; n < ys[0]; ++n) {
    for (std::int64_t o = 0; o < ys[1]; ++o) {
      for (std::int64_t i = 0; i < ys[2]; ++i) {
        for (std::int64_t j = 0; j < ys[3]; ++j) {
          double acc = b ? b->at(o) : 0.0;
          for (std::int64_t c = 0; c < k.c; ++c) {
            for (std::int64_t ky = 0; ky < k.kh; ++ky) {
              for (std::int64_t kx = 0; kx < k.kw; ++kx) {
                const std::int64_t iy = i * k.sh - k.ph + ky;
                const std::int64_t ix = j * k.sw - k.pw + kx;
                if (iy < 0 || iy >= k.h || ix < 0 || ix >= k.w) continue;
                acc += x.at(((n * k.c + c) * k.h + iy) * k.w + ix) *
                       w.at(((o * k.c + c) * k.kh + ky) * k.kw + kx);
              }
            }
          }
          y.set(((n * ys[1] + o) * ys[2] + i) * ys[3] + j, acc);
        }
      }
    }
  }
  return y;
}

class Conv2dForward : public ::testing::TestWithParam<std::tuple<ConvCase, DType>> {};

TEST_P(Conv2dForward, MatchesNestedLoopReference) {
  const auto& [k, dtype] = GetParam();
  tbgrad::nn::Rng rng(1);
  Graph g(dtype);
  Value x = g.input("x", k.x_shape());
  Value w = random_param(g, "w", k.w_shape(), rng);
  Value b = k.bias ? random_param(g, "b", {k.oc}, rng) : Value();
  Value y = k.bias ? tbgrad::conv2d(x, w, b, k.options()) : tbgrad::conv2d(x, w, k.options());
  ASSERT_EQ(y.shape(), k.y_shape());
  ASSERT_EQ(y.dtype(), dtype);
  Tensor xv = random_tensor(k.x_shape(), dtype, rng);
  const Tensor expected =
      reference_conv2d(xv, g.value(w), k.bias ? &g.value(b) : nullptr, k);
  EXPECT_TRUE(AllNear(run_value(y, {{x, xv}}), expected, tolerance(dtype)));
}

INSTANTIATE_TEST_SUITE_P(
    Grid, Conv2dForward, ::testing::Combine(::testing::ValuesIn(kConvCases), ::testing::ValuesIn(kFloatTypes)),
    [](const ::testing::TestParamInfo<std::tuple<ConvCase, DType>>& info) {
      return std::get<0>(info.param).name() + "_" + dtype_suffix(std::get<1>(info.param));
    });

TEST(Conv2dForwardByHand, CrossCorrelatesWithoutFlippingTheKernel) {
  // x = 1..9 in a 3x3 image, kernel [[1, 0], [0, -1]]: y[i, j] = x[i, j] - x[i+1, j+1] = -4,
  // plus a bias of 0.5. A flipped kernel (true convolution) would give +4.
  Graph g(DType::kF64);
  Value x = g.input("x", {1, 1, 3, 3});
  Value w = g.param("w", {1, 1, 2, 2});
  Value b = g.param("b", {1});
  g.value(w).copy_from(f64_tensor({1, 1, 2, 2}, {1, 0, 0, -1}));
  g.value(b).set(0, 0.5);
  Tensor y = run_value(tbgrad::conv2d(x, w, b),
                       {{x, f64_tensor({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9})}});
  EXPECT_TRUE(AllNear(y, f64_tensor({1, 1, 2, 2}, {-3.5, -3.5, -3.5, -3.5}), kTolF64));
}

TEST(Conv2dForwardByHand, PadsWithZeros) {
  // A 1x1 image of value 2 with a 3x3 all-ones kernel and padding 1: one output, 2.
  Graph g(DType::kF64);
  Value x = g.input("x", {1, 1, 1, 1});
  Value w = g.param("w", {1, 1, 3, 3});
  g.value(w).fill(1.0);
  Tensor y = run_value(tbgrad::conv2d(x, w, {.padding = 1}), {{x, f64_tensor({1, 1, 1, 1}, {2})}});
  EXPECT_TRUE(AllNear(y, f64_tensor({1, 1, 1, 1}, {2}), kTolF64));
}

// ---------------------------------------------------------------------------------------------
// Pooling
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
  std::string name() const {
    auto s = [](int v) { return std::to_string(v); };
    return "n" + s(n) + "_c" + s(c) + "_in" + s(h) + "x" + s(w) + "_k" + s(kh) + "x" + s(kw) +
           (sh || sw ? "_s" + s(sh) + "x" + s(sw) : "_sdefault") + "_p" + s(ph) + "x" + s(pw);
  }
};

void PrintTo(const PoolCase& k, std::ostream* os) { *os << k.name(); }

const PoolCase kPoolCases[] = {
    // n  c  h   w  kh kw sh sw ph pw
    {1, 1, 4, 4, 2, 2, 0, 0, 0, 0},      // default stride (= kernel)
    {4, 3, 24, 24, 4, 4, 2, 2, 0, 0},    // the reference CNN's first pooling
    {4, 5, 9, 9, 3, 3, 1, 1, 0, 0},      // the reference CNN's second pooling
    {1, 2, 7, 7, 3, 3, 2, 2, 1, 1},      // odd input, overlapping windows, padding 1
    {2, 1, 8, 8, 4, 4, 2, 2, 2, 2},      // overlapping windows, padding 2 (half the kernel)
    {1, 1, 10, 10, 2, 2, 3, 3, 0, 0},    // stride larger than the kernel
    {1, 2, 11, 11, 3, 3, 4, 4, 1, 1},    // stride larger than the kernel, with padding
    {3, 1, 5, 5, 3, 3, 1, 1, 1, 1},      // batch 3, padding 1, stride 1
    {1, 3, 6, 9, 2, 3, 2, 3, 0, 0},      // non-square input and kernel
    {2, 1, 7, 8, 3, 2, 1, 2, 1, 1},      // non-square kernel and stride
    {1, 2, 9, 6, 4, 2, 3, 1, 2, 0},      // non-square padding
    {1, 1, 5, 5, 5, 5, 1, 1, 2, 2},      // kernel 5 with padding 2
    {2, 3, 7, 7, 3, 3, 3, 3, 0, 0},      // stride = kernel, last row and column unread
    {4, 2, 6, 5, 3, 2, 2, 1, 1, 0},      // batch 4, everything non-square
    {1, 2, 4, 6, 2, 4, 2, 1, 1, 2},      // padding on both axes, wide kernel
    {8, 16, 20, 20, 3, 3, 2, 2, 1, 1},   // many planes: enough work to run in parallel
    {2, 2, 20, 20, 8, 8, 2, 2, 0, 0},    // window wider than 7: summed pass by pass
    {2, 3, 10, 41, 3, 3, 1, 1, 1, 1},    // rows of several vectors at every width, stride 1
    {1, 2, 9, 40, 3, 4, 1, 2, 0, 0},     // ... and stride 2
};

// Average pooling: the sum of the window's in-image cells divided by KH*KW (padded cells count
// as zeros). Max pooling: the maximum over the window's in-image cells (padding ignored).
Tensor reference_pool2d(const Tensor& x, const PoolCase& k, bool max) {
  const Shape ys = k.y_shape();
  Tensor y(ys, DType::kF64);
  for (std::int64_t n = 0; n < ys[0]; ++n) {
    for (std::int64_t c = 0; c < ys[1]; ++c) {
      for (std::int64_t i = 0; i < ys[2]; ++i) {
        for (std::int64_t j = 0; j < ys[3]; ++j) {
          double sum = 0.0;
          double best = -std::numeric_limits<double>::infinity();
          for (std::int64_t ky = 0; ky < k.kh; ++ky) {
            for (std::int64_t kx = 0; kx < k.kw; ++kx) {
              const std::int64_t iy = i * k.stride_h() - k.ph + ky;
              const std::int64_t ix = j * k.stride_w() - k.pw + kx;
              if (iy < 0 || iy >= k.h || ix < 0 || ix >= k.w) continue;
              const double v = x.at(((n * k.c + c) * k.h + iy) * k.w + ix);
              sum += v;
              best = std::max(best, v);
            }
          }
          y.set(((n * ys[1] + c) * ys[2] + i) * ys[3] + j,
                max ? best : sum / static_cast<double>(k.kh * k.kw));
        }
      }
    }
  }
  return y;
}

std::string pool_param_name(const ::testing::TestParamInfo<std::tuple<PoolCase, DType>>& info) {
  return std::get<0>(info.param).name() + "_" + dtype_suffix(std::get<1>(info.param));
}

class AvgPool2dForward : public ::testing::TestWithParam<std::tuple<PoolCase, DType>> {};

TEST_P(AvgPool2dForward, MatchesNestedLoopReference) {
  const auto& [k, dtype] = GetParam();
  tbgrad::nn::Rng rng(2);
  Graph g(dtype);
  Value x = g.input("x", k.x_shape());
  Value y = tbgrad::avg_pool2d(x, k.options());
  ASSERT_EQ(y.shape(), k.y_shape());
  Tensor xv = random_tensor(k.x_shape(), dtype, rng, -1.0, 1.0);
  EXPECT_TRUE(AllNear(run_value(y, {{x, xv}}), reference_pool2d(xv, k, false), tolerance(dtype)));
}

INSTANTIATE_TEST_SUITE_P(Grid, AvgPool2dForward,
                         ::testing::Combine(::testing::ValuesIn(kPoolCases),
                                            ::testing::ValuesIn(kFloatTypes)),
                         pool_param_name);

class MaxPool2dForward : public ::testing::TestWithParam<std::tuple<PoolCase, DType>> {};

TEST_P(MaxPool2dForward, MatchesNestedLoopReference) {
  const auto& [k, dtype] = GetParam();
  tbgrad::nn::Rng rng(3);
  Graph g(dtype);
  Value x = g.input("x", k.x_shape());
  Value y = tbgrad::max_pool2d(x, k.options());
  ASSERT_EQ(y.shape(), k.y_shape());
  Tensor xv = random_tensor(k.x_shape(), dtype, rng, -1.0, 1.0);
  EXPECT_TRUE(AllNear(run_value(y, {{x, xv}}), reference_pool2d(xv, k, true), tolerance(dtype)));
}

INSTANTIATE_TEST_SUITE_P(Grid, MaxPool2dForward,
                         ::testing::Combine(::testing::ValuesIn(kPoolCases),
                                            ::testing::ValuesIn(kFloatTypes)),
                         pool_param_name);

TEST(AvgPool2dForwardByHand, CountsPaddedCellsAsZeros) {
  // A 2x2 image of ones, kernel 2, stride 1, padding 1: each 2x2 window holds 1, 2 or 4 ones
  // and is divided by 4.
  Graph g(DType::kF64);
  Value x = g.input("x", {1, 1, 2, 2});
  Tensor y = run_value(tbgrad::avg_pool2d(x, {.kernel = 2, .stride = 1, .padding = 1}),
                       {{x, f64_tensor({1, 1, 2, 2}, {1, 1, 1, 1})}});
  EXPECT_TRUE(AllNear(y,
                      f64_tensor({1, 1, 3, 3}, {0.25, 0.5, 0.25,  //
                                                0.5, 1.0, 0.5,    //
                                                0.25, 0.5, 0.25}),
                      kTolF64));
}

TEST(MaxPool2dForwardByHand, IgnoresPaddingEvenWhenTheImageIsNegative) {
  // All values negative: a padded zero would win every border window if padding counted.
  Graph g(DType::kF64);
  Value x = g.input("x", {1, 1, 2, 2});
  Tensor y = run_value(tbgrad::max_pool2d(x, {.kernel = 2, .stride = 1, .padding = 1}),
                       {{x, f64_tensor({1, 1, 2, 2}, {-4, -3, -2, -1})}});
  EXPECT_TRUE(AllNear(y,
                      f64_tensor({1, 1, 3, 3}, {-4, -3, -3,  //
                                                -2, -1, -1,  //
                                                -2, -1, -1}),
                      kTolF64));
}

TEST(MaxPool2dForwardByHand, TakesTheMaximumOfEachWindow) {
  Graph g(DType::kF64);
  Value x = g.input("x", {1, 1, 4, 4});
  Tensor y = run_value(tbgrad::max_pool2d(x, {.kernel = 2}),
                       {{x, f64_tensor({1, 1, 4, 4}, {1, 9, 2, 3,   //
                                                      4, 5, 8, 6,   //
                                                      7, 0, 1, 1,   //
                                                      2, 3, 4, 9})}});
  EXPECT_TRUE(AllNear(y, f64_tensor({1, 1, 2, 2}, {9, 8, 7, 9}), kTolF64));
}

// ---------------------------------------------------------------------------------------------
// Matrix products
// ---------------------------------------------------------------------------------------------

// c[i, j] = sum over k of op(a)[i, k] * op(b)[k, j].
Tensor reference_matmul(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  const std::int64_t m = ta ? a.shape()[1] : a.shape()[0];
  const std::int64_t kk = ta ? a.shape()[0] : a.shape()[1];
  const std::int64_t n = tb ? b.shape()[0] : b.shape()[1];
  Tensor c({m, n}, DType::kF64);
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (std::int64_t k = 0; k < kk; ++k) {
        const double av = ta ? a.at(k * m + i) : a.at(i * kk + k);
        const double bv = tb ? b.at(j * kk + k) : b.at(k * n + j);
        acc += av * bv;
      }
      c.set(i * n + j, acc);
    }
  }
  return c;
}

class MatmulForward : public ::testing::TestWithParam<std::tuple<bool, bool, DType>> {};

TEST_P(MatmulForward, MatchesNestedLoopReferenceForNonSquareMatrices) {
  const auto& [ta, tb, dtype] = GetParam();
  // Tiles of 4x4 and their remainders, K and N below, at and past whole vectors (16 floats,
  // 8 doubles), and the reference CNN's fc1 at batch 8.
  for (const auto& [m, k, n] : {std::tuple{3, 4, 5}, std::tuple{1, 7, 2}, std::tuple{17, 33, 9},
                                std::tuple{64, 100, 10}, std::tuple{8, 245, 100},
                                std::tuple{5, 32, 16}, std::tuple{6, 40, 37},
                                std::tuple{9, 16, 70}}) {
    SCOPED_TRACE("M=" + std::to_string(m) + " K=" + std::to_string(k) + " N=" + std::to_string(n));
    tbgrad::nn::Rng rng(4);
    Graph g(dtype);
    const Shape sa = ta ? Shape{k, m} : Shape{m, k};
    const Shape sb = tb ? Shape{n, k} : Shape{k, n};
    Value a = g.input("a", sa);
    Value b = g.input("b", sb);
    Value c = tbgrad::matmul(a, b, {.transpose_a = ta, .transpose_b = tb});
    ASSERT_EQ(c.shape(), (Shape{m, n}));
    Tensor av = random_tensor(sa, dtype, rng), bv = random_tensor(sb, dtype, rng);
    EXPECT_TRUE(AllNear(run_value(c, {{a, av}, {b, bv}}), reference_matmul(av, bv, ta, tb),
                        tolerance(dtype)));
  }
}

INSTANTIATE_TEST_SUITE_P(
    TransposeCombinations, MatmulForward,
    ::testing::Combine(::testing::Bool(), ::testing::Bool(), ::testing::ValuesIn(kFloatTypes)),
    [](const ::testing::TestParamInfo<std::tuple<bool, bool, DType>>& info) {
      return std::string(std::get<0>(info.param) ? "At" : "A") + "_" +
             (std::get<1>(info.param) ? "Bt" : "B") + "_" + dtype_suffix(std::get<2>(info.param));
    });

TEST(LinearForward, IsInputTimesWeightTransposedPlusBias) {
  for (DType dtype : kFloatTypes) {
    SCOPED_TRACE(tbgrad::dtype_name(dtype));
    tbgrad::nn::Rng rng(5);
    Graph g(dtype);
    Value x = g.input("x", {6, 245});
    Value w = random_param(g, "w", {100, 245}, rng);
    Value b = random_param(g, "b", {100}, rng);
    Tensor xv = random_tensor({6, 245}, dtype, rng);
    Tensor expected = reference_matmul(xv, g.value(w), false, true);
    for (std::int64_t i = 0; i < 6; ++i) {
      for (std::int64_t j = 0; j < 100; ++j) {
        expected.set(i * 100 + j, expected.at(i * 100 + j) + g.value(b).at(j));
      }
    }
    EXPECT_TRUE(AllNear(run_value(tbgrad::linear(x, w, b), {{x, xv}}), expected, tolerance(dtype)));
  }
}

// ---------------------------------------------------------------------------------------------
// softmax_cross_entropy
// ---------------------------------------------------------------------------------------------

// mean over rows of log(sum_j exp(x[i, j])) - x[i, label[i]], in double.
double reference_cross_entropy(const Tensor& logits, const Tensor& labels) {
  const std::int64_t rows = logits.shape()[0], cols = logits.shape()[1];
  double total = 0;
  for (std::int64_t i = 0; i < rows; ++i) {
    double s = 0;
    for (std::int64_t j = 0; j < cols; ++j) s += std::exp(logits.at(i * cols + j));
    total += std::log(s) - logits.at(i * cols + static_cast<std::int64_t>(labels.at(i)));
  }
  return total / static_cast<double>(rows);
}

Tensor labels_tensor(std::initializer_list<int> values) {
  Tensor t({static_cast<std::int64_t>(values.size())}, DType::kI32);
  std::int64_t i = 0;
  for (int v : values) t.set(i++, v);
  return t;
}

struct CrossEntropySize {
  int batch, classes;
};

void PrintTo(const CrossEntropySize& k, std::ostream* os) {
  *os << "batch " << k.batch << ", classes " << k.classes;
}
using CrossEntropyParam = std::tuple<CrossEntropySize, DType>;

std::string cross_entropy_param_name(const ::testing::TestParamInfo<CrossEntropyParam>& info) {
  const CrossEntropySize& s = std::get<0>(info.param);
  return "batch" + std::to_string(s.batch) + "_classes" + std::to_string(s.classes) + "_" +
         dtype_suffix(std::get<1>(info.param));
}

class SoftmaxCrossEntropyForward : public ::testing::TestWithParam<CrossEntropyParam> {};

TEST_P(SoftmaxCrossEntropyForward, MatchesReferenceMeanNegativeLogLikelihood) {
  const auto& [size, dtype] = GetParam();
  const int batch = size.batch, classes = size.classes;
  tbgrad::nn::Rng rng(6);
  Graph g(dtype);
  Value logits = g.input("logits", {batch, classes});
  Value labels = g.input_labels("labels", {batch});
  Value loss = tbgrad::softmax_cross_entropy(logits, labels);
  ASSERT_EQ(loss.shape(), Shape{});
  Tensor lv = random_tensor({batch, classes}, dtype, rng, -4.0, 4.0);
  Tensor yv({batch}, DType::kI32);
  for (int i = 0; i < batch; ++i) yv.set(i, static_cast<double>(rng.below(classes)));
  const double got = run_value(loss, {{logits, lv}, {labels, yv}}).at(0);
  EXPECT_NEAR(got, reference_cross_entropy(lv, yv), tolerance(dtype));
}

INSTANTIATE_TEST_SUITE_P(Sizes, SoftmaxCrossEntropyForward,
                         ::testing::Combine(::testing::Values(CrossEntropySize{1, 1},
                                                              CrossEntropySize{1, 10},
                                                              CrossEntropySize{3, 5},
                                                              CrossEntropySize{32, 10},
                                                              CrossEntropySize{100, 7}),
                                            ::testing::ValuesIn(kFloatTypes)),
                         cross_entropy_param_name);

TEST(SoftmaxCrossEntropyStability, StaysFiniteAndCorrectForHugeLogits) {
  // Row losses: label 0 of [1e4, -1e4] is 0; label 0 of [-1e4, 1e4] is 2e4; label 1 of
  // [1e4, 1e4] is log 2. exp(1e4) overflows in both precisions, so only a stable
  // (max-subtracted) log-sum-exp gets this right.
  const double expected = (0.0 + 2e4 + std::log(2.0)) / 3.0;
  for (DType dtype : kFloatTypes) {
    SCOPED_TRACE(tbgrad::dtype_name(dtype));
    Graph g(dtype);
    Value logits = g.input("logits", {3, 2});
    Value labels = g.input_labels("labels", {3});
    Value loss = tbgrad::softmax_cross_entropy(logits, labels);
    Value dlogits = tbgrad::grad(loss, logits);
    Tensor lv({3, 2}, dtype);
    const double values[] = {1e4, -1e4, -1e4, 1e4, 1e4, 1e4};
    for (int i = 0; i < 6; ++i) lv.set(i, values[i]);
    Tensor yv = labels_tensor({0, 0, 1});
    Executor ex(g, {loss, dlogits});
    ex.bind(logits, lv).bind(labels, yv).run();
    const double got = ex[loss].at(0);
    ASSERT_TRUE(std::isfinite(got)) << got;
    EXPECT_NEAR(got, expected, huge_logit_tolerance(dtype));
    // The gradient is finite too: (softmax - onehot) / 3.
    const Tensor& gl = ex[dlogits];
    const double expected_grad[] = {0, 0, -1.0 / 3, 1.0 / 3, 0.5 / 3, -0.5 / 3};
    for (int i = 0; i < 6; ++i) {
      ASSERT_TRUE(std::isfinite(gl.at(i))) << "gradient element " << i;
      EXPECT_NEAR(gl.at(i), expected_grad[i], huge_logit_tolerance(dtype))
          << "gradient element " << i;
    }
  }
}

TEST(SoftmaxCrossEntropyLabels, LabelEqualToClassCountThrowsAtRunTime) {
  Graph g(DType::kF32);
  Value logits = g.input("logits", {2, 3});
  Value labels = g.input_labels("labels", {2});
  Value loss = tbgrad::softmax_cross_entropy(logits, labels);
  Tensor lv({2, 3}, DType::kF32);
  Tensor yv = labels_tensor({0, 3});
  Executor ex(g, {loss});
  ex.bind(logits, lv).bind(labels, yv);
  try {
    ex.run();
    FAIL() << "a label of 3 with 3 classes did not throw";
  } catch (const tbgrad::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("softmax_cross_entropy"), std::string::npos) << msg;
    EXPECT_NE(msg.find("label 3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[0, 3)"), std::string::npos) << msg;
  }
}

TEST(SoftmaxCrossEntropyLabels, NegativeLabelThrowsAtRunTime) {
  Graph g(DType::kF64);
  Value logits = g.input("logits", {2, 3});
  Value labels = g.input_labels("labels", {2});
  Value loss = tbgrad::softmax_cross_entropy(logits, labels);
  Tensor lv({2, 3}, DType::kF64);
  Tensor yv = labels_tensor({-1, 0});
  Executor ex(g, {loss});
  ex.bind(logits, lv).bind(labels, yv);
  EXPECT_THROW(ex.run(), tbgrad::Error);
}

TEST(SoftmaxCrossEntropyLabels, OutOfRangeLabelThrowsWhenOnlyTheGradientIsRun) {
  Graph g(DType::kF64);
  Value logits = g.input("logits", {2, 3});
  Value labels = g.input_labels("labels", {2});
  Value dlogits = tbgrad::grad(tbgrad::softmax_cross_entropy(logits, labels), logits);
  Tensor lv({2, 3}, DType::kF64);
  Tensor yv = labels_tensor({1, 7});
  Executor ex(g, {dlogits});
  ex.bind(logits, lv).bind(labels, yv);
  EXPECT_THROW(ex.run(), tbgrad::Error);
}

// ---------------------------------------------------------------------------------------------
// A few more forward values
// ---------------------------------------------------------------------------------------------

TEST(SoftmaxForward, RowsArePositiveAndSumToOneAlongTheLastDimension) {
  tbgrad::nn::Rng rng(7);
  Graph g(DType::kF64);
  Value x = g.input("x", {2, 3, 5});
  Tensor xv = random_tensor({2, 3, 5}, DType::kF64, rng, -5, 5);
  Tensor y = run_value(tbgrad::softmax(x), {{x, xv}});
  Tensor ly = run_value(tbgrad::log_softmax(x), {{x, xv}});
  for (std::int64_t r = 0; r < 6; ++r) {
    double denom = 0;
    for (std::int64_t j = 0; j < 5; ++j) denom += std::exp(xv.at(r * 5 + j));
    for (std::int64_t j = 0; j < 5; ++j) {
      EXPECT_NEAR(y.at(r * 5 + j), std::exp(xv.at(r * 5 + j)) / denom, kTolF64);
      EXPECT_NEAR(ly.at(r * 5 + j), xv.at(r * 5 + j) - std::log(denom), kTolF64);
    }
  }
}

TEST(SoftmaxForward, StaysFiniteForHugeLogits) {
  for (DType dtype : kFloatTypes) {
    SCOPED_TRACE(tbgrad::dtype_name(dtype));
    Graph g(dtype);
    Value x = g.input("x", {1, 3});
    Tensor xv({1, 3}, dtype);
    xv.set(0, 1e4);
    xv.set(1, -1e4);
    xv.set(2, 1e4);
    Tensor y = run_value(tbgrad::softmax(x), {{x, xv}});
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(std::isfinite(y.at(i))) << "element " << i;
    EXPECT_NEAR(y.at(0), 0.5, huge_logit_tolerance(dtype));
    EXPECT_NEAR(y.at(1), 0.0, huge_logit_tolerance(dtype));
    EXPECT_NEAR(y.at(2), 0.5, huge_logit_tolerance(dtype));
  }
}

TEST(ElementwiseForward, ActivationsMatchTheirDefinitions) {
  Graph g(DType::kF64);
  Value x = g.input("x", {5});
  Tensor xv = f64_tensor({5}, {-2.0, -0.5, 0.0, 0.5, 3.0});
  Tensor r = run_value(tbgrad::relu(x), {{x, xv}});
  Tensor s = run_value(tbgrad::sigmoid(x), {{x, xv}});
  Tensor t = run_value(tbgrad::tanh(x), {{x, xv}});
  for (std::int64_t i = 0; i < 5; ++i) {
    const double v = xv.at(i);
    EXPECT_EQ(r.at(i), v > 0 ? v : 0.0);
    EXPECT_NEAR(s.at(i), 1.0 / (1.0 + std::exp(-v)), kTolF64);
    EXPECT_NEAR(t.at(i), std::tanh(v), kTolF64);
  }
}

TEST(ElementwiseForward, BroadcastsAChannelBiasOverImages) {
  Graph g(DType::kF64);
  Value x = g.input("x", {2, 3, 2, 2});
  Value b = g.input("b", {3, 1, 1});
  tbgrad::nn::Rng rng(8);
  Tensor xv = random_tensor({2, 3, 2, 2}, DType::kF64, rng);
  Tensor bv = f64_tensor({3, 1, 1}, {10, 20, 30});
  Tensor sum = run_value(tbgrad::add(x, b), {{x, xv}, {b, bv}});
  Tensor diff = run_value(tbgrad::sub(b, x), {{x, xv}, {b, bv}});
  Tensor prod = run_value(tbgrad::mul(x, b), {{x, xv}, {b, bv}});
  for (std::int64_t i = 0; i < xv.numel(); ++i) {
    const double bias = bv.at((i / 4) % 3);
    EXPECT_NEAR(sum.at(i), xv.at(i) + bias, kTolF64);
    EXPECT_NEAR(diff.at(i), bias - xv.at(i), kTolF64);
    EXPECT_NEAR(prod.at(i), xv.at(i) * bias, kTolF64);
  }
}

TEST(ElementwiseForward, BroadcastsAColumnWithARow) {
  Graph g(DType::kF64);
  Value a = g.input("a", {3, 1});
  Value b = g.input("b", {1, 4});
  Tensor y = run_value(tbgrad::mul(a, b), {{a, f64_tensor({3, 1}, {1, 2, 3})},
                                           {b, f64_tensor({1, 4}, {1, 10, 100, 1000})}});
  EXPECT_TRUE(AllNear(y,
                      f64_tensor({3, 4}, {1, 10, 100, 1000, 2, 20, 200, 2000, 3, 30, 300, 3000}),
                      kTolF64));
}

TEST(ReduceForward, SumAndMeanOfManyElements) {
  // 10000 elements: more than one chunk of the deterministic reduction.
  Graph g(DType::kF64);
  Value x = g.input("x", {100, 100});
  Tensor xv({100, 100}, DType::kF64);
  for (std::int64_t i = 0; i < xv.numel(); ++i) xv.set(i, static_cast<double>(i % 17) - 8.0);
  double expected = 0;
  for (std::int64_t i = 0; i < xv.numel(); ++i) expected += xv.at(i);
  EXPECT_NEAR(run_value(tbgrad::sum(x), {{x, xv}}).at(0), expected, kTolF64);
  EXPECT_NEAR(run_value(tbgrad::mean(x), {{x, xv}}).at(0), expected / 1e4, kTolF64);
}

}  // namespace
