// The trainer's step for one batch size (Note [Micro-batches], Note [Replicas], Note [Ranks]):
// the micro-batches' graphs on their tasks' replicas, the batch's gradient formed in a fixed
// order, the update, and the exchange between ranks.
//
// Note [Batch-wide values]: everything a step computes from the whole batch enters here, between
// the micro-batches' forward passes and what follows: today the batch's loss and correct count,
// summed in micro-batch order from the micro-batches' and the other ranks' results (compute),
// and the batch's gradient (update). Statistics over the whole batch that a forward pass needs
// (batch normalisation's means and variances) would split compute() in two phases with such a
// fixed-order sum between them, over the tasks and then the ranks, so that they come out the
// same for any thread and rank count; per-step random streams (dropout's masks) would be keyed
// by the trainer's step count and the example's index in the batch (offsets_), never by the
// task or the thread that runs it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "data/dataset.hpp"
#include "distributed/communicator.hpp"
#include "nn/train.hpp"
#include "nn/train/contraction.hpp"
#include "nn/train/exchange.hpp"
#include "nn/train/model_graph.hpp"
#include "nn/train/replicas.hpp"

namespace tbgrad::nn::detail {

class BatchStep {
 public:
  // The step for batches of b examples, in micro-batches of `micro` (with a plan) over
  // `threads` tasks at most (the trainer's thread count, read once).
  BatchStep(const ModelFn& model, const Plan* plan, std::int64_t micro, std::int64_t b,
            int threads, Replicas& reps, dist::Communicator& comm, Trainer::ExchangeStats& stats);

  const std::int64_t batch;
  double loss = 0;

  // Runs the forward and backward pass of examples `indices` of `data` (batch of them):
  // every micro-batch on its task's replica, the rows the contractions need gathered, the
  // ranks' results exchanged; sets loss and the correct count.
  // `run`: the mode, step and seed (Note [Run info]); each graph gets its first example's index
  // in the batch and its number of examples.
  void compute(const data::Dataset& data, std::span<const std::int64_t> indices,
               const RunInfo& run = {});

  // Forms the batch's gradient and applies the optimizer's step: on every replica, each by its
  // own task (Note [Replicas]); otherwise on the one graph's gradients. `next`, if not empty,
  // is the next compute()'s examples of `data` (Trainer::prefetch): each task first asks for
  // the examples it will load, so that they come into its own core's caches during the update.
  void update(const data::Dataset* data, std::span<const std::int64_t> next);

  std::span<const Tensor> grads() const {
    return replicated() ? std::span<const Tensor>(tasks_[0].grads) : parts_[0]->grad_values;
  }

  std::int64_t correct() const { return correct_; }

  // The augmentation of the next compute()'s images and the epoch its draws are keyed by
  // (TrainerOptions::augment, Trainer::set_epoch); per example, so any split gives the same.
  void set_augment(const data::Augment& augment, std::uint64_t epoch) {
    augment_ = augment;
    epoch_ = epoch;
  }

 private:
  struct Task {
    std::unique_ptr<Contraction> contraction;
    std::vector<Tensor> grads;  // the batch's gradient, one per parameter
  };
  struct Result {  // a micro-batch's, in the exchange
    double loss;
    std::int64_t correct;
  };

  bool replicated() const { return !tasks_.empty(); }

  // Loads and runs micro-batch k. An error of its run names the batch's examples it holds: the
  // rows of a micro-batch's message are counted from its first.
  void run_micro_batch(std::size_t k, const data::Dataset& data,
                       std::span<const std::int64_t> indices, const RunInfo& run);

  // The batch matrices of the gathered values: task 0's, which the other tasks' contractions
  // share (Note [Replicas]).
  const std::vector<Tensor>& batch_matrices() const { return tasks_[0].contraction->gathered; }

  // A micro-batch's executor: the loss, the outputs, the gradients of the summed parameters and
  // the values the contractions read.
  void factor(Part& p);

  // fn(t) for every task t, in parallel, each task on the same thread every step
  // (parallel_for_static) and its kernels inline; with more threads than tasks, the kernels
  // split their work over the rest (Note [Micro-batches]).
  template <typename Fn>
  void for_each_task(const Fn& fn);

  // Task t's examples of the batch: [first, end).
  std::pair<std::int64_t, std::int64_t> examples_of(std::size_t t) const {
    return {offsets_[first_[t]], offsets_[first_[t + 1]]};
  }

  // Asks the CPU for the rows of the batch matrices that task t did not write (the other tasks'
  // and the other ranks'), all at once, before its contraction reads them: they sit in another
  // core's cache, and the product's loads alone kept few of those transfers in flight.
  // Measured at two threads, avx2, seed model: epochs 0.446 -> 0.431 s (medians of 6,
  // alternated). A hint only.
  void prefetch_others_rows(std::size_t t) const;

  // Micro-batch k's weight in the batch's loss and gradients (Note [Loss split]): its share of
  // the batch for a mean, 1 for a sum.
  float weight(std::size_t k) const { return plan_->weight(offsets_[k + 1] - offsets_[k], batch); }

  // Copies micro-batch k's rows of each gathered value (weighted by k's weight where the plan
  // says so) into the tasks' shared batch matrices. Run by the task that ran k, right
  // after it, while they are in its cache.
  void gather_own_rows(std::size_t k);

  // task.grads = the batch's gradient (the same arithmetic in every task and on every rank):
  // the contracting parameters' gradients over the batch, from the batch matrices every task
  // wrote its rows into (and compute() the other ranks' rows), and the other parameters'
  // gradients summed in micro-batch order, each weighted by its micro-batch's weight.
  void gradient(std::size_t t);

  // batch_step_ranks.cpp: the step's exchange between ranks (Note [Ranks]).
  // Lays out the exchange buffer: rank q's block is, for each of its micro-batches, a Result
  // (loss, correct), then each micro-batch's summed parameters' gradients (summed_size_
  // floats), then its examples' rows of each gathered value in turn. Sizes depend on the batch
  // and the rank count only.
  void lay_out_exchange(const std::vector<Tensor>& params);

  // Writes this rank's results, summed gradients and rows into its block, and has every rank's
  // block from the others (one allgather).
  void exchange();

  // The other ranks' rows of the gathered values, from the exchange into the batch matrices
  // the tasks share, where this rank's tasks wrote their own.
  void copy_in_other_ranks_rows();

  // The rank that ran micro-batch k, and k's index among its micro-batches.
  std::pair<std::size_t, std::size_t> owner(std::size_t k) const;

  bool local(std::size_t k) const { return k >= mine_ && k - mine_ < parts_.size(); }

  // Micro-batch k's mean loss and correct count, run here or on another rank: from the
  // exchange when there is one (this rank's own block included: exchange() wrote it).
  Result result_of(std::size_t k) const;

  // Micro-batch k's gradient of summed parameter i.
  const float* summed_of(std::size_t k, std::size_t i) const;

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
  int threads_;  // Note [Micro-batches]: kernels inline when every thread has a task
  // The exchange between ranks (Note [Ranks]); empty on one rank.
  Exchange exchange_;
  std::vector<std::int64_t> rows_at_;  // per rank: where its block's rows start
  std::vector<std::int64_t> summed_at_;  // per summed parameter: its offset in a micro-batch's
  std::int64_t summed_size_ = 0;
  data::Augment augment_;
  std::uint64_t epoch_ = 0;
};

}  // namespace tbgrad::nn::detail
