// batch_norm's modes and running statistics, dropout's masks, and both through nn::Trainer,
// nn::Evaluator and checkpoints (Note [Run info] in graph/op.hpp, Note [Train and eval modes]
// in nn/train.hpp, docs/design.md Note [Batch statistics]).
//
// The op table (tests/op_cases_bn.cpp) checks training mode's values and gradients against
// PyTorch; here: the running statistics' update over two training runs and evaluation mode's
// values against torch.nn.functional.batch_norm (Python with torch, as tests/test_ops_torch.cpp
// finds it; skipped without one unless $CI is set), evaluation mode's gradients against finite
// differences, bits across thread counts and SIMD targets, dropout's masks across threads and micro-batch splits.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <tbgrad.hpp>
#include <thread>
#include <vector>

#include "run_command.hpp"
#include "thread_ranks.hpp"

namespace {

namespace fs = std::filesystem;
using namespace tbgrad;

Tensor random_tensor(const Shape& shape, DType dtype, std::uint64_t seed, double lo = -1.0,
                     double hi = 1.0) {
  nn::Rng rng(seed);
  Tensor t(shape, dtype);
  nn::uniform(t, lo, hi, rng);
  return t;
}

std::vector<double> values(const Tensor& t) {
  std::vector<double> v;
  for (std::int64_t i = 0; i < t.numel(); ++i) v.push_back(t.at(i));
  return v;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

bool in_ci() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && *ci != '\0' && std::string(ci) != "false" && std::string(ci) != "0";
}

// A batch_norm graph over a [N, C, H, W] input with constant parameters and running statistics
// (the running statistics' tensors are the ones the kernel updates).
struct BnGraph {
  Graph g;
  Value x, y;
  Tensor gamma, beta, rm, rv;
  BnGraph(const Shape& xs, DType dtype, BatchNormOptions o, std::uint64_t seed) : g(dtype) {
    const Shape cs{xs[1]};
    gamma = random_tensor(cs, dtype, seed, 0.5, 1.5);
    beta = random_tensor(cs, dtype, seed + 1);
    rm = random_tensor(cs, dtype, seed + 2);
    rv = random_tensor(cs, dtype, seed + 3, 0.5, 1.5);
    x = g.input("x", xs);
    y = batch_norm(x, g.constant(gamma, "gamma"), g.constant(beta, "beta"),
                   g.constant(rm, "rm"), g.constant(rv, "rv"), o);
  }
};

// ---------------------------------------------------------------------------------------------
// Against PyTorch: the running statistics after two training runs, and evaluation mode
// ---------------------------------------------------------------------------------------------

const char* const kScript = R"PY(
import sys
try:
    import torch
    import torch.nn.functional as F
except ImportError:
    sys.exit(3)
vals = {}
for line in open(sys.argv[1]):
    name, *nums = line.split()
    vals[name] = [float.fromhex(n) for n in nums]
shape = [int(v) for v in vals["shape"]]
momentum, eps = vals["options"]
dtype = torch.float64 if vals["dtype"][0] == 64 else torch.float32
t = lambda name: torch.tensor(vals[name], dtype=torch.float64).to(dtype)
gamma, beta, rm, rv = t("gamma"), t("beta"), t("rm"), t("rv")
F.batch_norm(t("x1").reshape(shape), rm, rv, gamma, beta, training=True, momentum=momentum, eps=eps)
F.batch_norm(t("x2").reshape(shape), rm, rv, gamma, beta, training=True, momentum=momentum, eps=eps)
y = F.batch_norm(t("x3").reshape(shape), rm, rv, gamma, beta, training=False, momentum=momentum,
                 eps=eps)
for name, v in (("rm", rm), ("rv", rv), ("y", y)):
    print(name, *[float(e).hex() for e in v.to(torch.float64).flatten().tolist()])
)PY";

std::string hex(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%a", v);
  return buf;
}

void write_line(std::ostream& out, const std::string& name, const std::vector<double>& v) {
  out << name;
  for (double e : v) out << ' ' << hex(e);
  out << '\n';
}

// Runs kScript on `input`; the printed tensors by name. Sets `skip` when no Python has torch.
std::map<std::string, std::vector<double>> torch_results(const fs::path& input, std::string* skip) {
  const fs::path script = input.parent_path() / "bn_reference.py";
  std::ofstream(script) << kScript;
  std::vector<std::string> pythons = {"python3", "/usr/bin/python3"};
  if (const char* p = std::getenv("TBGRAD_PYTHON"); p != nullptr && *p != '\0') pythons = {p};
  std::string tried;
  for (const std::string& python : pythons) {
    const auto run = tbgrad::testing::run_command(python + " '" + script.string() + "' '" +
                                          input.string() + "'");
    if (run.code == 0) {
      std::map<std::string, std::vector<double>> out;
      std::istringstream lines(run.out);
      std::string line;
      while (std::getline(lines, line)) {
        std::istringstream words(line);
        std::string name, word;
        words >> name;
        while (words >> word) out[name].push_back(std::strtod(word.c_str(), nullptr));
      }
      return out;
    }
    tried += " " + python + ": exit " + std::to_string(run.code) + " " + run.out;
    if (run.code != 127 && run.code != 3) {
      ADD_FAILURE() << "the reference script failed:" << tried;
      return {};
    }
  }
  *skip = "no Python with PyTorch:" + tried;
  return {};
}

class BatchNormAgainstTorch : public ::testing::TestWithParam<DType> {};

TEST_P(BatchNormAgainstTorch, RunningStatisticsAfterTwoStepsAndEvaluationMode) {
  const DType dtype = GetParam();
  const Shape xs{6, 3, 4, 5};
  const BatchNormOptions o{.momentum = 0.25, .eps = 1e-3};
  BnGraph bn(xs, dtype, o, 11);
  const std::vector<double> rm0 = values(bn.rm), rv0 = values(bn.rv);
  Executor ex(bn.g, {bn.y});
  std::vector<Tensor> xsv;
  for (std::uint64_t k = 0; k < 3; ++k) xsv.push_back(random_tensor(xs, dtype, 20 + k, -1, 3));
  ex.bind(bn.x, xsv[0]).run();
  ex.bind(bn.x, xsv[1]).run();
  const std::vector<double> rm2 = values(bn.rm), rv2 = values(bn.rv);
  ex.set_training(false);
  ex.bind(bn.x, xsv[2]).run();
  EXPECT_EQ(values(bn.rm), rm2) << "evaluation mode changed the running mean";
  EXPECT_EQ(values(bn.rv), rv2) << "evaluation mode changed the running variance";
  const std::vector<double> y = values(ex.get(bn.y));

  const fs::path dir =
      fs::temp_directory_path() / ("tbgrad_test_batch_norm_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  {
    std::ofstream in(dir / "input.txt");
    write_line(in, "shape", {6, 3, 4, 5});
    write_line(in, "options", {o.momentum, o.eps});
    write_line(in, "dtype", {dtype == DType::kF64 ? 64.0 : 32.0});
    write_line(in, "gamma", values(bn.gamma));
    write_line(in, "beta", values(bn.beta));
    write_line(in, "rm", rm0);
    write_line(in, "rv", rv0);
    for (int k = 0; k < 3; ++k) write_line(in, "x" + std::to_string(k + 1), values(xsv[k]));
  }
  std::string skip;
  const auto torch = torch_results(dir / "input.txt", &skip);
  fs::remove_all(dir);
  if (!skip.empty()) {
    if (in_ci()) FAIL() << "CI is set, so PyTorch is required: " << skip;
    GTEST_SKIP() << "skipped: " << skip;
  }
  const double tol = dtype == DType::kF64 ? 1e-12 : 1e-5;
  for (const auto& [name, ours] :
       {std::pair{std::string("rm"), rm2}, std::pair{std::string("rv"), rv2},
        std::pair{std::string("y"), y}}) {
    ASSERT_EQ(torch.count(name), 1u) << name;
    const std::vector<double>& theirs = torch.at(name);
    ASSERT_EQ(theirs.size(), ours.size()) << name;
    for (std::size_t i = 0; i < ours.size(); ++i) {
      EXPECT_NEAR(ours[i], theirs[i], tol * std::max(1.0, std::abs(theirs[i])))
          << name << "[" << i << "]";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, BatchNormAgainstTorch, ::testing::Values(DType::kF64, DType::kF32),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

// ---------------------------------------------------------------------------------------------
// Evaluation mode's gradients, by central differences (gradcheck's executors run in training
// mode, so this checks by hand)
// ---------------------------------------------------------------------------------------------

TEST(BatchNormEvaluation, GradientsMatchFiniteDifferences) {
  const Shape xs{3, 2, 3, 2};
  Graph g(DType::kF64);
  Value x = g.input("x", xs);
  Value gamma = g.param("gamma", {2}), beta = g.param("beta", {2});
  nn::Rng rng(5);
  nn::uniform(g.value(gamma), 0.5, 1.5, rng);
  nn::uniform(g.value(beta), -1, 1, rng);
  Tensor rm = random_tensor({2}, DType::kF64, 6), rv = random_tensor({2}, DType::kF64, 7, 0.5, 2);
  Value y = batch_norm(x, gamma, beta, g.constant(rm, "rm"), g.constant(rv, "rv"));
  Value loss = sum(mul(y, g.constant(random_tensor(xs, DType::kF64, 8), "R")));
  const std::vector<Value> wrt = {x, gamma, beta};
  const std::vector<Value> grads = grad(loss, wrt);
  Executor ex(g, {loss, grads});
  ex.set_training(false);
  Tensor xv = random_tensor(xs, DType::kF64, 9);
  ex.bind(x, xv).run();
  std::vector<Tensor> analytic;
  for (Value gv : grads) analytic.push_back(ex.get(gv).clone());
  const std::vector<Tensor> storage = {xv, g.value(gamma), g.value(beta)};
  for (std::size_t k = 0; k < wrt.size(); ++k) {
    const Tensor& t = storage[k];
    for (std::int64_t i = 0; i < t.numel(); ++i) {
      const double orig = t.at(i), eps = 1e-6;
      t.set(i, orig + eps);
      ex.run();
      const double fp = ex.get(loss).at(0);
      t.set(i, orig - eps);
      ex.run();
      const double fm = ex.get(loss).at(0);
      t.set(i, orig);
      EXPECT_NEAR(analytic[k].at(i), (fp - fm) / (2 * eps), 1e-6) << wrt[k].name() << "[" << i << "]";
    }
  }
  EXPECT_EQ(values(rm), values(random_tensor({2}, DType::kF64, 6))) << "evaluation updated rm";
}

// ---------------------------------------------------------------------------------------------
// Bits across thread counts
// ---------------------------------------------------------------------------------------------

TEST(BatchNormThreads, ForwardBackwardAndRunningStatisticsAreBitIdentical) {
  const Shape xs{16, 8, 20, 20};
  std::vector<std::vector<Tensor>> runs;
  for (int threads : {1, 2, 3}) {
    ThreadScope scope(threads);
    BnGraph bn(xs, DType::kF32, {}, 31);
    Value loss = sum(mul(bn.y, bn.g.constant(random_tensor(xs, DType::kF32, 32), "R")));
    Value gx = grad(loss, bn.x);
    Executor ex(bn.g, {bn.y, gx});
    Tensor xv = random_tensor(xs, DType::kF32, 33, -1, 3);
    ex.bind(bn.x, xv).run();
    runs.push_back({ex.get(bn.y).clone(), ex.get(gx).clone(), bn.rm.clone(), bn.rv.clone()});
  }
  for (std::size_t r = 1; r < runs.size(); ++r) {
    for (std::size_t k = 0; k < runs[0].size(); ++k) {
      EXPECT_TRUE(same_bits(runs[0][k], runs[r][k])) << "tensor " << k << ", run " << r;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Bits across SIMD targets (Note [Batch norm kernels] in ops/batch_norm_kernels.cpp)
// ---------------------------------------------------------------------------------------------

std::vector<std::byte> bytes_of(const Tensor& t) {
  const auto* p = static_cast<const std::byte*>(t.raw());
  return std::vector<std::byte>(p, p + t.nbytes());
}

// batch_norm's output, the gradients of its three backward kernels (x, gamma, beta) and the
// running statistics after a training run, then the output and gradients in evaluation mode.
std::vector<std::vector<std::byte>> bn_outputs(const Shape& xs, DType dtype) {
  Graph g(dtype);
  const Shape cs{xs[1]};
  Tensor rm = random_tensor(cs, dtype, 42), rv = random_tensor(cs, dtype, 43, 0.5, 1.5);
  Value x = g.input("x", xs);
  Value gamma = g.param("gamma", cs), beta = g.param("beta", cs);
  Value y = batch_norm(x, gamma, beta, g.constant(rm, "rm"), g.constant(rv, "rv"), {});
  Value loss = sum(mul(y, g.constant(random_tensor(xs, dtype, 44), "R")));
  std::vector<Value> outs = grad(loss, {x, gamma, beta});
  outs.insert(outs.begin(), y);
  Executor ex(g, outs);
  g.value(gamma).copy_from(random_tensor(cs, dtype, 45, 0.5, 1.5));
  g.value(beta).copy_from(random_tensor(cs, dtype, 46));
  Tensor xv = random_tensor(xs, dtype, 47, -1, 3);
  std::vector<std::vector<std::byte>> r;
  ex.bind(x, xv).run();
  for (Value v : outs) r.push_back(bytes_of(ex.get(v)));
  r.push_back(bytes_of(rm));
  r.push_back(bytes_of(rv));
  ex.set_training(false);
  ex.run();
  for (Value v : outs) r.push_back(bytes_of(ex.get(v)));
  return r;
}

TEST(BatchNormIsa, EveryTargetAndThreadCountGivesTheSameBits) {
  struct Case {
    Shape xs;
    DType dtype;
  };
  // Rows of 63 (7 sums of 8 and a tail of 7), 1 (tails only), 37 and 400 (split over threads).
  const Case cases[] = {{{6, 3, 9, 7}, DType::kF32}, {{6, 3, 9, 7}, DType::kF64},
                        {{10, 4}, DType::kF32},      {{3, 5, 37}, DType::kF64},
                        {{16, 8, 20, 20}, DType::kF32}};
  for (const Case& c : cases) {
    std::vector<std::vector<std::byte>> first;
    for (const std::string& t : supported_isas()) {
      set_max_isa(t);
      ASSERT_EQ(isa(), t);
      for (int threads : {1, 2, 3}) {
        ThreadScope scope(threads);
        const auto r = bn_outputs(c.xs, c.dtype);
        if (first.empty()) {
          first = r;
          continue;
        }
        ASSERT_EQ(r.size(), first.size());
        for (std::size_t k = 0; k < r.size(); ++k) {
          EXPECT_TRUE(r[k] == first[k]) << c.xs.str() << " " << dtype_name(c.dtype) << ": output "
                                        << k << " on " << t << " with " << threads << " threads";
        }
      }
    }
    set_max_isa("best");
  }
}

// ---------------------------------------------------------------------------------------------
// Dropout
// ---------------------------------------------------------------------------------------------

Tensor ones(const Shape& s) {
  Tensor t(s, DType::kF32);
  t.fill(1.0);
  return t;
}

// dropout(x) of a graph of `n` examples of `f` features, x all ones, at `info`.
Tensor run_dropout(std::int64_t n, std::int64_t f, double p, RunInfo info) {
  Graph g;
  Value x = g.input("x", {n, f});
  Value y = dropout(x, p, 7);
  Executor ex(g, {y});
  ex.set_run_info(info);
  Tensor xv = ones({n, f});
  ex.bind(x, xv).run();
  return ex.get(y).clone();
}

TEST(Dropout, DropsAboutAFractionPAndScalesTheRest) {
  for (double p : {0.1, 0.3, 0.5, 0.8}) {
    const Tensor y = run_dropout(400, 250, p, {});
    std::int64_t zeros = 0;
    const auto scale = static_cast<float>(1.0 / (1.0 - p));
    for (std::int64_t i = 0; i < y.numel(); ++i) {
      const float v = y.data<float>()[i];
      if (v == 0.0f) {
        ++zeros;
      } else {
        EXPECT_EQ(v, scale) << "element " << i;
      }
    }
    const double fraction = static_cast<double>(zeros) / static_cast<double>(y.numel());
    // 100,000 draws: the standard deviation of the fraction is below 0.0016.
    EXPECT_NEAR(fraction, p, 0.01) << "p " << p;
  }
}

TEST(Dropout, MasksDependOnSeedAndStep) {
  const Tensor a = run_dropout(8, 50, 0.5, {});
  EXPECT_TRUE(same_bits(a, run_dropout(8, 50, 0.5, {})));
  EXPECT_FALSE(same_bits(a, run_dropout(8, 50, 0.5, {.seed = 1})));
  EXPECT_FALSE(same_bits(a, run_dropout(8, 50, 0.5, {.step = 1})));
}

TEST(Dropout, EvaluationIsTheIdentity) {
  Graph g;
  Value x = g.input("x", {5, 9});
  Value y = dropout(x, 0.6);
  Executor ex(g, {y});
  ex.set_training(false);
  Tensor xv = random_tensor({5, 9}, DType::kF32, 3);
  ex.bind(x, xv).run();
  EXPECT_TRUE(same_bits(ex.get(y), xv));
}

TEST(Dropout, NaNPropagatesThroughDroppedElements) {
  Graph g;
  Value x = g.input("x", {1, 64});
  Value y = dropout(x, 0.5);
  Executor ex(g, {y});
  Tensor xv({1, 64}, DType::kF32);
  xv.fill(std::nan(""));
  ex.bind(x, xv).run();
  for (std::int64_t i = 0; i < 64; ++i) EXPECT_TRUE(std::isnan(ex.get(y).at(i))) << i;
}

TEST(Dropout, SameMasksForAnyThreadCount) {
  std::vector<Tensor> runs;
  for (int threads : {1, 2, 3}) {
    ThreadScope scope(threads);
    runs.push_back(run_dropout(300, 301, 0.4, {.step = 3, .seed = 9}));
  }
  EXPECT_TRUE(same_bits(runs[0], runs[1]));
  EXPECT_TRUE(same_bits(runs[0], runs[2]));
}

TEST(Dropout, SameMasksForAnyMicroBatchSplit) {
  const std::int64_t n = 13, f = 11;
  const RunInfo whole{.step = 2, .seed = 5, .first_example = 0, .examples = n};
  const Tensor all = run_dropout(n, f, 0.5, whole);
  for (const std::vector<std::int64_t>& split :
       {std::vector<std::int64_t>{0, 1, 13}, {0, 6, 13}, {0, 4, 8, 12, 13}}) {
    std::vector<float> joined;
    for (std::size_t k = 0; k + 1 < split.size(); ++k) {
      RunInfo part = whole;
      part.first_example = split[k];
      part.examples = split[k + 1] - split[k];
      const Tensor y = run_dropout(part.examples, f, 0.5, part);
      joined.insert(joined.end(), y.data<float>(), y.data<float>() + y.numel());
    }
    ASSERT_EQ(static_cast<std::int64_t>(joined.size()), all.numel());
    EXPECT_EQ(std::memcmp(joined.data(), all.raw(), all.nbytes()), 0);
  }
}

TEST(Dropout, GradientIsTheMaskTimesTheScale) {
  // At x = 1, y = mask * scale: the gradient of sum(y * R) must be R * y, also in a graph whose
  // first example is not the batch's first.
  for (const RunInfo& info :
       {RunInfo{}, RunInfo{.step = 4, .seed = 2, .first_example = 5, .examples = 6}}) {
    Graph g;
    Value x = g.input("x", {6, 10});
    Value y = dropout(x, 0.3);
    const Tensor r = random_tensor({6, 10}, DType::kF32, 4);
    Value gx = grad(sum(mul(y, g.constant(r, "R"))), x);
    Executor ex(g, {y, gx});
    ex.set_run_info(info);
    Tensor xv = ones({6, 10});
    ex.bind(x, xv).run();
    for (std::int64_t i = 0; i < 60; ++i) {
      EXPECT_EQ(ex.get(gx).data<float>()[i], r.data<float>()[i] * ex.get(y).data<float>()[i])
          << i;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Through the trainer, the evaluator and checkpoints
// ---------------------------------------------------------------------------------------------

// conv 3x3 -> batch norm -> relu -> flatten -> dropout -> linear, on [B, 2, 4, 4] examples.
nn::ModelGraph bn_model(Graph& g, nn::ParamStore& store, std::int64_t b) {
  nn::ModelGraph m;
  m.inputs = g.input("x", {b, 2, 4, 4});
  m.labels = g.input_labels("labels", {b});
  Value h = conv2d(m.inputs, store.param(g, "conv.w", {3, 2, 3, 3}), {.padding = 1});
  h = relu(nn::batch_norm_layer(g, store, "bn", h));
  h = dropout(flatten(h), 0.3);
  const Value w = store.param(g, "fc.w", {3, 48});
  m.outputs = linear(h, w, store.param(g, "fc.b", {3}));
  m.loss = softmax_cross_entropy(m.outputs, m.labels);
  return m;
}

data::Dataset bn_data(std::int64_t count) {
  data::Dataset d;
  d.count = count;
  d.rows = 8;
  d.cols = 4;
  nn::Rng rng(77);
  for (std::int64_t i = 0; i < count * 32; ++i) d.images.push_back(static_cast<std::uint8_t>(rng.below(256)));
  for (std::int64_t i = 0; i < count; ++i) d.labels.push_back(static_cast<std::uint8_t>(rng.below(3)));
  return d;
}

std::vector<std::int64_t> iota(std::int64_t lo, std::int64_t n) {
  std::vector<std::int64_t> v;
  for (std::int64_t i = 0; i < n; ++i) v.push_back(lo + i);
  return v;
}

void init_store(nn::ParamStore& store) {
  nn::create_parameters(bn_model, store);
  nn::Rng rng(3);
  nn::initialize(store, nn::Init::kXavierUniform, rng);
}

TEST(BatchNormStore, RolesInitialisationAndBuffers) {
  nn::ParamStore store;
  init_store(store);
  EXPECT_EQ(store.names(), (std::vector<std::string>{"conv.w", "bn.weight", "bn.bias", "fc.w", "fc.b"}));
  EXPECT_EQ(store.buffer_names(), (std::vector<std::string>{"bn.running_mean", "bn.running_var"}));
  EXPECT_EQ(store.role("bn.weight"), nn::Role::kNormScale);
  EXPECT_EQ(store.role("bn.bias"), nn::Role::kNormShift);
  EXPECT_EQ(store.role("conv.w"), nn::Role::kWeight);
  EXPECT_EQ(store.role("fc.b"), nn::Role::kBias);
  EXPECT_THROW((void)store.role("bn.running_mean"), Error);  // a buffer has no role
  EXPECT_EQ(values(*store.find("bn.weight")), std::vector<double>(3, 1.0));
  EXPECT_EQ(values(*store.find("bn.bias")), std::vector<double>(3, 0.0));
  EXPECT_EQ(values(*store.find_buffer("bn.running_mean")), std::vector<double>(3, 0.0));
  EXPECT_EQ(values(*store.find_buffer("bn.running_var")), std::vector<double>(3, 1.0));
  // The optimizer's list is the parameters': no buffer among them.
  EXPECT_EQ(store.tensors().size(), 5u);
  EXPECT_EQ(store.count(), 3 * 2 * 9 + 3 + 3 + 3 * 48 + 3);
  // A buffer is a constant of the graph: not a parameter, never differentiated.
  Graph g;
  (void)bn_model(g, store, 2);
  EXPECT_EQ(g.params().size(), 5u);
}

TEST(BatchNormTrainer, KeepsTheBatchWholeAndUpdatesTheRunningStatisticsOncePerStep) {
  const std::int64_t b = 12;
  const data::Dataset data = bn_data(b);
  const std::vector<std::int64_t> idx = iota(0, b);
  // The reference: one graph of the batch in training mode at step 0, seed 4.
  nn::ParamStore ref;
  init_store(ref);
  Graph g;
  const nn::ModelGraph m = bn_model(g, ref, b);
  Executor ex(g, {m.loss});
  ex.set_run_info({.training = true, .step = 0, .seed = 4, .first_example = 0, .examples = b});
  Tensor images(m.inputs.shape(), DType::kF32), labels(m.labels.shape(), DType::kI32);
  data::load_examples(data, idx, images, labels);
  ex.bind(m.inputs, images).bind(m.labels, labels).run();

  for (int threads : {1, 2}) {
    ThreadScope scope(threads);
    nn::ParamStore store;
    init_store(store);
    nn::SGD sgd(store.tensors(), 0.1);
    nn::Trainer trainer(bn_model, store, sgd, {.batch_size = b, .micro_batch = 2, .seed = 4});
    EXPECT_EQ(trainer.micro_batch(), b) << "a batch-wide op keeps the batch whole";
    trainer.step(data, idx);
    EXPECT_EQ(trainer.loss(), ex.get(m.loss).at(0)) << threads << " threads";
    EXPECT_TRUE(same_bits(*store.find_buffer("bn.running_mean"), *ref.find_buffer("bn.running_mean")));
    EXPECT_TRUE(same_bits(*store.find_buffer("bn.running_var"), *ref.find_buffer("bn.running_var")));
    // The running mean moved from 0 (the batch's mean is not 0 after a conv of [0, 1] pixels).
    EXPECT_NE(values(*store.find_buffer("bn.running_mean")), std::vector<double>(3, 0.0));
  }
}

TEST(BatchNormTrainer, EvaluatorRunsInEvaluationMode) {
  const std::int64_t n = 20;
  const data::Dataset data = bn_data(n);
  nn::ParamStore store;
  init_store(store);
  store.find_buffer("bn.running_mean")->fill(0.25);
  store.find_buffer("bn.running_var")->fill(2.0);
  const nn::Evaluation e = nn::Evaluator(bn_model, store, n).evaluate(data);
  Graph g;
  const nn::ModelGraph m = bn_model(g, store, n);
  Executor ex(g, {m.loss});
  Tensor images(m.inputs.shape(), DType::kF32), labels(m.labels.shape(), DType::kI32);
  data::load_examples(data, iota(0, n), images, labels);
  ex.bind(m.inputs, images).bind(m.labels, labels);
  ex.set_training(false);
  ex.run();
  EXPECT_NEAR(e.loss, ex.get(m.loss).at(0), 1e-6);
  EXPECT_EQ(values(*store.find_buffer("bn.running_mean")), std::vector<double>(3, 0.25));
  ex.set_training(true);
  ex.run();
  EXPECT_GT(std::abs(e.loss - ex.get(m.loss).at(0)), 1e-4) << "training mode gave the same loss";
}

// Three steps (two of 8 examples, one of 5) at `threads`, or as rank r of `comm`; the checkpoint
// file's bytes.
std::string train_and_save(int threads, dist::Communicator* comm, const fs::path& file) {
  ThreadScope scope(threads);
  const data::Dataset data = bn_data(21);
  nn::ParamStore store;
  init_store(store);
  nn::Momentum opt(store.tensors(), 0.05, 0.9);
  nn::Trainer trainer(bn_model, store, opt, {.batch_size = 8, .comm = comm, .seed = 11});
  trainer.step(data, iota(0, 8));
  trainer.step(data, iota(8, 8));
  trainer.step(data, iota(16, 5));
  nn::save_parameters(file, store, &opt);
  std::ifstream in(file, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(BatchNormCheckpoint, ByteIdenticalForOneAndTwoThreadsAndTwoRanksAndRestoredByName) {
  const fs::path dir =
      fs::temp_directory_path() / ("tbgrad_test_bn_ckpt_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string one = train_and_save(1, nullptr, dir / "t1.safetensors");
  const std::string two = train_and_save(2, nullptr, dir / "t2.safetensors");
  EXPECT_FALSE(one.empty());
  EXPECT_TRUE(one == two) << "the checkpoints of 1 and 2 threads differ";
  {
    tbgrad::testing::ThreadRanks group(2);
    std::vector<std::string> bytes(2);
    std::vector<std::thread> ranks;
    for (int r = 0; r < 2; ++r) {
      ranks.emplace_back([&, r] {
        bytes[static_cast<std::size_t>(r)] = train_and_save(
            1, &group.member(r), dir / ("r" + std::to_string(r) + ".safetensors"));
      });
    }
    for (auto& t : ranks) t.join();
    EXPECT_TRUE(bytes[0] == one) << "rank 0 of 2 differs from one process";
    EXPECT_TRUE(bytes[1] == one) << "rank 1 of 2 differs from one process";
  }
  // Restored by name: the buffers come back with the parameters.
  nn::ParamStore trained;
  init_store(trained);
  nn::Momentum opt(trained.tensors(), 0.05, 0.9);
  (void)nn::load_parameters(dir / "t1.safetensors", trained, &opt);
  const nn::Checkpoint ckpt = nn::load_checkpoint(dir / "t1.safetensors");
  ASSERT_NE(ckpt.find("bn.running_var"), nullptr);
  EXPECT_EQ(values(*trained.find_buffer("bn.running_mean")).size(), 3u);
  EXPECT_NE(values(*trained.find_buffer("bn.running_var")), std::vector<double>(3, 1.0));
  EXPECT_EQ(std::memcmp(trained.find_buffer("bn.running_var")->raw(),
                        ckpt.find("bn.running_var")->data.data(), 3 * sizeof(float)),
            0);
  // A checkpoint without the buffers is refused, naming the missing one.
  nn::Checkpoint without;
  for (const auto& t : ckpt.tensors) {
    if (t.name != "bn.running_mean") without.tensors.push_back(t);
  }
  try {
    nn::load_from_checkpoint(without, dir / "x.safetensors", trained);
    ADD_FAILURE() << "did not throw";
  } catch (const nn::CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("bn.running_mean"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

}  // namespace
