// Forward values of the ops.
//
// Every case of the op table (tests/op_cases.hpp) whose op has a plain nested-loop reference here
// (obviously correct, slow; keyed by op in kReferences) is checked against it in float64
// (tolerance 1e-12) and float32 (1e-5). The other cases' float32 values are checked against
// their float64 values on the same inputs (1e-5 of the largest value); test_ops_torch checks every
// case's float64 and float32 values against PyTorch. Hand-written tests follow: small inputs
// worked out by hand, huge logits, label errors, the activations' definitions.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <ostream>
#include <span>
#include <string>
#include <tbgrad.hpp>
#include <utility>
#include <vector>

#include "op_cases.hpp"

namespace tbgrad {
// Readable test parameters: "f32" rather than "1-byte object <00>".
void PrintTo(DType t, std::ostream* os) {
  *os << dtype_name(t);
}
}  // namespace tbgrad

namespace {

using tbgrad::Conv2dOptions;
using tbgrad::DType;
using tbgrad::Executor;
using tbgrad::Graph;
using tbgrad::MatmulOptions;
using tbgrad::Pool2dOptions;
using tbgrad::Shape;
using tbgrad::Tensor;
using tbgrad::Value;
using tbgrad::testing::OpCase;
using Feeds = std::vector<std::pair<Value, Tensor>>;

constexpr double kTolF64 = 1e-12;
constexpr double kTolF32 = 1e-5;

double tolerance(DType t) {
  return t == DType::kF64 ? kTolF64 : kTolF32;
}

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
    return ::testing::AssertionFailure()
           << "shape " << actual.shape().str() << ", expected " << expected.shape().str();
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

Tensor labels_tensor(std::initializer_list<int> values) {
  Tensor t({static_cast<std::int64_t>(values.size())}, DType::kI32);
  std::int64_t i = 0;
  for (int v : values) t.set(i++, v);
  return t;
}

const DType kFloatTypes[] = {DType::kF64, DType::kF32};

std::int64_t out_size(std::int64_t in, int k, int s, int p) {
  return (in + 2 * std::int64_t{p} - k) / s + 1;
}

// ---------------------------------------------------------------------------------------------
// Nested-loop references, computed in double from the inputs' values
// ---------------------------------------------------------------------------------------------

// conv2d: y[n, o, i, j] = b[o] + sum over c, ky, kx of
// x[n, g*C/G + c, i*sh - ph + ky*dh, j*sw - pw + kx*dw] * w[o, c, ky, kx], with g = o / (OC/G)
// the group of output channel o and c over its C/G input channels, skipping positions outside
// the input (zero padding).
Tensor reference_conv2d(const OpCase& c, std::span<const Tensor> in) {
  const Tensor& x = in[0];  // [N, C, H, W]
  const Tensor& w = in[1];  // [OC, C, KH, KW]
  const Tensor* b = in.size() > 2 ? &in[2] : nullptr;
  const Conv2dOptions& o = std::get<Conv2dOptions>(c.options);
  const std::int64_t nb = x.shape()[0], ch = x.shape()[1], h = x.shape()[2], wd = x.shape()[3];
  const std::int64_t kh = w.shape()[2], kw = w.shape()[3];
  const int sh = o.stride.h, sw = o.stride.w, ph = o.padding.h, pw = o.padding.w;
  const int dh = o.dilation.h, dw = o.dilation.w;
  const std::int64_t cg = ch / o.groups, ocg = w.shape()[0] / o.groups;
  EXPECT_EQ(w.shape()[1], cg);
  const Shape ys{nb, w.shape()[0], out_size(h, static_cast<int>(dh * (kh - 1) + 1), sh, ph),
                 out_size(wd, static_cast<int>(dw * (kw - 1) + 1), sw, pw)};
  Tensor y(ys, DType::kF64);
  for (std::int64_t n = 0; n < ys[0]; ++n) {
    for (std::int64_t oc = 0; oc < ys[1]; ++oc) {
      for (std::int64_t i = 0; i < ys[2]; ++i) {
        for (std::int64_t j = 0; j < ys[3]; ++j) {
          double acc = b ? b->at(oc) : 0.0;
          for (std::int64_t ci = 0; ci < cg; ++ci) {
            const std::int64_t c_in = oc / ocg * cg + ci;
            for (std::int64_t ky = 0; ky < kh; ++ky) {
              for (std::int64_t kx = 0; kx < kw; ++kx) {
                const std::int64_t iy = i * sh - ph + ky * dh;
                const std::int64_t ix = j * sw - pw + kx * dw;
                if (iy < 0 || iy >= h || ix < 0 || ix >= wd) continue;
                acc += x.at(((n * ch + c_in) * h + iy) * wd + ix) *
                       w.at(((oc * cg + ci) * kh + ky) * kw + kx);
              }
            }
          }
          y.set(((n * ys[1] + oc) * ys[2] + i) * ys[3] + j, acc);
        }
      }
    }
  }
  return y;
}

// Average pooling: the sum of the window's in-image cells divided by KH*KW (padded cells count
// as zeros). Max pooling: the maximum over the window's in-image cells (padding ignored).
Tensor reference_pool2d(const OpCase& c, std::span<const Tensor> in, bool max) {
  const Tensor& x = in[0];  // [N, C, H, W]
  const Pool2dOptions& o = std::get<Pool2dOptions>(c.options);
  const int kh = o.kernel.h, kw = o.kernel.w, ph = o.padding.h, pw = o.padding.w;
  const int sh = o.stride.h ? o.stride.h : kh, sw = o.stride.w ? o.stride.w : kw;
  const std::int64_t ch = x.shape()[1], h = x.shape()[2], w = x.shape()[3];
  const Shape ys{x.shape()[0], ch, out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)};
  Tensor y(ys, DType::kF64);
  for (std::int64_t n = 0; n < ys[0]; ++n) {
    for (std::int64_t ci = 0; ci < ys[1]; ++ci) {
      for (std::int64_t i = 0; i < ys[2]; ++i) {
        for (std::int64_t j = 0; j < ys[3]; ++j) {
          double sum = 0.0;
          double best = -std::numeric_limits<double>::infinity();
          for (std::int64_t ky = 0; ky < kh; ++ky) {
            for (std::int64_t kx = 0; kx < kw; ++kx) {
              const std::int64_t iy = i * sh - ph + ky;
              const std::int64_t ix = j * sw - pw + kx;
              if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
              const double v = x.at(((n * ch + ci) * h + iy) * w + ix);
              sum += v;
              best = std::max(best, v);
            }
          }
          y.set(((n * ys[1] + ci) * ys[2] + i) * ys[3] + j,
                max ? best : sum / static_cast<double>(kh * kw));
        }
      }
    }
  }
  return y;
}

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

// Batched: out[i..., :, :] = reference_matmul of the operands' matrices at batch index i...,
// an operand's batch axis of size 1 (or missing: aligned at the right) read at index 0.
Tensor reference_batched_matmul(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  const Shape& sa = a.shape();
  const Shape& sb = b.shape();
  if (sa.rank() == 2 && sb.rank() == 2) return reference_matmul(a, b, ta, tb);
  const int br = std::max(sa.rank(), sb.rank()) - 2;
  std::vector<std::int64_t> batch(static_cast<std::size_t>(br));
  auto dim = [br](const Shape& s, int i) {  // batch axis i of s, aligned at the right
    const int j = i - (br - (s.rank() - 2));
    return j >= 0 ? s[j] : std::int64_t{1};
  };
  for (int i = 0; i < br; ++i) {
    batch[static_cast<std::size_t>(i)] = std::max(dim(sa, i), dim(sb, i));
  }
  const std::int64_t a_mat = sa[sa.rank() - 2] * sa[sa.rank() - 1];
  const std::int64_t b_mat = sb[sb.rank() - 2] * sb[sb.rank() - 1];
  const Shape am{sa[sa.rank() - 2], sa[sa.rank() - 1]}, bm{sb[sb.rank() - 2], sb[sb.rank() - 1]};
  std::int64_t count = 1;
  for (const std::int64_t d : batch) count *= d;
  std::vector<std::int64_t> out_dims = batch;
  Tensor first = reference_matmul(Tensor(am, DType::kF64), Tensor(bm, DType::kF64), ta, tb);
  out_dims.push_back(first.shape()[0]);
  out_dims.push_back(first.shape()[1]);
  Tensor out(Shape(std::span<const std::int64_t>(out_dims)), DType::kF64);
  const std::int64_t c_mat = first.numel();
  for (std::int64_t i = 0; i < count; ++i) {
    std::int64_t ia = 0, ib = 0, rest = i, sa_stride = 1, sb_stride = 1;
    for (int d = br - 1; d >= 0; --d) {
      const std::int64_t idx = rest % batch[static_cast<std::size_t>(d)];
      rest /= batch[static_cast<std::size_t>(d)];
      if (dim(sa, d) > 1) ia += idx * sa_stride;
      if (dim(sb, d) > 1) ib += idx * sb_stride;
      sa_stride *= dim(sa, d);
      sb_stride *= dim(sb, d);
    }
    Tensor ma(am, DType::kF64), mb(bm, DType::kF64);
    for (std::int64_t e = 0; e < a_mat; ++e) ma.set(e, a.at(ia * a_mat + e));
    for (std::int64_t e = 0; e < b_mat; ++e) mb.set(e, b.at(ib * b_mat + e));
    const Tensor c = reference_matmul(ma, mb, ta, tb);
    for (std::int64_t e = 0; e < c_mat; ++e) out.set(i * c_mat + e, c.at(e));
  }
  return out;
}

// softmax_cross_entropy: the mean over rows of log(sum_j exp(x[i, j])) - x[i, label[i]].
Tensor reference_cross_entropy(const Tensor& logits, const Tensor& labels) {
  const std::int64_t rows = logits.shape()[0], cols = logits.shape()[1];
  double total = 0;
  for (std::int64_t i = 0; i < rows; ++i) {
    double s = 0;
    for (std::int64_t j = 0; j < cols; ++j) s += std::exp(logits.at(i * cols + j));
    total += std::log(s) - logits.at(i * cols + static_cast<std::int64_t>(labels.at(i)));
  }
  Tensor loss({}, DType::kF64);
  loss.set(0, total / static_cast<double>(rows));
  return loss;
}

using Reference = Tensor (*)(const OpCase&, std::span<const Tensor>);

// The ops with a reference; a case of another op is checked against its own float64 values.
const std::map<std::string, Reference> kReferences = {
    {"conv2d", &reference_conv2d},
    {"avg_pool2d",
     [](const OpCase& c, std::span<const Tensor> in) { return reference_pool2d(c, in, false); }},
    {"max_pool2d",
     [](const OpCase& c, std::span<const Tensor> in) { return reference_pool2d(c, in, true); }},
    {"matmul",
     [](const OpCase& c, std::span<const Tensor> in) {
       const MatmulOptions& o = std::get<MatmulOptions>(c.options);
       return reference_batched_matmul(in[0], in[1], o.transpose_a, o.transpose_b);
     }},
    {"batched_matmul",
     [](const OpCase& c, std::span<const Tensor> in) {
       const MatmulOptions& o = std::get<MatmulOptions>(c.options);
       return reference_batched_matmul(in[0], in[1], o.transpose_a, o.transpose_b);
     }},
    {"softmax_cross_entropy",
     [](const OpCase&, std::span<const Tensor> in) {
       return reference_cross_entropy(in[0], in[1]);
     }},
};

// ---------------------------------------------------------------------------------------------
// The op table
// ---------------------------------------------------------------------------------------------

// The case's value in `dtype` on the given inputs.
Tensor run_case(const OpCase& c, DType dtype, const std::vector<Tensor>& inputs) {
  tbgrad::testing::CaseGraph cg = tbgrad::testing::build_case(c, dtype);
  EXPECT_EQ(cg.out.dtype(), dtype) << c.id();
  Executor ex(cg.graph, {cg.out});
  for (std::size_t i = 0; i < inputs.size(); ++i) ex.bind(cg.inputs[i], inputs[i]);
  ex.run();
  return ex.get(cg.out).clone();
}

// The same values in float64 (labels stay int32).
std::vector<Tensor> widened(const std::vector<Tensor>& inputs) {
  std::vector<Tensor> out;
  for (const Tensor& t : inputs) {
    if (t.dtype() != DType::kF32) {
      out.push_back(t);
      continue;
    }
    Tensor w(t.shape(), DType::kF64);
    for (std::int64_t i = 0; i < t.numel(); ++i) w.set(i, t.at(i));
    out.push_back(w);
  }
  return out;
}

struct ForwardParam {
  const OpCase* c;
  DType dtype;
};

void PrintTo(const ForwardParam& p, std::ostream* os) {
  *os << p.c->id() << " " << tbgrad::dtype_name(p.dtype);
}

std::vector<ForwardParam> cases_with_reference() {
  std::vector<ForwardParam> params;
  for (const OpCase& c : tbgrad::testing::op_cases()) {
    if (!kReferences.count(c.op)) continue;
    for (DType t : kFloatTypes) params.push_back({&c, t});
  }
  return params;
}

std::vector<const OpCase*> cases_without_reference() {
  std::vector<const OpCase*> cases;
  for (const OpCase& c : tbgrad::testing::op_cases()) {
    if (!kReferences.count(c.op)) cases.push_back(&c);
  }
  return cases;
}

class OpForward : public ::testing::TestWithParam<ForwardParam> {};

TEST_P(OpForward, MatchesNestedLoopReference) {
  const auto& [c, dtype] = GetParam();
  const std::vector<Tensor> inputs = tbgrad::testing::make_inputs(*c, dtype);
  EXPECT_TRUE(
      AllNear(run_case(*c, dtype, inputs), kReferences.at(c->op)(*c, inputs), tolerance(dtype)))
      << c->id();
}

INSTANTIATE_TEST_SUITE_P(Table, OpForward, ::testing::ValuesIn(cases_with_reference()),
                         [](const ::testing::TestParamInfo<ForwardParam>& info) {
                           return info.param.c->id() + "_" + tbgrad::dtype_name(info.param.dtype);
                         });

class OpForwardFloat32 : public ::testing::TestWithParam<const OpCase*> {};

TEST_P(OpForwardFloat32, MatchesFloat64OnTheSameInputs) {
  const OpCase& c = *GetParam();
  const std::vector<Tensor> inputs = tbgrad::testing::make_inputs(c, DType::kF32);
  const Tensor expected = run_case(c, DType::kF64, widened(inputs));
  double largest = 1.0;
  for (std::int64_t i = 0; i < expected.numel(); ++i) {
    largest = std::max(largest, std::abs(expected.at(i)));
  }
  EXPECT_TRUE(AllNear(run_case(c, DType::kF32, inputs), expected, kTolF32 * largest)) << c.id();
}

INSTANTIATE_TEST_SUITE_P(Table, OpForwardFloat32, ::testing::ValuesIn(cases_without_reference()),
                         [](const ::testing::TestParamInfo<const OpCase*>& info) {
                           return info.param->id();
                         });

// ---------------------------------------------------------------------------------------------
// conv2d by hand
// ---------------------------------------------------------------------------------------------

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
// Pooling by hand
// ---------------------------------------------------------------------------------------------

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
                       {{x, f64_tensor({1, 1, 4, 4}, {1, 9, 2, 3,  //
                                                      4, 5, 8, 6,  //
                                                      7, 0, 1, 1,  //
                                                      2, 3, 4, 9})}});
  EXPECT_TRUE(AllNear(y, f64_tensor({1, 1, 2, 2}, {9, 8, 7, 9}), kTolF64));
}

// ---------------------------------------------------------------------------------------------
// linear: matmul and a broadcast add
// ---------------------------------------------------------------------------------------------

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
// softmax_cross_entropy: huge logits and label errors
// ---------------------------------------------------------------------------------------------

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
  EXPECT_TRUE(AllNear(y, f64_tensor({3, 4}, {1, 10, 100, 1000, 2, 20, 200, 2000, 3, 30, 300, 3000}),
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


// ---------------------------------------------------------------------------------------------
// ReLU propagates NaN (torch.relu), in its own kernel and inside its producers' (Note
// [Epilogues]), at every SIMD target this binary runs at (tests/isa_main.cpp)
// ---------------------------------------------------------------------------------------------

// Bytes of a tensor, to compare fused and unfused runs bit for bit (NaN != NaN as doubles).
std::vector<unsigned char> tensor_bytes(const Tensor& t) {
  const auto* p = static_cast<const unsigned char*>(t.raw());
  return {p, p + t.nbytes()};
}

TEST(ReluNaN, ReluOfNaNIsNaNAndItsGradientPassesThrough) {
  for (DType dtype : kFloatTypes) {
    // 40001 elements: the parallel path and every vector remainder.
    const std::int64_t n = 40001;
    Graph g(dtype);
    Value x = g.input("x", {n});
    Value gy = g.input("gy", {n});
    Value y = tbgrad::relu(x);
    Value gx = tbgrad::relu_backward(y, gy);
    tbgrad::nn::Rng rng(3);
    Tensor xv = random_tensor({n}, dtype, rng);
    Tensor gv = random_tensor({n}, dtype, rng);
    const double nan = std::numeric_limits<double>::quiet_NaN();
    for (std::int64_t i = 0; i < n; i += 97) xv.set(i, nan);
    Executor ex(g, {y, gx});
    ex.bind(x, xv).bind(gy, gv).run();
    for (std::int64_t i = 0; i < n; ++i) {
      const double v = xv.at(i);
      if (std::isnan(v)) {
        ASSERT_TRUE(std::isnan(ex[y].at(i))) << i << " " << tbgrad::dtype_name(dtype);
        // torch's relu backward: 0 where the output is <= 0, else the gradient; NaN passes it.
        ASSERT_EQ(ex[gx].at(i), gv.at(i)) << i;
      } else {
        ASSERT_EQ(ex[y].at(i), v > 0 ? v : 0.0) << i;
        ASSERT_EQ(ex[gx].at(i), v > 0 ? gv.at(i) : 0.0) << i;
      }
    }
  }
}

TEST(ReluNaN, MatmulThenReluKeepsNaN) {
  for (DType dtype : kFloatTypes) {
    Graph g(dtype);
    Value a = g.input("a", {9, 17});
    Value b = g.input("b", {17, 33});
    tbgrad::nn::Rng rng(4);
    Tensor av = random_tensor({9, 17}, dtype, rng);
    Tensor bv = random_tensor({17, 33}, dtype, rng);
    av.set(2 * 17 + 5, std::numeric_limits<double>::quiet_NaN());  // row 2 of the product
    Value y = tbgrad::relu(tbgrad::matmul(a, b));
    const Tensor out = run_value(y, {{a, av}, {b, bv}});
    for (std::int64_t i = 0; i < 9; ++i) {
      for (std::int64_t j = 0; j < 33; ++j) {
        EXPECT_EQ(std::isnan(out.at(i * 33 + j)), i == 2) << i << ", " << j;
      }
    }
  }
}

// conv2d + relu and avg_pool2d_backward + relu_backward run fused and unfused: NaN where the
// input's NaN reaches, the same bits either way.
TEST(ReluNaN, FusedAfterConv2dAndPoolingGradientGivesTheUnfusedNaNs) {
  for (DType dtype : kFloatTypes) {
    // Stride 1 (the wide-plane kernel and its compaction) and stride 2 (the row kernel).
    for (int stride : {1, 2}) {
      Graph g(dtype);
      Value x = g.input("x", {2, 3, 12, 13});
      Value w = g.input("w", {5, 3, 3, 3});
      Value s = tbgrad::relu(tbgrad::conv2d(x, w, {.stride = stride, .padding = 1}));
      const Shape ss = s.shape();
      const tbgrad::Pool2dOptions po{.kernel = 1, .stride = 1};
      Value gy = g.input("gy", ss);
      Value gx = tbgrad::relu_backward(s, tbgrad::avg_pool2d_backward(gy, ss, po));
      Value total = tbgrad::add(tbgrad::sum(gx), tbgrad::sum(s));
      tbgrad::nn::Rng rng(5);
      Tensor xv = random_tensor({2, 3, 12, 13}, dtype, rng);
      Tensor wv = random_tensor({5, 3, 3, 3}, dtype, rng);
      Tensor gv = random_tensor(ss, dtype, rng);
      xv.set(((1 * 3 + 2) * 12 + 6) * 13 + 7, std::numeric_limits<double>::quiet_NaN());
      std::vector<unsigned char> bytes[2];
      for (const bool fuse : {true, false}) {
        Executor ex(g, {gx, total}, {.fuse = fuse});
        EXPECT_EQ(ex.num_fused(), fuse ? 2 : 0);
        ex.bind(x, xv).bind(w, wv).bind(gy, gv).run();
        std::int64_t nans = 0;
        for (std::int64_t i = 0; i < ss.numel(); ++i) {
          if (std::isnan(ex[gx].at(i))) ++nans;
        }
        // The NaN's 3x3 neighbourhood in image 1, in all 5 output channels: NaN outputs, whose
        // gradients are gy's values, not 0; gy has no NaN, so gx has none either.
        EXPECT_EQ(nans, 0);
        EXPECT_TRUE(std::isnan(ex[total].at(0)));
        bytes[fuse ? 0 : 1] = tensor_bytes(ex[gx]);
        std::int64_t nan_outputs = 0;
        Executor ex2(g, {s}, {.fuse = fuse});
        ex2.bind(x, xv).bind(w, wv).run();
        for (std::int64_t i = 0; i < ss.numel(); ++i) {
          if (std::isnan(ex2[s].at(i))) {
            ++nan_outputs;
            EXPECT_EQ(ex[gx].at(i), gv.at(i)) << i;
          }
        }
        // Stride 1: the 3x3 outputs around it; stride 2: output row 3, columns 3 and 4.
        EXPECT_EQ(nan_outputs, stride == 1 ? 5 * 9 : 5 * 2) << stride;
      }
      EXPECT_TRUE(bytes[0] == bytes[1]) << "stride " << stride << " " << tbgrad::dtype_name(dtype);
    }
  }
}

// A strided convolution runs as a stride-1 one whose kernel has zero taps (Note [Phases] in
// ops/conv2d_phase.hpp); 0 * NaN must not carry a NaN or an infinity where the strided
// convolution does not read it. A NaN and an infinity in the output gradient of 3x3 stride 2
// (and 1x1 stride 2) reach exactly the input positions of their windows, a NaN in x exactly the
// outputs whose windows hold it, as in PyTorch.
TEST(StridedConvNaN, NaNAndInfinityReachOnlyTheirWindows) {
  for (DType dtype : kFloatTypes) {
    for (int k : {3, 1}) {
      const int pad = k / 2;
      Graph g(dtype);
      Value gy = g.input("gy", {1, 3, 5, 5});
      Value w = g.input("w", {3, 2, k, k});
      Value x = g.input("x", {1, 2, 9, 9});
      Value gx = tbgrad::conv2d_backward_input(gy, w, Shape{1, 2, 9, 9}, {.stride = 2, .padding = pad});
      Value y = tbgrad::conv2d(x, w, {.stride = 2, .padding = pad});
      tbgrad::nn::Rng rng(3);
      Tensor gv = random_tensor({1, 3, 5, 5}, dtype, rng);
      Tensor wv = random_tensor({3, 2, k, k}, dtype, rng);
      Tensor xv = random_tensor({1, 2, 9, 9}, dtype, rng);
      gv.set((1 * 5 + 2) * 5 + 3, std::numeric_limits<double>::quiet_NaN());  // channel 1, (2, 3)
      gv.set((2 * 5 + 0) * 5 + 0, std::numeric_limits<double>::infinity());   // channel 2, (0, 0)
      xv.set((1 * 9 + 4) * 9 + 6, std::numeric_limits<double>::quiet_NaN());  // channel 1, (4, 6)
      Executor ex(g, {gx, y});
      ex.bind(gy, gv).bind(w, wv).bind(x, xv).run();
      for (std::int64_t c = 0; c < 2; ++c) {
        for (std::int64_t h = 0; h < 9; ++h) {
          for (std::int64_t v = 0; v < 9; ++v) {
            // Read by output (i, j) when 2i - pad <= h < 2i - pad + k (likewise v).
            auto reads = [&](std::int64_t i, std::int64_t j) {
              return 2 * i - pad <= h && h < 2 * i - pad + k && 2 * j - pad <= v &&
                     v < 2 * j - pad + k;
            };
            const bool nan = reads(2, 3) || reads(0, 0);  // inf * a weight of either sign, summed
            const double got = ex[gx].at((c * 9 + h) * 9 + v);
            if (reads(2, 3)) {
              EXPECT_TRUE(std::isnan(got)) << k << " " << c << " " << h << " " << v;
            } else if (!nan) {
              EXPECT_TRUE(std::isfinite(got)) << k << " " << c << " " << h << " " << v;
            }
          }
        }
      }
      for (std::int64_t o = 0; o < 3; ++o) {
        for (std::int64_t i = 0; i < 5; ++i) {
          for (std::int64_t j = 0; j < 5; ++j) {
            const bool reads = 2 * i - pad <= 4 && 4 < 2 * i - pad + k && 2 * j - pad <= 6 &&
                               6 < 2 * j - pad + k;
            EXPECT_EQ(std::isnan(ex[y].at((o * 5 + i) * 5 + j)), reads) << k << " " << i << " " << j;
          }
        }
      }
    }
  }
}

}  // namespace
