// The trainer's logic on synthetic data: learning, checkpoints, resume, evaluation.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <tbgrad.hpp>

#include "apps/mnist/synthetic.hpp"
#include "apps/mnist/trainer.hpp"
#include "nn/checkpoint.hpp"

namespace tbgrad::mnist {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() /
            ("tbgrad_trainer_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++));
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

std::string read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

const Dataset& synthetic_train() {
  static const Dataset d = make_synthetic(3000, 1);
  return d;
}
const Dataset& synthetic_test() {
  static const Dataset d = make_synthetic(300, 2);
  return d;
}

TEST(Trainer, LearnsSyntheticShapesToHighAccuracy) {
  TrainConfig cfg;
  cfg.epochs = 4;
  cfg.seed = 5;
  TrainResult r = train(cfg, synthetic_train(), synthetic_test(), nullptr);
  ASSERT_EQ(r.epochs.size(), 4u);
  EXPECT_GE(r.test.accuracy, 0.95) << "test loss " << r.test.loss;
  EXPECT_LT(r.epochs.back().train_loss, r.epochs.front().train_loss);
}

// The app's schedules are the library's (nn/schedule.hpp), set up for a run's epochs: the one
// check of a schedule's name is nn::check_schedule_name, and cosine is the app's cosine of old,
// lr * (1 + cos(pi * (epoch - 1) / epochs)) / 2, stepped per epoch.
TEST(Trainer, TheSchedulesAreTheLibrarysSetUpForTheRun) {
  AppSchedule constant = app_schedule("constant", 0.5, 5, 100);
  AppSchedule cosine = app_schedule("cosine", 0.5, 5, 100);
  EXPECT_FALSE(cosine.per_step);
  for (std::int64_t epoch = 1; epoch <= 5; ++epoch) {
    EXPECT_EQ(constant.schedule->lr(), 0.5);
    EXPECT_EQ(cosine.schedule->lr(),
              0.5 * 0.5 * (1.0 + std::cos(3.14159265358979323846 * static_cast<double>(epoch - 1) / 5.0)))
        << "epoch " << epoch;
    constant.schedule->step();
    cosine.schedule->step();
  }
  AppSchedule onecycle = app_schedule("onecycle", 0.5, 2, 10);  // 20 steps
  EXPECT_TRUE(onecycle.per_step);
  EXPECT_NEAR(onecycle.schedule->lr(), 0.5 / 25, 1e-15);
  for (const std::string& name : nn::schedule_names()) EXPECT_NO_THROW(app_schedule(name, 0.1, 3, 5)) << name;
  try {
    app_schedule("linear", 0.5, 1, 5);
    ADD_FAILURE() << "linear accepted";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "unknown learning-rate schedule 'linear' (expected constant, step, multistep, "
                 "cosine, onecycle or plateau)");
  }
}

// --warmup-epochs and --model resnet: per step, scripts/pytorch_mnist.py's formula, with
// S = 10 steps per epoch, E = 3 epochs, W = 1: lr * (k + 1) / 10 for k < 10, then the cosine
// over the remaining 20 steps (or lr for constant).
TEST(Trainer, WarmupAndResnetSchedulesArePerStepAsPytorchMnistPys) {
  const double pi = 3.14159265358979323846;
  AppSchedule cosine = app_schedule("cosine", 0.05, 3, 10, 1);
  AppSchedule constant = app_schedule("constant", 0.05, 3, 10, 1);
  AppSchedule resnet = app_schedule("cosine", 0.05, 3, 10, 0, /*per_step=*/true);
  EXPECT_TRUE(cosine.per_step);
  EXPECT_TRUE(constant.per_step);
  EXPECT_TRUE(resnet.per_step);
  for (std::int64_t k = 0; k < 30; ++k) {
    const double warm = 0.05 * static_cast<double>(k + 1) / 10.0;
    const double cos_k = 0.05 * 0.5 * (1 + std::cos(pi * static_cast<double>(k - 10) / 20.0));
    EXPECT_NEAR(cosine.schedule->lr(), k < 10 ? warm : cos_k, 1e-15) << k;
    EXPECT_NEAR(constant.schedule->lr(), k < 10 ? warm : 0.05, 1e-15) << k;
    EXPECT_NEAR(resnet.schedule->lr(),
                0.05 * 0.5 * (1 + std::cos(pi * static_cast<double>(k) / 30.0)), 1e-15)
        << k;
    cosine.schedule->step();
    constant.schedule->step();
    resnet.schedule->step();
  }
  // Without a warmup or resnet, nothing changes: cosine is per epoch as before.
  EXPECT_FALSE(app_schedule("cosine", 0.05, 3, 10, 0, false).per_step);
  EXPECT_FALSE(app_schedule("constant", 0.05, 3, 10, 0, true).per_step);
  EXPECT_THROW(app_schedule("step", 0.05, 3, 10, 1), Error);
  EXPECT_THROW(app_schedule("cosine", 0.05, 3, 10, 4), Error);
}

class EveryModelAndOptimizer
    : public ::testing::TestWithParam<std::tuple<const char*, const char*>> {};

TEST_P(EveryModelAndOptimizer, Learns) {
  const auto [model, opt] = GetParam();
  TrainConfig cfg;
  cfg.model = model;
  cfg.optimizer = opt;
  cfg.epochs = 2;
  TrainResult r = train(cfg, synthetic_train(), synthetic_test(), nullptr);
  // Chance is 10%: every combination must clearly be learning.
  EXPECT_GE(r.test.accuracy, 0.5) << model << " with " << opt;
}

INSTANTIATE_TEST_SUITE_P(
    Trainer, EveryModelAndOptimizer,
    ::testing::Combine(::testing::Values("seed", "seed-nopool", "lenet5"),
                       ::testing::Values("sgd", "momentum", "adam")),
    [](const auto& info) {
      std::string s = std::string(std::get<0>(info.param)) + "_" + std::get<1>(info.param);
      for (char& c : s) c = c == '-' ? '_' : c;
      return s;
    });

TEST(Trainer, BatchSizeOneWorks) {
  TrainConfig cfg;
  cfg.batch_size = 1;
  cfg.epochs = 1;
  cfg.limit = 300;
  TrainResult r = train(cfg, synthetic_train(), synthetic_test(), nullptr);
  EXPECT_EQ(r.images_trained, 300);
  EXPECT_GT(r.test.accuracy, 0.5);
}

TEST(Trainer, APartialLastBatchIsTrainedOn) {
  TrainConfig cfg;
  cfg.batch_size = 32;
  cfg.epochs = 1;
  cfg.limit = 100;  // 3 full batches and one of 4
  TrainResult r = train(cfg, synthetic_train(), synthetic_test(), nullptr);
  EXPECT_EQ(r.images_trained, 100);
}

// A training step runs the batch as micro-batches (16 examples from batch 32, 8 below) whose
// gradients are summed in parallel (trainer.cpp, Note [Micro-batches]): the step must still be
// SGD on the gradient of the whole batch's mean loss. Checked against one graph over the batch,
// for batches of one micro-batch, of a balanced and an unbalanced tree, and with a short last
// micro-batch.
TEST(Trainer, OneStepIsSgdOnTheWholeBatchsMeanGradient) {
  TempDir dir;
  constexpr double kLr = 0.05;
  for (std::int64_t batch : {8, 20, 32, 44}) {
    SCOPED_TRACE("batch " + std::to_string(batch));
    TrainConfig cfg;
    cfg.optimizer = "sgd";
    cfg.lr = kLr;
    cfg.schedule = "constant";
    cfg.epochs = 1;
    cfg.limit = batch;  // one step per epoch, over the first `batch` images
    cfg.batch_size = batch;
    cfg.save = dir.path() / "before.ckpt";
    train(cfg, synthetic_train(), synthetic_test(), nullptr);
    cfg.epochs = 2;
    cfg.resume = cfg.save;
    cfg.save = dir.path() / "after.ckpt";
    train(cfg, synthetic_train(), synthetic_test(), nullptr);
    const nn::Checkpoint before = nn::load_checkpoint(dir.path() / "before.ckpt");
    const nn::Checkpoint after = nn::load_checkpoint(dir.path() / "after.ckpt");

    // The whole batch in one graph, at the weights before the step.
    Graph g;
    nn::ParamStore store;
    nn::Network net = nn::build_network("seed", g, batch, store);
    for (std::size_t i = 0; i < store.tensors().size(); ++i) {
      const nn::CheckpointTensor* t = before.find(store.names()[i]);
      ASSERT_NE(t, nullptr) << store.names()[i];
      ASSERT_EQ(t->data.size(), store.tensors()[i].nbytes());
      std::memcpy(store.tensors()[i].raw(), t->data.data(), t->data.size());
    }
    const Dataset& data = synthetic_train();
    Tensor images({batch, 1, 28, 28}, DType::kF32), labels({batch}, DType::kI32);
    for (std::int64_t k = 0; k < batch * 28 * 28; ++k) {
      images.data<float>()[k] = static_cast<float>(data.images[static_cast<std::size_t>(k)]) *
                                (1.0f / 255.0f);
    }
    for (std::int64_t k = 0; k < batch; ++k) {
      labels.data<std::int32_t>()[k] = data.labels[static_cast<std::size_t>(k)];
    }
    auto grads = grad(net.loss, net.params);
    Executor ex(g, {grads});
    ex.bind(net.images, images).bind(net.labels, labels);
    ex.run();

    for (std::size_t i = 0; i < store.tensors().size(); ++i) {
      const std::string& name = store.names()[i];
      const nn::CheckpointTensor* w0 = before.find(name);
      const nn::CheckpointTensor* w1 = after.find(name);
      ASSERT_NE(w1, nullptr) << name;
      const std::size_t n = w0->data.size() / sizeof(float);
      std::vector<float> a(n), b(n);
      std::memcpy(a.data(), w0->data.data(), w0->data.size());
      std::memcpy(b.data(), w1->data.data(), w1->data.size());
      const float* gv = ex[grads[i]].data<float>();
      double largest = 0;
      for (std::size_t j = 0; j < n; ++j) largest = std::max(largest, kLr * std::abs(gv[j]));
      ASSERT_GT(largest, 0) << name << ": the step's gradient is zero, so nothing is checked";
      for (std::size_t j = 0; j < n; ++j) {
        const double expected = static_cast<double>(a[j]) - kLr * static_cast<double>(gv[j]);
        ASSERT_NEAR(b[j], expected, 1e-4 * largest + 1e-7) << name << "[" << j << "]";
      }
    }
  }
}

// Each thread of a step updates its own replica of the weights and optimizer state
// (trainer.cpp, Note [Replicas]). A last batch that fits one micro-batch updates replica 0
// only, and one of 20 images uses fewer replicas than a full batch, so the others must be
// brought up to date before the next full batch: with Adam's moments too, or the thread
// counts would diverge.
TEST(Trainer, ReplicasStayEqualAcrossBatchesThatUseFewerOfThem) {
  TempDir dir;
  for (const char* opt : {"adam", "momentum"}) {
    for (std::int64_t limit : {100, 84}) {  // last batches of 4 and of 20 images
      std::string first;
      for (int threads : {1, 2, 3}) {
        ThreadScope scope(threads);
        TrainConfig cfg;
        cfg.optimizer = opt;
        cfg.epochs = 3;
        cfg.limit = limit;
        cfg.save = dir.path() / "run.ckpt";
        train(cfg, synthetic_train(), synthetic_test(), nullptr);
        const std::string bytes = read_bytes(cfg.save);
        ASSERT_FALSE(bytes.empty());
        if (threads == 1) {
          first = bytes;
        } else {
          EXPECT_TRUE(bytes == first) << opt << ", " << limit << " images, " << threads
                                      << " threads: checkpoint differs from 1 thread's";
        }
      }
    }
  }
}

TEST(Trainer, TheSameSeedGivesTheSameCheckpointBytes) {
  TempDir dir;
  for (int run = 0; run < 2; ++run) {
    TrainConfig cfg;
    cfg.epochs = 1;
    cfg.limit = 256;
    cfg.save = dir.path() / ("run" + std::to_string(run) + ".ckpt");
    train(cfg, synthetic_train(), synthetic_test(), nullptr);
  }
  EXPECT_EQ(read_bytes(dir.path() / "run0.ckpt"), read_bytes(dir.path() / "run1.ckpt"));
}

TEST(Trainer, ResumingGivesTheSameCheckpointAsTrainingStraight) {
  TempDir dir;
  for (const char* opt : {"sgd", "adam"}) {
    TrainConfig straight;
    straight.optimizer = opt;
    straight.epochs = 2;
    straight.limit = 256;
    straight.save = dir.path() / "straight.ckpt";
    train(straight, synthetic_train(), synthetic_test(), nullptr);

    TrainConfig first = straight;
    first.epochs = 1;
    first.save = dir.path() / "resumed.ckpt";
    train(first, synthetic_train(), synthetic_test(), nullptr);
    TrainConfig second = straight;
    second.resume = dir.path() / "resumed.ckpt";
    second.save = dir.path() / "resumed.ckpt";
    TrainResult r = train(second, synthetic_train(), synthetic_test(), nullptr);
    ASSERT_EQ(r.epochs.size(), 1u);
    EXPECT_EQ(r.epochs[0].epoch, 2);
    EXPECT_EQ(read_bytes(dir.path() / "straight.ckpt"), read_bytes(dir.path() / "resumed.ckpt"))
        << opt;
  }
  // The schedule's state is in the checkpoint: a per-step one-cycle run and a plateau run
  // (whose learning rate depends on the losses seen), stopped after epoch 2 of 3 (the
  // checkpoint written then) and resumed, end as the run straight through, with AdamW.
  for (const char* schedule : {"onecycle", "plateau"}) {
    TrainConfig straight;
    straight.optimizer = "adamw";
    straight.schedule = schedule;
    straight.epochs = 3;
    straight.limit = 256;
    straight.save = dir.path() / "straight.ckpt";
    train(straight, synthetic_train(), synthetic_test(), [&](const EpochStats& s) {
      if (s.epoch == 2) fs::copy_file(straight.save, dir.path() / "resumed.ckpt",
                                      fs::copy_options::overwrite_existing);
    });
    TrainConfig second = straight;
    second.resume = dir.path() / "resumed.ckpt";
    second.save = dir.path() / "resumed.ckpt";
    train(second, synthetic_train(), synthetic_test(), nullptr);
    EXPECT_EQ(read_bytes(dir.path() / "straight.ckpt"), read_bytes(dir.path() / "resumed.ckpt"))
        << schedule;
  }
}

TEST(Trainer, ResumeRefusesACheckpointOfAnotherModel) {
  TempDir dir;
  TrainConfig cfg;
  cfg.epochs = 1;
  cfg.limit = 64;
  cfg.save = dir.path() / "seed.ckpt";
  train(cfg, synthetic_train(), synthetic_test(), nullptr);
  TrainConfig other;
  other.model = "lenet5";
  other.epochs = 2;
  other.limit = 64;
  other.resume = cfg.save;
  EXPECT_THROW(train(other, synthetic_train(), synthetic_test(), nullptr), ModelError);
}

TEST(Trainer, SavedModelEvaluatesAndPredictsLikeTheTrainedOne) {
  TempDir dir;
  TrainConfig cfg;
  cfg.epochs = 2;
  cfg.save = dir.path() / "m.ckpt";
  TrainResult r = train(cfg, synthetic_train(), synthetic_test(), nullptr);
  Model m = Model::load(cfg.save);
  EXPECT_EQ(m.name(), "seed");
  EXPECT_EQ(m.epochs_trained(), 2);
  EvalResult e = m.evaluate(synthetic_test());
  EXPECT_EQ(e.accuracy, r.test.accuracy);
  EXPECT_DOUBLE_EQ(e.loss, r.test.loss);
  std::int64_t total = 0;
  for (const auto& row : e.confusion) {
    for (std::int64_t v : row) total += v;
  }
  EXPECT_EQ(total, synthetic_test().count);
  // Predicting one image agrees with the evaluation's argmax and gives probabilities.
  std::vector<float> img(784);
  for (int i = 0; i < 784; ++i) img[static_cast<std::size_t>(i)] = synthetic_test().images[static_cast<std::size_t>(i)] / 255.0f;
  auto p = m.predict(img);
  double s = 0;
  for (double v : p) s += v;
  EXPECT_NEAR(s, 1.0, 1e-5);
  EXPECT_EQ(std::max_element(p.begin(), p.end()) - p.begin(), synthetic_test().labels[0]);
}

TEST(Trainer, ADivergingRunStopsWithoutTouchingTheCheckpoint) {
  TempDir dir;
  TrainConfig good;
  good.epochs = 1;
  good.limit = 128;
  good.save = dir.path() / "m.ckpt";
  train(good, synthetic_train(), synthetic_test(), nullptr);
  const std::string before = read_bytes(good.save);
  // The fused cross-entropy cannot overflow, so a huge learning rate gives a huge but finite
  // loss; a NaN weight is what reliably makes the loss non-finite.
  nn::Checkpoint ckpt = nn::load_checkpoint(good.save);
  for (nn::CheckpointTensor& t : ckpt.tensors) {
    if (t.name == "fc3.b") {
      const float nan = std::numeric_limits<float>::quiet_NaN();
      std::memcpy(t.data.data(), &nan, sizeof nan);
    }
  }
  nn::save_checkpoint(dir.path() / "nan.ckpt", ckpt);
  TrainConfig bad = good;
  bad.resume = dir.path() / "nan.ckpt";
  bad.epochs = 3;
  try {
    train(bad, synthetic_train(), synthetic_test(), nullptr);
    FAIL() << "expected DivergedError";
  } catch (const DivergedError& e) {
    EXPECT_NE(std::string(e.what()).find("epoch 2, step 1 "), std::string::npos) << e.what();
  }
  EXPECT_EQ(read_bytes(good.save), before);
}

// Parses a CSV with a header into rows of numbers.
std::vector<std::vector<double>> read_csv(const fs::path& p, std::string* header) {
  std::ifstream f(p);
  std::getline(f, *header);
  std::vector<std::vector<double>> rows;
  std::string line;
  while (std::getline(f, line)) {
    std::vector<double> row;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) row.push_back(std::stod(cell));
    rows.push_back(row);
  }
  return rows;
}

TEST(Trainer, TheStepLogHasOneRowPerStepAndSgdStepsAreLrTimesTheGradient) {
  TempDir dir;
  TrainConfig cfg;
  cfg.optimizer = "sgd";
  cfg.lr = 0.05;
  cfg.schedule = "constant";
  cfg.epochs = 2;
  cfg.limit = 100;
  cfg.batch_size = 32;  // 4 steps per epoch, the last with 4 images
  cfg.step_log = dir.path() / "steps.csv";
  const TrainResult r = train(cfg, synthetic_train(), synthetic_test(), nullptr);
  std::string header;
  const auto rows = read_csv(cfg.step_log, &header);
  EXPECT_EQ(header, "epoch,step,loss,lr,grad_norm,update_norm");
  ASSERT_EQ(rows.size(), 8u);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    ASSERT_EQ(rows[i].size(), 6u);
    const std::size_t epoch = i / 4 + 1, step = i % 4 + 1;
    EXPECT_EQ(rows[i][0], static_cast<double>(epoch));
    EXPECT_EQ(rows[i][1], static_cast<double>(step));
    EXPECT_TRUE(std::isfinite(rows[i][2]) && rows[i][2] > 0);
    EXPECT_EQ(rows[i][3], 0.05);
    EXPECT_GT(rows[i][4], 0);
    // Plain SGD moves the weights by exactly lr times the gradient (float rounding aside).
    EXPECT_NEAR(rows[i][5], 0.05 * rows[i][4], 1e-5 * rows[i][4]) << "step " << i;
  }
  // The epoch's mean training loss is the batch-weighted mean of its steps' losses.
  const double mean1 = (32 * (rows[0][2] + rows[1][2] + rows[2][2]) + 4 * rows[3][2]) / 100;
  EXPECT_NEAR(mean1, r.epochs[0].train_loss, 1e-9);
  // Logging changes nothing: the same run without it ends with the same weights.
  TrainConfig plain = cfg;
  plain.step_log.clear();
  plain.save = dir.path() / "plain.ckpt";
  cfg.save = dir.path() / "logged.ckpt";
  cfg.step_log = dir.path() / "steps2.csv";
  train(plain, synthetic_train(), synthetic_test(), nullptr);
  train(cfg, synthetic_train(), synthetic_test(), nullptr);
  EXPECT_EQ(read_bytes(plain.save), read_bytes(cfg.save));
}

TEST(Trainer, InspectionGivesEveryLayerOfOneImageConsistentWithPredict) {
  TempDir dir;
  TrainConfig cfg;
  cfg.epochs = 1;
  cfg.limit = 500;
  cfg.save = dir.path() / "m.ckpt";
  train(cfg, synthetic_train(), synthetic_test(), nullptr);
  const Model m = Model::load(cfg.save);
  const std::int64_t index = 7;
  const Inspection in = m.inspect(synthetic_test(), index);
  EXPECT_EQ(in.index, index);
  EXPECT_EQ(in.label, synthetic_test().labels[index]);
  ASSERT_EQ(in.image.shape, (std::vector<std::int64_t>{1, 28, 28}));
  for (std::size_t i = 0; i < 784; ++i) {
    ASSERT_EQ(in.image.data[i], synthetic_test().images[index * 784 + i] * (1.0f / 255.0f));
  }
  std::vector<std::string> names;
  for (const auto& l : in.layers) names.push_back(l.name);
  EXPECT_EQ(names, (std::vector<std::string>{"conv1", "conv1.relu", "pool1", "conv2", "conv2.relu",
                                             "pool2", "fc1", "fc1.relu", "fc2", "fc2.relu", "fc3"}));
  EXPECT_EQ(in.layers[0].shape, (std::vector<std::int64_t>{3, 24, 24}));
  EXPECT_EQ(in.layers[2].shape, (std::vector<std::int64_t>{3, 11, 11}));
  EXPECT_EQ(in.layers[5].shape, (std::vector<std::int64_t>{5, 7, 7}));
  EXPECT_EQ(in.layers[10].shape, (std::vector<std::int64_t>{10}));
  for (const auto& l : in.layers) {
    std::int64_t n = 1;
    for (std::int64_t d : l.shape) n *= d;
    EXPECT_EQ(static_cast<std::int64_t>(l.data.size()), n) << l.name;
  }
  // Each ReLU layer is the ReLU of the layer before it.
  for (std::size_t i = 0; i < in.layers[0].data.size(); ++i) {
    ASSERT_EQ(in.layers[1].data[i], std::max(0.0f, in.layers[0].data[i]));
  }
  // The logits give the probabilities, which match predict() on the same pixels.
  const std::array<double, 10> p = m.predict(in.image.data);
  for (std::size_t c = 0; c < 10; ++c) EXPECT_NEAR(in.probabilities[c], p[c], 1e-6);
  const auto& logits = in.layers.back().data;
  EXPECT_EQ(in.predicted, std::max_element(logits.begin(), logits.end()) - logits.begin());
  ASSERT_EQ(in.kernels.size(), 2u);
  EXPECT_EQ(in.kernels[0].name, "conv1.w");
  EXPECT_EQ(in.kernels[0].shape, (std::vector<std::int64_t>{3, 1, 5, 5}));
  EXPECT_EQ(in.kernels[1].shape, (std::vector<std::int64_t>{5, 3, 3, 3}));
  EXPECT_THROW(m.inspect(synthetic_test(), synthetic_test().count), Error);
  EXPECT_THROW(m.inspect(synthetic_test(), -1), Error);
}

}  // namespace
}  // namespace tbgrad::mnist
