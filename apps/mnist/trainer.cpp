#include "apps/mnist/trainer.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <numeric>
#include <optional>
#include <tuple>
#include <tbgrad.hpp>

#include "nn/checkpoint.hpp"

namespace tbgrad::mnist {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::int64_t kPixels = std::int64_t{28} * 28;
constexpr std::int64_t kEvalBatch = 1000;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Per parameter of `net`: whether it is a fully connected layer's weight or bias.
std::vector<char> linear_params(const nn::Network& net) {
  std::vector<char> mask(net.params.size(), 0);
  for (const auto& l : net.linears) mask[l.weight] = mask[l.bias] = 1;
  return mask;
}

// One graph and executor for one batch size; several share a ParamStore.
struct Runner {
  Graph g;
  nn::Network net;
  Value probabilities;  // softmax(logits), for prediction
  std::vector<Value> grads;
  std::vector<Tensor> grad_values;  // views into the executor, stable across runs
  // kTrainFactored: for each of net.linears, its input and the gradient of its output
  // (grad_values then holds only the other parameters' gradients; Note [Replicas]).
  std::vector<Tensor> linear_inputs, linear_output_grads;
  std::unique_ptr<Executor> ex;
  Tensor images, labels;
  std::int64_t batch;

  enum class Mode { kTrain, kTrainFactored, kEval, kPredict, kInspect };

  Runner(const std::string& model, std::int64_t b, nn::ParamStore& store, Mode mode)
      : net(nn::build_network(model, g, b, store)),
        images(Shape{b, 1, 28, 28}, DType::kF32),
        labels(Shape{b}, DType::kI32),
        batch(b) {
    switch (mode) {
      case Mode::kTrain:
        grads = grad(net.loss, net.params);
        ex = std::make_unique<Executor>(g, std::initializer_list<ValueList>{net.loss, net.logits, grads});
        for (Value gv : grads) grad_values.push_back((*ex)[gv]);
        break;
      case Mode::kTrainFactored: {
        const std::vector<char> in_linear = linear_params(net);
        std::vector<Value> wrt, inputs;
        for (std::size_t i = 0; i < net.params.size(); ++i) {
          if (!in_linear[i]) wrt.push_back(net.params[i]);
        }
        for (const auto& l : net.linears) {
          wrt.push_back(l.output);
          inputs.push_back(l.input);
        }
        grads = grad(net.loss, wrt);
        ex = std::make_unique<Executor>(
            g, std::initializer_list<ValueList>{net.loss, net.logits, grads, inputs});
        grad_values.resize(net.params.size());
        std::size_t k = 0;
        for (std::size_t i = 0; i < net.params.size(); ++i) {
          if (!in_linear[i]) grad_values[i] = (*ex)[grads[k++]];
        }
        for (const auto& l : net.linears) {
          linear_output_grads.push_back((*ex)[grads[k++]]);
          linear_inputs.push_back((*ex)[l.input]);
        }
        break;
      }
      case Mode::kEval:
        ex = std::make_unique<Executor>(g, std::initializer_list<ValueList>{net.loss, net.logits});
        break;
      case Mode::kPredict:
        probabilities = softmax(net.logits);
        ex = std::make_unique<Executor>(g, std::initializer_list<ValueList>{probabilities});
        break;
      case Mode::kInspect: {
        probabilities = softmax(net.logits);
        std::vector<Value> layers;
        for (const auto& layer : net.layers) layers.push_back(layer.value);
        ex = std::make_unique<Executor>(g, std::initializer_list<ValueList>{probabilities, layers});
        break;
      }
    }
    ex->bind(net.images, images).bind(net.labels, labels);
  }

  // Copies examples order[0..batch) of `data` in, as floats in [0, 1].
  void load(const Dataset& data, const std::int64_t* order) {
    float* img = images.data<float>();
    std::int32_t* lab = labels.data<std::int32_t>();
    constexpr float kScale = 1.0f / 255.0f;
    for (std::int64_t i = 0; i < batch; ++i) {
      const std::int64_t k = order[i];
      const std::uint8_t* src = data.images.data() + k * kPixels;
      float* dst = img + i * kPixels;
      for (std::int64_t j = 0; j < kPixels; ++j) dst[j] = static_cast<float>(src[j]) * kScale;
      lab[i] = data.labels[static_cast<std::size_t>(k)];
    }
  }

  double loss() const { return (*ex)[net.loss].at(0); }

  // Number of rows whose largest logit is the label; fills `confusion` if given.
  std::int64_t correct(std::array<std::array<std::int64_t, 10>, 10>* confusion) const {
    const float* logits = (*ex)[net.logits].data<float>();
    const std::int32_t* lab = labels.data<std::int32_t>();
    std::int64_t ok = 0;
    for (std::int64_t i = 0; i < batch; ++i) {
      const float* row = logits + i * 10;
      const auto pred = static_cast<int>(std::max_element(row, row + 10) - row);
      ok += pred == lab[i];
      if (confusion) ++(*confusion)[static_cast<std::size_t>(lab[i])][static_cast<std::size_t>(pred)];
    }
    return ok;
  }
};

// Note [Micro-batches]: a training batch is split into micro-batches of kMicroBatch images,
// each with its own graph and executor. The micro-batches run as R parallel tasks (R = the
// thread count, at most one per micro-batch), task t running a fixed, contiguous block of them,
// each loading its own images and running its kernels inline under SerialScope; a second
// parallel region then forms the batch's gradient and applies the update (Note [Replicas]).
// Two parallel regions per step instead of one per op: at batch 32 the ops are too small for
// their fork/join to pay.
//
// Models with more than kMaxMicroBatchedParams parameters keep the whole batch in one graph:
// for seed-nopool (250 thousand parameters, 242 thousand of them FC1's) micro-batches measured
// 1.36x slower at one thread (2.55 vs 1.87 s per epoch), though 1.1x faster at two (1.50 vs
// 1.69 s), each task repeating FC1's 15-MFLOP weight gradient (Note [Replicas]). Batches of at
// most one micro-batch run their kernels inline: they are too small for any fork/join to pay.
//
// Note [Replicas]: on two threads, moving gradients and weights between the cores cost more
// than the arithmetic. Every micro-batch used to compute a full set of weight gradients (128 KB
// for the seed model); one thread added them up and updated the weights, and the other read
// the weights back: ~256 KB per step between cores ~240 ns apart (this VM), and a two-thread
// step of 325-335 µs where the micro-batches alone took 259 (1.90x one thread; with the
// update, 1.5x). Now:
//  - The fully connected layers (99% of the parameters) compute no weight gradient per
//    micro-batch. Their gradient over the batch is dW = dYᵀ·X and db = the column sums of
//    dY, from the layer's inputs X and output gradients dY (each micro-batch's rows weighted
//    by its share of the batch): 75 KB for the seed model at batch 32. The other parameters
//    (the convolutions', a few hundred) are added up in micro-batch order.
//  - Each task keeps its own replica of the parameters and the optimizer state. It copies its
//    micro-batches' rows of X and dY into its own batch matrices right after running them
//    (while in cache); in the update region it copies in the other tasks' rows, computes the
//    whole batch's gradient itself and updates its own replica. The weights never leave the
//    core that updates them; each thread reads ~37 KB of the other's rows per step.
// Every task does the same arithmetic in the same order on equal replicas, so the replicas
// stay bit-identical, and nothing depends on R, so results do not depend on the thread count.
// Replica 0 is the trainer's ParamStore and optimizer: checkpoints and evaluation read it. The
// cost, each task repeating the fully connected weight gradients for the whole batch (~2 MFLOP,
// ~16 µs), is less than what it saves: two-thread step 252-256 µs, one thread 437-441 µs.
constexpr std::int64_t kMicroBatch = 8;
constexpr std::int64_t kMaxMicroBatchedParams = 100000;

std::int64_t micro_batch_size(const std::string& model, std::int64_t batch) {
  nn::ParamStore probe;
  Graph g;
  nn::build_network(model, g, 1, probe);
  return probe.count() <= kMaxMicroBatchedParams ? kMicroBatch : batch;
}

// The parameter replicas of one training run, shared by its TrainSteps (Note [Replicas]).
// Replica 0 is the run's store and optimizer; replicas 1, 2, ... are copies, each brought up
// to date with replica 0 before a step that uses it if a step without it changed replica 0.
class Replicas {
 public:
  Replicas(std::string model, nn::ParamStore& main) : model_(std::move(model)), main_(main) {}

  // Replica r's parameters, creating replicas up to r (before training: it allocates).
  nn::ParamStore& store(std::size_t r) {
    if (r == 0) return main_;
    while (extra_.size() < r) {
      auto e = std::make_unique<Extra>();
      Graph g;
      nn::build_network(model_, g, 1, e->store);
      if (opt_) equip(*e);
      extra_.push_back(std::move(e));
    }
    return extra_[r - 1]->store;
  }

  // Replica 0's optimizer, once it exists, before the first step: the other replicas get one
  // of the same kind.
  void set_optimizer(nn::Optimizer& opt) {
    opt_ = &opt;
    main_state_.clear();
    for (const auto& [name, t] : opt.state()) main_state_.push_back(t);
    for (auto& e : extra_) equip(*e);
  }
  nn::Optimizer& optimizer(std::size_t r) { return r == 0 ? *opt_ : *extra_[r - 1]->opt; }

  // Makes replicas 1..count-1 equal to replica 0: weights, optimizer state, learning rate and
  // step count. Copies only replicas that a step since their last update left behind.
  void sync(std::size_t count) {
    for (std::size_t r = 1; r < count; ++r) {
      Extra& e = *extra_[r - 1];
      e.opt->set_learning_rate(opt_->learning_rate());
      e.opt->set_steps(opt_->steps());
      if (e.fresh) continue;
      copy(main_.tensors(), e.store.tensors());
      copy(main_state_, e.state);
      e.fresh = true;
    }
  }
  // After a step that updated replicas 0..count-1 only.
  void updated(std::size_t count) {
    for (std::size_t r = std::max<std::size_t>(count, 1); r <= extra_.size(); ++r) {
      extra_[r - 1]->fresh = false;
    }
  }

 private:
  struct Extra {
    nn::ParamStore store;
    std::unique_ptr<nn::Optimizer> opt;
    std::vector<Tensor> state;  // opt's state tensors
    bool fresh = false;         // equal to replica 0
  };
  void equip(Extra& e) const {
    e.opt = nn::make_optimizer(opt_->name(), e.store.tensors(), opt_->learning_rate());
    e.state.clear();
    for (const auto& [name, t] : e.opt->state()) e.state.push_back(t);
    e.fresh = false;
  }
  static void copy(const std::vector<Tensor>& from, const std::vector<Tensor>& to) {
    for (std::size_t i = 0; i < from.size(); ++i) {
      if (from[i].nbytes()) std::memcpy(to[i].raw(), from[i].raw(), from[i].nbytes());
    }
  }

  std::string model_;
  nn::ParamStore& main_;
  nn::Optimizer* opt_ = nullptr;
  std::vector<Tensor> main_state_;
  std::vector<std::unique_ptr<Extra>> extra_;
};

// One task's gradients of the fully connected layers over the whole batch, from the rows of
// every micro-batch (Note [Replicas]): dW = dYᵀ·X, db = the column sums of dY.
struct LinearGrads {
  Graph g;
  std::vector<Tensor> x, dy;  // per layer: [batch, in], [batch, out], gathered by the caller
  std::vector<Value> dw, db;
  std::unique_ptr<Executor> ex;

  LinearGrads(const nn::Network& net, std::int64_t batch) {
    std::vector<Value> xs, dys;
    for (const auto& l : net.linears) {
      const std::int64_t in = l.input.shape()[1], out = l.output.shape()[1];
      const std::string name = std::to_string(dw.size());
      xs.push_back(g.input("x" + name, Shape{batch, in}));
      dys.push_back(g.input("dy" + name, Shape{batch, out}));
      dw.push_back(matmul(dys.back(), xs.back(), {.transpose_a = true}));  // [out, in]
      db.push_back(sum_to(dys.back(), Shape{out}));
      x.emplace_back(Shape{batch, in}, DType::kF32);
      dy.emplace_back(Shape{batch, out}, DType::kF32);
    }
    ex = std::make_unique<Executor>(g, std::initializer_list<ValueList>{dw, db});
    for (std::size_t l = 0; l < xs.size(); ++l) ex->bind(xs[l], x[l]).bind(dys[l], dy[l]);
  }
};

struct TrainStep {
  std::vector<std::unique_ptr<Runner>> parts;
  // Micro-batch k is images [offsets[k], offsets[k + 1]) of the batch.
  std::vector<std::int64_t> offsets;
  std::int64_t batch;
  double loss = 0;

  // With several micro-batches (Note [Replicas]): task t runs parts [first[t], first[t + 1])
  // and updates replica t, from its own gradients.
  Replicas& replicas;
  std::vector<std::size_t> first;
  struct Task {
    std::unique_ptr<LinearGrads> linear;
    std::vector<Tensor> grads;  // the batch's gradient, one per parameter (linear's are views)
  };
  std::vector<Task> tasks;
  std::vector<char> in_linear;  // per parameter: belongs to a fully connected layer

  TrainStep(const std::string& model, std::int64_t b, Replicas& reps)
      : batch(b), replicas(reps) {
    const std::int64_t micro = micro_batch_size(model, b);
    const std::size_t m = static_cast<std::size_t>((b + micro - 1) / micro);
    if (m == 1) {
      parts.push_back(
          std::make_unique<Runner>(model, b, replicas.store(0), Runner::Mode::kTrain));
      offsets = {0, b};
      return;
    }
    const std::size_t r = std::min(m, static_cast<std::size_t>(std::max(1, num_threads())));
    for (std::size_t t = 0; t <= r; ++t) first.push_back(t * m / r);
    for (std::size_t t = 0; t < r; ++t) {
      for (std::size_t k = first[t]; k < first[t + 1]; ++k) {
        const std::int64_t start = static_cast<std::int64_t>(k) * micro;
        parts.push_back(std::make_unique<Runner>(model, std::min(micro, b - start),
                                                 replicas.store(t), Runner::Mode::kTrainFactored));
        offsets.push_back(start);
      }
    }
    offsets.push_back(b);
    const nn::Network& net = parts[0]->net;
    in_linear = linear_params(net);
    for (std::size_t t = 0; t < r; ++t) {
      Task task;
      task.linear = std::make_unique<LinearGrads>(net, b);
      for (const Value& p : net.params) task.grads.emplace_back(p.shape(), p.dtype());
      for (std::size_t l = 0; l < net.linears.size(); ++l) {
        task.grads[net.linears[l].weight] = (*task.linear->ex)[task.linear->dw[l]];
        task.grads[net.linears[l].bias] = (*task.linear->ex)[task.linear->db[l]];
      }
      tasks.push_back(std::move(task));
    }
  }

  bool replicated() const { return !tasks.empty(); }

  // Loads each micro-batch's images (examples order[0..batch)) and runs its forward and
  // backward pass (Note [Micro-batches]); then the loss.
  void run(const Dataset& data, const std::int64_t* order) {
    if (!replicated()) {
      // One graph for the batch: its kernels split their own work (inline for a micro-batch).
      auto one = [&] {
        parts[0]->load(data, order);
        parts[0]->ex->run();
      };
      if (batch <= kMicroBatch) {
        SerialScope serial;
        one();
      } else {
        one();
      }
    } else {
      replicas.sync(tasks.size());
      for_each_task([&](std::size_t t) {
        for (std::size_t k = first[t]; k < first[t + 1]; ++k) {
          parts[k]->load(data, order + offsets[k]);
          parts[k]->ex->run();
          gather_own_rows(t, k);
        }
      });
    }
    loss = 0;
    for (const auto& part : parts) {
      loss += part->loss() * static_cast<double>(part->batch) / static_cast<double>(batch);
    }
  }

  // The batch's gradient, one tensor per parameter in the store's order: valid after update()
  // (replicated) or after run() (otherwise).
  std::span<const Tensor> grads() const {
    return replicated() ? std::span<const Tensor>(tasks[0].grads) : parts[0]->grad_values;
  }

  // Forms the batch's gradient and applies the optimizer's step: on every replica, each by its
  // own task (Note [Replicas]); otherwise on the one graph's gradients.
  void update() {
    if (!replicated()) {
      // A micro-batch's update is too small to split; seed-nopool's is split over the threads.
      std::optional<SerialScope> serial;
      if (batch <= kMicroBatch) serial.emplace();
      replicas.optimizer(0).step(parts[0]->grad_values);
      replicas.updated(1);
      return;
    }
    for_each_task([&](std::size_t t) {
      gradient(t);
      replicas.optimizer(t).step(tasks[t].grads);
    });
    replicas.updated(tasks.size());
  }

  std::int64_t correct() const {
    std::int64_t c = 0;
    for (const auto& part : parts) c += part->correct(nullptr);
    return c;
  }

 private:
  // fn(t) for every task t, in parallel, each task on the same thread every step
  // (parallel_for_static) and its kernels inline.
  template <typename Fn>
  void for_each_task(const Fn& fn) {
    auto body = [&] {
      parallel_for_static(static_cast<std::int64_t>(tasks.size()),
                          [&](std::int64_t lo, std::int64_t hi) {
                            SerialScope serial;
                            for (std::int64_t t = lo; t < hi; ++t) fn(static_cast<std::size_t>(t));
                          });
    };
    run_in_arena(body);
  }

  // Micro-batch k's share of the batch: the weight of its mean loss and gradients in the batch's.
  float share(std::size_t k) const {
    return static_cast<float>(parts[k]->batch) / static_cast<float>(batch);
  }

  // Copies micro-batch k's rows of each fully connected layer's input and output gradient
  // (the latter weighted by k's share of the batch) into task t's batch matrices. Run by the
  // task that ran k, right after it, while they are in its cache.
  void gather_own_rows(std::size_t t, std::size_t k) {
    LinearGrads& lin = *tasks[t].linear;
    const Runner& part = *parts[k];
    const float w = share(k);
    for (std::size_t l = 0; l < lin.x.size(); ++l) {
      const Tensor& px = part.linear_inputs[l];
      const Tensor& pdy = part.linear_output_grads[l];
      const std::int64_t in = px.shape()[1], out = pdy.shape()[1];
      std::memcpy(lin.x[l].data<float>() + offsets[k] * in, px.raw(), px.nbytes());
      float* dy = lin.dy[l].data<float>() + offsets[k] * out;
      const float* src = pdy.data<float>();
      for (std::int64_t j = 0; j < pdy.numel(); ++j) dy[j] = w * src[j];
    }
  }

  // task.grads = the batch's gradient (the same arithmetic in every task): the rows the other
  // tasks gathered copied in from their matrices, then the fully connected layers' gradients
  // over the batch, and the other parameters' gradients summed in micro-batch order, each
  // weighted by its micro-batch's share of the batch.
  void gradient(std::size_t t) {
    Task& task = tasks[t];
    LinearGrads& lin = *task.linear;
    for (std::size_t u = 0; u < tasks.size(); ++u) {
      if (u == t) continue;
      const std::int64_t row0 = offsets[first[u]];
      const std::int64_t rows = offsets[first[u + 1]] - row0;
      const LinearGrads& theirs = *tasks[u].linear;
      for (std::size_t l = 0; l < lin.x.size(); ++l) {
        const std::int64_t in = lin.x[l].shape()[1], out = lin.dy[l].shape()[1];
        std::memcpy(lin.x[l].data<float>() + row0 * in, theirs.x[l].data<float>() + row0 * in,
                    static_cast<std::size_t>(rows * in) * sizeof(float));
        std::memcpy(lin.dy[l].data<float>() + row0 * out, theirs.dy[l].data<float>() + row0 * out,
                    static_cast<std::size_t>(rows * out) * sizeof(float));
      }
    }
    lin.ex->run();
    for (std::size_t i = 0; i < task.grads.size(); ++i) {
      if (in_linear[i]) continue;
      float* dst = task.grads[i].data<float>();
      const std::int64_t n = task.grads[i].numel();
      for (std::size_t r = 0; r < parts.size(); ++r) {
        const float w = share(r);
        const float* src = parts[r]->grad_values[i].data<float>();
        if (r == 0) {
          for (std::int64_t j = 0; j < n; ++j) dst[j] = w * src[j];
        } else {
          for (std::int64_t j = 0; j < n; ++j) dst[j] += w * src[j];
        }
      }
    }
  }
};

EvalResult evaluate_with(const std::string& model, nn::ParamStore& store, const Dataset& data,
                         std::unique_ptr<Runner>& full, std::unique_ptr<Runner>& tail) {
  EvalResult r;
  r.count = data.count;
  if (data.count == 0) return r;
  const std::int64_t b = std::min(kEvalBatch, data.count);
  if (!full) full = std::make_unique<Runner>(model, b, store, Runner::Mode::kEval);
  const std::int64_t rest = data.count % b;
  if (rest && (!tail || tail->batch != rest)) {
    tail = std::make_unique<Runner>(model, rest, store, Runner::Mode::kEval);
  }
  std::vector<std::int64_t> order(static_cast<std::size_t>(data.count));
  std::iota(order.begin(), order.end(), 0);
  double loss_sum = 0;
  std::int64_t correct = 0;
  for (std::int64_t start = 0; start < data.count;) {
    Runner& run = data.count - start >= b ? *full : *tail;
    run.load(data, order.data() + start);
    run.ex->run();
    loss_sum += run.loss() * static_cast<double>(run.batch);
    correct += run.correct(&r.confusion);
    start += run.batch;
  }
  r.loss = loss_sum / static_cast<double>(data.count);
  r.accuracy = static_cast<double>(correct) / static_cast<double>(data.count);
  return r;
}

// --- checkpoints ----------------------------------------------------------------------------

nn::CheckpointTensor to_checkpoint(const std::string& name, const Tensor& t) {
  nn::CheckpointTensor c;
  c.name = name;
  c.dtype = t.dtype() == DType::kF64 ? "F64" : "F32";
  for (std::int64_t d : t.shape().dims()) c.shape.push_back(d);
  c.data.resize(t.nbytes());
  if (t.nbytes()) std::memcpy(c.data.data(), t.raw(), t.nbytes());
  return c;
}

void from_checkpoint(const nn::Checkpoint& ckpt, const std::string& name, const Tensor& dst,
                     const std::filesystem::path& file) {
  const nn::CheckpointTensor* c = ckpt.find(name);
  if (!c) throw ModelError(file.string() + ": checkpoint has no tensor '" + name + "'");
  const Shape shape{std::span<const std::int64_t>(c->shape)};
  if (c->dtype != "F32" || !(shape == dst.shape())) {
    throw ModelError(file.string() + ": tensor '" + name + "' is " + c->dtype + " " +
                     shape.str() + ", the model needs F32 " + dst.shape().str());
  }
  std::memcpy(dst.raw(), c->data.data(), dst.nbytes());
}

std::string metadata(const nn::Checkpoint& ckpt, const std::string& key,
                     const std::filesystem::path& file) {
  auto it = ckpt.metadata.find(key);
  if (it == ckpt.metadata.end()) {
    throw ModelError(file.string() + ": checkpoint metadata lacks '" + key + "'");
  }
  return it->second;
}

std::int64_t metadata_int(const nn::Checkpoint& ckpt, const std::string& key,
                          const std::filesystem::path& file) {
  const std::string s = metadata(ckpt, key, file);
  try {
    std::size_t used = 0;
    const long long v = std::stoll(s, &used);
    if (used != s.size() || v < 0) throw std::invalid_argument(s);
    return v;
  } catch (const std::exception&) {
    throw ModelError(file.string() + ": checkpoint metadata '" + key + "' = '" + s +
                     "' is not a non-negative integer");
  }
}

double metadata_positive_double(const nn::Checkpoint& ckpt, const std::string& key,
                                const std::filesystem::path& file) {
  const std::string s = metadata(ckpt, key, file);
  char* end = nullptr;
  const double v = s.empty() ? 0.0 : std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v) || v <= 0) {
    throw ModelError(file.string() + ": checkpoint metadata '" + key + "' = '" + s +
                     "' is not a positive finite number");
  }
  return v;
}

std::string model_of(const nn::Checkpoint& ckpt, const std::filesystem::path& file) {
  std::string model = metadata(ckpt, "model", file);
  const auto& names = nn::model_names();
  if (std::find(names.begin(), names.end(), model) == names.end()) {
    throw ModelError(file.string() + ": checkpoint is of unknown model '" + model + "'");
  }
  return model;
}

std::string format_double(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// --- progress -------------------------------------------------------------------------------

class ProgressBar {
 public:
  explicit ProgressBar(bool enabled) : enabled_(enabled) {}
  void update(std::int64_t done, std::int64_t total, double loss, double elapsed) {
    if (!enabled_) return;
    const auto now = Clock::now();
    if (done < total && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    const double frac = total ? static_cast<double>(done) / static_cast<double>(total) : 1.0;
    const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0;
    const double eta = rate > 0 ? static_cast<double>(total - done) / rate : 0.0;
    constexpr int kWidth = 30;
    const int fill = static_cast<int>(frac * kWidth);
    std::printf("\r  [%.*s%*s] %3.0f%%  loss %.4f  %6.0f img/s  %4.1fs left ", fill,
                "==============================", kWidth - fill, "", frac * 100, loss, rate, eta);
    std::fflush(stdout);
  }
  void clear() {
    if (!enabled_) return;
    std::printf("\r%*s\r", 90, "");
    std::fflush(stdout);
  }

 private:
  bool enabled_;
  Clock::time_point last_{};
};

}  // namespace

double scheduled_lr(const std::string& schedule, double lr, std::int64_t epoch,
                    std::int64_t epochs) {
  if (schedule == "constant") return lr;
  if (schedule == "cosine") {
    constexpr double kPi = 3.14159265358979323846;
    const double progress = static_cast<double>(epoch - 1) / static_cast<double>(std::max<std::int64_t>(epochs, 1));
    return lr * 0.5 * (1.0 + std::cos(kPi * progress));
  }
  throw Error("unknown learning-rate schedule '" + schedule + "' (expected cosine or constant)");
}

Defaults default_hyperparameters(const std::string& model, const std::string& optimizer) {
  // Measured on real MNIST with the cosine schedule, batch 32, seed 1 (docs/results.md): the
  // best of sgd 0.1, momentum 0.02 and adam 0.001/0.002 for each model.
  std::string opt = optimizer;
  if (opt.empty()) opt = model == "seed-nopool" ? "momentum" : "adam";
  double lr = 0;
  if (opt == "sgd") {
    lr = 0.1;
  } else if (opt == "momentum") {
    lr = 0.02;
  } else if (opt == "adam") {
    lr = model == "seed" ? 2e-3 : 1e-3;
  } else {
    throw Error("unknown optimizer '" + opt + "' (expected sgd, momentum or adam)");
  }
  return {opt, lr};
}

TrainResult train(const TrainConfig& config, const Dataset& train_set, const Dataset& test_set,
                  const std::function<void(const EpochStats&)>& on_epoch) {
  TrainResult result;
  std::string model = config.model;
  std::string optimizer = config.optimizer;
  double lr = config.lr;
  std::int64_t batch = config.batch_size;
  std::int64_t start_epoch = 0;
  nn::Rng rng(config.seed);

  // Resume: the checkpoint decides the model and optimizer; its state replaces a fresh one.
  std::optional<nn::Checkpoint> resumed;
  if (!config.resume.empty()) {
    resumed = nn::load_checkpoint(config.resume);
    const std::string m = model_of(*resumed, config.resume);
    if (m != model) {
      throw ModelError(config.resume.string() + ": checkpoint holds model '" + m +
                       "', not '" + model + "' (pass --model " + m + ")");
    }
    const std::string o = metadata(*resumed, "optimizer", config.resume);
    if (!optimizer.empty() && optimizer != o) {
      throw ModelError(config.resume.string() + ": checkpoint was trained with optimizer '" + o +
                       "', not '" + optimizer + "'");
    }
    if (o != "sgd" && o != "momentum" && o != "adam") {
      throw ModelError(config.resume.string() + ": checkpoint names an unknown optimizer '" + o +
                       "' (expected sgd, momentum or adam)");
    }
    optimizer = o;
    if (lr == 0) lr = metadata_positive_double(*resumed, "lr", config.resume);
    start_epoch = metadata_int(*resumed, "epoch", config.resume);
    if (config.epochs < start_epoch) {
      throw ModelError(config.resume.string() + ": checkpoint has trained " +
                       std::to_string(start_epoch) + " epochs, more than --epochs " +
                       std::to_string(config.epochs) + " (--epochs is the total, pass --epochs " +
                       std::to_string(start_epoch) + " or more)");
    }
  }
  const Defaults defaults = default_hyperparameters(model, optimizer);
  optimizer = defaults.optimizer;
  if (lr == 0) lr = defaults.lr;
  result.optimizer = optimizer;
  result.lr = lr;
  result.batch_size = batch;

  const std::int64_t n = config.limit > 0 ? std::min(config.limit, train_set.count) : train_set.count;
  if (n == 0) throw DataError("the training set is empty");
  batch = std::min(batch, n);
  result.batch_size = batch;
  result.epochs_trained = start_epoch;
  if (resumed) {
    // Another batch size or data set would silently change what "resume = training straight"
    // means (docs/reliability.md, "Resume").
    for (const auto& [key, value, flag] :
         {std::tuple<const char*, std::int64_t, const char*>{"batch_size", batch, "--batch-size"},
          {"limit", n, "--limit"}}) {
      if (resumed->metadata.count(key) == 0) continue;  // older checkpoints lack them
      const std::int64_t saved = metadata_int(*resumed, key, config.resume);
      if (saved != value) {
        throw ModelError(config.resume.string() + ": checkpoint was trained with " + key + " " +
                         std::to_string(saved) + ", this run would use " + std::to_string(value) +
                         " (pass " + flag + " " + std::to_string(saved) + " to resume it)");
      }
    }
  }

  nn::ParamStore store;
  Replicas replicas(model, store);
  auto full = std::make_unique<TrainStep>(model, batch, replicas);
  nn::initialize(store, nn::parse_init(config.init), rng);
  std::unique_ptr<TrainStep> tail;
  if (n % batch) tail = std::make_unique<TrainStep>(model, n % batch, replicas);
  auto opt = nn::make_optimizer(optimizer, store.tensors(), lr);
  replicas.set_optimizer(*opt);

  if (resumed) {
    for (std::size_t i = 0; i < store.names().size(); ++i) {
      from_checkpoint(*resumed, store.names()[i], store.tensors()[i], config.resume);
    }
    for (const auto& [name, t] : opt->state()) {
      from_checkpoint(*resumed, "optimizer." + name, t, config.resume);
    }
    opt->set_steps(metadata_int(*resumed, "optimizer_steps", config.resume));
    try {
      rng.set_state(metadata(*resumed, "rng", config.resume));
    } catch (const Error&) {
      throw ModelError(config.resume.string() + ": random generator state is malformed");
    }
  }

  std::ofstream metrics;
  if (!config.metrics.empty()) {
    metrics.open(config.metrics, std::ios::trunc);
    if (!metrics) throw DataError(config.metrics.string() + ": cannot open for writing");
    metrics << "epoch,train_loss,train_accuracy,test_loss,test_accuracy,seconds,images_per_second\n";
  }

  // The step log keeps a copy of the weights from before each step, allocated here once.
  std::ofstream step_log;
  std::vector<std::vector<float>> before;
  if (!config.step_log.empty()) {
    step_log.open(config.step_log, std::ios::trunc);
    if (!step_log) throw DataError(config.step_log.string() + ": cannot open for writing");
    step_log << "epoch,step,loss,lr,grad_norm,update_norm\n";
    for (const Tensor& p : store.tensors()) before.emplace_back(static_cast<std::size_t>(p.numel()));
  }

  std::unique_ptr<Runner> eval_full, eval_tail;
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  ProgressBar bar(config.progress);
  for (std::int64_t epoch = start_epoch + 1; epoch <= config.epochs; ++epoch) {
    // Fisher-Yates from the identity each epoch: the generator's state alone fixes the order,
    // so a resumed run sees the same batches as an uninterrupted one.
    std::iota(order.begin(), order.end(), 0);
    for (std::int64_t i = n - 1; i > 0; --i) {
      std::swap(order[static_cast<std::size_t>(i)],
                order[static_cast<std::size_t>(rng.below(static_cast<std::uint64_t>(i + 1)))]);
    }
    opt->set_learning_rate(scheduled_lr(config.schedule, lr, epoch, config.epochs));
    const auto t0 = Clock::now();
    double loss_sum = 0;
    std::int64_t correct = 0, step = 0;
    const std::int64_t steps = (n + batch - 1) / batch;
    for (std::int64_t start = 0; start < n; ++step) {
      if (config.stop && config.stop->load(std::memory_order_relaxed) != 0) {
        bar.clear();
        throw Interrupted("interrupted at epoch " + std::to_string(epoch) + ", step " +
                              std::to_string(step + 1) + " of " + std::to_string(steps),
                          epoch);
      }
      TrainStep& run = n - start >= batch ? *full : *tail;
      run.run(train_set, order.data() + start);
      const double loss = run.loss;
      if (!std::isfinite(loss)) {
        bar.clear();
        throw DivergedError("loss became " + format_double(loss) + " at epoch " +
                            std::to_string(epoch) + ", step " + std::to_string(step + 1) +
                            " of " + std::to_string(steps) +
                            "; stopping (the learning rate is probably too high; the last saved "
                            "checkpoint, if any, is untouched)");
      }
      if (step_log) {
        for (std::size_t i = 0; i < before.size(); ++i) {
          const Tensor& p = store.tensors()[i];
          std::copy(p.data<float>(), p.data<float>() + p.numel(), before[i].begin());
        }
      }
      run.update();
      if (step_log) {
        double grad_sq = 0, update_sq = 0;
        const auto grads = run.grads();  // not changed by the update
        for (std::size_t i = 0; i < before.size(); ++i) {
          const float* gv = grads[i].data<float>();
          for (std::int64_t j = 0; j < grads[i].numel(); ++j) {
            grad_sq += static_cast<double>(gv[j]) * gv[j];
          }
          const float* pv = store.tensors()[i].data<float>();
          for (std::size_t j = 0; j < before[i].size(); ++j) {
            const double d = static_cast<double>(pv[j]) - before[i][j];
            update_sq += d * d;
          }
        }
        step_log << epoch << ',' << step + 1 << ',' << format_double(loss) << ','
                 << format_double(opt->learning_rate()) << ',' << format_double(std::sqrt(grad_sq))
                 << ',' << format_double(std::sqrt(update_sq)) << '\n';
      }
      loss_sum += loss * static_cast<double>(run.batch);
      correct += run.correct();
      start += run.batch;
      bar.update(start, n, loss_sum / static_cast<double>(start), seconds_since(t0));
    }
    EpochStats s;
    s.epoch = epoch;
    s.seconds = seconds_since(t0);
    bar.clear();
    s.train_loss = loss_sum / static_cast<double>(n);
    s.train_accuracy = static_cast<double>(correct) / static_cast<double>(n);
    s.images_per_second = static_cast<double>(n) / s.seconds;
    result.train_seconds += s.seconds;
    result.images_trained += n;
    result.test = evaluate_with(model, store, test_set, eval_full, eval_tail);
    s.test_loss = result.test.loss;
    s.test_accuracy = result.test.accuracy;
    result.epochs.push_back(s);
    if (step_log) {
      step_log.flush();
      if (!step_log) throw DataError(config.step_log.string() + ": write failed");
    }
    if (metrics) {
      metrics << s.epoch << ',' << format_double(s.train_loss) << ','
              << format_double(s.train_accuracy) << ',' << format_double(s.test_loss) << ','
              << format_double(s.test_accuracy) << ',' << format_double(s.seconds) << ','
              << format_double(s.images_per_second) << '\n';
      metrics.flush();
      if (!config.metrics.empty() && !metrics) {
        throw DataError(config.metrics.string() + ": write failed");
      }
    }
    if (!config.save.empty()) {
      nn::Checkpoint ckpt;
      ckpt.metadata = {{"model", model},
                       {"epoch", std::to_string(epoch)},
                       {"optimizer", optimizer},
                       {"lr", format_double(lr)},
                       {"batch_size", std::to_string(batch)},
                       {"seed", std::to_string(config.seed)},
                       {"init", config.init},
                       {"schedule", config.schedule},
                       {"limit", std::to_string(n)},
                       {"optimizer_steps", std::to_string(opt->steps())},
                       {"rng", rng.state()},
                       {"test_accuracy", format_double(s.test_accuracy)}};
      for (std::size_t i = 0; i < store.names().size(); ++i) {
        ckpt.tensors.push_back(to_checkpoint(store.names()[i], store.tensors()[i]));
      }
      for (const auto& [name, t] : opt->state()) {
        ckpt.tensors.push_back(to_checkpoint("optimizer." + name, t));
      }
      nn::save_checkpoint(config.save, ckpt);
    }
    result.epochs_trained = epoch;
    if (on_epoch) on_epoch(s);
  }
  if (result.epochs.empty()) {
    result.test = evaluate_with(model, store, test_set, eval_full, eval_tail);
  }
  return result;
}

// --- Model ----------------------------------------------------------------------------------

struct Model::Impl {
  std::string model;
  std::int64_t epochs = 0;
  nn::ParamStore store;
  mutable std::unique_ptr<Runner> eval_full, eval_tail, predict;
};

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

Model Model::load(const std::filesystem::path& file) {
  nn::Checkpoint ckpt = nn::load_checkpoint(file);
  auto impl = std::make_unique<Impl>();
  impl->model = model_of(ckpt, file);
  impl->epochs = metadata_int(ckpt, "epoch", file);
  // Building a graph creates the parameters in the store; then fill them.
  impl->predict = std::make_unique<Runner>(impl->model, 1, impl->store, Runner::Mode::kPredict);
  for (std::size_t i = 0; i < impl->store.names().size(); ++i) {
    from_checkpoint(ckpt, impl->store.names()[i], impl->store.tensors()[i], file);
  }
  return Model(std::move(impl));
}

const std::string& Model::name() const { return impl_->model; }
std::int64_t Model::epochs_trained() const { return impl_->epochs; }

EvalResult Model::evaluate(const Dataset& data) const {
  return evaluate_with(impl_->model, impl_->store, data, impl_->eval_full, impl_->eval_tail);
}

std::array<double, 10> Model::predict(const std::vector<float>& image) const {
  if (image.size() != static_cast<std::size_t>(kPixels)) {
    throw Error("predict: expected 784 pixels, got " + std::to_string(image.size()));
  }
  Runner& run = *impl_->predict;
  std::copy(image.begin(), image.end(), run.images.data<float>());
  run.labels.data<std::int32_t>()[0] = 0;
  run.ex->run();
  std::array<double, 10> p{};
  const Tensor& probs = (*run.ex)[run.probabilities];
  for (int i = 0; i < 10; ++i) p[static_cast<std::size_t>(i)] = probs.at(i);
  return p;
}

Inspection Model::inspect(const Dataset& data, std::int64_t index) const {
  if (index < 0 || index >= data.count) {
    throw Error("inspect: example " + std::to_string(index) + " is outside the data set's " +
                std::to_string(data.count) + " images");
  }
  Runner run(impl_->model, 1, impl_->store, Runner::Mode::kInspect);
  run.load(data, &index);
  run.ex->run();
  auto array_of = [](std::string name, const Tensor& t) {
    Inspection::Array a;
    a.name = std::move(name);
    const auto dims = t.shape().dims();
    a.shape.assign(dims.begin(), dims.end());
    a.data.assign(t.data<float>(), t.data<float>() + t.numel());
    return a;
  };
  Inspection r;
  r.index = index;
  r.label = run.labels.data<std::int32_t>()[0];
  const Tensor& probs = (*run.ex)[run.probabilities];
  for (int i = 0; i < 10; ++i) r.probabilities[static_cast<std::size_t>(i)] = probs.at(i);
  r.predicted = static_cast<int>(std::max_element(r.probabilities.begin(), r.probabilities.end()) -
                                 r.probabilities.begin());
  r.image = array_of("image", run.images);
  r.image.shape.erase(r.image.shape.begin());
  for (const auto& layer : run.net.layers) {
    r.layers.push_back(array_of(layer.name, (*run.ex)[layer.value]));
    r.layers.back().shape.erase(r.layers.back().shape.begin());
  }
  for (std::size_t i = 0; i < impl_->store.names().size(); ++i) {
    const Tensor& t = impl_->store.tensors()[i];
    if (t.shape().rank() == 4) r.kernels.push_back(array_of(impl_->store.names()[i], t));
  }
  return r;
}

}  // namespace tbgrad::mnist
