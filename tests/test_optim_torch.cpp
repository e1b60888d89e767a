// The optimizers, weight decay, clipping and learning-rate schedules against torch.optim
// (tests/optim_reference.py, Debian's python3-torch): each run is 100 steps on fixed float32
// tensors with a fixed sequence of gradients, in tbgrad and in PyTorch, and the test compares
// the learning rate of every step, the gradient norm clipping saw, and the final parameters.
//
// Python: $TBGRAD_PYTHON, else the first of python3 and /usr/bin/python3 that imports torch, as
// tests/test_ops_torch.cpp finds it. Without one the test skips with the reason, and fails when
// $CI is set.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <cctype>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <tbgrad.hpp>
#include <vector>

#include "run_command.hpp"

namespace tbgrad {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr int kSteps = 100;

using tbgrad::testing::in_ci;
using tbgrad::testing::quote;

struct ScheduleSpec {
  std::string kind = "constant";
  std::int64_t step_size = 0, warmup = 0, total = kSteps, patience = 0, cooldown = 0;
  double gamma = 0, min_lr = 0, factor = 0;
  std::vector<std::int64_t> milestones = {};
};

struct OptRun {
  std::string id;
  std::string optimizer;  // sgd, momentum, nesterov, adam, adamw
  double lr = 0.01;
  std::optional<double> weight_decay = std::nullopt;  // unset: the optimizer's default
  double max_norm = 0;
  bool decay_all = false;  // false: the rank <= 1 parameter does not decay
  ScheduleSpec schedule = {};
};

// The fixed tensors: a [5,7] weight, a [7] bias and a [3,4,2] kernel.
const std::vector<Shape>& shapes() {
  static const std::vector<Shape> s = {Shape{5, 7}, Shape{7}, Shape{3, 4, 2}};
  return s;
}

std::vector<std::vector<float>> initial_params() {
  std::mt19937 gen(7);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<std::vector<float>> p;
  for (const Shape& s : shapes()) {
    std::vector<float> v(static_cast<std::size_t>(s.numel()));
    for (float& x : v) x = n(gen);
    p.push_back(v);
  }
  return p;
}

// grads[step][param]: normal values whose scale swings between 0.2 and 2.2, so that a clipping
// bound of 8 is crossed in both directions.
std::vector<std::vector<std::vector<float>>> gradients() {
  std::mt19937 gen(11);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<std::vector<std::vector<float>>> g(kSteps);
  for (int t = 0; t < kSteps; ++t) {
    const auto scale = static_cast<float>(0.2 + 2.0 * std::fabs(std::sin(0.7 * t)));
    for (const Shape& s : shapes()) {
      std::vector<float> v(static_cast<std::size_t>(s.numel()));
      for (float& x : v) x = scale * n(gen);
      g[static_cast<std::size_t>(t)].push_back(v);
    }
  }
  return g;
}

// ReduceOnPlateau's metrics: falling for 20 steps, then flat with small wiggles (so that it
// reduces several times), then falling again.
std::vector<double> plateau_metrics() {
  std::vector<double> m;
  for (int t = 0; t < kSteps; ++t) {
    if (t < 20) {
      m.push_back(1.0 - 0.03 * t);
    } else if (t < 70) {
      m.push_back(0.45 + 0.01 * std::sin(1.3 * t));
    } else {
      m.push_back(0.4 - 0.002 * (t - 70));
    }
  }
  return m;
}

std::vector<OptRun> runs() {
  std::vector<OptRun> r;
  const std::map<std::string, double> lrs = {
      {"sgd", 0.05}, {"momentum", 0.02}, {"nesterov", 0.02}, {"adam", 0.01}, {"adamw", 0.01}};
  for (const auto& [opt, lr] : lrs) {
    r.push_back({.id = opt, .optimizer = opt, .lr = lr, .weight_decay = 0.0});
    if (opt == "adamw") r.back().weight_decay = std::nullopt;  // its default 0.01
    r.push_back({.id = opt + "+wd", .optimizer = opt, .lr = lr, .weight_decay = 0.1});
    r.push_back({.id = opt + "+wd_all", .optimizer = opt, .lr = lr, .weight_decay = 0.05,
                 .decay_all = true});
    r.push_back({.id = opt + "+clip", .optimizer = opt, .lr = lr, .weight_decay = 0.0,
                 .max_norm = 8.0});
    r.push_back({.id = opt + "+wd+clip", .optimizer = opt, .lr = lr, .weight_decay = 0.1,
                 .max_norm = 8.0});
  }
  const auto with = [&](std::string id, ScheduleSpec s) {
    r.push_back({.id = std::move(id), .optimizer = "momentum", .lr = 0.05, .weight_decay = 0.0,
                 .schedule = std::move(s)});
  };
  with("constant", {.kind = "constant"});
  with("step", {.kind = "step", .step_size = 30, .gamma = 0.5});
  with("multistep", {.kind = "multistep", .gamma = 0.3, .milestones = {20, 50, 80}});
  with("cosine", {.kind = "cosine", .warmup = 0, .total = kSteps, .min_lr = 0.001});
  with("cosine+warmup", {.kind = "cosine", .warmup = 10, .total = kSteps, .min_lr = 0.0});
  with("onecycle", {.kind = "onecycle", .total = kSteps});
  with("plateau",
       {.kind = "plateau", .patience = 3, .cooldown = 2, .min_lr = 1e-3, .factor = 0.5});
  // A schedule and clipping together, with Adam's weight decay.
  r.push_back({.id = "adamw+onecycle+clip", .optimizer = "adamw", .lr = 0.01, .max_norm = 8.0,
               .schedule = {.kind = "onecycle", .total = kSteps}});
  return r;
}

std::unique_ptr<nn::Optimizer> make_optimizer(const OptRun& run, std::vector<Tensor> params,
                                              const std::vector<bool>& decay) {
  std::unique_ptr<nn::Optimizer> o;
  const double wd = run.weight_decay.value_or(0.0);
  if (run.optimizer == "sgd") {
    o = std::make_unique<nn::SGD>(params, run.lr, nn::SGDOptions{.weight_decay = wd, .decay = decay});
  } else if (run.optimizer == "momentum" || run.optimizer == "nesterov") {
    o = std::make_unique<nn::Momentum>(
        params, run.lr,
        nn::MomentumOptions{.momentum = 0.9, .nesterov = run.optimizer == "nesterov",
                            .weight_decay = wd, .decay = decay});
  } else if (run.optimizer == "adam") {
    o = std::make_unique<nn::Adam>(params, run.lr, nn::AdamOptions{.weight_decay = wd, .decay = decay});
  } else {
    nn::AdamWOptions a;  // its default weight decay unless the run sets one
    if (run.weight_decay) a.weight_decay = *run.weight_decay;
    a.decay = decay;
    o = std::make_unique<nn::AdamW>(params, run.lr, a);
  }
  o->set_max_grad_norm(run.max_norm);
  return o;
}

std::unique_ptr<nn::Schedule> make_schedule(const OptRun& run) {
  const ScheduleSpec& s = run.schedule;
  nn::ScheduleConfig c;
  c.total = s.total;
  c.warmup = s.warmup;
  c.min_lr = s.min_lr;
  c.step_size = s.step_size;
  c.milestones = s.milestones;
  c.gamma = s.gamma;
  c.plateau.factor = s.factor;
  c.plateau.patience = s.patience;
  c.plateau.cooldown = s.cooldown;
  return nn::make_schedule(s.kind, run.lr, c);
}

struct Result {
  std::vector<double> lrs, norms;
  std::vector<std::vector<float>> params;
};

// The run in tbgrad: the parameters decay by the rank rule (decay_mask's default) unless the
// run decays all of them.
Result run_tbgrad(const OptRun& run) {
  const auto init = initial_params();
  const auto grads = gradients();
  const auto metrics = plateau_metrics();
  nn::ParamStore store;
  Graph g;
  for (std::size_t i = 0; i < shapes().size(); ++i) {
    store.param(g, "p" + std::to_string(i), shapes()[i], DType::kF32);
    std::copy(init[i].begin(), init[i].end(), store.tensors()[i].data<float>());
  }
  const std::vector<bool> decay =
      run.decay_all ? std::vector<bool>(shapes().size(), true) : nn::decay_mask(store);
  auto opt = make_optimizer(run, store.tensors(), decay);
  auto schedule = make_schedule(run);
  std::vector<Tensor> gt;
  for (const Shape& s : shapes()) gt.emplace_back(s, DType::kF32);
  Result r;
  for (int t = 0; t < kSteps; ++t) {
    for (std::size_t i = 0; i < gt.size(); ++i) {
      const auto& src = grads[static_cast<std::size_t>(t)][i];
      std::copy(src.begin(), src.end(), gt[i].data<float>());
    }
    schedule->apply(*opt);
    r.lrs.push_back(opt->learning_rate());
    opt->step(gt);
    if (run.max_norm > 0) r.norms.push_back(opt->last_grad_norm());
    if (run.schedule.kind == "plateau") {
      schedule->step(metrics[static_cast<std::size_t>(t)]);
    } else {
      schedule->step();
    }
  }
  for (const Tensor& p : store.tensors()) r.params.emplace_back(p.data<float>(), p.data<float>() + p.numel());
  return r;
}

json manifest_of(const OptRun& run) {
  const auto init = initial_params();
  json params = json::array();
  for (std::size_t i = 0; i < shapes().size(); ++i) {
    const auto dims = shapes()[i].dims();
    params.push_back({{"shape", std::vector<std::int64_t>(dims.begin(), dims.end())},
                      {"data", init[i]}});
  }
  std::vector<bool> decay;
  for (const Shape& s : shapes()) decay.push_back(run.decay_all || s.rank() >= 2);
  const ScheduleSpec& s = run.schedule;
  json schedule = {{"kind", s.kind},       {"step_size", s.step_size},
                   {"gamma", s.gamma},     {"milestones", s.milestones},
                   {"warmup", s.warmup},   {"total", s.total},
                   {"min_lr", s.min_lr},   {"factor", s.factor},
                   {"patience", s.patience}, {"cooldown", s.cooldown},
                   {"metrics", plateau_metrics()}};
  // AdamW's default weight decay is 0.01, torch's and tbgrad's alike.
  const double wd = run.weight_decay.value_or(run.optimizer == "adamw" ? 0.01 : 0.0);
  return {{"id", run.id},
          {"optimizer", run.optimizer},
          {"lr", run.lr},
          {"momentum", 0.9},
          {"weight_decay", wd},
          {"decay", decay},
          {"max_norm", run.max_norm},
          {"params", params},
          {"grads", gradients()},
          {"schedule", schedule}};
}

struct Comparison {
  bool torch_missing = false;
  std::string problem, torch_version;
  std::map<std::string, json> results;
};

Comparison compare() {
  Comparison cmp;
  const fs::path dir = fs::temp_directory_path() / ("tbgrad_optim_torch_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path manifest = dir / "manifest.json", results = dir / "results.json";
  json all = json::array();
  for (const OptRun& r : runs()) all.push_back(manifest_of(r));
  std::ofstream(manifest) << json{{"runs", all}}.dump();
  std::vector<std::string> pythons;
  if (const char* p = std::getenv("TBGRAD_PYTHON"); p != nullptr && *p != '\0') {
    pythons = {p};
  } else {
    pythons = {"python3", "/usr/bin/python3"};
  }
  std::string tried;
  for (const std::string& python : pythons) {
    const testing::CommandResult run =
        testing::run_command(quote(python) + " " + quote(TBGRAD_OPTIM_REFERENCE) + " " +
                             quote(manifest.string()) + " " + quote(results.string()));
    if (run.code == 0) {
      const json r = json::parse(std::ifstream(results));
      cmp.torch_version = r.at("torch").get<std::string>();
      for (const json& rec : r.at("runs")) cmp.results[rec.at("id").get<std::string>()] = rec;
      fs::remove_all(dir);
      return cmp;
    }
    tried += "\n  " + python + ": " + (run.out.empty() ? "exit " + std::to_string(run.code) : run.out);
    if (run.code != 127 && run.code != 3) {
      cmp.problem = "tests/optim_reference.py failed (inputs kept in " + dir.string() + "):" + tried;
      return cmp;
    }
  }
  fs::remove_all(dir);
  cmp.torch_missing = true;
  cmp.problem =
      "no Python with PyTorch: the comparison with torch.optim needs python3 and torch "
      "(Debian: apt-get install python3-torch; or set TBGRAD_PYTHON). Tried:" + tried;
  return cmp;
}

const Comparison& comparison() {
  static const Comparison cmp = compare();
  return cmp;
}

class OptimTorch : public ::testing::TestWithParam<OptRun> {};

TEST_P(OptimTorch, MatchesTorchOptimOver100Steps) {
  const Comparison& cmp = comparison();
  if (cmp.torch_missing && !in_ci()) GTEST_SKIP() << "skipped: " << cmp.problem;
  ASSERT_TRUE(cmp.problem.empty()) << cmp.problem;
  const OptRun& run = GetParam();
  ASSERT_EQ(cmp.results.count(run.id), 1u) << run.id;
  const json& torch = cmp.results.at(run.id);
  const Result ours = run_tbgrad(run);

  const auto lrs = torch.at("lrs").get<std::vector<double>>();
  ASSERT_EQ(lrs.size(), ours.lrs.size());
  for (std::size_t t = 0; t < lrs.size(); ++t) {
    EXPECT_NEAR(ours.lrs[t], lrs[t], 1e-9 * std::max(1.0, std::fabs(lrs[t])))
        << "learning rate of step " << t;
  }
  const auto norms = torch.at("norms").get<std::vector<double>>();
  ASSERT_EQ(norms.size(), ours.norms.size());
  int clipped = 0;
  for (std::size_t t = 0; t < norms.size(); ++t) {
    EXPECT_NEAR(ours.norms[t], norms[t], 1e-5 * norms[t]) << "gradient norm of step " << t;
    clipped += norms[t] > run.max_norm;
  }
  if (run.max_norm > 0) {  // the bound is crossed both ways: clipping is tested
    EXPECT_GT(clipped, 10);
    EXPECT_LT(clipped, static_cast<int>(norms.size()) - 10);
  }
  const auto params = torch.at("params").get<std::vector<std::vector<double>>>();
  ASSERT_EQ(params.size(), ours.params.size());
  const auto init = initial_params();
  double moved = 0;
  for (std::size_t i = 0; i < params.size(); ++i) {
    ASSERT_EQ(params[i].size(), ours.params[i].size());
    for (std::size_t j = 0; j < params[i].size(); ++j) {
      // f32 arithmetic over 100 steps, in another order than PyTorch's.
      EXPECT_NEAR(ours.params[i][j], params[i][j], 2e-5 * std::max(1.0, std::fabs(params[i][j])))
          << "parameter " << i << " element " << j;
      moved = std::max(moved, std::fabs(params[i][j] - init[i][j]));
    }
  }
  EXPECT_GT(moved, 0.05) << "the run barely moved the parameters: the comparison proves little";
}

INSTANTIATE_TEST_SUITE_P(Runs, OptimTorch, ::testing::ValuesIn(runs()),
                         [](const ::testing::TestParamInfo<OptRun>& info) {
                           std::string name;
                           for (char c : info.param.id) name += std::isalnum(c) ? c : '_';
                           return name;
                         });

}  // namespace
}  // namespace tbgrad
