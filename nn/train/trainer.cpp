// nn::Trainer: the data-parallel step for any model (nn/train.hpp), over the wing's pieces:
// the batch's split (partition), the model's graphs (model_graph), the contraction plan
// (contraction), the replicas (replicas) and the step for one batch size (batch_step).
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "distributed/communicator.hpp"
#include "graph/parallel.hpp"
#include "nn/train.hpp"
#include "nn/train/batch_step.hpp"
#include "nn/train/contraction.hpp"
#include "nn/train/model_graph.hpp"
#include "nn/train/partition.hpp"
#include "nn/train/replicas.hpp"

namespace tbgrad::nn {

using detail::BatchStep;
using detail::LossSplitChoice;
using detail::Plan;
using detail::Replicas;

const char* loss_split_name(LossSplit split) {
  switch (split) {
    case LossSplit::kMean:
      return "mean";
    case LossSplit::kSum:
      return "sum";
    case LossSplit::kWhole:
      break;
  }
  return "whole";
}

void create_parameters(const ModelFn& model, ParamStore& store) {
  Graph g;
  detail::build_model(model, g, store, 1, [](std::int64_t) {
    return std::string("nn::create_parameters (building the model for a batch of 1): ");
  });
}

struct Trainer::Impl {
  ModelFn model;
  ParamStore& store;
  TrainerOptions options;
  std::int64_t micro;
  int threads;               // read once, here (TrainerOptions: "The thread count is read here")
  std::optional<Plan> plan;  // when micro-batched
  std::int64_t example_size = 0;  // the model's input elements per example
  // The model's labels per example (1 for class indices) and whether they are f32 targets.
  std::int64_t label_size = 1;
  bool targets = false;
  bool has_accuracy = true;
  LossSplitChoice split;  // Note [Loss split]
  Replicas replicas;
  std::vector<std::unique_ptr<BatchStep>> steps;  // one per batch size seen
  BatchStep* last = nullptr;
  dist::Communicator* comm;
  Trainer::ExchangeStats stats;
  // The next compute()'s examples, from prefetch(), for the next update() only.
  const data::Dataset* next_data = nullptr;
  std::span<const std::int64_t> next;
  std::uint64_t epoch = 0;  // the augmentation's (set_epoch)

  Impl(ModelFn m, ParamStore& s, Optimizer& opt, TrainerOptions o)
      : model(std::move(m)),
        store(s),
        options(o),
        threads(num_threads()),
        replicas(model, s, opt),
        comm(o.comm ? o.comm : &dist::single()) {
    if (o.augment.pad < 0 || o.augment.pad > 65535) {
      throw Error("Trainer: TrainerOptions::augment.pad must be in [0, 65535], got " +
                  std::to_string(o.augment.pad));
    }
    if (o.batch_size < 1)
      throw Error("Trainer: batch size must be positive, got " + std::to_string(o.batch_size));
    if (store.names().empty()) {
      throw Error("Trainer: the store holds no parameters (call nn::create_parameters first)");
    }
    micro = o.micro_batch > 0
                ? o.micro_batch
                : (store.count() <= detail::kMaxMicroBatchedParams ? detail::default_micro_batch(o.batch_size)
                                                           : o.batch_size);
    // The model at the batch size chosen, checked first: errors in the user's terms, before
    // any graph of a micro-batch's size is built.
    {
      Graph g;
      ParamStore scratch = store;  // shares the tensors; a parameter the store lacks stays out
      const ModelGraph m = detail::build_model(model, g, scratch, o.batch_size, {});
      if (scratch.names() != store.names()) {
        throw Error("model builder: creates other parameters than the store holds (create the "
                    "store with nn::create_parameters of the same model)");
      }
      if (scratch.buffer_names() != store.buffer_names()) {
        throw Error("model builder: creates other buffers than the store holds (create the "
                    "store with nn::create_parameters of the same model)");
      }
      detail::check_model(m, g, store.names(), o.batch_size);
      example_size = m.inputs.shape().numel() / o.batch_size;
      label_size = m.labels.shape().numel() / o.batch_size;
      targets = m.labels.dtype() == DType::kF32;
      has_accuracy = detail::has_accuracy(m);
      if (micro >= o.batch_size) {
        split.why = o.micro_batch > 0 ? "TrainerOptions::micro_batch is at least the batch size"
                                      : "the library keeps this model's batch whole (Note "
                                        "[Micro-batches]: more than " +
                                            std::to_string(detail::kMaxMicroBatchedParams) +
                                            " parameters, or a batch of one micro-batch)";
      }
      // Note [Train and eval modes]: a batch-wide op keeps the batch in one graph.
      for (int id = 0; id < g.size(); ++id) {
        const Node& node = g.node(id);
        if (node.kind == NodeKind::kOp && node.op->traits().batch_wide) {
          micro = o.batch_size;
          split.why = std::string("the graph holds ") + node.op->name() +
                      ", which computes statistics over the whole batch";
          break;
        }
      }
    }
    if (micro < o.batch_size) {
      plan.emplace(model, store, micro, detail::micro_batch_context(o.batch_size, micro));
      split = plan->split;
      // Note [Loss split]: a loss that is neither a mean nor a sum keeps the batch whole.
      if (split.split == LossSplit::kWhole) {
        micro = o.batch_size;
        plan.reset();
      }
    }
    step_for(o.batch_size);
  }

  BatchStep& step_for(std::int64_t b) {
    for (auto& s : steps) {
      if (s->batch == b) return *s;
    }
    steps.push_back(std::make_unique<BatchStep>(model, plan ? &*plan : nullptr, micro, b,
                                                threads, replicas, *comm, stats));
    return *steps.back();
  }
};

Trainer::Trainer(ModelFn model, ParamStore& store, Optimizer& optimizer, TrainerOptions options)
    : impl_(std::make_unique<Impl>(std::move(model), store, optimizer, options)) {}
Trainer::~Trainer() = default;

void Trainer::compute(const data::Dataset& data, std::span<const std::int64_t> indices) {
  const auto n = static_cast<std::int64_t>(indices.size());
  if (n < 1 || n > impl_->options.batch_size) {
    throw Error("Trainer::compute: " + std::to_string(n) + " examples for a batch size of " +
                std::to_string(impl_->options.batch_size));
  }
  if (data.example_size() != impl_->example_size) {
    throw data::DataError("Trainer::compute: the data set's examples are " +
                          (data.channels != 1 ? std::to_string(data.channels) + "x" : "") +
                          std::to_string(data.rows) + "x" + std::to_string(data.cols) + " = " +
                          std::to_string(data.example_size()) + " values, the model's inputs " +
                          std::to_string(impl_->example_size) + " per example");
  }
  // The labels the model reads, from the data set (data::load_examples checks the rest).
  if (impl_->targets) {
    if (data.targets.empty() || data.target_size() != impl_->label_size) {
      throw data::DataError(
          "Trainer::compute: the model's labels are f32 targets of " +
          std::to_string(impl_->label_size) + " values per example, the data set's " +
          (data.targets.empty() ? std::string("has no targets (data::Dataset::targets)")
                                : "targets " + std::to_string(data.target_size()) +
                                      " (data::Dataset::target_shape)"));
    }
  } else if (data.labels.empty()) {
    throw data::DataError(
        "Trainer::compute: the model's labels are class indices ([B] i32, Graph::input_labels), "
        "the data set has none (data::Dataset::labels)" +
        std::string(data.targets.empty() ? "" : "; it has float targets, which need an f32 "
                                                "labels input"));
  }
  impl_->last = &impl_->step_for(n);
  impl_->last->set_augment(impl_->options.augment, impl_->epoch);
  // Note [Train and eval modes]: the step count is the optimizer's, saved in checkpoints.
  RunInfo run;
  run.training = true;
  run.step = static_cast<std::uint64_t>(impl_->replicas.optimizer(0).steps());
  run.seed = impl_->options.seed;
  impl_->last->compute(data, indices, run);
}

void Trainer::set_epoch(std::uint64_t epoch) {
  impl_->epoch = epoch;
}

const data::Augment& Trainer::augment() const {
  return impl_->options.augment;
}

void Trainer::prefetch(const data::Dataset& data, std::span<const std::int64_t> next) {
  impl_->next_data = &data;
  impl_->next = next;
}

void Trainer::update() {
  if (!impl_->last) throw Error("Trainer::update: no compute() before it");
  const data::Dataset* data = std::exchange(impl_->next_data, nullptr);
  impl_->last->update(data, data ? impl_->next : std::span<const std::int64_t>());
}

double Trainer::loss() const {
  return impl_->last ? impl_->last->loss : 0.0;
}
std::int64_t Trainer::correct() const {
  return impl_->last ? impl_->last->correct() : 0;
}
bool Trainer::has_accuracy() const {
  return impl_->has_accuracy;
}
LossSplit Trainer::loss_split() const {
  return impl_->split.split;
}
const std::string& Trainer::loss_split_reason() const {
  return impl_->split.why;
}
std::int64_t Trainer::batch() const {
  return impl_->last ? impl_->last->batch : 0;
}
std::span<const Tensor> Trainer::gradients() const {
  return impl_->last ? impl_->last->grads() : std::span<const Tensor>();
}
void Trainer::parameters_changed() {
  impl_->replicas.updated(1);
}
std::int64_t Trainer::batch_size() const {
  return impl_->options.batch_size;
}
std::vector<std::string> Trainer::batch_contracted() const {
  std::vector<std::string> names;
  if (!impl_->plan) return names;
  for (std::size_t i = 0; i < impl_->plan->params.size(); ++i) {
    if (impl_->plan->contracted(i)) names.push_back(impl_->store.names()[i]);
  }
  return names;
}
Trainer::ExchangeStats Trainer::exchange_stats() const {
  return impl_->stats;
}
std::int64_t Trainer::micro_batch() const {
  return std::min(impl_->micro, impl_->options.batch_size);
}

}  // namespace tbgrad::nn
