#include "nn/train.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <utility>

#include "autodiff/grad.hpp"
#include "dist/communicator.hpp"
#include "graph/executor.hpp"
#include "graph/op.hpp"
#include "graph/parallel.hpp"

namespace tbgrad::nn {

namespace {

// Why the library builds a model for a number of examples the user did not choose, in the
// user's terms (the batch they chose, and why a graph of another size was needed): said before
// the messages of errors while building it. Empty: a size the user chose.
using Context = std::function<std::string(std::int64_t examples)>;

std::string say(const Context& context, std::int64_t examples) {
  return context ? context(examples) : std::string();
}

// The model for `examples` examples. An error it raises is raised again, of the same type, with
// the context before its message.
ModelGraph build_model(const ModelFn& model, Graph& g, ParamStore& store, std::int64_t examples,
                       const Context& context) {
  if (!context) return model(g, store, examples);
  try {
    return model(g, store, examples);
  } catch (const ShapeError& e) {
    throw ShapeError(context(examples) + e.what());
  } catch (const ThreadStartError&) {
    throw;
  } catch (const Error& e) {
    throw Error(context(examples) + e.what());
  }
}

// For the micro-batches of a batch of `batch` examples (Note [Micro-batches]).
Context micro_batch_context(std::int64_t batch, std::int64_t micro) {
  return [batch, micro](std::int64_t examples) {
    return "Trainer: building the model for a micro-batch of " + std::to_string(examples) +
           " examples (a batch of " + std::to_string(batch) + " runs as micro-batches of " +
           std::to_string(micro) + "; TrainerOptions::micro_batch = " + std::to_string(batch) +
           " keeps it whole): ";
  };
}

}  // namespace

void create_parameters(const ModelFn& model, ParamStore& store) {
  Graph g;
  build_model(model, g, store, 1, [](std::int64_t) {
    return std::string("nn::create_parameters (building the model for a batch of 1): ");
  });
}

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Number of rows whose largest output is the label; counts into confusion[label * C + pred].
std::int64_t count_correct(const Tensor& outputs, const Tensor& labels,
                           std::vector<std::int64_t>* confusion) {
  const std::int64_t b = outputs.shape()[0];
  const std::int64_t c = outputs.numel() / std::max<std::int64_t>(b, 1);
  const float* out = outputs.data<float>();
  const std::int32_t* lab = labels.data<std::int32_t>();
  std::int64_t ok = 0;
  for (std::int64_t i = 0; i < b; ++i) {
    const float* row = out + i * c;
    const auto pred = static_cast<std::int64_t>(std::max_element(row, row + c) - row);
    ok += pred == lab[i];
    if (confusion && lab[i] >= 0 && lab[i] < c) {
      ++(*confusion)[static_cast<std::size_t>(lab[i] * c + pred)];
    }
  }
  return ok;
}

// What the trainer and the evaluator need of a model's graph for b examples: ModelGraph's
// four values set, of this graph, with inputs [b, ...] f32 and labels [b] i32 the graph's inputs,
// a loss of one element, outputs [b, ...]; no other graph input (nothing would feed it); and
// the store's parameters, in its order. Throws Error naming the values and shapes.
void check_model(const ModelGraph& m, const Graph& g, const std::vector<std::string>& names,
                 std::int64_t b, const std::string& context = {}) {
  const auto fail = [&](const std::string& what) { throw Error(context + "model builder: " + what); };
  const std::pair<const char*, const Value*> fields[] = {
      {"inputs", &m.inputs}, {"labels", &m.labels}, {"loss", &m.loss}, {"outputs", &m.outputs}};
  for (const auto& [name, v] : fields) {
    if (!v->valid()) fail(std::string("ModelGraph::") + name + " is not set");
    if (&v->graph() != &g) fail(std::string("ModelGraph::") + name + " is not a value of the graph");
  }
  const std::string at = " (batch " + std::to_string(b) + ")";
  const Node& in = g.node(m.inputs);
  if (in.kind != NodeKind::kInput || in.dtype != DType::kF32 || in.shape.rank() < 1 ||
      in.shape[0] != b) {
    fail("ModelGraph::inputs must be an f32 graph input with the batch first, [" +
         std::to_string(b) + ", ...]" + at + ", got " + m.inputs.describe() + " " +
         dtype_name(in.dtype));
  }
  const Node& lab = g.node(m.labels);
  if (lab.kind != NodeKind::kLabels || !(lab.shape == Shape{b})) {
    fail("ModelGraph::labels must be the graph's labels input (Graph::input_labels) of shape [" +
         std::to_string(b) + "]" + at + ", got " + m.labels.describe());
  }
  if (m.loss.shape().numel() != 1) {
    fail("ModelGraph::loss must be one number (the batch's mean loss), got " + m.loss.describe());
  }
  if (m.outputs.shape().rank() < 1 || m.outputs.shape()[0] != b) {
    fail("ModelGraph::outputs must have the batch first, [" + std::to_string(b) + ", ...]" + at +
         ", got " + m.outputs.describe());
  }
  std::vector<char> needed(static_cast<std::size_t>(g.size()), 0);  // by the loss or outputs
  std::vector<int> todo = {m.loss.id(), m.outputs.id()};
  while (!todo.empty()) {
    const int id = todo.back();
    todo.pop_back();
    if (needed[static_cast<std::size_t>(id)]) continue;
    needed[static_cast<std::size_t>(id)] = 1;
    for (const int i : g.node(id).inputs) todo.push_back(i);
  }
  for (const Value& v : g.inputs()) {
    if (v == m.inputs || v == m.labels || !needed[static_cast<std::size_t>(v.id())]) continue;
    fail("the graph's input " + v.describe() + at +
         " is neither ModelGraph::inputs nor ModelGraph::labels; the trainer and the evaluator "
         "feed only those two (build anything else the model needs from them or from "
         "parameters)");
  }
  const auto& params = g.params();
  bool same = params.size() == names.size();
  for (std::size_t i = 0; same && i < params.size(); ++i) same = params[i].name() == names[i];
  if (!same) {
    fail("its graph's parameters must be the store's, each used once and in the order created "
         "(ask ParamStore::param once per parameter and reuse the Value)");
  }
}

// One graph of the model for one batch size, with its executor and input tensors.
struct Part {
  Graph g;
  ModelGraph m;
  std::vector<Value> grads;         // of every parameter, in the store's order
  std::vector<Tensor> grad_values;  // views into the executor (those it computes)
  std::vector<Tensor> gathered;     // views of the values a contraction reads (Note [Replicas])
  std::unique_ptr<Executor> ex;
  Tensor inputs, labels;
  std::int64_t batch;

  // `context`: why a graph of b examples is built (build_model); empty when the user chose b.
  Part(const ModelFn& model, ParamStore& store, std::int64_t b, const Context& context = {})
      : batch(b) {
    m = build_model(model, g, store, b, context);
    check_model(m, g, store.names(), b, say(context, b));
    inputs = Tensor(m.inputs.shape(), DType::kF32);
    labels = Tensor(m.labels.shape(), DType::kI32);
  }
  void bind() { ex->bind(m.inputs, inputs).bind(m.labels, labels); }
  void load(const data::Dataset& data, std::span<const std::int64_t> indices) {
    data::load_examples(data, indices, inputs, labels);
  }
  double loss() const { return (*ex)[m.loss].at(0); }
  std::int64_t correct() const { return count_correct((*ex)[m.outputs], labels, nullptr); }
};

// How one parameter's gradient over a batch is formed (Note [Replicas]).
struct GradPlan {
  enum Kind { kSummed, kContracted } kind = kSummed;
  // kContracted: the op forming the gradient, applied to its inputs gathered over the batch
  // (indices into Plan::gathered; input 0's rows scaled by each micro-batch's share).
  std::shared_ptr<const Op> op;
  std::vector<std::size_t> inputs;
};

// A value of the micro-batch graphs that the batch-level gradients read, gathered into one
// [batch * rows, ...] matrix: node `node`'s rows of every micro-batch, in order.
struct Gathered {
  int node;
  bool scaled;          // by the micro-batch's share of the batch
  std::int64_t rows;    // rows per example
  Shape example_shape;  // the value's shape with the first dimension 1 example's rows
};

// Which parameter gradients contract over the batch axis, found from the graph itself: a node
// is batch-major when its first dimension grows by a fixed number of rows per example (compared
// between graphs of two batch sizes) and its other dimensions do not change. A parameter whose
// gradient is an op that sums over its inputs' rows (Note [Batch contraction] in graph/op.hpp),
// its inputs batch-major and its result not depending on the batch, is formed once over the
// batch: matmul's Aᵀ·B (the VJP of x·Wᵀ: dW = dYᵀ·X) and sum_to (a bias's).
struct Plan {
  std::vector<GradPlan> params;
  std::vector<Gathered> gathered;
  // The graph's size with its gradients, the same for every batch size; -1 when it is not
  // (graphs of one example, summing every gradient).
  int nodes = 0;

  // `why`: how a batch splits into micro-batches, for errors (micro_batch_context).
  Plan(const ModelFn& model, const ParamStore& like, std::int64_t micro, const Context& why) {
    ParamStore scratch;  // the same names and shapes as `like`
    Graph g1, g2;
    const ModelGraph m1 = build_model(model, g1, scratch, micro, why);
    const ModelGraph m2 = build_model(model, g2, scratch, micro + 1, why);
    if (scratch.names() != like.names()) {
      throw Error(why(micro) + "model builder: creates other parameters than the store holds");
    }
    check_model(m1, g1, like.names(), micro, why(micro));
    check_model(m2, g2, like.names(), micro + 1, why(micro + 1));
    const std::vector<Value> grads1 = grad(m1.loss, g1.params());
    const std::vector<Value> grads2 = grad(m2.loss, g2.params());
    params.resize(grads1.size());
    nodes = g1.size();
    if (g2.size() != nodes) {
      // Graphs of one example can differ from larger ones (micro_batch_offsets): then every
      // gradient is summed over the micro-batches, which needs no node to match.
      if (micro == 1) {
        nodes = -1;
        return;
      }
      throw Error(why(micro) + "model builder: builds " + std::to_string(nodes) +
                  " nodes (with their gradients) for " + std::to_string(micro) +
                  " examples but " + std::to_string(g2.size()) + " for " +
                  std::to_string(micro + 1) + "; it must build the same graph for every batch size");
    }
    auto rows_of = [&](int id) -> std::int64_t {  // rows per example, 0 if not batch-major
      const Shape s1 = g1.node(id).shape, s2 = g2.node(id).shape;
      if (s1.rank() < 1 || s1.rank() != s2.rank()) return 0;
      for (int d = 1; d < s1.rank(); ++d) {
        if (s1[d] != s2[d]) return 0;
      }
      const std::int64_t r = s2[0] - s1[0];
      return r > 0 && s1[0] == r * micro ? r : 0;
    };
    auto gather = [&](int id, bool scaled) {
      for (std::size_t i = 0; i < gathered.size(); ++i) {
        if (gathered[i].node == id && gathered[i].scaled == scaled) return i;
      }
      std::vector<std::int64_t> dims(g1.node(id).shape.dims().begin(),
                                     g1.node(id).shape.dims().end());
      const std::int64_t r = rows_of(id);
      dims[0] = r;
      gathered.push_back({id, scaled, r, Shape{std::span<const std::int64_t>(dims)}});
      return gathered.size() - 1;
    };
    for (std::size_t i = 0; i < grads1.size(); ++i) {
      const int id = grads1[i].id();
      const Node& n = g1.node(id);
      // Note [Batch contraction] (graph/op.hpp): an op summing over its inputs' rows, every
      // input batch-major with the same rows per example, a result that the batch does not
      // change.
      if (n.kind != NodeKind::kOp || !n.op->traits().sums_over_rows || n.inputs.empty() ||
          !(n.shape == g2.node(id).shape)) {
        continue;
      }
      const std::int64_t rows = rows_of(n.inputs[0]);
      bool all = rows > 0;
      for (const int in : n.inputs) all = all && rows_of(in) == rows;
      if (!all) continue;
      params[i].kind = GradPlan::kContracted;
      params[i].op = n.op;
      for (std::size_t k = 0; k < n.inputs.size(); ++k) {
        params[i].inputs.push_back(gather(n.inputs[k], k == 0));
      }
    }
  }
  bool contracted(std::size_t i) const { return params[i].kind != GradPlan::kSummed; }
};

// One task's batch-level gradients of the contracting parameters (Note [Replicas]): an input
// per gathered value, [batch * rows, ...], and a matmul or sum_to per parameter.
struct Contraction {
  Graph g;
  std::vector<Tensor> gathered;
  std::vector<Value> outputs;  // per parameter, invalid for a summed one
  std::unique_ptr<Executor> ex;

  // shared: another task's contraction whose batch matrices this one reads too (Note
  // [Replicas]); null: its own.
  Contraction(const Plan& plan, std::int64_t batch, const Contraction* shared) {
    std::vector<Value> in;
    for (std::size_t k = 0; k < plan.gathered.size(); ++k) {
      std::vector<std::int64_t> dims(plan.gathered[k].example_shape.dims().begin(),
                                     plan.gathered[k].example_shape.dims().end());
      dims[0] *= batch;
      const Shape s{std::span<const std::int64_t>(dims)};
      in.push_back(g.input("gathered" + std::to_string(k), s));
      if (shared) {
        gathered.push_back(shared->gathered[k]);  // a handle to the same storage
      } else {
        gathered.emplace_back(s, DType::kF32);
      }
    }
    std::vector<Value> wanted;
    for (const GradPlan& p : plan.params) {
      Value v;
      if (p.kind == GradPlan::kContracted) {
        std::vector<Value> ins;
        for (const std::size_t k : p.inputs) ins.push_back(in[k]);
        v = p.op->apply_to(ins);
        if (!v.valid()) throw Error(std::string(p.op->name()) + " cannot be applied to a batch");
      }
      outputs.push_back(v);
      if (v.valid()) wanted.push_back(v);
    }
    ex = std::make_unique<Executor>(g, wanted);
    for (std::size_t k = 0; k < in.size(); ++k) ex->bind(in[k], gathered[k]);
  }
};

}  // namespace

// Note [Micro-batches]: a training batch is split into micro-batches of `micro` examples
// (default_micro_batch: 16 for batches of 32 or more, 8 below), each with its own graph and
// executor. The micro-batches run as R parallel tasks (R = the thread count, at most one per
// micro-batch), task t running a fixed, contiguous block of them, each loading its own examples
// and running its kernels inline under SerialScope; a second parallel region then forms the
// batch's gradient and applies the update (Note [Replicas]). Two parallel regions per step
// instead of one per op: at batch 32 the ops are too small for their fork/join to pay. With
// more threads than micro-batches, the kernels of each task split their work over the others
// instead of running inline. The split depends on the batch size only, so results do not
// depend on the thread count.
//
// Why 16: the fully connected layers' forward product runs as W·Xᵀ with the micro-batch as
// the vector dimension (ops/matmul_kernels.cpp), so 8 examples half-filled an AVX-512 vector
// and gave AVX2 one-vector tiles, and every op's fixed cost was paid twice as often. Measured
// on the seed model at batch 32, TBGRAD_MAX_ISA=avx2: 12-15% faster epochs at 1 and 2 threads
// than micro-batches of 8 (docs/performance.md). Batches below 32 keep 8, so that they still
// make two micro-batches for two threads.
//
// Models with more than kMaxMicroBatchedParams parameters keep the whole batch in one graph:
// for seed-nopool (250 thousand parameters, 242 thousand of them FC1's) micro-batches measured
// 1.36x slower at one thread, though 1.1x faster at two, each task repeating FC1's 15-MFLOP
// weight gradient (docs/performance.md). Batches of at most one micro-batch run their kernels
// inline: they are too small for any fork/join to pay.
//
// Note [Replicas]: on two threads, moving gradients and weights between the cores costs more
// than the arithmetic (docs/performance.md). So:
//  - Parameters whose gradient contracts over the batch (Plan: a matmul Aᵀ·B of two batch-major
//    values, the fully connected weights' dW = dYᵀ·X; a sum_to over the rows, their biases')
//    compute no gradient per micro-batch. Each micro-batch's A and B are gathered into batch
//    matrices (A's rows weighted by the micro-batch's share of the batch) and the gradient is
//    formed once over the batch. The other parameters' gradients (the convolutions', a few
//    hundred numbers) are added up in micro-batch order, each weighted by its share.
//  - Each task keeps its own replica of the parameters and the optimizer state. It copies its
//    micro-batches' rows into the batch matrices, which all tasks share, right after running
//    them (while in cache); in the update region it computes the whole batch's gradient itself
//    from those matrices (reading the other tasks' rows where they wrote them: copying them into
//    a matrix of its own first took 4% of a two-thread step) and updates its own replica. The
//    weights never leave the core that updates them.
// Every task does the same arithmetic in the same order on equal replicas, so the replicas stay
// bit-identical, and nothing depends on R, so results do not depend on the thread count.
// Replica 0 is the trainer's ParamStore and optimizer: checkpoints and evaluation read it.
//
// Note [Ranks]: several processes (TrainerOptions::comm, docs/distributed.md) train one batch
// as R ranks: rank q runs micro-batches [q*M/R, (q+1)*M/R) of the batch's M, over its own
// threads as above. After its micro-batches, each rank writes into its block of one exchange
// buffer what the gradient needs from them (each micro-batch's loss, correct count and summed
// parameters' gradients, and its examples' gathered rows) and one allgather gives every rank
// every block. Each rank then forms the whole batch's gradient from the same bytes with the
// same arithmetic in the same order as one process does (it copies the other ranks' rows into
// its batch matrices where its own tasks' would be), so the weights stay equal on all ranks
// and equal to one process's, for any R and any thread counts. A batch that runs as one graph
// (a single micro-batch, or a model over kMaxMicroBatchedParams) runs whole on every rank:
// the same result, no faster.
constexpr std::int64_t kMicroBatch = 16;
constexpr std::int64_t kSmallMicroBatch = 8;   // for batches under 2 * kMicroBatch

constexpr std::int64_t default_micro_batch(std::int64_t batch) {
  return batch >= 2 * kMicroBatch ? kMicroBatch : kSmallMicroBatch;
}
constexpr std::int64_t kMaxMicroBatchedParams = 100000;

namespace {

// Where a batch of `batch` examples splits into micro-batches of `micro` (Note [Micro-batches]):
// micro-batch k is examples [offsets[k], offsets[k + 1]). A last micro-batch of one example
// joins the one before it: a graph of one example can differ from the others (with a batch of
// 1, a [1, F] parameter multiplying a [B, F] value broadcasts nothing, so its gradient needs
// no sum), and the plan's graphs are of `micro` and `micro + 1` examples.
std::vector<std::int64_t> micro_batch_offsets(std::int64_t batch, std::int64_t micro) {
  std::vector<std::int64_t> offsets;
  for (std::int64_t at = 0; at < batch; at += micro) offsets.push_back(at);
  if (offsets.size() > 1 && batch - offsets.back() == 1) offsets.pop_back();
  offsets.push_back(batch);
  return offsets;
}

// The parameter replicas of one trainer, shared by its steps of every batch size. Replica 0 is
// the trainer's store and optimizer; replicas 1, 2, ... are copies, each brought up to date with
// replica 0 before a step that uses it if a step without it changed replica 0.
class Replicas {
 public:
  Replicas(const ModelFn& model, ParamStore& main, Optimizer& opt)
      : model_(model), main_(main), opt_(opt) {
    for (const auto& [name, t] : opt.state()) main_state_.push_back(t);
  }

  // Replica r's parameters, creating replicas up to r (before training: it allocates).
  ParamStore& store(std::size_t r) {
    if (r == 0) return main_;
    while (extra_.size() < r) {
      auto e = std::make_unique<Extra>();
      create_parameters(model_, e->store);
      e->opt = opt_.clone_for(e->store.tensors());
      for (const auto& [name, t] : e->opt->state()) e->state.push_back(t);
      extra_.push_back(std::move(e));
    }
    return extra_[r - 1]->store;
  }
  Optimizer& optimizer(std::size_t r) { return r == 0 ? opt_ : *extra_[r - 1]->opt; }

  // Makes replicas 1..count-1 equal to replica 0: weights, optimizer state, learning rate and
  // step count. Copies only replicas that a step since their last update left behind.
  void sync(std::size_t count) {
    for (std::size_t r = 1; r < count; ++r) {
      Extra& e = *extra_[r - 1];
      e.opt->set_learning_rate(opt_.learning_rate());
      e.opt->set_steps(opt_.steps());
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
    ParamStore store;
    std::unique_ptr<Optimizer> opt;
    std::vector<Tensor> state;  // opt's state tensors
    bool fresh = false;         // equal to replica 0
  };
  static void copy(const std::vector<Tensor>& from, const std::vector<Tensor>& to) {
    for (std::size_t i = 0; i < from.size(); ++i)
      std::memcpy(to[i].raw(), from[i].raw(), from[i].nbytes());
  }

  const ModelFn& model_;
  ParamStore& main_;
  Optimizer& opt_;
  std::vector<Tensor> main_state_;
  std::vector<std::unique_ptr<Extra>> extra_;
};

// The step for one batch size.
class BatchStep {
 public:
  BatchStep(const ModelFn& model, const Plan* plan, std::int64_t micro, std::int64_t b,
            Replicas& reps, dist::Communicator& comm, Trainer::ExchangeStats& stats)
      : batch(b),
        replicas_(reps),
        plan_(plan),
        comm_(comm),
        stats_(stats),
        why_(micro_batch_context(b, micro)) {
    offsets_ = micro_batch_offsets(b, micro);
    const std::size_t m = offsets_.size() - 1;
    if (m == 1 || !plan) {
      // Every rank runs the whole batch (Note [Ranks]).
      parts_.push_back(std::make_unique<Part>(model, replicas_.store(0), b));
      Part& p = *parts_[0];
      p.grads = grad(p.m.loss, p.g.params());
      p.ex = std::make_unique<Executor>(
          p.g, std::initializer_list<ValueList>{p.m.loss, p.m.outputs, p.grads});
      p.bind();
      for (Value gv : p.grads) p.grad_values.push_back((*p.ex)[gv]);
      offsets_ = {0, b};
      return;
    }
    // This rank's micro-batches [mine_, mine_ + count): a contiguous block (Note [Ranks]).
    const auto ranks = static_cast<std::size_t>(comm_.size());
    const auto rank = static_cast<std::size_t>(comm_.rank());
    for (std::size_t q = 0; q <= ranks; ++q) rank_first_.push_back(q * m / ranks);
    mine_ = rank_first_[rank];
    const std::size_t count = rank_first_[rank + 1] - mine_;
    const std::size_t r =
        std::max<std::size_t>(1, std::min(count, static_cast<std::size_t>(std::max(1, num_threads()))));
    for (std::size_t t = 0; t <= r; ++t) first_.push_back(mine_ + t * count / r);
    for (std::size_t t = 0; t < r; ++t) {
      for (std::size_t k = first_[t]; k < first_[t + 1]; ++k) {
        parts_.push_back(std::make_unique<Part>(model, replicas_.store(t),
                                                offsets_[k + 1] - offsets_[k], why_));
        factor(*parts_.back());
      }
    }
    const std::vector<Tensor>& params = replicas_.store(0).tensors();
    for (std::size_t t = 0; t < r; ++t) {
      Task task;
      task.contraction =
          std::make_unique<Contraction>(*plan_, b, t == 0 ? nullptr : tasks_[0].contraction.get());
      for (std::size_t i = 0; i < plan_->params.size(); ++i) {
        const Value& out = task.contraction->outputs[i];
        if (out.valid()) {
          task.grads.push_back((*task.contraction->ex)[out]);
        } else {
          task.grads.emplace_back(params[i].shape(), params[i].dtype());
        }
      }
      tasks_.push_back(std::move(task));
    }
    if (ranks > 1) lay_out_exchange(params);
  }

  const std::int64_t batch;
  double loss = 0;

  void compute(const data::Dataset& data, std::span<const std::int64_t> indices) {
    if (!replicated()) {
      // One graph for the batch: its kernels split their own work (inline for a micro-batch).
      std::optional<SerialScope> serial;
      if (batch <= kSmallMicroBatch) serial.emplace();
      parts_[0]->load(data, indices);
      parts_[0]->ex->run();
      loss = parts_[0]->loss();
      correct_ = parts_[0]->correct();
      return;
    }
    replicas_.sync(tasks_.size());
    for_each_task([&](std::size_t t) {
      for (std::size_t k = first_[t]; k < first_[t + 1]; ++k) {
        run_micro_batch(k, data, indices);
        gather_own_rows(k);
      }
    });
    if (!exchange_.empty()) {
      exchange();
      copy_in_other_ranks_rows();
    }
    // The batch's loss: the micro-batches' in order, each weighted by its share.
    loss = 0;
    correct_ = 0;
    for (std::size_t k = 0; k + 1 < offsets_.size(); ++k) {
      const auto [l, c] = result_of(k);
      loss += l * static_cast<double>(offsets_[k + 1] - offsets_[k]) / static_cast<double>(batch);
      correct_ += c;
    }
  }

  // Forms the batch's gradient and applies the optimizer's step: on every replica, each by its
  // own task (Note [Replicas]); otherwise on the one graph's gradients. `next`, if not empty,
  // is the next compute()'s examples of `data` (Trainer::prefetch): each task first asks for
  // the examples it will load, so that they come into its own core's caches during the update.
  void update(const data::Dataset* data, std::span<const std::int64_t> next) {
    // Task t's share of `next` when the next batch has this one's size (so the same split);
    // otherwise the calling thread asks for all of it, now.
    const bool split = replicated() && data && static_cast<std::int64_t>(next.size()) == batch;
    if (data && !next.empty() && !split) data::prefetch_examples(*data, next);
    if (!replicated()) {
      // A micro-batch's update is too small to split; a whole batch's is split over the threads.
      std::optional<SerialScope> serial;
      if (batch <= kSmallMicroBatch) serial.emplace();
      replicas_.optimizer(0).step(parts_[0]->grad_values);
      replicas_.updated(1);
      return;
    }
    for_each_task([&](std::size_t t) {
      if (split) {
        const auto [lo, hi] = examples_of(t);
        data::prefetch_examples(*data, next.subspan(static_cast<std::size_t>(lo),
                                                    static_cast<std::size_t>(hi - lo)));
      }
      prefetch_others_rows(t);
      gradient(t);
      replicas_.optimizer(t).step(tasks_[t].grads);
    });
    replicas_.updated(tasks_.size());
  }

  std::span<const Tensor> grads() const {
    return replicated() ? std::span<const Tensor>(tasks_[0].grads) : parts_[0]->grad_values;
  }

  std::int64_t correct() const { return correct_; }

 private:
  struct Task {
    std::unique_ptr<Contraction> contraction;
    std::vector<Tensor> grads;  // the batch's gradient, one per parameter
  };

  bool replicated() const { return !tasks_.empty(); }

  // Loads and runs micro-batch k. An error of its run names the batch's examples it holds: the
  // rows of a micro-batch's message are counted from its first.
  void run_micro_batch(std::size_t k, const data::Dataset& data,
                       std::span<const std::int64_t> indices) {
    Part& p = *parts_[k - mine_];
    const std::int64_t lo = offsets_[k], hi = offsets_[k + 1];
    p.load(data, indices.subspan(static_cast<std::size_t>(lo), static_cast<std::size_t>(hi - lo)));
    try {
      p.ex->run();
    } catch (const ThreadStartError&) {
      throw;
    } catch (const Error& e) {
      throw Error("Trainer: in the micro-batch of the batch's examples " + std::to_string(lo) +
                  " to " + std::to_string(hi - 1) + " (its row r is the batch's example " +
                  std::to_string(lo) + " + r): " + e.what());
    }
  }

  // The batch matrices of the gathered values: task 0's, which the other tasks' contractions
  // share (Note [Replicas]).
  const std::vector<Tensor>& batch_matrices() const { return tasks_[0].contraction->gathered; }

  // A micro-batch's executor: the loss, the outputs, the gradients of the summed parameters and
  // the values the contractions read.
  void factor(Part& p) {
    p.grads = grad(p.m.loss, p.g.params());
    if (plan_->nodes >= 0 && p.g.size() != plan_->nodes) {
      throw Error(why_(p.batch) + "model builder: builds " + std::to_string(p.g.size()) +
                  " nodes (with their gradients) for " + std::to_string(p.batch) +
                  " examples but " + std::to_string(plan_->nodes) +
                  " for others; it must build the same graph for every batch size");
    }
    std::vector<Value> wanted = {p.m.loss, p.m.outputs};
    for (std::size_t i = 0; i < p.grads.size(); ++i) {
      if (!plan_->contracted(i)) wanted.push_back(p.grads[i]);
    }
    for (const Gathered& gv : plan_->gathered) wanted.push_back(Value(&p.g, gv.node));
    p.ex = std::make_unique<Executor>(p.g, wanted);
    // Bound before any view is taken: a gathered value may be a graph input (a flat input fed
    // straight into linear), whose value is the tensor bound to it.
    p.bind();
    p.grad_values.resize(p.grads.size());
    for (std::size_t i = 0; i < p.grads.size(); ++i) {
      if (!plan_->contracted(i)) p.grad_values[i] = (*p.ex)[p.grads[i]];
    }
    for (const Gathered& gv : plan_->gathered) p.gathered.push_back((*p.ex)[Value(&p.g, gv.node)]);
  }

  // fn(t) for every task t, in parallel, each task on the same thread every step
  // (parallel_for_static) and its kernels inline; with more threads than tasks, the kernels
  // split their work over the rest (Note [Micro-batches]).
  template <typename Fn>
  void for_each_task(const Fn& fn) {
    const bool inline_kernels = static_cast<std::size_t>(num_threads()) <= tasks_.size();
    run_in_arena([&] {
      parallel_for_static(static_cast<std::int64_t>(tasks_.size()),
                          [&](std::int64_t lo, std::int64_t hi) {
                            std::optional<SerialScope> serial;
                            if (inline_kernels) serial.emplace();
                            for (std::int64_t t = lo; t < hi; ++t) fn(static_cast<std::size_t>(t));
                          });
    });
  }

  // Task t's examples of the batch: [first, end).
  std::pair<std::int64_t, std::int64_t> examples_of(std::size_t t) const {
    return {offsets_[first_[t]], offsets_[first_[t + 1]]};
  }

  // Asks the CPU for the rows of the batch matrices that task t did not write (the other tasks'
  // and the other ranks'), all at once, before its contraction reads them: they sit in another
  // core's cache, and the product's loads alone kept few of those transfers in flight.
  // Measured at two threads, avx2, seed model: epochs 0.446 -> 0.431 s (medians of 6,
  // alternated). A hint only.
  void prefetch_others_rows(std::size_t t) const {
    const auto [lo, hi] = examples_of(t);
    constexpr std::int64_t kLine = 64;
    for (const Tensor& m : batch_matrices()) {
      const auto row_bytes = static_cast<std::int64_t>(m.nbytes()) / batch;
      const char* base = static_cast<const char*>(m.raw());
      const auto fetch = [&](std::int64_t first_row, std::int64_t end_row) {
        for (std::int64_t b = first_row * row_bytes; b < end_row * row_bytes; b += kLine) {
          __builtin_prefetch(base + b);
        }
      };
      fetch(0, lo);
      fetch(hi, batch);
    }
  }

  // Micro-batch k's share of the batch: the weight of its mean loss and gradients in the batch's.
  float share(std::size_t k) const {
    return static_cast<float>(offsets_[k + 1] - offsets_[k]) / static_cast<float>(batch);
  }

  // Copies micro-batch k's rows of each gathered value (weighted by k's share of the batch where
  // the plan says so) into the tasks' shared batch matrices. Run by the task that ran k, right
  // after it, while they are in its cache.
  void gather_own_rows(std::size_t k) {
    const std::vector<Tensor>& mats = batch_matrices();
    const Part& part = *parts_[k - mine_];
    const float w = share(k);
    for (std::size_t v = 0; v < mats.size(); ++v) {
      const Tensor& src = part.gathered[v];
      const std::int64_t row = src.numel() / part.batch;  // elements per example
      float* dst = mats[v].data<float>() + offsets_[k] * row;
      if (plan_->gathered[v].scaled) {
        const float* s = src.data<float>();
        const std::int64_t n = src.numel();  // not re-evaluated per element: not inline
        for (std::int64_t j = 0; j < n; ++j) dst[j] = w * s[j];
      } else {
        std::memcpy(dst, src.raw(), src.nbytes());
      }
    }
  }

  // task.grads = the batch's gradient (the same arithmetic in every task and on every rank):
  // the contracting parameters' gradients over the batch, from the batch matrices every task
  // wrote its rows into (and compute() the other ranks' rows), and the other parameters'
  // gradients summed in micro-batch order, each weighted by its micro-batch's share of the
  // batch.
  void gradient(std::size_t t) {
    Task& task = tasks_[t];
    Contraction& c = *task.contraction;
    c.ex->run();
    for (std::size_t i = 0; i < task.grads.size(); ++i) {
      if (plan_->contracted(i)) continue;
      float* dst = task.grads[i].data<float>();
      const std::int64_t n = task.grads[i].numel();
      for (std::size_t k = 0; k + 1 < offsets_.size(); ++k) {
        const float w = share(k);
        const float* src = summed_of(k, i);
        if (k == 0) {
          for (std::int64_t j = 0; j < n; ++j) dst[j] = w * src[j];
        } else {
          for (std::int64_t j = 0; j < n; ++j) dst[j] += w * src[j];
        }
      }
    }
  }

  // Note [Ranks]: the exchange buffer holds every rank's block in rank order; rank q's block
  // is, for each of its micro-batches, a Result (loss, correct), then each micro-batch's
  // summed parameters' gradients (summed_size_ floats), then its examples' rows of each
  // gathered value in turn. Sizes depend on the batch and the rank count only.
  struct Result {
    double loss;
    std::int64_t correct;
  };

  void lay_out_exchange(const std::vector<Tensor>& params) {
    summed_at_.assign(params.size(), 0);
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (plan_->contracted(i)) continue;
      summed_at_[i] = summed_size_;
      summed_size_ += params[i].numel();
    }
    std::int64_t row_size = 0;  // floats per example over all gathered values
    for (const Tensor& g : tasks_[0].contraction->gathered) row_size += g.numel() / batch;
    const std::size_t ranks = rank_first_.size() - 1;
    block_.assign(ranks + 1, 0);
    for (std::size_t q = 0; q < ranks; ++q) {
      const auto mbs = static_cast<std::int64_t>(rank_first_[q + 1] - rank_first_[q]);
      const std::int64_t examples = offsets_[rank_first_[q + 1]] - offsets_[rank_first_[q]];
      const std::int64_t rows_at =
          mbs * static_cast<std::int64_t>(sizeof(Result)) +
          mbs * summed_size_ * static_cast<std::int64_t>(sizeof(float));
      rows_at_.push_back(rows_at);
      counts_.push_back(rows_at + examples * row_size * static_cast<std::int64_t>(sizeof(float)));
      block_[q + 1] = block_[q] + counts_.back();
    }
    exchange_.assign(static_cast<std::size_t>(block_[ranks]), std::byte{0});
  }

  // Writes this rank's results, summed gradients and rows into its block, and has every rank's
  // block from the others (one allgather).
  void exchange() {
    const auto rank = static_cast<std::size_t>(comm_.rank());
    std::byte* out = exchange_.data() + block_[rank];
    const std::size_t mbs = parts_.size();
    for (std::size_t j = 0; j < mbs; ++j) {
      const Result res{parts_[j]->loss(), parts_[j]->correct()};
      std::memcpy(out + j * sizeof(Result), &res, sizeof res);
    }
    float* summed = reinterpret_cast<float*>(out + mbs * sizeof(Result));
    for (std::size_t j = 0; j < mbs; ++j) {
      for (std::size_t i = 0; i < summed_at_.size(); ++i) {
        if (plan_->contracted(i)) continue;
        const Tensor& g = parts_[j]->grad_values[i];
        std::memcpy(summed + static_cast<std::int64_t>(j) * summed_size_ + summed_at_[i], g.raw(),
                    g.nbytes());
      }
    }
    std::byte* rows = out + rows_at_[rank];
    const std::int64_t ex_first = offsets_[rank_first_[rank]];
    const std::int64_t examples = offsets_[rank_first_[rank + 1]] - ex_first;
    for (const Tensor& m : batch_matrices()) {  // this rank's examples: one run of rows
      const std::int64_t row = m.numel() / batch;
      const auto bytes = static_cast<std::size_t>(examples * row) * sizeof(float);
      std::memcpy(rows, m.data<float>() + ex_first * row, bytes);
      rows += bytes;
    }
    const auto t0 = Clock::now();
    comm_.allgather_in_place(exchange_, counts_);
    stats_.seconds += seconds_since(t0);
    ++stats_.steps;
    stats_.bytes = static_cast<std::int64_t>(exchange_.size());
  }

  // The other ranks' rows of the gathered values, from the exchange into the batch matrices
  // the tasks share, where this rank's tasks wrote their own.
  void copy_in_other_ranks_rows() {
    const auto rank = static_cast<std::size_t>(comm_.rank());
    for (std::size_t q = 0; q + 1 < rank_first_.size(); ++q) {
      if (q == rank) continue;
      const std::int64_t ex0 = offsets_[rank_first_[q]];
      const std::int64_t count = offsets_[rank_first_[q + 1]] - ex0;
      const std::byte* rows = exchange_.data() + block_[q] + rows_at_[q];
      for (const Tensor& m : batch_matrices()) {
        const std::int64_t row = m.numel() / batch;
        const auto bytes = static_cast<std::size_t>(count * row) * sizeof(float);
        std::memcpy(m.data<float>() + ex0 * row, rows, bytes);
        rows += bytes;
      }
    }
  }

  // The rank that ran micro-batch k, and k's index among its micro-batches.
  std::pair<std::size_t, std::size_t> owner(std::size_t k) const {
    const auto it = std::upper_bound(rank_first_.begin(), rank_first_.end(), k);
    const auto q = static_cast<std::size_t>(it - rank_first_.begin()) - 1;
    return {q, k - rank_first_[q]};
  }
  bool local(std::size_t k) const { return k >= mine_ && k - mine_ < parts_.size(); }

  // Micro-batch k's mean loss and correct count, run here or on another rank: from the
  // exchange when there is one (this rank's own block included: exchange() wrote it).
  Result result_of(std::size_t k) const {
    if (exchange_.empty()) return {parts_[k - mine_]->loss(), parts_[k - mine_]->correct()};
    const auto [q, j] = owner(k);
    Result r;
    std::memcpy(&r, exchange_.data() + block_[q] + j * sizeof(Result), sizeof r);
    return r;
  }
  // Micro-batch k's gradient of summed parameter i.
  const float* summed_of(std::size_t k, std::size_t i) const {
    if (local(k)) return parts_[k - mine_]->grad_values[i].data<float>();
    const auto [q, j] = owner(k);
    const std::size_t mbs = rank_first_[q + 1] - rank_first_[q];
    const auto* base = reinterpret_cast<const float*>(exchange_.data() + block_[q] +
                                                      mbs * sizeof(Result));
    return base + static_cast<std::int64_t>(j) * summed_size_ + summed_at_[i];
  }

  Replicas& replicas_;
  const Plan* plan_;
  dist::Communicator& comm_;
  Trainer::ExchangeStats& stats_;
  Context why_;  // for errors while building the micro-batches' graphs
  std::vector<std::unique_ptr<Part>> parts_;  // this rank's micro-batches, from mine_ on
  // Micro-batch k is examples [offsets_[k], offsets_[k + 1]) of the batch.
  std::vector<std::int64_t> offsets_;
  // Rank q runs micro-batches [rank_first_[q], rank_first_[q + 1]); this one from mine_.
  std::vector<std::size_t> rank_first_;
  std::size_t mine_ = 0;
  // Task t runs micro-batches [first_[t], first_[t + 1]) and updates replica t.
  std::vector<std::size_t> first_;
  std::vector<Task> tasks_;
  std::int64_t correct_ = 0;
  // The exchange between ranks (Note [Ranks]); empty on one rank.
  std::vector<std::byte> exchange_;
  std::vector<std::int64_t> block_, counts_, rows_at_;  // per rank: offset, size, rows' offset
  std::vector<std::int64_t> summed_at_;  // per summed parameter: its offset in a micro-batch's
  std::int64_t summed_size_ = 0;
};

}  // namespace

struct Trainer::Impl {
  ModelFn model;
  ParamStore& store;
  TrainerOptions options;
  std::int64_t micro;
  std::optional<Plan> plan;  // when micro-batched
  std::int64_t example_size = 0;  // the model's input elements per example
  Replicas replicas;
  std::vector<std::unique_ptr<BatchStep>> steps;  // one per batch size seen
  BatchStep* last = nullptr;
  dist::Communicator* comm;
  Trainer::ExchangeStats stats;
  // The next compute()'s examples, from prefetch(), for the next update() only.
  const data::Dataset* next_data = nullptr;
  std::span<const std::int64_t> next;

  Impl(ModelFn m, ParamStore& s, Optimizer& opt, TrainerOptions o)
      : model(std::move(m)),
        store(s),
        options(o),
        replicas(model, s, opt),
        comm(o.comm ? o.comm : &dist::single()) {
    if (o.batch_size < 1)
      throw Error("Trainer: batch size must be positive, got " + std::to_string(o.batch_size));
    if (store.names().empty()) {
      throw Error("Trainer: the store holds no parameters (call nn::create_parameters first)");
    }
    micro = o.micro_batch > 0
                ? o.micro_batch
                : (store.count() <= kMaxMicroBatchedParams ? default_micro_batch(o.batch_size)
                                                           : o.batch_size);
    // The model at the batch size chosen, checked first: errors in the user's terms, before
    // any graph of a micro-batch's size is built.
    {
      Graph g;
      ParamStore scratch = store;  // shares the tensors; a parameter the store lacks stays out
      const ModelGraph m = build_model(model, g, scratch, o.batch_size, {});
      if (scratch.names() != store.names()) {
        throw Error("model builder: creates other parameters than the store holds (create the "
                    "store with nn::create_parameters of the same model)");
      }
      check_model(m, g, store.names(), o.batch_size);
      example_size = m.inputs.shape().numel() / o.batch_size;
    }
    if (micro < o.batch_size) {
      plan.emplace(model, store, micro, micro_batch_context(o.batch_size, micro));
    }
    step_for(o.batch_size);
  }

  BatchStep& step_for(std::int64_t b) {
    for (auto& s : steps) {
      if (s->batch == b) return *s;
    }
    steps.push_back(std::make_unique<BatchStep>(model, plan ? &*plan : nullptr, micro, b,
                                                replicas, *comm, stats));
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
                          std::to_string(data.rows) + "x" + std::to_string(data.cols) + " = " +
                          std::to_string(data.example_size()) + " values, the model's inputs " +
                          std::to_string(impl_->example_size) + " per example");
  }
  impl_->last = &impl_->step_for(n);
  impl_->last->compute(data, indices);
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

// --- evaluation -----------------------------------------------------------------------------

struct Evaluator::Impl {
  ModelFn model;
  ParamStore store;  // shares the tensors of the caller's store
  std::int64_t batch_size;
  dist::Communicator* comm = nullptr;
  std::unique_ptr<Part> full, tail;
  std::vector<std::byte> exchange;

  std::unique_ptr<Part> make(std::int64_t b) {
    auto p = std::make_unique<Part>(model, store, b);
    p->ex =
        std::make_unique<Executor>(p->g, std::initializer_list<ValueList>{p->m.loss, p->m.outputs});
    p->bind();
    return p;
  }
};

Evaluator::Evaluator(ModelFn model, const ParamStore& store, std::int64_t batch_size,
                     dist::Communicator* comm)
    : impl_(std::make_unique<Impl>()) {
  impl_->model = std::move(model);
  impl_->store = store;  // Tensor copies share storage: the graphs read the caller's weights
  impl_->batch_size = std::max<std::int64_t>(batch_size, 1);
  impl_->comm = comm;
}
Evaluator::~Evaluator() = default;

Evaluation Evaluator::evaluate(const data::Dataset& data) {
  Evaluation r;
  r.count = data.count;
  if (data.count == 0) return r;
  Impl& im = *impl_;
  const std::int64_t b = std::min(im.batch_size, data.count);
  if (!im.full || im.full->batch != b) im.full = im.make(b);
  if (im.full->inputs.numel() != b * data.example_size()) {
    throw data::DataError("Evaluator::evaluate: the data set's examples are " +
                          std::to_string(data.rows) + "x" + std::to_string(data.cols) + " = " +
                          std::to_string(data.example_size()) + " values, the model's inputs " +
                          std::to_string(im.full->inputs.numel() / b) + " per example (" +
                          im.full->m.inputs.describe() + ")");
  }
  const std::int64_t rest = data.count % b;
  if (rest && (!im.tail || im.tail->batch != rest)) im.tail = im.make(rest);
  r.classes = im.full->m.outputs.shape().rank() == 2 ? im.full->m.outputs.shape()[1] : 0;
  r.confusion.assign(static_cast<std::size_t>(r.classes * r.classes), 0);
  std::vector<std::int64_t> order(static_cast<std::size_t>(data.count));
  std::iota(order.begin(), order.end(), 0);
  // Batches [first, last) are this process's: all of them alone, a contiguous block of them
  // as rank q of R.
  const std::int64_t batches = (data.count + b - 1) / b;
  const int ranks = im.comm ? im.comm->size() : 1;
  const int me = im.comm ? im.comm->rank() : 0;
  const auto first_batch = [&](int q) { return batches * q / ranks; };
  std::vector<double> loss_terms;  // each of my batches' summed loss, in batch order
  std::int64_t correct = 0;
  for (std::int64_t batch = first_batch(me); batch < first_batch(me + 1); ++batch) {
    const std::int64_t start = batch * b;
    Part& run = data.count - start >= b ? *im.full : *im.tail;
    run.load(data, std::span<const std::int64_t>(order).subspan(
                       static_cast<std::size_t>(start), static_cast<std::size_t>(run.batch)));
    run.ex->run();
    loss_terms.push_back(run.loss() * static_cast<double>(run.batch));
    correct += count_correct((*run.ex)[run.m.outputs], run.labels, &r.confusion);
  }
  if (ranks > 1) {
    // Rank q's block: its batches' loss terms, its correct count, its confusion counts.
    const std::int64_t tail_bytes =
        static_cast<std::int64_t>(sizeof(std::int64_t)) * (1 + r.classes * r.classes);
    std::vector<std::int64_t> counts(static_cast<std::size_t>(ranks));
    std::int64_t mine_at = 0, total = 0;
    for (int q = 0; q < ranks; ++q) {
      counts[static_cast<std::size_t>(q)] =
          (first_batch(q + 1) - first_batch(q)) * static_cast<std::int64_t>(sizeof(double)) +
          tail_bytes;
      if (q == me) mine_at = total;
      total += counts[static_cast<std::size_t>(q)];
    }
    im.exchange.resize(static_cast<std::size_t>(total));
    std::byte* at = im.exchange.data() + mine_at;
    const auto put = [&at](const void* src, std::size_t n) {
      if (n == 0) return;  // src may be null (a rank with no batch): not for memcpy
      std::memcpy(at, src, n);
      at += n;
    };
    put(loss_terms.data(), loss_terms.size() * sizeof(double));
    put(&correct, sizeof correct);
    put(r.confusion.data(), r.confusion.size() * sizeof(std::int64_t));
    im.comm->allgather_in_place(im.exchange, counts);
    loss_terms.clear();
    correct = 0;
    std::fill(r.confusion.begin(), r.confusion.end(), 0);
    const std::byte* from = im.exchange.data();
    for (int q = 0; q < ranks; ++q) {
      for (std::int64_t batch = first_batch(q); batch < first_batch(q + 1); ++batch) {
        double term;
        std::memcpy(&term, from, sizeof term);
        from += sizeof term;
        loss_terms.push_back(term);
      }
      std::int64_t n;
      std::memcpy(&n, from, sizeof n);
      from += sizeof n;
      correct += n;
      for (std::int64_t& c : r.confusion) {
        std::memcpy(&n, from, sizeof n);
        from += sizeof n;
        c += n;
      }
    }
  }
  double loss_sum = 0;
  for (double term : loss_terms) loss_sum += term;
  r.loss = loss_sum / static_cast<double>(data.count);
  r.accuracy = static_cast<double>(correct) / static_cast<double>(data.count);
  return r;
}

// --- one epoch ------------------------------------------------------------------------------

namespace {

class ProgressLine {
 public:
  explicit ProgressLine(bool enabled) : enabled_(enabled) {}
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

std::string format_double(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

}  // namespace

bool show_progress() {
  return isatty(STDOUT_FILENO) == 1;
}

EpochResult train_epoch(Trainer& trainer, data::Batcher& batches, Rng& rng,
                        const EpochOptions& options) {
  batches.shuffle(rng);
  const data::Dataset& data = batches.dataset();
  const std::int64_t n = batches.size();
  const std::int64_t steps = batches.num_batches();
  ProgressLine bar(options.progress);
  EpochResult r;
  const auto t0 = Clock::now();
  double loss_sum = 0;
  std::int64_t correct = 0, done = 0;
  for (std::int64_t step = 0; step < steps; ++step) {
    if (options.before_step) {
      try {
        options.before_step(step, steps);
      } catch (...) {
        bar.clear();
        throw;
      }
    }
    trainer.compute(data, batches.batch(step));
    // The next batch's examples come into the caches while this one's update runs.
    if (step + 1 < steps) trainer.prefetch(data, batches.batch(step + 1));
    const double loss = trainer.loss();
    if (!std::isfinite(loss)) {
      bar.clear();
      throw DivergedError("loss became " + format_double(loss) + " at epoch " +
                          std::to_string(options.epoch) + ", step " + std::to_string(step + 1) +
                          " of " + std::to_string(steps) +
                          "; stopping (the learning rate is probably too high; the last saved "
                          "checkpoint, if any, is untouched)");
    }
    if (options.before_update) options.before_update(step);
    trainer.update();
    if (options.after_update) options.after_update(step);
    loss_sum += loss * static_cast<double>(trainer.batch());
    correct += trainer.correct();
    done += trainer.batch();
    bar.update(done, n, loss_sum / static_cast<double>(done), seconds_since(t0));
  }
  r.seconds = seconds_since(t0);
  bar.clear();
  r.examples = n;
  r.steps = steps;
  r.loss = loss_sum / static_cast<double>(n);
  r.accuracy = static_cast<double>(correct) / static_cast<double>(n);
  return r;
}

}  // namespace tbgrad::nn
