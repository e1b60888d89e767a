// The elementwise math ops (ops/math.hpp) at the inputs the op table keeps away from: NaN, ties,
// kinks, poles, infinities and the softplus threshold. Each case's value and its gradients of
// sum(out) are torch 1.13's, computed once with /usr/bin/python3 (torch.float64) and written
// down here; tbgrad must give the same, NaN where torch has NaN. Second order and the ordinary
// inputs are in the op table (tests/op_cases_math.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <ostream>
#include <span>
#include <string>
#include <tbgrad.hpp>
#include <vector>

namespace {

using tbgrad::DType;
using tbgrad::Executor;
using tbgrad::Graph;
using tbgrad::Shape;
using tbgrad::Tensor;
using tbgrad::Value;
using Inputs = std::span<const Value>;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

enum class MaskKind { kNone, kI32, kFloat };

struct TorchCase {
  const char* name;
  Value (*build)(Value mask, Inputs in);
  std::vector<std::vector<double>> inputs;  // the differentiated inputs, all of one length
  std::vector<double> mask;                 // where's mask (kI32: whole numbers)
  MaskKind mask_kind;
  std::vector<double> value;               // torch's value
  std::vector<std::vector<double>> grads;  // torch's gradients of sum(value), by input
};

void PrintTo(const TorchCase& c, std::ostream* os) {
  *os << c.name;
}

// torch's values (tests/test_math_ops.cpp's header says how they were made).
const TorchCase kCases[] = {
    {"exp",
     [](Value mask, Inputs in) {
       (void)mask;
       return tbgrad::exp(in[0]);
     },
     {{kNaN, -kInf, 0.0, 800.0}},
     {},
     MaskKind::kNone,
     {kNaN, 0.0, 1.0, kInf},
     {{kNaN, 0.0, 1.0, kInf}}},
    {"log",
     [](Value mask, Inputs in) {
       (void)mask;
       return tbgrad::log(in[0]);
     },
     {{0.0, -1.0, kNaN, 2.0}},
     {},
     MaskKind::kNone,
     {-kInf, kNaN, kNaN, 0.6931471805599453},
     {{kInf, -1.0, kNaN, 0.5}}},
    {"sqrt",
     [](Value mask, Inputs in) {
       (void)mask;
       return tbgrad::sqrt(in[0]);
     },
     {{0.0, -1.0, kNaN, 4.0}},
     {},
     MaskKind::kNone,
     {0.0, kNaN, kNaN, 2.0},
     {{kInf, kNaN, kNaN, 0.25}}},
    {"rsqrt",
     [](Value mask, Inputs in) {
       (void)mask;
       return tbgrad::rsqrt(in[0]);
     },
     {{0.0, -1.0, kNaN, 4.0}},
     {},
     MaskKind::kNone,
     {kInf, kNaN, kNaN, 0.5},
     {{-kInf, kNaN, kNaN, -0.0625}}},
    {"neg",
     [](Value mask, Inputs in) {
       (void)mask;
       return tbgrad::neg(in[0]);
     },
     {{kNaN, 0.0, 2.0}},
     {},
     MaskKind::kNone,
     {kNaN, -0.0, -2.0},
     {{-1.0, -1.0, -1.0}}},
    {"abs",
     [](Value mask, Inputs in) {
       (void)mask;
       return tbgrad::abs(in[0]);
     },
     {{0.0, -0.0, kNaN, -2.0, 3.0}},
     {},
     MaskKind::kNone,
     {0.0, 0.0, kNaN, 2.0, 3.0},
     {{0.0, 0.0, 0.0, -1.0, 1.0}}},
    {"pow_0",
     [](Value mask, Inputs in) {
       (void)mask;
       return tbgrad::pow(in[0], 0.0);
     },
     {{0.0, 1.0, kNaN, -1.0, kInf}},
     {},
     MaskKind::kNone,
     {1.0, 1.0, 1.0, 1.0, 1.0},
     {{0.0, 0.0, 0.0, 0.0, 0.0}}},
    {"pow_1",
     [](Value mask, Inputs in) {
       (void)mask;
       return tbgrad::pow(in[0], 1.0);
     },
     {{0.0, 1.0, kNaN, -1.0, kInf}},
     {},
     MaskKind::kNone,
     {0.0, 1.0, kNaN, -1.0, kInf},
     {{1.0, 1.0, 1.0, 1.0, 1.0}}},
    {"pow_2",
     [](Value mask, Inputs in) {
       (void)mask;
       return tbgrad::pow(in[0], 2.0);
     },
     {{0.0, 1.0, kNaN, -1.5}},
     {},
     MaskKind::kNone,
     {0.0, 1.0, kNaN, 2.25},
     {{0.0, 2.0, kNaN, -3.0}}},
    {"pow_0_5",
     [](Value mask, Inputs in) {
       (void)mask;
       return tbgrad::pow(in[0], 0.5);
     },
     {{0.0, 1.0, kNaN, -1.0}},
     {},
     MaskKind::kNone,
     {0.0, 1.0, kNaN, kNaN},
     {{kInf, 0.5, kNaN, kNaN}}},
    {"pow_m1",
     [](Value mask, Inputs in) {
       (void)mask;
       return tbgrad::pow(in[0], -1.0);
     },
     {{0.0, 1.0, kNaN, -1.0}},
     {},
     MaskKind::kNone,
     {kInf, 1.0, kNaN, -1.0},
     {{-kInf, -1.0, kNaN, -1.0}}},
    {"pow_m2_5",
     [](Value mask, Inputs in) {
       (void)mask;
       return tbgrad::pow(in[0], -2.5);
     },
     {{0.0, 1.0, kNaN, -1.0}},
     {},
     MaskKind::kNone,
     {kInf, 1.0, kNaN, kNaN},
     {{-kInf, -2.5, kNaN, kNaN}}},
    {"clamp",
     [](Value mask, Inputs in) {
       (void)mask;
       return tbgrad::clamp(in[0], -1.0, 1.0);
     },
     {{-2.0, -1.0, 0.0, 1.0, 2.0, kNaN}},
     {},
     MaskKind::kNone,
     {-1.0, -1.0, 0.0, 1.0, 1.0, kNaN},
     {{0.0, 1.0, 1.0, 1.0, 0.0, 0.0}}},
    {"clamp_lo_above_hi",
     [](Value mask, Inputs in) {
       (void)mask;
       return tbgrad::clamp(in[0], 1.0, -1.0);
     },
     {{-2.0, -1.0, 0.0, 1.0, 2.0, kNaN}},
     {},
     MaskKind::kNone,
     {-1.0, -1.0, -1.0, -1.0, -1.0, kNaN},
     {{0.0, 0.0, 0.0, 0.0, 0.0, 0.0}}},
    {"clamp_nan_lo",
     [](Value mask, Inputs in) {
       (void)mask;
       return tbgrad::clamp(in[0], kNaN, 1.0);
     },
     {{-2.0, 0.0, 2.0, kNaN}},
     {},
     MaskKind::kNone,
     {kNaN, kNaN, kNaN, kNaN},
     {{0.0, 0.0, 0.0, 0.0}}},
    {"clamp_nan_hi",
     [](Value mask, Inputs in) {
       (void)mask;
       return tbgrad::clamp(in[0], -1.0, kNaN);
     },
     {{-2.0, 0.0, 2.0, kNaN}},
     {},
     MaskKind::kNone,
     {kNaN, kNaN, kNaN, kNaN},
     {{0.0, 0.0, 0.0, 0.0}}},
    {"clamp_max_only",
     [](Value mask, Inputs in) {
       (void)mask;
       return tbgrad::clamp(in[0], -kInf, 0.5);
     },
     {{-kInf, 0.0, 0.5, 2.0, kNaN}},
     {},
     MaskKind::kNone,
     {-kInf, 0.0, 0.5, 0.5, kNaN},
     {{1.0, 1.0, 1.0, 0.0, 0.0}}},
    {"leaky_relu",
     [](Value mask, Inputs in) {
       (void)mask;
       return tbgrad::leaky_relu(in[0], 0.1);
     },
     {{-1.0, 0.0, -0.0, 1.0, kNaN}},
     {},
     MaskKind::kNone,
     {-0.1, 0.0, -0.0, 1.0, kNaN},
     {{0.1, 0.1, 0.1, 1.0, 0.1}}},
    {"gelu",
     [](Value mask, Inputs in) {
       (void)mask;
       return tbgrad::gelu(in[0]);
     },
     {{-1.0, 0.0, 1.0, kNaN, -40.0, 40.0, -kInf, kInf}},
     {},
     MaskKind::kNone,
     {-0.15865525393145702, 0.0, 0.841344746068543, kNaN, -0.0, 40.0, kNaN, kInf},
     {{-0.08331547058768635, 0.5, 1.0833154705876864, kNaN, 0.0, 1.0, kNaN, kNaN}}},
    {"gelu_tanh",
     [](Value mask, Inputs in) {
       (void)mask;
       return tbgrad::gelu(in[0], tbgrad::GeluApproximation::kTanh);
     },
     {{-1.0, 0.0, 1.0, kNaN, -40.0, 40.0}},
     {},
     MaskKind::kNone,
     {-0.15880800939172324, 0.0, 0.8411919906082768, kNaN, -0.0, 40.0},
     {{-0.08296408384578252, 0.5, 1.0829640838457826, kNaN, 0.0, 1.0}}},
    {"silu",
     [](Value mask, Inputs in) {
       (void)mask;
       return tbgrad::silu(in[0]);
     },
     {{-1.0, 0.0, 1.0, kNaN, -800.0, 800.0}},
     {},
     MaskKind::kNone,
     {-0.2689414213699951, 0.0, 0.7310585786300049, kNaN, -0.0, 800.0},
     {{0.07232948812851325, 0.5, 0.9276705118714869, kNaN, -0.0, 1.0}}},
    {"softplus",
     [](Value mask, Inputs in) {
       (void)mask;
       return tbgrad::softplus(in[0]);
     },
     {{-1.0, 0.0, 1.0, kNaN, 20.0, 20.5, -800.0, 800.0}},
     {},
     MaskKind::kNone,
     {0.31326168751822286, 0.6931471805599453, 1.3132616875182228, kNaN, 20.000000002061153, 20.5,
      0.0, 800.0},
     {{0.2689414213699951, 0.5, 0.7310585786300049, kNaN, 0.9999999979388464, 1.0, 0.0, 1.0}}},
    {"softplus_beta2_threshold3",
     [](Value mask, Inputs in) {
       (void)mask;
       return tbgrad::softplus(in[0], 2.0, 3.0);
     },
     {{1.5, 1.6, kNaN, -1.0}},
     {},
     MaskKind::kNone,
     {1.524293675786871, 1.6, kNaN, 0.06346400552148625},
     {{0.9525741268224333, 1.0, kNaN, 0.11920292202211755}}},
    {"div",
     [](Value mask, Inputs in) {
       (void)mask;
       return tbgrad::div(in[0], in[1]);
     },
     {{1.0, 0.0, kNaN, 1.0, -1.0, 3.0, kInf}, {0.0, 0.0, 1.0, kNaN, 0.0, -2.0, kInf}},
     {},
     MaskKind::kNone,
     {kInf, kNaN, kNaN, kNaN, -kInf, -1.5, kNaN},
     {{kInf, kInf, 1.0, kNaN, kInf, -0.5, 0.0}, {-kInf, kNaN, kNaN, kNaN, kInf, -0.75, kNaN}}},
    {"maximum",
     [](Value mask, Inputs in) {
       (void)mask;
       return tbgrad::maximum(in[0], in[1]);
     },
     {{1.0, 2.0, 3.0, kNaN, kNaN, 1.0, 0.5, -kInf}, {2.0, 2.0, 1.0, 1.0, kNaN, kNaN, 0.5, -kInf}},
     {},
     MaskKind::kNone,
     {2.0, 2.0, 3.0, kNaN, kNaN, kNaN, 0.5, -kInf},
     {{0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5}, {1.0, 0.5, 0.0, 1.0, 1.0, 1.0, 0.5, 0.5}}},
    {"minimum",
     [](Value mask, Inputs in) {
       (void)mask;
       return tbgrad::minimum(in[0], in[1]);
     },
     {{1.0, 2.0, 3.0, kNaN, kNaN, 1.0, 0.5, kInf}, {2.0, 2.0, 1.0, 1.0, kNaN, kNaN, 0.5, kInf}},
     {},
     MaskKind::kNone,
     {1.0, 2.0, 1.0, kNaN, kNaN, kNaN, 0.5, kInf},
     {{1.0, 0.5, 0.0, 1.0, 1.0, 1.0, 0.5, 0.5}, {0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5}}},
    {"where_i32_mask",
     [](Value mask, Inputs in) {
       (void)mask;
       return tbgrad::where(mask, in[0], in[1]);
     },
     {{1.0, kNaN, kNaN, 2.0}, {kNaN, 2.0, 3.0, kNaN}},
     {1.0, 0.0, 1.0, 0.0},
     MaskKind::kI32,
     {1.0, 2.0, kNaN, kNaN},
     {{1.0, 0.0, 1.0, 0.0}, {0.0, 1.0, 0.0, 1.0}}},
    {"where_float_mask",
     [](Value mask, Inputs in) {
       (void)mask;
       return tbgrad::where(mask, in[0], in[1]);
     },
     {{1.0, kNaN, kNaN, 2.0}, {kNaN, 2.0, 3.0, kNaN}},
     {kNaN, 0.0, 1.0, -0.0},
     MaskKind::kFloat,
     {1.0, 2.0, kNaN, kNaN},
     {{1.0, 0.0, 1.0, 0.0}, {0.0, 1.0, 0.0, 1.0}}},
};

bool same(double got, double want) {
  if (std::isnan(want)) return std::isnan(got);
  if (std::isinf(want)) return got == want;
  return std::abs(got - want) <= 1e-12 * std::max(1.0, std::abs(want));
}

::testing::AssertionResult SameValues(const Tensor& got, const std::vector<double>& want) {
  if (got.numel() != static_cast<std::int64_t>(want.size())) {
    return ::testing::AssertionFailure() << got.numel() << " elements, torch has " << want.size();
  }
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double g = got.at(static_cast<std::int64_t>(i));
    if (!same(g, want[i])) {
      return ::testing::AssertionFailure() << "element " << i << ": " << g << ", torch " << want[i];
    }
  }
  return ::testing::AssertionSuccess();
}

class MathOpsAgainstTorch : public ::testing::TestWithParam<TorchCase> {};

TEST_P(MathOpsAgainstTorch, ValueAndGradientsMatchTorchIncludingNaN) {
  const TorchCase& c = GetParam();
  Graph g(DType::kF64);
  const auto n = static_cast<std::int64_t>(c.inputs[0].size());
  std::vector<Value> xs;
  std::vector<Tensor> values;
  for (std::size_t k = 0; k < c.inputs.size(); ++k) {
    xs.push_back(g.input("x" + std::to_string(k), {n}));
    Tensor t(Shape{n}, DType::kF64);
    for (std::int64_t i = 0; i < n; ++i) t.set(i, c.inputs[k][static_cast<std::size_t>(i)]);
    values.push_back(t);
  }
  Value mask;
  Tensor mask_value;
  if (c.mask_kind != MaskKind::kNone) {
    const DType dt = c.mask_kind == MaskKind::kI32 ? DType::kI32 : DType::kF64;
    mask = g.input("mask", {n}, dt);
    mask_value = Tensor(Shape{n}, dt);
    for (std::int64_t i = 0; i < n; ++i) mask_value.set(i, c.mask[static_cast<std::size_t>(i)]);
  }
  Value y = c.build(mask, xs);
  std::vector<Value> grads = tbgrad::grad(tbgrad::sum(y), std::span<const Value>(xs));
  std::vector<Value> outs = {y};
  outs.insert(outs.end(), grads.begin(), grads.end());
  Executor ex(g, outs);
  for (std::size_t k = 0; k < xs.size(); ++k) ex.bind(xs[k], values[k]);
  if (mask.valid()) ex.bind(mask, mask_value);
  ex.run();
  EXPECT_TRUE(SameValues(ex.get(y), c.value)) << "value";
  for (std::size_t k = 0; k < grads.size(); ++k) {
    EXPECT_TRUE(SameValues(ex.get(grads[k]), c.grads[k])) << "gradient of input " << k;
  }
}

INSTANTIATE_TEST_SUITE_P(EdgeInputs, MathOpsAgainstTorch, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<TorchCase>& info) {
                           return std::string(info.param.name);
                         });

}  // namespace
