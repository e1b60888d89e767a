// Training any model: a data-parallel step (Trainer), evaluation (Evaluator) and one epoch of
// training (train_epoch), for a model given as a function that builds its graph.
//
//   nn::ModelFn model = [](Graph& g, nn::ParamStore& store, std::int64_t batch) { ... };
//   nn::ParamStore store;
//   nn::create_parameters(model, store);
//   nn::initialize(store, nn::Init::kXavierUniform, rng);
//   nn::Adam adam(store.tensors(), 1e-3);
//   nn::Trainer trainer(model, store, adam, {.batch_size = 32});
//   data::Batcher batches(train_set, 32);
//   nn::Evaluator evaluator(model, store);
//   for (int epoch = 1; epoch <= 3; ++epoch) {
//     nn::EpochResult r = nn::train_epoch(trainer, batches, rng);
//     nn::Evaluation test = evaluator.evaluate(test_set);
//   }
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "tbgrad/data/dataset.hpp"
#include "tbgrad/distributed/communicator.hpp"
#include "tbgrad/graph/graph.hpp"
#include "tbgrad/nn/optim.hpp"
#include "tbgrad/nn/params.hpp"

namespace tbgrad::nn {

// What a model builder returns for a graph of one batch size B.
//
// The labels are either class indices, [B] i32 (Graph::input_labels), filled from
// data::Dataset::labels, or float targets, an f32 graph input [B, ...] (regression targets,
// multi-hot labels), filled from data::Dataset::targets. The loss may be any one number; how it
// follows from the examples decides whether the trainer can split the batch (Note [Loss split]:
// a mean or a sum over the examples splits, anything else runs the batch whole; see
// Trainer::loss_split()). Accuracy is counted only where the outputs are class scores, [B, C],
// and the labels class indices (Evaluation::has_accuracy).
struct ModelGraph {
  Value inputs;   // [B, ...] f32: the batch's examples (data::load_examples fills them)
  Value labels;   // [B] i32 class indices, or [B, ...] f32 targets
  Value loss;     // [] the batch's loss (a mean over the examples, typically)
  Value outputs;  // [B, classes] scores (the largest is the prediction), or [B, ...] predictions
};

// Builds the model into g for a batch of `batch` examples, taking its parameters from `store`
// (ParamStore::param creates them on first use). It must build the same nodes in the same order
// for every batch size: the library builds graphs of several sizes that share the parameters.
using ModelFn = std::function<ModelGraph(Graph& g, ParamStore& store, std::int64_t batch)>;

// Creates the model's parameters in `store` (zero-filled: initialize them next).
void create_parameters(const ModelFn& model, ParamStore& store);

struct TrainerOptions {
  std::int64_t batch_size = 32;
  // Examples per micro-batch (Note [Micro-batches] in nn/train/partition.hpp); 0 lets the library choose.
  // A micro-batch of at least the batch size keeps the whole batch in one graph.
  std::int64_t micro_batch = 0;
  // The processes training together (dist::MpiSession::world()), each running its share of
  // every batch's micro-batches; all must construct the trainer and step alike, and every
  // rank's weights stay bit-identical to one process's (Note [Ranks] in nn/train/exchange.hpp).
  // Null: this process alone. It must outlive the trainer.
  dist::Communicator* comm = nullptr;
  // Seeded augmentation of the training images as the trainer loads them (data::Augment: random
  // crop with zero padding, horizontal flip), keyed by (augment.seed, the epoch set_epoch() set,
  // each example's index), so the same for any thread, micro-batch and rank count. Off by
  // default. The Evaluator never augments.
  data::Augment augment = {};
  // The seed of the step's random streams (dropout's masks: Note [Run info] in graph/op.hpp),
  // keyed with the optimizer's step count, so a run resumed from a checkpoint draws the masks
  // it would have drawn.
  std::uint64_t seed = 0;
};

// Note [Loss split] (nn/train/loss_split.hpp): how the trainer combines its micro-batches,
// read from the loss's graph. kMean: the loss is a mean over the examples (of means, and terms
// that do not depend on the batch, added and scaled); each micro-batch's loss and gradient are
// weighted by its share of the batch. kSum: a sum over the examples (Reduction::kSum losses,
// sum); each micro-batch weighted 1. kWhole: the batch runs as one graph (micro-batch = batch):
// the loss is neither (a class-weighted mean, a mean plus a sum), or the graph holds a
// batch-wide op, or the micro-batch is the batch anyway.
enum class LossSplit { kMean, kSum, kWhole };
const char* loss_split_name(LossSplit split);  // "mean", "sum", "whole"

// A loss that is not finite (train_epoch throws it before the update).
class DivergedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Note [Train and eval modes]: the trainer runs its graphs in training mode (Note [Run info] in
// graph/op.hpp), each with the optimizer's step count, TrainerOptions::seed and its first
// example's index in the batch; the evaluator runs them in evaluation mode. A graph holding a
// batch-wide op (batch_norm: Note [Op traits]) is run whole: the micro-batch is the batch,
// whatever TrainerOptions::micro_batch says, and with several ranks every rank runs the whole
// batch (bit-identical by construction); its running statistics are updated once per step, in
// `store` (docs/design.md, Note [Batch statistics]).
//
// The data-parallel training step for any model: splits a batch into micro-batches run in
// parallel, each thread on its own replica of the parameters and optimizer state, and forms the
// batch's gradient in a fixed order, so results are bit-identical for any thread count. Gradients
// that contract over the batch (a matmul's dW = dYᵀ·X, a bias's column sum) are recognised in the
// graph and formed once over the whole batch (Note [Replicas] in nn/train/replicas.hpp). `store` and
// `optimizer` are replica 0: they hold the result after every update. Built before the loop;
// a step allocates nothing once each batch size has been seen once.
class Trainer {
 public:
  // `store` must hold the model's parameters (create_parameters) and `optimizer` must update
  // store.tensors(); both must outlive the trainer. The thread count is read here.
  Trainer(ModelFn model, ParamStore& store, Optimizer& optimizer, TrainerOptions options = {});
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // One step on examples `indices` of `data` (1 to batch_size of them): forward and backward
  // pass (compute), then the optimizer's update (update).
  void step(const data::Dataset& data, std::span<const std::int64_t> indices) {
    compute(data, indices);
    update();
  }
  void compute(const data::Dataset& data, std::span<const std::int64_t> indices);
  void update();
  // The epoch the augmentation draws of the following compute()s are keyed by (0 until set;
  // train_epoch sets EpochOptions::epoch). A loop of its own calls it once per epoch, or the
  // same augmentation repeats every epoch.
  void set_epoch(std::uint64_t epoch);
  const data::Augment& augment() const;
  // A hint for the next update(): the next compute() will run examples `next` of `data`. During
  // that update each thread asks the CPU for the examples it will load (or, when the next batch
  // splits differently, the calling thread asks for all of them), so that they are in its
  // core's caches when compute() loads them. Both must stay valid until that update(); results
  // do not depend on it, and indices outside the data set are left to compute() to report.
  void prefetch(const data::Dataset& data, std::span<const std::int64_t> next);

  // Of the last compute(): the batch's loss, its number of examples whose largest output is
  // the label (0 where the outputs are not class scores: Evaluation::has_accuracy), and its
  // size.
  double loss() const;
  std::int64_t correct() const;
  std::int64_t batch() const;
  // Whether the model's outputs are class scores [B, C] and its labels class indices [B] i32,
  // so that correct() counts something (Evaluation::has_accuracy).
  bool has_accuracy() const;
  // The batch's gradient, one tensor per parameter in the store's order; valid after update().
  std::span<const Tensor> gradients() const;

  // Call after changing the store's tensors or the optimizer's state outside step() (loading a
  // checkpoint): the replicas copy them again before the next step.
  void parameters_changed();

  std::int64_t batch_size() const;
  std::int64_t micro_batch() const;  // as chosen
  // How the micro-batches combine (Note [Loss split]), and why, in words: for kWhole, what kept
  // the batch whole ("the loss's term softmax_cross_entropy is neither a mean nor a sum ...").
  LossSplit loss_split() const;
  const std::string& loss_split_reason() const;

  // What the exchange between ranks has cost (Note [Ranks]): the steps that exchanged, the
  // bytes of the last one's buffer (every rank's block: what each rank ends up holding), and the
  // seconds spent in the allgather, waiting for the slowest rank included. Zero on one rank.
  struct ExchangeStats {
    std::int64_t steps = 0, bytes = 0;
    double seconds = 0;
  };
  ExchangeStats exchange_stats() const;
  // The parameters whose gradient the step forms over the whole batch (recognised as
  // contracting over the batch axis), by name; empty when the batch is one graph.
  std::vector<std::string> batch_contracted() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct Evaluation {
  std::int64_t count = 0;
  double loss = 0, accuracy = 0;
  std::int64_t classes = 0;
  std::vector<std::int64_t> confusion;  // [classes, classes]: [true label][prediction]
  // Whether accuracy, classes and confusion mean anything: the outputs are class scores
  // [B, C] and the labels class indices [B] i32. Otherwise (a regression, multi-hot targets)
  // accuracy is NaN, classes 0 and confusion empty.
  bool has_accuracy = true;
};

// Loss, accuracy and confusion matrix of the model with the store's current parameters, in
// batches of `batch_size` (graphs built on first use). The loss is, for a sum over the examples
// (Note [Loss split]), the batches' losses added: the sum over the data set; otherwise the
// batches' losses weighted by their sizes: for a mean over the examples, the mean over the data
// set (for a loss that is neither, a class-weighted mean say, an approximation of the loss over
// the data set as one batch).
//
// With `comm` (the processes training together, as in TrainerOptions::comm), evaluate() is
// collective: every rank must call it with the same data; rank q evaluates a contiguous block
// of the batches, one allgather shares the results, and every rank returns the same
// Evaluation, bit for bit the one a process alone computes (the batches' losses are added in
// batch order; the counts are integers). Null: this process alone. It must outlive the
// evaluator.
class Evaluator {
 public:
  static constexpr std::int64_t kDefaultBatchSize = 1000;
  Evaluator(ModelFn model, const ParamStore& store, std::int64_t batch_size = kDefaultBatchSize,
            dist::Communicator* comm = nullptr);
  ~Evaluator();
  Evaluator(const Evaluator&) = delete;
  Evaluator& operator=(const Evaluator&) = delete;

  Evaluation evaluate(const data::Dataset& data);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct EpochResult {
  // Over the epoch's examples, as trained on: the batches' losses weighted by their sizes (for
  // a mean loss, the mean per example) and the fraction whose largest output is the label.
  double loss = 0, accuracy = 0;
  std::int64_t examples = 0, steps = 0;
  double seconds = 0;  // the training loop only: batches, steps, bookkeeping
  // As Evaluation::has_accuracy: false (and accuracy NaN) where the outputs are not class scores.
  bool has_accuracy = true;
};

struct EpochOptions {
  std::int64_t epoch = 1;  // named in messages
  bool progress = false;   // a live progress line on stdout (see show_progress())
  // Called around each step's update, for callers that log it (the step's gradients and the
  // weights before and after).
  std::function<void(std::int64_t step)> before_update = {}, after_update = {};
  // Called before each step (0-based, of `steps`); may throw to stop the epoch there (the app
  // stops on SIGINT this way). The progress line is cleared first.
  std::function<void(std::int64_t step, std::int64_t steps)> before_step = {};
};

// One epoch: batches.shuffle(rng), trainer.set_epoch(options.epoch), then every batch through
// trainer.step. Throws DivergedError (before the update) when a loss is not finite, and Error
// when `batches` has an augmentation the trainer's (TrainerOptions::augment) differs from:
// the trainer loads the examples, so the batcher's would be ignored.
EpochResult train_epoch(Trainer& trainer, data::Batcher& batches, Rng& rng,
                        const EpochOptions& options = {});

// Whether a progress line belongs on stdout: it is a terminal.
bool show_progress();

}  // namespace tbgrad::nn
