// The gradients a step forms once over the whole batch (Note [Replicas]): which parameters'
// gradients contract over the batch (the plan, found from the graph and the ops' traits), and
// the small graph that forms them from the rows gathered from every micro-batch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "graph/executor.hpp"
#include "graph/op.hpp"
#include "nn/train/loss_split.hpp"
#include "nn/train/model_graph.hpp"

namespace tbgrad::nn::detail {

// How one parameter's gradient over a batch is formed (Note [Replicas]).
struct GradPlan {
  enum Kind { kSummed, kContracted } kind = kSummed;
  // kContracted: the op forming the gradient, applied to its inputs gathered over the batch
  // (indices into Plan::gathered; input 0's rows scaled by each micro-batch's weight, Note
  // [Loss split]).
  std::shared_ptr<const Op> op;
  std::vector<std::size_t> inputs;
};

// A value of the micro-batch graphs that the batch-level gradients read, gathered into one
// [batch * rows, ...] matrix: node `node`'s rows of every micro-batch, in order.
struct Gathered {
  int node;
  bool scaled;          // by the micro-batch's weight (Note [Loss split])
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
  // How the micro-batches' losses and gradients combine (Note [Loss split]), read first: for
  // kWhole the rest is left empty (the trainer then keeps the batch whole).
  LossSplitChoice split;

  // `why`: how a batch splits into micro-batches, for errors (micro_batch_context).
  Plan(const ModelFn& model, const ParamStore& like, std::int64_t micro, const Context& why);
  bool contracted(std::size_t i) const { return params[i].kind != GradPlan::kSummed; }
  // A micro-batch of `part` examples' weight in a batch of `batch` (Note [Loss split]).
  float weight(std::int64_t part, std::int64_t batch) const {
    return split.split == LossSplit::kSum
               ? 1.0f
               : static_cast<float>(part) / static_cast<float>(batch);
  }
};

// One task's batch-level gradients of the contracting parameters (Note [Replicas]): an input
// per gathered value, [batch * rows, ...], and per contracted parameter the op forming its
// gradient, applied to them (Op::apply_to).
struct Contraction {
  Graph g;
  std::vector<Tensor> gathered;
  std::vector<Value> outputs;  // per parameter, invalid for a summed one
  std::unique_ptr<Executor> ex;

  // shared: another task's contraction whose batch matrices this one reads too (Note
  // [Replicas]); null: its own.
  Contraction(const Plan& plan, std::int64_t batch, const Contraction* shared);
};

}  // namespace tbgrad::nn::detail
