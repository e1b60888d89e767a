// The trainer for any loss and any labels (Note [Loss split] in nn/train/loss_split.hpp):
// regression and multi-label models with float targets, sums, label smoothing, class weights
// and losses of several terms, each trained at several micro-batch sizes, thread counts and
// rank counts and compared with a plain whole-batch step (tests/random_net.hpp's
// check_trainer), then which losses split, the evaluator without accuracy, and bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <tbgrad.hpp>
#include <vector>

#include "tests/random_net.hpp"

namespace tbgrad::testing {
namespace {

std::string lines(const std::vector<std::string>& bad) {
  std::string s;
  for (std::size_t i = 0; i < bad.size() && i < 12; ++i) s += "  " + bad[i] + "\n";
  return s;
}

constexpr int kRows = 2, kCols = 5;  // 10 input features per example

// A two-layer network's [B, out] outputs over the [B, 10] input.
Value hidden_then(Graph& g, nn::ParamStore& p, Value x, std::int64_t out) {
  const Value h = tanh(linear(x, p.param(g, "fc1.w", {6, kRows * kCols}), p.param(g, "fc1.b", {6})));
  return linear(h, p.param(g, "fc2.w", {out, 6}), p.param(g, "fc2.b", {out}));
}

// The model with `targets` float targets per example, or class labels (targets 0), and the
// loss `loss(outputs, labels)`.
nn::ModelFn model_with(std::int64_t out, std::int64_t targets,
                       std::function<Value(Graph&, nn::ParamStore&, Value, Value)> loss) {
  return [=](Graph& g, nn::ParamStore& p, std::int64_t b) {
    nn::ModelGraph m;
    m.inputs = g.input("x", {b, kRows * kCols});
    m.labels = targets > 0 ? g.input("targets", {b, targets}) : g.input_labels("labels", {b});
    m.outputs = hidden_then(g, p, m.inputs, out);
    m.loss = loss(g, p, m.outputs, m.labels);
    return m;
  };
}

RandomNet net_of(nn::ModelFn model, std::int64_t batch, int classes, std::int64_t targets,
                 bool multi_hot = false) {
  RandomNet net;
  net.model = std::move(model);
  net.batch = batch;
  net.rows = kRows;
  net.cols = kCols;
  net.classes = classes;
  net.targets = targets;
  net.multi_hot = multi_hot;
  return net;
}

// What the trainer chose for the net at micro-batches of 3.
struct Choice {
  nn::LossSplit split;
  std::int64_t micro;
  std::string why;
};
Choice choice_of(const RandomNet& net) {
  nn::ParamStore store;
  nn::create_parameters(net.model, store);
  nn::SGD sgd(store.tensors(), 0.1);
  nn::Trainer t(net.model, store, sgd, {.batch_size = net.batch, .micro_batch = 3});
  return {t.loss_split(), t.micro_batch(), t.loss_split_reason()};
}

// Trained at micro-batches of the library's choice, 1, 3 and the whole batch, 1 and 2 threads
// (bit-identical between them) and 2 ranks, against the whole-batch step; the split it gets.
void expect_trains_as_whole_batch(RandomNet net, nn::LossSplit split) {
  // The evaluator's batches are exact for a mean or a sum only.
  net.batched_loss_exact = split != nn::LossSplit::kWhole;
  DiffOptions o;
  o.micro_batches = {3, 0, 1, net.batch};
  o.threads = {1, 2};
  o.ranks = {2};
  const auto bad = check_trainer(net, o);
  EXPECT_TRUE(bad.empty()) << lines(bad);
  const Choice c = choice_of(net);
  EXPECT_EQ(c.split, split) << nn::loss_split_name(c.split) << ": " << c.why;
  EXPECT_EQ(c.micro, split == nn::LossSplit::kWhole ? net.batch : 3) << c.why;
}

TEST(TrainerLoss, RegressionWithMseAndFloatTargets) {
  const RandomNet net = net_of(model_with(3, 3, [](Graph&, nn::ParamStore&, Value y, Value t) {
                                 return mse_loss(y, t);
                               }),
                               11, 0, 3);
  expect_trains_as_whole_batch(net, nn::LossSplit::kMean);
}

TEST(TrainerLoss, MultiLabelWithBceAndMultiHotTargets) {
  const RandomNet net = net_of(model_with(4, 4, [](Graph&, nn::ParamStore&, Value y, Value t) {
                                 return binary_cross_entropy_with_logits(y, t);
                               }),
                               10, 0, 4, true);
  expect_trains_as_whole_batch(net, nn::LossSplit::kMean);
}

// A sum over the examples: each micro-batch weighted 1, the contractions' rows unscaled.
TEST(TrainerLoss, ASumLossSplitsWithWeightOne) {
  const RandomNet net = net_of(model_with(2, 2, [](Graph&, nn::ParamStore&, Value y, Value t) {
                                 return huber_loss(y, t, 0.5, Reduction::kSum);
                               }),
                               11, 0, 2);
  expect_trains_as_whole_batch(net, nn::LossSplit::kSum);
}

TEST(TrainerLoss, CrossEntropyWithLabelSmoothingSplitsAsAMean) {
  const RandomNet net = net_of(model_with(4, 0, [](Graph&, nn::ParamStore&, Value y, Value l) {
                                 return softmax_cross_entropy(y, l, {.label_smoothing = 0.2});
                               }),
                               11, 4, 0);
  expect_trains_as_whole_batch(net, nn::LossSplit::kMean);
}

// A class-weighted mean divides by the batch's label weights: no weighting of the parts gives
// it, so the batch runs whole.
TEST(TrainerLoss, ClassWeightedCrossEntropyRunsTheBatchWhole) {
  const RandomNet net = net_of(model_with(3, 0, [](Graph& g, nn::ParamStore&, Value y, Value l) {
                                 Tensor w(Shape{3}, DType::kF32);
                                 w.set(0, 0.5);
                                 w.set(1, 2.0);
                                 w.set(2, 1.0);
                                 return softmax_cross_entropy(y, l, {.weights = g.constant(w, "w")});
                               }),
                               11, 3, 0);
  expect_trains_as_whole_batch(net, nn::LossSplit::kWhole);
  const Choice c = choice_of(net);
  EXPECT_NE(c.why.find("the loss's term cross_entropy"), std::string::npos) << c.why;
  EXPECT_NE(c.why.find("neither a mean nor a sum"), std::string::npos) << c.why;
}

// Two means, scaled and added, one of them mean() (a sum times 1 / numel), plus a penalty on a
// weight that does not depend on the batch: a mean.
TEST(TrainerLoss, ASumOfMeansAndAPenaltySplitsAsAMean) {
  const RandomNet penalised = net_of(
      [](Graph& g, nn::ParamStore& p, std::int64_t b) {
        nn::ModelGraph m;
        m.inputs = g.input("x", {b, kRows * kCols});
        m.labels = g.input_labels("labels", {b});
        const Value w1 = p.param(g, "fc1.w", {6, kRows * kCols});
        const Value h = tanh(linear(m.inputs, w1, p.param(g, "fc1.b", {6})));
        m.outputs = linear(h, p.param(g, "fc2.w", {3, 6}), p.param(g, "fc2.b", {3}));
        const Value ce = softmax_cross_entropy(m.outputs, m.labels);
        const Value spread = mean(mul(m.outputs, m.outputs));  // scale(sum, 1 / (3B))
        m.loss = add(add(ce, scale(spread, 0.25)), scale(sum(mul(w1, w1)), 0.01));
        return m;
      },
      11, 3, 0);
  expect_trains_as_whole_batch(penalised, nn::LossSplit::kMean);
}

TEST(TrainerLoss, TwoMeanLossesAddedSplit) {
  const RandomNet net = net_of(
      model_with(3, 0,
                 [](Graph&, nn::ParamStore&, Value y, Value l) {
                   return add(softmax_cross_entropy(y, l),
                              scale(softmax_cross_entropy(y, l, {.label_smoothing = 0.1}), 0.5));
                 }),
      11, 3, 0);
  expect_trains_as_whole_batch(net, nn::LossSplit::kMean);
}

// A mean plus a sum over the examples: neither weighting gives it.
TEST(TrainerLoss, AMeanPlusASumRunsTheBatchWhole) {
  const RandomNet net = net_of(model_with(2, 2, [](Graph&, nn::ParamStore&, Value y, Value t) {
                                 return add(mse_loss(y, t), l1_loss(y, t, Reduction::kSum));
                               }),
                               11, 0, 2);
  expect_trains_as_whole_batch(net, nn::LossSplit::kWhole);
  EXPECT_NE(choice_of(net).why.find("sum over the examples to a mean"), std::string::npos)
      << choice_of(net).why;
}

// A sum plus a penalty that does not depend on the batch: the parts would count it once each.
TEST(TrainerLoss, ASumPlusAPenaltyRunsTheBatchWhole) {
  const RandomNet net = net_of(
      [](Graph& g, nn::ParamStore& p, std::int64_t b) {
        nn::ModelGraph m;
        m.inputs = g.input("x", {b, kRows * kCols});
        m.labels = g.input("targets", {b, 2});
        const Value w1 = p.param(g, "fc1.w", {2, kRows * kCols});
        m.outputs = linear(m.inputs, w1, p.param(g, "fc1.b", {2}));
        m.loss = add(mse_loss(m.outputs, m.labels, Reduction::kSum), sum(mul(w1, w1)));
        return m;
      },
      9, 0, 2);
  expect_trains_as_whole_batch(net, nn::LossSplit::kWhole);
}

// A loss that is not built from means and sums (a product of two): whole.
TEST(TrainerLoss, ALossOfAnOpThatDoesNotSayRunsTheBatchWhole) {
  const RandomNet net = net_of(model_with(2, 2, [](Graph&, nn::ParamStore&, Value y, Value t) {
                                 const Value a = mse_loss(y, t);
                                 return mul(a, a);
                               }),
                               9, 0, 2);
  expect_trains_as_whole_batch(net, nn::LossSplit::kWhole);
  EXPECT_NE(choice_of(net).why.find("the loss's term mul"), std::string::npos)
      << choice_of(net).why;
}

// Why a batch is whole, when it is for another reason than the loss.
TEST(TrainerLoss, TheReasonForAWholeBatchIsSaid) {
  const nn::ModelFn bn = [](Graph& g, nn::ParamStore& p, std::int64_t b) {
    nn::ModelGraph m;
    m.inputs = g.input("x", {b, 2, 1, 5});
    m.labels = g.input("targets", {b, 2});
    const Value h = flatten(nn::batch_norm_layer(g, p, "bn", m.inputs));
    m.outputs = linear(h, p.param(g, "w", {2, 10}));
    m.loss = mse_loss(m.outputs, m.labels);
    return m;
  };
  nn::ParamStore store;
  nn::create_parameters(bn, store);
  nn::SGD sgd(store.tensors(), 0.1);
  const nn::Trainer t(bn, store, sgd, {.batch_size = 8, .micro_batch = 2});
  EXPECT_EQ(t.loss_split(), nn::LossSplit::kWhole);
  EXPECT_EQ(t.micro_batch(), 8);
  EXPECT_NE(t.loss_split_reason().find("batch_norm"), std::string::npos) << t.loss_split_reason();
  const RandomNet net = net_of(model_with(2, 2, [](Graph&, nn::ParamStore&, Value y, Value t) {
                                 return mse_loss(y, t);
                               }),
                               8, 0, 2);
  nn::ParamStore s2;
  nn::create_parameters(net.model, s2);
  nn::SGD sgd2(s2.tensors(), 0.1);
  const nn::Trainer whole(net.model, s2, sgd2, {.batch_size = 8, .micro_batch = 8});
  EXPECT_EQ(whole.loss_split(), nn::LossSplit::kWhole);
  EXPECT_NE(whole.loss_split_reason().find("TrainerOptions::micro_batch"), std::string::npos)
      << whole.loss_split_reason();
}

// The evaluator and train_epoch on a regression model: the loss (against one graph over the
// data set, in check_trainer), and no accuracy.
TEST(TrainerLoss, NoAccuracyWhereTheOutputsAreNotClassScores) {
  const RandomNet net = net_of(model_with(3, 3, [](Graph&, nn::ParamStore&, Value y, Value t) {
                                 return mse_loss(y, t);
                               }),
                               8, 0, 3);
  const data::Dataset d = random_data(net, 21, 3);
  nn::ParamStore store;
  nn::create_parameters(net.model, store);
  nn::Rng rng(4);
  nn::initialize(store, nn::Init::kXavierUniform, rng);
  nn::SGD sgd(store.tensors(), 0.05);
  nn::Trainer trainer(net.model, store, sgd, {.batch_size = 8});
  EXPECT_FALSE(trainer.has_accuracy());
  data::Batcher batches(d, 8);
  const nn::EpochResult r = nn::train_epoch(trainer, batches, rng);
  EXPECT_FALSE(r.has_accuracy);
  EXPECT_TRUE(std::isnan(r.accuracy));
  EXPECT_TRUE(std::isfinite(r.loss));
  EXPECT_EQ(trainer.correct(), 0);
  const nn::Evaluation e = nn::Evaluator(net.model, store, 5).evaluate(d);
  EXPECT_FALSE(e.has_accuracy);
  EXPECT_TRUE(std::isnan(e.accuracy));
  EXPECT_EQ(e.classes, 0);
  EXPECT_TRUE(e.confusion.empty());
  // The loss: the mean over the data set of the squared errors, from the model's own outputs.
  Graph g;
  nn::ParamStore same = store;
  const nn::ModelGraph m = net.model(g, same, d.count);
  Executor ex(g, {m.loss});
  Tensor x(m.inputs.shape(), DType::kF32), t(m.labels.shape(), DType::kF32);
  std::vector<std::int64_t> all;
  for (std::int64_t i = 0; i < d.count; ++i) all.push_back(i);
  data::load_examples(d, all, x, t);
  ex.bind(m.inputs, x).bind(m.labels, t);
  ex.run();
  EXPECT_NEAR(e.loss, ex[m.loss].at(0), 1e-6 * std::abs(ex[m.loss].at(0)) + 1e-7);
  // A classifier keeps its accuracy.
  const RandomNet cls = net_of(model_with(3, 0, [](Graph&, nn::ParamStore&, Value y, Value l) {
                                 return softmax_cross_entropy(y, l);
                               }),
                               8, 3, 0);
  nn::ParamStore cs;
  nn::create_parameters(cls.model, cs);
  const nn::Evaluation ce = nn::Evaluator(cls.model, cs).evaluate(random_data(cls, 9, 5));
  EXPECT_TRUE(ce.has_accuracy);
  EXPECT_EQ(ce.classes, 3);
  EXPECT_FALSE(std::isnan(ce.accuracy));
}

template <typename Fn>
std::string error_of(const Fn& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(TrainerLoss, LabelsOfTheWrongShapeOrDtypeAreRefusedInTheUsersTerms) {
  const auto trainer_for = [](nn::ModelFn model) {
    return error_of([&] {
      nn::ParamStore store;
      nn::create_parameters(model, store);
      nn::SGD sgd(store.tensors(), 0.1);
      nn::Trainer t(model, store, sgd, {.batch_size = 6});
    });
  };
  const auto with_labels = [](std::function<Value(Graph&, std::int64_t)> labels) {
    return [labels](Graph& g, nn::ParamStore& p, std::int64_t b) {
      nn::ModelGraph m;
      m.inputs = g.input("x", {b, kRows * kCols});
      m.labels = labels(g, b);
      m.outputs = linear(m.inputs, p.param(g, "w", {2, kRows * kCols}));
      m.loss = sum(m.outputs);
      return m;
    };
  };
  // i32 labels of two per example.
  std::string m = trainer_for(with_labels([](Graph& g, std::int64_t b) {
    return g.input_labels("labels", {b, 2});
  }));
  EXPECT_NE(m.find("ModelGraph::labels must be the graph's class labels input"), std::string::npos) << m;
  EXPECT_NE(m.find("labels ([6,2] i32)"), std::string::npos) << m;
  // f32 targets without the batch first.
  m = trainer_for(with_labels([](Graph& g, std::int64_t) { return g.input("t", {3}); }));
  EXPECT_NE(m.find("an f32 graph input of targets with the batch first, [6, ...]"), std::string::npos) << m;
  // f64 targets.
  m = trainer_for(with_labels([](Graph& g, std::int64_t b) {
    return g.input("t", {b, 2}, DType::kF64);
  }));
  EXPECT_NE(m.find("f64"), std::string::npos) << m;
  // Not an input at all.
  m = trainer_for(with_labels([](Graph& g, std::int64_t b) { return scale(g.input("t", {b}), 2); }));
  EXPECT_NE(m.find("(not a graph input)"), std::string::npos) << m;
}

TEST(TrainerLoss, TargetsThatDoNotFitAreRefusedNamingTheCounts) {
  const RandomNet net = net_of(model_with(3, 3, [](Graph&, nn::ParamStore&, Value y, Value t) {
                                 return mse_loss(y, t);
                               }),
                               4, 0, 3);
  data::Dataset d = random_data(net, 5, 1);
  const std::vector<std::int64_t> idx = {0, 1, 2, 3};
  Tensor x(Shape{4, kRows * kCols}, DType::kF32), t(Shape{4, 3}, DType::kF32);
  // One target short.
  data::Dataset short_targets = d;
  short_targets.targets.pop_back();
  std::string m = error_of([&] { data::load_examples(short_targets, idx, x, t); });
  EXPECT_NE(m.find("5 examples of 3 target values each"), std::string::npos) << m;
  EXPECT_NE(m.find("need 15 targets, but Dataset::targets holds 14"), std::string::npos) << m;
  m = error_of([&] { data::Batcher(short_targets, 2); });
  EXPECT_NE(m.find("Batcher: the data set's 5 examples"), std::string::npos) << m;
  // A labels tensor of another size.
  Tensor t2(Shape{4, 2}, DType::kF32);
  m = error_of([&] { data::load_examples(d, idx, x, t2); });
  EXPECT_NE(m.find("f32 labels of 12, got [4,10] and [4,2]"), std::string::npos) << m;
  // Class labels asked of a data set with targets only, and the reverse.
  Tensor l(Shape{4}, DType::kI32);
  m = error_of([&] { data::load_examples(d, idx, x, l); });
  EXPECT_NE(m.find("Dataset::labels holds 0"), std::string::npos) << m;
  data::Dataset no_targets = d;
  no_targets.targets.clear();
  no_targets.labels.assign(5, 1);
  m = error_of([&] { data::load_examples(no_targets, idx, x, t); });
  EXPECT_NE(m.find("Dataset::targets is empty"), std::string::npos) << m;
  // The trainer says so before running anything: targets of another size, or none.
  nn::ParamStore store;
  nn::create_parameters(net.model, store);
  nn::SGD sgd(store.tensors(), 0.1);
  nn::Trainer trainer(net.model, store, sgd, {.batch_size = 4});
  data::Dataset two = d;
  two.target_shape = {2};
  two.targets.resize(10);
  m = error_of([&] { trainer.step(two, idx); });
  EXPECT_NE(m.find("f32 targets of 3 values per example, the data set's targets 2"), std::string::npos) << m;
  m = error_of([&] { trainer.step(no_targets, idx); });
  EXPECT_NE(m.find("has no targets (data::Dataset::targets)"), std::string::npos) << m;
  // A data set's Batcher gives f32 labels of its target shape.
  data::Batcher batches(d, 2);
  batches.fill(0);
  EXPECT_EQ(batches.labels(0).shape(), (Shape{2, 3}));
  EXPECT_EQ(batches.labels(0).dtype(), DType::kF32);
  EXPECT_EQ(batches.labels(2).shape(), (Shape{1, 3}));
  EXPECT_EQ(batches.labels(0).at(4), d.targets[static_cast<std::size_t>(batches.batch(0)[1] * 3 + 1)]);
}

}  // namespace
}  // namespace tbgrad::testing
