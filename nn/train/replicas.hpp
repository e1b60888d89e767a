// The parameter replicas of a trainer's tasks (Note [Replicas]).
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <vector>

#include "nn/optim.hpp"
#include "nn/params.hpp"
#include "nn/train.hpp"

namespace tbgrad::nn::detail {

// Note [Replicas]: on two threads, moving gradients and weights between the cores costs more
// than the arithmetic (docs/performance.md). So:
//  - Parameters whose gradient contracts over the batch (Plan: a matmul Aᵀ·B of two batch-major
//    values, the fully connected weights' dW = dYᵀ·X; a sum_to over the rows, their biases')
//    compute no gradient per micro-batch. Each micro-batch's A and B are gathered into batch
//    matrices (A's rows weighted by the micro-batch's weight: its share of the batch for a mean
//    loss, 1 for a sum, Note [Loss split]) and the gradient is
//    formed once over the batch. The other parameters' gradients (the convolutions', a few
//    hundred numbers) are added up in micro-batch order, each weighted likewise.
//  - Each task keeps its own replica of the parameters and the optimizer state. It copies its
//    micro-batches' rows into the batch matrices, which all tasks share, right after running
//    them (while in cache); in the update region it computes the whole batch's gradient itself
//    from those matrices (reading the other tasks' rows where they wrote them: copying them into
//    a matrix of its own first took 4% of a two-thread step) and updates its own replica. The
//    weights never leave the core that updates them.
// Every task does the same arithmetic in the same order on equal replicas, so the replicas stay
// bit-identical, and nothing depends on R, so results do not depend on the thread count.
// Replica 0 is the trainer's ParamStore and optimizer: checkpoints and evaluation read it.

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

  // Makes replicas 1..count-1 equal to replica 0: weights, optimizer state, learning rate,
  // step count and clipping bound. Copies only replicas that a step since their last update left behind.
  void sync(std::size_t count) {
    for (std::size_t r = 1; r < count; ++r) {
      Extra& e = *extra_[r - 1];
      e.opt->set_learning_rate(opt_.learning_rate());
      e.opt->set_steps(opt_.steps());
      e.opt->set_max_grad_norm(opt_.max_grad_norm());
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

}  // namespace tbgrad::nn::detail
