// The training library: batching, the data-parallel step for any model, evaluation, checkpoints
// by name, and the API fixes of issue 12.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <tbgrad.hpp>
#include <thread>
#include <type_traits>
#include <vector>

#include "tests/custom_cnn.hpp"
#include "tests/thread_ranks.hpp"

namespace tbgrad {
namespace {

namespace fs = std::filesystem;

// Random byte images whose label is their brightest quarter... or any digit: the tests here
// check arithmetic, not learning.
data::Dataset random_dataset(std::int64_t count, std::uint64_t seed) {
  data::Dataset d;
  d.count = count;
  d.rows = d.cols = 28;
  nn::Rng rng(seed);
  d.images.resize(static_cast<std::size_t>(count * 784));
  for (auto& p : d.images) p = static_cast<std::uint8_t>(rng.below(256));
  for (std::int64_t i = 0; i < count; ++i)
    d.labels.push_back(static_cast<std::uint8_t>(rng.below(10)));
  return d;
}

using testing::custom_cnn;    // tests/custom_cnn.hpp
using testing::ThreadRanks;  // tests/thread_ranks.hpp

std::vector<std::int64_t> iota(std::int64_t n, std::int64_t from = 0) {
  std::vector<std::int64_t> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = from + i;
  return v;
}

// --- data -----------------------------------------------------------------------------------

TEST(Batcher, CoversEveryExampleOnceWithAShortLastBatch) {
  const data::Dataset d = random_dataset(70, 1);
  data::Batcher b(d, 32);
  nn::Rng rng(5);
  b.shuffle(rng);
  ASSERT_EQ(b.num_batches(), 3);
  EXPECT_EQ(b.batch(0).size(), 32u);
  EXPECT_EQ(b.batch(2).size(), 6u);
  std::vector<int> seen(70, 0);
  for (std::int64_t k = 0; k < b.num_batches(); ++k) {
    for (std::int64_t i : b.batch(k)) ++seen[static_cast<std::size_t>(i)];
  }
  for (int s : seen) EXPECT_EQ(s, 1);
  EXPECT_EQ(b.images(2).shape(), (Shape{6, 1, 28, 28}));
  EXPECT_EQ(b.labels(0).shape(), (Shape{32}));
}

TEST(Batcher, TheSameGeneratorStateGivesTheSameOrder) {
  const data::Dataset d = random_dataset(50, 1);
  data::Batcher a(d, 8), b(d, 8);
  nn::Rng r1(9), r2(9);
  a.shuffle(r1);
  b.shuffle(r2);
  for (std::int64_t k = 0; k < a.num_batches(); ++k) {
    EXPECT_TRUE(std::equal(a.batch(k).begin(), a.batch(k).end(), b.batch(k).begin()));
  }
  a.shuffle(r1);  // the next epoch's order differs
  EXPECT_FALSE(std::equal(a.batch(0).begin(), a.batch(0).end(), b.batch(0).begin()));
}

// The batcher draws its order from the initialisers' generator class, graph/rng.hpp's (data/
// includes nothing of nn/), which nn::Rng still names.
static_assert(std::is_same_v<nn::Rng, Rng>);

TEST(Batcher, FillScalesPixelsToTheUnitIntervalAndCopiesLabels) {
  const data::Dataset d = random_dataset(10, 2);
  data::Batcher b(d, 4, 6);  // the first 6 examples only
  EXPECT_EQ(b.size(), 6);
  b.fill(1);  // examples 4, 5: the short last batch
  const Tensor& img = b.images(1);
  ASSERT_EQ(img.shape(), (Shape{2, 1, 28, 28}));
  for (std::int64_t j = 0; j < 784; ++j) {
    const std::size_t at = std::size_t{5} * 784 + static_cast<std::size_t>(j);  // image 5
    ASSERT_EQ(img.data<float>()[784 + j], static_cast<float>(d.images[at]) * (1.0f / 255.0f));
  }
  EXPECT_EQ(b.labels(1).data<std::int32_t>()[0], d.labels[4]);
}

TEST(Batcher, RefusesAnEmptyDataSet) {
  data::Dataset d;
  EXPECT_THROW(data::Batcher(d, 32), data::DataError);
}

// --- the data-parallel step ------------------------------------------------------------------

// The step's gradient (micro-batches, batch-level contractions, replicas) must be the gradient of
// the whole batch's mean loss: checked against one graph over the batch, for the custom network
// and the seed model, at batch sizes with a short last micro-batch.
TEST(Trainer, TheStepsGradientIsTheWholeBatchsMeanGradient) {
  const data::Dataset d = random_dataset(64, 3);
  for (const char* name : {"custom", "seed"}) {
    for (std::int64_t batch : {8, 30}) {
      SCOPED_TRACE(std::string(name) + ", batch " + std::to_string(batch));
      ThreadScope threads(2);
      const nn::ModelFn model =
          std::string(name) == "custom" ? nn::ModelFn(custom_cnn) : nn::model_fn("seed");
      nn::ParamStore store;
      nn::create_parameters(model, store);
      nn::Rng rng(4);
      nn::initialize(store, nn::Init::kXavierUniform, rng);
      for (const Tensor& t : store.tensors()) {
        if (t.shape().rank() == 1) nn::uniform(t, -0.1, 0.1, rng);  // nonzero biases
      }
      nn::SGD sgd(store.tensors(), 0.1);
      nn::Trainer trainer(model, store, sgd, {.batch_size = batch});
      const auto idx = iota(batch, 3);

      Graph g;  // the whole batch in one graph, at the same weights
      nn::ModelGraph m = model(g, store, batch);
      auto grads = grad(m.loss, g.params());
      auto ex = make_executor(g, {m.loss, grads});
      Tensor images({batch, 1, 28, 28}, DType::kF32), labels({batch}, DType::kI32);
      data::load_examples(d, idx, images, labels);
      ex->bind(m.inputs, images).bind(m.labels, labels).run();

      trainer.step(d, idx);
      EXPECT_NEAR(trainer.loss(), (*ex)[m.loss].at(0), 1e-5);
      const auto step_grads = trainer.gradients();
      ASSERT_EQ(step_grads.size(), grads.size());
      for (std::size_t i = 0; i < grads.size(); ++i) {
        const Tensor& want = (*ex)[grads[i]];
        double largest = 0;
        for (std::int64_t j = 0; j < want.numel(); ++j)
          largest = std::max(largest, std::abs(want.at(j)));
        ASSERT_GT(largest, 0) << store.names()[i];
        for (std::int64_t j = 0; j < want.numel(); ++j) {
          ASSERT_NEAR(step_grads[i].at(j), want.at(j), 1e-4 * largest)
              << store.names()[i] << "[" << j << "]";
        }
      }
    }
  }
}

TEST(Trainer, RecognisesTheGradientsThatContractOverTheBatchFromTheGraph) {
  nn::ParamStore store;
  nn::create_parameters(custom_cnn, store);
  nn::SGD sgd(store.tensors(), 0.1);
  nn::Trainer trainer(custom_cnn, store, sgd, {.batch_size = 32});
  EXPECT_EQ(trainer.micro_batch(), 16);  // Note [Micro-batches]: 16 from batch 32, 8 below
  EXPECT_EQ(nn::Trainer(custom_cnn, store, sgd, {.batch_size = 31}).micro_batch(), 8);
  auto sorted = [](std::vector<std::string> v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  EXPECT_EQ(sorted(trainer.batch_contracted()),
            (std::vector<std::string>{"fc1.b", "fc1.w", "fc2.b", "fc2.w"}));

  nn::ParamStore seed;
  const nn::ModelFn model = nn::model_fn("seed");
  nn::create_parameters(model, seed);
  nn::SGD sgd2(seed.tensors(), 0.1);
  nn::Trainer t2(model, seed, sgd2, {.batch_size = 32});
  EXPECT_EQ(sorted(t2.batch_contracted()),
            (std::vector<std::string>{"fc1.b", "fc1.w", "fc2.b", "fc2.w", "fc3.b", "fc3.w"}));
  nn::Trainer whole(model, seed, sgd2, {.batch_size = 32, .micro_batch = 32});
  EXPECT_TRUE(whole.batch_contracted().empty());
}

// Weights and optimizer state after a few Adam steps (full batches, then a short one of fewer
// micro-batches, then full again), as bytes, for 1 to 4 threads.
TEST(Trainer, ResultsAreBitIdenticalForAnyThreadCount) {
  const data::Dataset d = random_dataset(120, 6);
  std::vector<std::vector<float>> first;
  for (int threads = 1; threads <= 4; ++threads) {
    ThreadScope scope(threads);
    nn::ParamStore store;
    nn::create_parameters(custom_cnn, store);
    nn::Rng rng(1);
    nn::initialize(store, nn::Init::kXavierUniform, rng);
    nn::Adam adam(store.tensors(), 1e-3);
    nn::Trainer trainer(custom_cnn, store, adam, {.batch_size = 32});
    data::Batcher batches(d, 32, 84);  // 32, 32, 20
    for (int epoch = 0; epoch < 2; ++epoch) nn::train_epoch(trainer, batches, rng);
    std::vector<std::vector<float>> now;
    for (const Tensor& t : store.tensors())
      now.emplace_back(t.data<float>(), t.data<float>() + t.numel());
    for (const auto& [name, t] : adam.state())
      now.emplace_back(t.data<float>(), t.data<float>() + t.numel());
    if (threads == 1) {
      first = now;
    } else {
      EXPECT_TRUE(now == first) << threads << " threads differ from 1";
    }
  }
}

// The weights and optimizer state after two epochs of the user network at batch 32 over 84
// examples (batches of 32, 32 and 20), with `ranks` trainers splitting each batch.
std::vector<std::vector<float>> train_over_ranks(const data::Dataset& d, int ranks) {
  ThreadRanks group(ranks);
  std::vector<std::vector<std::vector<float>>> results(static_cast<std::size_t>(ranks));
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r) {
    threads.emplace_back([&, r] {
      nn::ParamStore store;
      nn::create_parameters(custom_cnn, store);
      nn::Rng rng(1);
      nn::initialize(store, nn::Init::kXavierUniform, rng);
      nn::Adam adam(store.tensors(), 1e-3);
      nn::Trainer trainer(custom_cnn, store, adam, {.batch_size = 32, .comm = &group.member(r)});
      data::Batcher batches(d, 32, 84);
      for (int epoch = 0; epoch < 2; ++epoch) nn::train_epoch(trainer, batches, rng);
      auto& out = results[static_cast<std::size_t>(r)];
      for (const Tensor& t : store.tensors())
        out.emplace_back(t.data<float>(), t.data<float>() + t.numel());
      for (const auto& [name, t] : adam.state())
        out.emplace_back(t.data<float>(), t.data<float>() + t.numel());
      if (ranks > 1) {
        EXPECT_GT(trainer.exchange_stats().steps, 0);
        EXPECT_GT(trainer.exchange_stats().bytes, 0);
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 1; r < ranks; ++r) {
    EXPECT_TRUE(results[static_cast<std::size_t>(r)] == results[0]) << "rank " << r << " of " << ranks;
  }
  return results[0];
}

// Every rank of `ranks` evaluating `d` in batches of 32 (84 examples: 32, 32 and 20) gets what
// one evaluator alone gets, bit for bit; 5 ranks leave two with no batch.
TEST(Evaluator, RanksSplittingTheBatchesGiveOneEvaluatorsBits) {
  const data::Dataset d = random_dataset(84, 7);
  ThreadScope scope(1);
  nn::ParamStore store;
  nn::create_parameters(custom_cnn, store);
  nn::Rng rng(3);
  nn::initialize(store, nn::Init::kXavierUniform, rng);
  const nn::Evaluation alone = nn::Evaluator(custom_cnn, store, 32).evaluate(d);
  ASSERT_EQ(alone.count, 84);
  ASSERT_GT(alone.loss, 0);
  for (int ranks : {1, 2, 3, 5}) {
    ThreadRanks group(ranks);
    std::vector<nn::Evaluation> got(static_cast<std::size_t>(ranks));
    std::vector<std::thread> threads;
    for (int r = 0; r < ranks; ++r) {
      threads.emplace_back([&, r] {
        nn::Evaluator evaluator(custom_cnn, store, 32, &group.member(r));
        got[static_cast<std::size_t>(r)] = evaluator.evaluate(d);
        // A second call reuses the graphs and the exchange buffer.
        const nn::Evaluation again = evaluator.evaluate(d);
        EXPECT_EQ(again.loss, got[static_cast<std::size_t>(r)].loss);
      });
    }
    for (auto& t : threads) t.join();
    for (int r = 0; r < ranks; ++r) {
      const nn::Evaluation& e = got[static_cast<std::size_t>(r)];
      SCOPED_TRACE("rank " + std::to_string(r) + " of " + std::to_string(ranks));
      EXPECT_EQ(e.count, alone.count);
      EXPECT_EQ(e.loss, alone.loss);  // bit for bit
      EXPECT_EQ(e.accuracy, alone.accuracy);
      EXPECT_EQ(e.classes, alone.classes);
      EXPECT_EQ(e.confusion, alone.confusion);
    }
  }
}

TEST(Trainer, RanksSplittingEachBatchGiveOneTrainersBits) {
  const data::Dataset d = random_dataset(120, 6);
  ThreadScope scope(1);
  const auto alone = train_over_ranks(d, 1);
  // 2 ranks; 3 (uneven blocks); 5, more ranks than the short batch's 3 micro-batches.
  for (int ranks : {2, 3, 5}) {
    EXPECT_TRUE(train_over_ranks(d, ranks) == alone) << ranks << " ranks differ from one";
  }
}

// The message of what `fn` throws (of type E), or a failure.
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

// A network of batch B that reads a second graph input (a dropout mask fed by hand): nothing
// feeds it in the trainer.
nn::ModelGraph with_mask(Graph& g, nn::ParamStore& p, std::int64_t b) {
  nn::ModelGraph m;
  m.inputs = g.input("images", {b, 784});
  m.labels = g.input_labels("labels", {b});
  const Value mask = g.input("dropout.mask", {b, 784});
  m.outputs = linear(mul(m.inputs, mask), p.param(g, "fc.w", {10, 784}));
  m.loss = softmax_cross_entropy(m.outputs, m.labels);
  return m;
}

// Errors speak of the batch the user chose and the nodes they made, not of a micro-batch's
// graph: the unbound input was "dropout.mask ([16,784]) is not bound" at batch 32.
TEST(Trainer, ErrorsNameTheUsersBatchAndNodes) {
  nn::ParamStore store;
  nn::create_parameters(with_mask, store);
  nn::SGD sgd(store.tensors(), 0.1);
  std::string e = message_of<Error>([&] { nn::Trainer(with_mask, store, sgd, {.batch_size = 32}); });
  EXPECT_NE(e.find("dropout.mask ([32,784])"), std::string::npos) << e;
  EXPECT_NE(e.find("neither ModelGraph::inputs nor ModelGraph::labels"), std::string::npos) << e;
  EXPECT_EQ(e.find("[16,"), std::string::npos) << e;
  e = message_of<Error>([&] { nn::Evaluator(with_mask, store, 25).evaluate(random_dataset(30, 1)); });
  EXPECT_NE(e.find("dropout.mask ([25,784])"), std::string::npos) << e;

  // A model that only builds for batch 32: the micro-batches of 16 say why they were built.
  const nn::ModelFn only_32 = [](Graph& g, nn::ParamStore& p, std::int64_t b) {
    nn::ModelGraph m;
    m.inputs = g.input("images", {b, 1, 28, 28});
    m.labels = g.input_labels("labels", {b});
    m.outputs = linear(reshape(m.inputs, {32, 784}), p.param(g, "fc.w", {10, 784}));
    m.loss = softmax_cross_entropy(m.outputs, m.labels);
    return m;
  };
  e = message_of<ShapeError>([&] { nn::create_parameters(only_32, store); });
  EXPECT_NE(e.find("nn::create_parameters (building the model for a batch of 1)"),
            std::string::npos) << e;
  nn::ParamStore store32;
  Graph scratch;
  store32.param(scratch, "fc.w", {10, 784});
  nn::SGD sgd32(store32.tensors(), 0.1);
  e = message_of<ShapeError>([&] { nn::Trainer(only_32, store32, sgd32, {.batch_size = 32}); });
  EXPECT_NE(e.find("micro-batch of 16 examples (a batch of 32 runs as micro-batches of 16; "
                   "TrainerOptions::micro_batch = 32 keeps it whole)"),
            std::string::npos) << e;
  EXPECT_NO_THROW(nn::Trainer(only_32, store32, sgd32, {.batch_size = 32, .micro_batch = 32}));

  // ModelGraph's values, checked at the batch size chosen.
  const nn::ModelFn no_outputs = [](Graph& g, nn::ParamStore& p, std::int64_t b) {
    nn::ModelGraph m = testing::custom_cnn(g, p, b);
    m.outputs = Value();
    return m;
  };
  nn::ParamStore cnn;
  nn::create_parameters(custom_cnn, cnn);
  nn::SGD sgd_cnn(cnn.tensors(), 0.1);
  e = message_of<Error>([&] { nn::Trainer(no_outputs, cnn, sgd_cnn, {.batch_size = 8}); });
  EXPECT_NE(e.find("ModelGraph::outputs is not set"), std::string::npos) << e;

  // Examples of another size than the model's input: named in the data set's terms.
  nn::Trainer trainer(custom_cnn, cnn, sgd_cnn, {.batch_size = 8});
  data::Dataset small = random_dataset(8, 2);
  small.rows = small.cols = 14;
  small.images.resize(std::size_t{8} * 196);
  e = message_of<data::DataError>([&] { trainer.step(small, iota(8)); });
  EXPECT_NE(e.find("the data set's examples are 14x14 = 196 values, the model's inputs 784 per "
                   "example"),
            std::string::npos) << e;

  // A label outside the classes in the second micro-batch: the row is the batch's.
  data::Dataset d = random_dataset(32, 3);
  d.labels[20] = 12;
  nn::Trainer t32(custom_cnn, cnn, sgd_cnn, {.batch_size = 32});
  e = message_of<Error>([&] { t32.step(d, iota(32)); });
  EXPECT_NE(e.find("the batch's examples 16 to 31 (its row r is the batch's example 16 + r): "
                   "softmax_cross_entropy: label 12 of row 4"),
            std::string::npos) << e;
}

TEST(Trainer, ADivergingLossStopsTheEpochBeforeTheUpdate) {
  const data::Dataset d = random_dataset(40, 6);
  nn::ParamStore store;
  nn::create_parameters(custom_cnn, store);
  store.find("fc2.b")->data<float>()[0] = std::nanf("");  // straight into the logits
  nn::SGD sgd(store.tensors(), 0.1);
  nn::Trainer trainer(custom_cnn, store, sgd, {.batch_size = 16});
  data::Batcher batches(d, 16);
  nn::Rng rng(1);
  EXPECT_THROW(nn::train_epoch(trainer, batches, rng, {.epoch = 3}), nn::DivergedError);
  EXPECT_EQ(sgd.steps(), 0);
}

// --- evaluation and checkpoints ---------------------------------------------------------------

TEST(Evaluator, CountsTheExamplesWhoseLargestOutputIsTheLabel) {
  const data::Dataset d = random_dataset(25, 7);
  nn::ParamStore store;
  nn::create_parameters(custom_cnn, store);
  nn::Rng rng(2);
  nn::initialize(store, nn::Init::kXavierUniform, rng);
  nn::Evaluator ev(custom_cnn, store, 10);  // batches of 10, 10, 5
  const nn::Evaluation e = ev.evaluate(d);
  EXPECT_EQ(e.count, 25);
  ASSERT_EQ(e.classes, 10);
  std::int64_t total = 0, diagonal = 0;
  for (std::int64_t t = 0; t < 10; ++t) {
    for (std::int64_t p = 0; p < 10; ++p)
      total += e.confusion[static_cast<std::size_t>(t * 10 + p)];
    diagonal += e.confusion[static_cast<std::size_t>(t * 11)];
  }
  EXPECT_EQ(total, 25);
  EXPECT_DOUBLE_EQ(e.accuracy, static_cast<double>(diagonal) / 25);
  EXPECT_GT(e.loss, 0);
}

TEST(Checkpoint, ParametersAndOptimizerStateRoundTripByName) {
  const fs::path file =
      fs::temp_directory_path() / ("tbgrad_params_" + std::to_string(::getpid()) + ".ckpt");
  const data::Dataset d = random_dataset(32, 8);
  nn::ParamStore store;
  nn::create_parameters(custom_cnn, store);
  nn::Rng rng(2);
  nn::initialize(store, nn::Init::kXavierUniform, rng);
  nn::Adam adam(store.tensors(), 1e-3);
  nn::Trainer trainer(custom_cnn, store, adam, {.batch_size = 16});
  trainer.step(d, iota(16));
  nn::save_parameters(file, store, &adam, {{"note", "x"}});

  nn::ParamStore again;
  nn::create_parameters(custom_cnn, again);
  nn::Adam adam2(again.tensors(), 1e-3);
  const nn::Checkpoint ckpt = nn::load_parameters(file, again, &adam2);
  EXPECT_EQ(ckpt.metadata.at("note"), "x");
  EXPECT_EQ(ckpt.metadata.at("optimizer"), "adam");
  EXPECT_EQ(adam2.steps(), 1);
  for (std::size_t i = 0; i < store.tensors().size(); ++i) {
    EXPECT_EQ(std::memcmp(store.tensors()[i].raw(), again.tensors()[i].raw(),
                          store.tensors()[i].nbytes()),
              0);
  }
  nn::ParamStore other;  // another model's parameters are refused by name
  nn::create_parameters(nn::model_fn("seed"), other);
  try {
    nn::load_parameters(file, other);
    ADD_FAILURE() << "expected CheckpointError";
  } catch (const nn::CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("the model needs"), std::string::npos) << e.what();
  }
  fs::remove(file);
}

// --- API --------------------------------------------------------------------------------------

Graph build_small(Value& loss) {
  Graph g;
  Value x = g.input("x", {4, 3});
  Value w = g.param("w", {2, 3});
  loss = mean(tanh(linear(x, w)));
  return g;  // moved: loss still refers to it
}

// Note [Denormals] (nn/optim.cpp): an update flushes subnormal state to zero, as a weight whose
// gradient stays zero decays there, and leaves the caller's floating-point mode as it was.
TEST(Optimizer, AdamFlushesSubnormalMomentsAndRestoresTheCallersMode) {
  Tensor w(Shape{4}, DType::kF32);
  w.fill(0.5);
  nn::Adam adam({w}, 1e-3);
  Tensor g(Shape{4}, DType::kF32);
  g.fill(0.0);
  const float tiny = std::numeric_limits<float>::denorm_min() * 64;  // subnormal
  ASSERT_EQ(std::fpclassify(tiny), FP_SUBNORMAL);
  for (const auto& [name, t] : adam.state()) t.fill(static_cast<double>(tiny));
  adam.step(std::vector<Tensor>{g});
  for (const auto& [name, t] : adam.state()) {
    for (std::int64_t i = 0; i < 4; ++i) EXPECT_EQ(t.at(i), 0.0) << name << "[" << i << "]";
  }
  EXPECT_EQ(w.at(0), 0.5);  // a zero moment moves nothing
  volatile float x = tiny;
  const float half = x * 0.5f;  // still gradual underflow on this thread
  EXPECT_EQ(std::fpclassify(half), FP_SUBNORMAL);
}

// The one check of an optimizer's name (nn/optim.hpp): make_optimizer makes it, and the app's
// --optimizer and resumed checkpoints list the same choices in their messages.
TEST(Optimizer, AnUnknownNameIsAnErrorListingTheChoices) {
  EXPECT_EQ(nn::optimizer_names(), (std::vector<std::string>{"sgd", "momentum", "adam", "adamw"}));
  EXPECT_EQ(nn::optimizer_choices(), "sgd, momentum, adam or adamw");
  for (const std::string& name : nn::optimizer_names()) {
    EXPECT_NO_THROW(nn::check_optimizer_name(name));
    Tensor w(Shape{2}, DType::kF32);
    EXPECT_STREQ(nn::make_optimizer(name, {w}, 0.1)->name(), name.c_str());
  }
  const std::string expected = "unknown optimizer 'rmsprop' (expected sgd, momentum, adam or adamw)";
  EXPECT_EQ(message_of<Error>([] { nn::check_optimizer_name("rmsprop"); }), expected);
  EXPECT_EQ(message_of<Error>([] { nn::make_optimizer("rmsprop", {}, 0.1); }), expected);
}

TEST(Api, AGraphCanBeReturnedFromAFunctionWithItsValues) {
  Value loss;
  Graph g = build_small(loss);
  EXPECT_EQ(&loss.graph(), &g);
  EXPECT_EQ(g.params().front().name(), "w");
  auto grads = grad(loss, g.params());
  auto ex = make_executor(g, {loss, grads});  // std::make_unique cannot take the braced list
  Tensor x({4, 3}, DType::kF32);
  x.fill(0.5);
  ex->bind(g.inputs().front(), x).run();
  EXPECT_TRUE(std::isfinite((*ex)[loss].at(0)));
}

TEST(Api, RunInArenaTakesATemporaryLambda) {
  int calls = 0;
  run_in_arena([&] { ++calls; });
  EXPECT_EQ(calls, 1);
}

TEST(Api, PoolingTakesAKernelSize) {
  Graph g;
  Value x = g.input("x", {2, 3, 8, 6});
  EXPECT_EQ(max_pool2d(x, 2).shape(), (Shape{2, 3, 4, 3}));
  EXPECT_EQ(avg_pool2d(x, Pair2{2, 3}).shape(), (Shape{2, 3, 4, 2}));
}

TEST(Api, ShapeErrorsNameTheExpressionAnAutomaticNodeCameFrom) {
  Graph g;
  Value x = g.input("images", {32, 1, 28, 28});
  Value h = max_pool2d(relu(conv2d(x, g.param("conv1.w", {8, 1, 3, 3}))), 2);  // [32, 8, 13, 13]
  try {
    linear(flatten(h), g.param("fc1.w", {64, 784}));
    ADD_FAILURE() << "expected ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("max_pool2d(relu(conv2d(images, conv1.w)))"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace tbgrad
