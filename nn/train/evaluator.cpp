// nn::Evaluator: loss, accuracy and confusion matrix of a model (accuracy where its outputs are
// class scores), alone or split over ranks (nn/train.hpp).
#include <algorithm>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "distributed/communicator.hpp"
#include "graph/parallel.hpp"
#include "nn/train.hpp"
#include "nn/train/exchange.hpp"
#include "nn/train/loss_split.hpp"
#include "nn/train/model_graph.hpp"

namespace tbgrad::nn {

struct Evaluator::Impl {
  ModelFn model;
  ParamStore store;  // shares the tensors of the caller's store
  std::int64_t batch_size;
  dist::Communicator* comm = nullptr;
  std::unique_ptr<detail::Part> full, tail;
  detail::Exchange exchange;
  // Note [Loss split]: whether the loss is a sum over the examples (the batches' losses are
  // then added), read from graphs of b and b + 1 examples for batches of b.
  bool sum_loss = false;

  void classify(std::int64_t b) {
    sum_loss = false;
    Graph g;
    ParamStore scratch = store;
    ModelGraph m;
    try {
      m = detail::build_model(model, g, scratch, b + 1, {});
    } catch (const ThreadStartError&) {
      throw;
    } catch (const Error&) {
      return;  // a model of fixed sizes: its batches' losses weighted by their sizes
    }
    if (!m.loss.valid() || &m.loss.graph() != &g) return;
    sum_loss = detail::classify_loss(full->g, full->m, b, g, m, b + 1).split == LossSplit::kSum;
  }

  std::unique_ptr<detail::Part> make(std::int64_t b) {
    auto p = std::make_unique<detail::Part>(model, store, b);
    p->ex =
        std::make_unique<Executor>(p->g, std::initializer_list<ValueList>{p->m.loss, p->m.outputs});
    p->bind();
    // Note [Train and eval modes]: batch_norm with its running statistics, no dropout.
    RunInfo run;
    run.training = false;
    run.examples = b;
    p->ex->set_run_info(run);
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
  if (!im.full || im.full->batch != b) {
    im.full = im.make(b);
    im.classify(b);
  }
  if (im.full->inputs.numel() != b * data.example_size()) {
    throw data::DataError("Evaluator::evaluate: the data set's examples are " +
                          std::to_string(data.rows) + "x" + std::to_string(data.cols) + " = " +
                          std::to_string(data.example_size()) + " values, the model's inputs " +
                          std::to_string(im.full->inputs.numel() / b) + " per example (" +
                          im.full->m.inputs.describe() + ")");
  }
  const std::int64_t rest = data.count % b;
  if (rest && (!im.tail || im.tail->batch != rest)) im.tail = im.make(rest);
  // Accuracy only where the outputs are class scores and the labels class indices.
  r.has_accuracy = im.full->classes;
  r.classes = r.has_accuracy ? im.full->m.outputs.shape()[1] : 0;
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
    detail::Part& run = data.count - start >= b ? *im.full : *im.tail;
    run.load(data, std::span<const std::int64_t>(order).subspan(
                       static_cast<std::size_t>(start), static_cast<std::size_t>(run.batch)));
    run.ex->run();
    loss_terms.push_back(im.sum_loss ? run.loss() : run.loss() * static_cast<double>(run.batch));
    if (r.has_accuracy) {
      correct += detail::count_correct((*run.ex)[run.m.outputs], run.labels, &r.confusion);
    }
  }
  if (ranks > 1) {
    // Rank q's block (Note [Ranks]): its batches' loss terms, its correct count, its confusion
    // counts.
    const std::int64_t tail_bytes =
        static_cast<std::int64_t>(sizeof(std::int64_t)) * (1 + r.classes * r.classes);
    std::vector<std::int64_t> bytes;
    for (int q = 0; q < ranks; ++q) {
      bytes.push_back((first_batch(q + 1) - first_batch(q)) *
                          static_cast<std::int64_t>(sizeof(double)) +
                      tail_bytes);
    }
    im.exchange.lay_out(std::move(bytes), static_cast<std::size_t>(me));
    detail::BlockWriter out(im.exchange.mine());
    out.put(std::span<const double>(loss_terms));
    out.put(&correct, sizeof correct);
    out.put(std::span<const std::int64_t>(r.confusion));
    im.exchange.share(*im.comm);
    loss_terms.clear();
    correct = 0;
    std::fill(r.confusion.begin(), r.confusion.end(), 0);
    for (int q = 0; q < ranks; ++q) {
      detail::BlockReader in(im.exchange.block(static_cast<std::size_t>(q)));
      for (std::int64_t batch = first_batch(q); batch < first_batch(q + 1); ++batch) {
        loss_terms.push_back(in.get<double>());
      }
      correct += in.get<std::int64_t>();
      for (std::int64_t& c : r.confusion) c += in.get<std::int64_t>();
    }
  }
  double loss_sum = 0;
  for (double term : loss_terms) loss_sum += term;
  r.loss = im.sum_loss ? loss_sum : loss_sum / static_cast<double>(data.count);
  r.accuracy = r.has_accuracy ? static_cast<double>(correct) / static_cast<double>(data.count)
                              : std::numeric_limits<double>::quiet_NaN();
  return r;
}

}  // namespace tbgrad::nn
