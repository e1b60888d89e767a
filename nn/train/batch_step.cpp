#include "nn/train/batch_step.hpp"

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>

#include "autodiff/grad.hpp"
#include "graph/parallel.hpp"
#include "nn/train/partition.hpp"

namespace tbgrad::nn::detail {

BatchStep::BatchStep(const ModelFn& model, const Plan* plan, std::int64_t micro, std::int64_t b,
                     int threads, Replicas& reps, dist::Communicator& comm,
                     Trainer::ExchangeStats& stats)
    : batch(b),
      replicas_(reps),
      plan_(plan),
      comm_(comm),
      stats_(stats),
      why_(micro_batch_context(b, micro)),
      threads_(std::max(1, threads)) {
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
  rank_first_ = even_blocks(0, m, ranks);
  mine_ = rank_first_[rank];
  const std::size_t count = rank_first_[rank + 1] - mine_;
  const std::size_t r = std::max<std::size_t>(1, std::min(count, static_cast<std::size_t>(threads_)));
  first_ = even_blocks(mine_, count, r);
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

void BatchStep::compute(const data::Dataset& data, std::span<const std::int64_t> indices,
                        const RunInfo& run) {
  if (!replicated()) {
    // One graph for the batch: its kernels split their own work (inline for a micro-batch).
    std::optional<SerialScope> serial;
    if (batch <= kSmallMicroBatch) serial.emplace();
    parts_[0]->load(data, indices, augment_, epoch_);
    RunInfo whole = run;
    whole.first_example = 0;
    whole.examples = batch;
    parts_[0]->ex->set_run_info(whole);
    parts_[0]->ex->run();
    loss = parts_[0]->loss();
    correct_ = parts_[0]->correct();
    return;
  }
  replicas_.sync(tasks_.size());
  for_each_task([&](std::size_t t) {
    for (std::size_t k = first_[t]; k < first_[t + 1]; ++k) {
      run_micro_batch(k, data, indices, run);
      gather_own_rows(k);
    }
  });
  if (!exchange_.empty()) {
    exchange();
    copy_in_other_ranks_rows();
  }
  // The batch's loss: the micro-batches' in order, each weighted by its share (a mean) or
  // added (a sum: Note [Loss split]).
  loss = 0;
  correct_ = 0;
  const bool sum = plan_->split.split == LossSplit::kSum;
  for (std::size_t k = 0; k + 1 < offsets_.size(); ++k) {
    const auto [l, c] = result_of(k);
    loss += sum ? l
                : l * static_cast<double>(offsets_[k + 1] - offsets_[k]) /
                      static_cast<double>(batch);
    correct_ += c;
  }
}

void BatchStep::update(const data::Dataset* data, std::span<const std::int64_t> next) {
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

void BatchStep::run_micro_batch(std::size_t k, const data::Dataset& data,
                                std::span<const std::int64_t> indices, const RunInfo& run) {
  Part& p = *parts_[k - mine_];
  const std::int64_t lo = offsets_[k], hi = offsets_[k + 1];
  p.load(data, indices.subspan(static_cast<std::size_t>(lo), static_cast<std::size_t>(hi - lo)),
         augment_, epoch_);
  RunInfo mine = run;
  mine.first_example = lo;
  mine.examples = hi - lo;
  p.ex->set_run_info(mine);
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

void BatchStep::factor(Part& p) {
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

template <typename Fn>
void BatchStep::for_each_task(const Fn& fn) {
  const bool inline_kernels = static_cast<std::size_t>(threads_) <= tasks_.size();
  run_in_arena([&] {
    parallel_for_static(static_cast<std::int64_t>(tasks_.size()),
                        [&](std::int64_t lo, std::int64_t hi) {
                          std::optional<SerialScope> serial;
                          if (inline_kernels) serial.emplace();
                          for (std::int64_t t = lo; t < hi; ++t) fn(static_cast<std::size_t>(t));
                        });
  });
}

void BatchStep::prefetch_others_rows(std::size_t t) const {
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

void BatchStep::gather_own_rows(std::size_t k) {
  const std::vector<Tensor>& mats = batch_matrices();
  const Part& part = *parts_[k - mine_];
  const float w = weight(k);
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

void BatchStep::gradient(std::size_t t) {
  Task& task = tasks_[t];
  Contraction& c = *task.contraction;
  c.ex->run();
  for (std::size_t i = 0; i < task.grads.size(); ++i) {
    if (plan_->contracted(i)) continue;
    float* dst = task.grads[i].data<float>();
    const std::int64_t n = task.grads[i].numel();
    for (std::size_t k = 0; k + 1 < offsets_.size(); ++k) {
      const float w = weight(k);
      const float* src = summed_of(k, i);
      if (k == 0) {
        for (std::int64_t j = 0; j < n; ++j) dst[j] = w * src[j];
      } else {
        for (std::int64_t j = 0; j < n; ++j) dst[j] += w * src[j];
      }
    }
  }
}

}  // namespace tbgrad::nn::detail
