// Weight decay, AdamW, clipping by the global gradient norm, learning-rate schedules and their
// checkpoints, and the model summary (nn/optim.hpp, nn/schedule.hpp, nn/summary.hpp). Agreement
// with torch.optim is tests/test_optim_torch.cpp's.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <tbgrad.hpp>
#include <thread>
#include <vector>

#include "tests/custom_cnn.hpp"
#include "tests/thread_ranks.hpp"

namespace tbgrad {
namespace {

namespace fs = std::filesystem;
using testing::custom_cnn;
using testing::ThreadRanks;

template <typename E, typename Fn>
std::string message_of(const Fn& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "nothing thrown";
  return {};
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

Tensor filled(Shape s, std::uint64_t seed, double scale = 1.0) {
  Tensor t(s, DType::kF32);
  Rng rng(seed);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(scale * rng.normal());
  return t;
}

std::vector<float> bits(const Tensor& t) {
  return {t.data<float>(), t.data<float>() + t.numel()};
}

data::Dataset random_dataset(std::int64_t count, std::uint64_t seed) {
  data::Dataset d;
  d.count = count;
  d.rows = d.cols = 28;
  Rng rng(seed);
  d.images.resize(static_cast<std::size_t>(count * 784));
  for (auto& p : d.images) p = static_cast<std::uint8_t>(rng.below(256));
  for (std::int64_t i = 0; i < count; ++i) d.labels.push_back(static_cast<std::uint8_t>(rng.below(10)));
  return d;
}

// --- weight decay -----------------------------------------------------------------------------

TEST(WeightDecay, TheMaskExcludesBiasesByRank) {
  nn::ParamStore store;
  nn::create_parameters(custom_cnn, store);
  const std::vector<bool> mask = nn::decay_mask(store);
  ASSERT_EQ(mask.size(), store.names().size());
  for (std::size_t i = 0; i < mask.size(); ++i) {
    const bool bias = store.names()[i].ends_with(".b");
    EXPECT_EQ(mask[i], !bias) << store.names()[i];
  }
  // Another rule is one function.
  const std::vector<bool> none = nn::decay_mask(store, [](const nn::ParamStore&, std::size_t) { return false; });
  EXPECT_EQ(none, std::vector<bool>(mask.size(), false));
}

// SGD's coupled decay: p -= lr * (g + wd * p) for decayed parameters, p -= lr * g for the others;
// worked out here element by element.
TEST(WeightDecay, SgdAddsTheDecayToTheGradientOfDecayedParametersOnly) {
  Tensor w = filled(Shape{3, 4}, 1), b = filled(Shape{4}, 2);
  const Tensor gw = filled(Shape{3, 4}, 3), gb = filled(Shape{4}, 4);
  const std::vector<float> w0 = bits(w), b0 = bits(b);
  nn::SGD sgd({w, b}, 0.1, {.weight_decay = 0.5, .decay = {true, false}});
  sgd.step(std::vector<Tensor>{gw, gb});
  for (std::int64_t i = 0; i < 12; ++i) {
    const float want = w0[static_cast<std::size_t>(i)] -
                       0.1f * (gw.data<float>()[i] + 0.5f * w0[static_cast<std::size_t>(i)]);
    EXPECT_FLOAT_EQ(w.data<float>()[i], want);
  }
  for (std::int64_t i = 0; i < 4; ++i) {
    EXPECT_FLOAT_EQ(b.data<float>()[i], b0[static_cast<std::size_t>(i)] - 0.1f * gb.data<float>()[i]);
  }
}

// AdamW decays the weight itself: with a zero gradient Adam's step is 0, and only the shrink
// p *= 1 - lr * wd is left.
TEST(WeightDecay, AdamWShrinksTheWeightsDecoupledFromTheGradient) {
  Tensor w = filled(Shape{5}, 5);
  const std::vector<float> w0 = bits(w);
  Tensor g(Shape{5}, DType::kF32);
  g.fill(0.0);
  nn::AdamW adamw({w}, 0.1);  // the default weight decay, 0.01
  EXPECT_EQ(adamw.weight_decay(), 0.01);
  EXPECT_STREQ(adamw.name(), "adamw");
  adamw.step(std::vector<Tensor>{g});
  for (std::int64_t i = 0; i < 5; ++i) {
    EXPECT_EQ(w.data<float>()[i], w0[static_cast<std::size_t>(i)] * static_cast<float>(1 - 0.1 * 0.01));
  }
  // Adam's coupled decay moves a weight with a zero gradient by about lr (its normalised step).
  Tensor w2 = filled(Shape{5}, 5);
  nn::Adam adam({w2}, 0.1, nn::AdamOptions{.weight_decay = 0.01});
  adam.step(std::vector<Tensor>{g});
  for (std::int64_t i = 0; i < 5; ++i) {
    EXPECT_NEAR(std::fabs(w2.data<float>()[i] - w0[static_cast<std::size_t>(i)]), 0.1, 1e-4);
  }
}

TEST(WeightDecay, BadSettingsAreRefused) {
  Tensor w(Shape{2, 2}, DType::kF32), b(Shape{2}, DType::kF32);
  EXPECT_TRUE(contains(message_of<Error>([&] { nn::SGD({w, b}, 0.1, {.weight_decay = -1}); }),
                       "weight decay must be finite and >= 0"));
  EXPECT_TRUE(contains(message_of<Error>([&] {
                         nn::AdamW({w, b}, 0.1, {.weight_decay = std::nan("")});
                       }),
                       "adamw: weight decay"));
  EXPECT_TRUE(contains(message_of<Error>([&] {
                         nn::Momentum({w, b}, 0.1, nn::MomentumOptions{.decay = {true}});
                       }),
                       "1 weight-decay flags for 2 parameters"));
  nn::SGD sgd({w, b}, 0.1);
  EXPECT_TRUE(contains(message_of<Error>([&] { sgd.set_max_grad_norm(-1); }), "max_grad_norm"));
  EXPECT_TRUE(contains(message_of<Error>([&] { sgd.set_max_grad_norm(INFINITY); }), "max_grad_norm"));
}

TEST(WeightDecay, MakeOptimizerTakesTheSettings) {
  Tensor w(Shape{2, 2}, DType::kF32), b(Shape{2}, DType::kF32);
  auto adamw = nn::make_optimizer("adamw", {w, b}, 1e-3, {});
  EXPECT_EQ(adamw->weight_decay(), 0.01);
  auto sgd = nn::make_optimizer("sgd", {w, b}, 1e-3,
                                {.weight_decay = 0.2, .decay = {true, false}, .max_grad_norm = 1.5});
  EXPECT_EQ(sgd->weight_decay(), 0.2);
  EXPECT_TRUE(sgd->decays(0));
  EXPECT_FALSE(sgd->decays(1));
  EXPECT_EQ(sgd->max_grad_norm(), 1.5);
  // A clone for a replica has the same settings.
  Tensor w2(Shape{2, 2}, DType::kF32), b2(Shape{2}, DType::kF32);
  auto clone = sgd->clone_for({w2, b2});
  EXPECT_EQ(clone->weight_decay(), 0.2);
  EXPECT_FALSE(clone->decays(1));
  EXPECT_EQ(clone->max_grad_norm(), 1.5);
}

// --- clipping ---------------------------------------------------------------------------------

// The norm of all gradients as one vector, clipped to max_norm: the update of SGD at lr 1 is
// the clipped gradient itself.
TEST(Clipping, ScalesTheGradientToTheBoundAndReportsTheNorm) {
  Tensor a(Shape{3}, DType::kF32), b(Shape{1}, DType::kF32);
  a.fill(0.0);
  b.fill(0.0);
  Tensor ga(Shape{3}, DType::kF32), gb(Shape{1}, DType::kF32);
  ga.data<float>()[0] = 3;
  ga.data<float>()[1] = 0;
  ga.data<float>()[2] = 0;
  gb.data<float>()[0] = 4;  // norm 5
  nn::SGD sgd({a, b}, 1.0);
  sgd.set_max_grad_norm(1.0);
  sgd.step(std::vector<Tensor>{ga, gb});
  EXPECT_DOUBLE_EQ(sgd.last_grad_norm(), 5.0);
  const double scale = 1.0 / (5.0 + 1e-6);
  EXPECT_FLOAT_EQ(a.data<float>()[0], static_cast<float>(-3 * scale));
  EXPECT_FLOAT_EQ(b.data<float>()[0], static_cast<float>(-4 * scale));
  // Under the bound nothing changes (clip_coef clamped to 1).
  sgd.set_max_grad_norm(10.0);
  a.fill(0.0);
  sgd.step(std::vector<Tensor>{ga, gb});
  EXPECT_EQ(a.data<float>()[0], -3.0f);
  // A NaN in a gradient makes the update NaN, as in PyTorch.
  ga.data<float>()[1] = std::numeric_limits<float>::quiet_NaN();
  sgd.step(std::vector<Tensor>{ga, gb});
  EXPECT_TRUE(std::isnan(sgd.last_grad_norm()));
  EXPECT_TRUE(std::isnan(b.data<float>()[0]));
}

// The norm of a gradient large enough to be split over the threads (several 65,536-element
// blocks) is the same number for any thread count, and so is the update.
TEST(Clipping, TheNormAndTheUpdateAreBitIdenticalForAnyThreadCount) {
  const Tensor g1 = filled(Shape{300001}, 8, 0.01), g2 = filled(Shape{17, 3}, 9);
  std::vector<float> first;
  double first_norm = 0;
  for (int threads : {1, 2, 3, 4}) {
    ThreadScope scope(threads);
    Tensor p1 = filled(Shape{300001}, 10), p2 = filled(Shape{17, 3}, 11);
    nn::AdamW opt({p1, p2}, 1e-3);
    opt.set_max_grad_norm(1.0);
    for (int s = 0; s < 3; ++s) opt.step(std::vector<Tensor>{g1, g2});
    std::vector<float> now = bits(p1);
    const std::vector<float> more = bits(p2);
    now.insert(now.end(), more.begin(), more.end());
    if (threads == 1) {
      first = now;
      first_norm = opt.last_grad_norm();
      EXPECT_GT(first_norm, 1.0);  // clipped
    } else {
      EXPECT_EQ(opt.last_grad_norm(), first_norm) << threads << " threads";
      EXPECT_TRUE(now == first) << threads << " threads differ from 1";
    }
  }
}

// The trainer with AdamW, a decay mask and clipping: every replica clips by the same norm, so
// the weights are the same bits for any thread count and any rank count.
std::vector<std::vector<float>> train_clipped(int threads, int ranks) {
  const data::Dataset d = random_dataset(100, 3);
  ThreadScope scope(threads);
  ThreadRanks group(ranks);
  std::vector<std::vector<std::vector<float>>> results(static_cast<std::size_t>(ranks));
  std::vector<double> norms(static_cast<std::size_t>(ranks));
  std::vector<std::thread> workers;
  for (int r = 0; r < ranks; ++r) {
    workers.emplace_back([&, r] {
      nn::ParamStore store;
      nn::create_parameters(custom_cnn, store);
      Rng rng(1);
      nn::initialize(store, nn::Init::kXavierUniform, rng);
      nn::AdamW opt(store.tensors(), 3e-3, {.weight_decay = 0.1, .decay = nn::decay_mask(store)});
      opt.set_max_grad_norm(0.5);
      nn::Trainer trainer(custom_cnn, store, opt, {.batch_size = 32, .comm = &group.member(r)});
      data::Batcher batches(d, 32, 84);
      nn::train_epoch(trainer, batches, rng);
      auto& out = results[static_cast<std::size_t>(r)];
      for (const Tensor& t : store.tensors()) out.push_back(bits(t));
      for (const auto& [name, t] : opt.state()) out.push_back(bits(t));
      norms[static_cast<std::size_t>(r)] = opt.last_grad_norm();
    });
  }
  for (auto& w : workers) w.join();
  for (int r = 1; r < ranks; ++r) {
    EXPECT_TRUE(results[static_cast<std::size_t>(r)] == results[0]) << "rank " << r;
  }
  EXPECT_GT(norms[0], 0.5) << "the bound should clip";
  return results[0];
}

TEST(Clipping, TheTrainersReplicasAndRanksClipAlike) {
  const auto one = train_clipped(1, 1);
  EXPECT_TRUE(train_clipped(2, 1) == one) << "2 threads";
  EXPECT_TRUE(train_clipped(3, 1) == one) << "3 threads";
  EXPECT_TRUE(train_clipped(1, 2) == one) << "2 ranks";
  EXPECT_TRUE(train_clipped(2, 3) == one) << "3 ranks of 2 threads";
}

// --- schedules --------------------------------------------------------------------------------

std::vector<double> lrs_of(nn::Schedule& s, int steps, const std::vector<double>& metrics = {}) {
  std::vector<double> out;
  for (int t = 0; t < steps; ++t) {
    out.push_back(s.lr());
    if (metrics.empty()) {
      s.step();
    } else {
      s.step(metrics[static_cast<std::size_t>(t)]);
    }
  }
  return out;
}

TEST(Schedule, ClosedFormsWorkedOutByHand) {
  nn::StepSchedule step(1.0, 3, 0.5);
  EXPECT_EQ(lrs_of(step, 7), (std::vector<double>{1, 1, 1, 0.5, 0.5, 0.5, 0.25}));
  nn::MultiStepSchedule multi(1.0, {4, 2}, 0.1);
  const auto m = lrs_of(multi, 5);
  EXPECT_EQ(m[0], 1.0);
  EXPECT_EQ(m[1], 1.0);
  EXPECT_DOUBLE_EQ(m[2], 0.1);
  EXPECT_DOUBLE_EQ(m[3], 0.1);
  EXPECT_DOUBLE_EQ(m[4], 0.01);
  nn::CosineSchedule cos(1.0, {.warmup = 2, .total = 6, .min_lr = 0.2});
  const auto c = lrs_of(cos, 8);
  EXPECT_DOUBLE_EQ(c[0], 0.5);  // warmup: (t + 1) / 2
  EXPECT_DOUBLE_EQ(c[1], 1.0);
  EXPECT_DOUBLE_EQ(c[2], 1.0);  // the cosine's start
  EXPECT_DOUBLE_EQ(c[4], 0.6);  // halfway: min + (1 - min) / 2
  EXPECT_DOUBLE_EQ(c[6], 0.2);  // total: min_lr from there on
  EXPECT_DOUBLE_EQ(c[7], 0.2);
  nn::OneCycleSchedule one(1.0, 10);  // rises over steps 0..2 (0.3 * 10 - 1 = 2)
  const auto o = lrs_of(one, 12);
  EXPECT_NEAR(o[0], 1.0 / 25, 1e-15);  // max + (initial - max): torch's arithmetic
  EXPECT_DOUBLE_EQ(o[2], 1.0);
  EXPECT_NEAR(o[9], 1.0 / 25 / 1e4, 1e-15);
  EXPECT_EQ(o[11], o[9]);  // past the end it stays
  nn::PlateauSchedule plateau(1.0, {.factor = 0.5, .patience = 1, .min_lr = 0.2});
  // better, worse, worse (2 > patience 1: halve), worse, worse (halve), ... never below min_lr
  const auto p = lrs_of(plateau, 9, {1, 2, 2, 2, 2, 2, 2, 2, 2});
  EXPECT_EQ(p, (std::vector<double>{1, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2}));
  EXPECT_TRUE(contains(message_of<Error>([&] { plateau.step(); }), "needs the metric"));
}

// The app's cosine before the library had schedules: lr * 0.5 * (1 + cos(pi * (e - 1) / E)) for
// epoch e of E, bit for bit.
TEST(Schedule, CosineWithoutWarmupIsTheAppsOldCosineBitForBit) {
  for (std::int64_t epochs : {1, 3, 5, 17}) {
    nn::CosineSchedule s(0.002, {.total = epochs});
    for (std::int64_t e = 1; e <= epochs; ++e) {
      const double progress = static_cast<double>(e - 1) / static_cast<double>(epochs);
      const double old = 0.002 * 0.5 * (1.0 + std::cos(3.14159265358979323846 * progress));
      EXPECT_EQ(s.lr(), old) << "epoch " << e << " of " << epochs;
      s.step();
    }
  }
}

// Every schedule's state, saved mid-run and loaded into a fresh one, continues the run exactly.
TEST(Schedule, StateRoundTripsThroughACheckpointMidRun) {
  std::vector<double> metrics;
  for (int t = 0; t < 60; ++t) metrics.push_back(t < 10 ? 1.0 / (t + 1) : 0.1 + 0.001 * (t % 3));
  nn::ScheduleConfig config{.total = 60, .warmup = 5, .min_lr = 1e-4, .step_size = 7,
                            .milestones = {10, 30}, .gamma = 0.3};
  config.plateau.patience = 2;
  const fs::path file = fs::temp_directory_path() / ("tbgrad_schedule_" + std::to_string(::getpid()) + ".ckpt");
  for (const std::string& name : nn::schedule_names()) {
    SCOPED_TRACE(name);
    const bool plateau = name == "plateau";
    auto whole = nn::make_schedule(name, 0.1, config);
    const auto want = lrs_of(*whole, 60, plateau ? metrics : std::vector<double>{});
    auto first = nn::make_schedule(name, 0.1, config);
    std::vector<double> got =
        lrs_of(*first, 23, plateau ? std::vector<double>(metrics.begin(), metrics.begin() + 23)
                                   : std::vector<double>{});
    nn::Checkpoint ckpt;
    nn::add_to_checkpoint(ckpt, *first);
    nn::save_checkpoint(file, ckpt);
    auto resumed = nn::make_schedule(name, 0.1, config);
    nn::load_from_checkpoint(nn::load_checkpoint(file), file, *resumed);
    EXPECT_EQ(resumed->count(), 23);
    const auto rest = lrs_of(*resumed, 37,
                             plateau ? std::vector<double>(metrics.begin() + 23, metrics.end())
                                     : std::vector<double>{});
    got.insert(got.end(), rest.begin(), rest.end());
    EXPECT_EQ(got, want);
  }
  // Another kind's state is refused, naming the file.
  nn::Checkpoint ckpt;
  nn::add_to_checkpoint(ckpt, nn::ConstantSchedule(0.1));
  nn::CosineSchedule cos(0.1, {.total = 10});
  const std::string e = message_of<nn::CheckpointError>([&] { nn::load_from_checkpoint(ckpt, file, cos); });
  EXPECT_TRUE(contains(e, "'constant' schedule, not 'cosine'")) << e;
  EXPECT_TRUE(contains(e, file.filename().string())) << e;
  fs::remove(file);
}

TEST(Schedule, NamesAndBadSettings) {
  EXPECT_EQ(nn::schedule_choices(), "constant, step, multistep, cosine, onecycle or plateau");
  EXPECT_EQ(message_of<Error>([] { nn::check_schedule_name("linear"); }),
            "unknown learning-rate schedule 'linear' (expected constant, step, multistep, cosine, "
            "onecycle or plateau)");
  EXPECT_TRUE(contains(message_of<Error>([] { nn::StepSchedule(0.1, 0); }), "step_size must be >= 1"));
  EXPECT_TRUE(contains(message_of<Error>([] { nn::CosineSchedule(0.1, {.total = 0}); }), "total must be >= 1"));
  EXPECT_TRUE(contains(message_of<Error>([] { nn::ConstantSchedule(-1); }), "learning rate"));
  EXPECT_TRUE(contains(message_of<Error>([] { nn::OneCycleSchedule(0.1, 1); }), "total_steps"));
}

// Training interrupted after 3 steps and resumed from a checkpoint (weights, AdamW's state and
// step count, the schedule) ends with the same bits as 6 steps straight, clipping on.
TEST(Schedule, AResumedRunContinuesTheOptimizerAndScheduleExactly) {
  const data::Dataset d = random_dataset(192, 4);
  const fs::path file = fs::temp_directory_path() / ("tbgrad_resume_" + std::to_string(::getpid()) + ".ckpt");
  const auto batch = [](int s) {
    std::vector<std::int64_t> idx(32);
    for (int i = 0; i < 32; ++i) idx[static_cast<std::size_t>(i)] = s * 32 + i;
    return idx;
  };
  struct Run {
    nn::ParamStore store;
    std::unique_ptr<nn::AdamW> opt;
    std::unique_ptr<nn::Schedule> schedule;
    std::unique_ptr<nn::Trainer> trainer;
    Run() {
      nn::create_parameters(custom_cnn, store);
      Rng rng(5);
      nn::initialize(store, nn::Init::kXavierUniform, rng);
      opt = std::make_unique<nn::AdamW>(store.tensors(), 1e-2,
                                        nn::AdamWOptions{.weight_decay = 0.05, .decay = nn::decay_mask(store)});
      opt->set_max_grad_norm(1.0);
      schedule = std::make_unique<nn::CosineSchedule>(1e-2, nn::CosineOptions{.warmup = 2, .total = 6});
      trainer = std::make_unique<nn::Trainer>(custom_cnn, store, *opt, nn::TrainerOptions{.batch_size = 32});
    }
    void steps(const data::Dataset& d, int from, int to, const std::function<std::vector<std::int64_t>(int)>& b) {
      for (int s = from; s < to; ++s) {
        schedule->apply(*opt);
        trainer->step(d, b(s));
        schedule->step();
      }
    }
  };
  Run straight;
  straight.steps(d, 0, 6, batch);
  Run first;
  first.steps(d, 0, 3, batch);
  {
    nn::Checkpoint ckpt;
    nn::add_to_checkpoint(ckpt, first.store, first.opt.get());
    nn::add_to_checkpoint(ckpt, *first.schedule);
    nn::save_checkpoint(file, ckpt);
  }
  Run resumed;
  const nn::Checkpoint ckpt = nn::load_checkpoint(file);
  nn::load_from_checkpoint(ckpt, file, resumed.store, resumed.opt.get());
  nn::load_from_checkpoint(ckpt, file, *resumed.schedule);
  resumed.trainer->parameters_changed();
  resumed.steps(d, 3, 6, batch);
  for (std::size_t i = 0; i < straight.store.tensors().size(); ++i) {
    EXPECT_TRUE(bits(straight.store.tensors()[i]) == bits(resumed.store.tensors()[i]))
        << straight.store.names()[i];
  }
  EXPECT_EQ(straight.opt->steps(), resumed.opt->steps());
  EXPECT_EQ(straight.schedule->lr(), resumed.schedule->lr());
  fs::remove(file);
}

// --- summary ----------------------------------------------------------------------------------

// The reference CNN ("seed") at batch B, op by op, worked out by hand: conv2d's cost is
// 2 * N*OC*OH*OW * IC*KH*KW + N*OC*OH*OW (its bias) flops, a matmul's 2*M*N*K, average pooling's
// N*C*OH*OW*KH*KW, the cross-entropy's 4*B*C, an elementwise op's one per element, a reshape's
// none; multiply-adds are half the flops.
TEST(Summary, TheReferenceCnnCountedByHand) {
  const std::int64_t B = 8;
  const nn::ModelSummary s = nn::summarize(nn::model_fn("seed"), B);
  struct Want {
    const char* op;
    Shape out;
    std::int64_t params;
    double mult_adds;
  };
  const double b = static_cast<double>(B);
  const std::vector<Want> want = {
      {"conv2d", {B, 3, 24, 24}, 3 * 25 + 3, b * 1728 * 25 + b * 1728 / 2.0},
      {"relu", {B, 3, 24, 24}, 0, b * 1728 / 2.0},
      {"avg_pool2d", {B, 3, 11, 11}, 0, b * 3 * 121 * 16 / 2.0},
      {"conv2d", {B, 5, 9, 9}, 5 * 27 + 5, b * 405 * 27 + b * 405 / 2.0},
      {"relu", {B, 5, 9, 9}, 0, b * 405 / 2.0},
      {"avg_pool2d", {B, 5, 7, 7}, 0, b * 5 * 49 * 9 / 2.0},
      {"reshape", {B, 245}, 0, 0},
      {"matmul", {B, 100}, 245 * 100, b * 100 * 245},
      {"add", {B, 100}, 100, b * 100 / 2.0},
      {"relu", {B, 100}, 0, b * 100 / 2.0},
      {"matmul", {B, 64}, 100 * 64, b * 64 * 100},
      {"add", {B, 64}, 64, b * 64 / 2.0},
      {"relu", {B, 64}, 0, b * 64 / 2.0},
      {"matmul", {B, 10}, 64 * 10, b * 10 * 64},
      {"add", {B, 10}, 10, b * 10 / 2.0},
      {"softmax_cross_entropy", {}, 0, 4 * b * 10 / 2.0},
  };
  ASSERT_EQ(s.rows.size(), want.size()) << s.table();
  double total = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE("row " + std::to_string(i) + " " + s.rows[i].op);
    EXPECT_EQ(s.rows[i].op, want[i].op);
    EXPECT_EQ(s.rows[i].output, want[i].out);
    EXPECT_EQ(s.rows[i].param_count, want[i].params);
    EXPECT_DOUBLE_EQ(s.rows[i].mult_adds, want[i].mult_adds);
    total += want[i].mult_adds;
  }
  EXPECT_EQ(s.rows[0].params, (std::vector<std::string>{"conv1.w", "conv1.b"}));
  EXPECT_EQ(s.total_params, 31932);
  EXPECT_DOUBLE_EQ(s.total_mult_adds, total);
  nn::ParamStore store;
  nn::create_parameters(nn::model_fn("seed"), store);
  EXPECT_EQ(s.total_params, store.count());
  const std::string table = s.table();
  EXPECT_TRUE(contains(table, "Total params: 31,932")) << table;
  EXPECT_TRUE(contains(table, "conv2d (conv1.w, conv1.b)")) << table;
  EXPECT_TRUE(contains(table, "[8,3,24,24]")) << table;
}

TEST(Summary, EveryModelsTotalIsItsStoresCount) {
  for (const std::string& name : nn::model_names()) {
    nn::ParamStore store;
    nn::create_parameters(nn::model_fn(name), store);
    EXPECT_EQ(nn::summarize(nn::model_fn(name), 3).total_params, store.count()) << name;
  }
  nn::ParamStore store;
  nn::create_parameters(custom_cnn, store);
  EXPECT_EQ(nn::summarize(custom_cnn, 2).total_params, store.count());
  EXPECT_TRUE(contains(message_of<Error>([] { nn::summarize(custom_cnn, 0); }), "batch size"));
}

}  // namespace
}  // namespace tbgrad
