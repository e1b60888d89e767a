// The model's graph for one batch size, as the trainer and the evaluator build and check it
// (nn/train/, the training library's wing; nn/train.hpp is its public face).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "data/dataset.hpp"
#include "graph/executor.hpp"
#include "nn/train.hpp"

namespace tbgrad::nn::detail {

// Why the library builds a model for a number of examples the user did not choose, in the
// user's terms (the batch they chose, and why a graph of another size was needed): said before
// the messages of errors while building it. Empty: a size the user chose.
using Context = std::function<std::string(std::int64_t examples)>;
std::string say(const Context& context, std::int64_t examples);

// The model for `examples` examples. An error it raises is raised again, of the same type, with
// the context before its message.
ModelGraph build_model(const ModelFn& model, Graph& g, ParamStore& store, std::int64_t examples,
                       const Context& context);

// For the micro-batches of a batch of `batch` examples (Note [Micro-batches]).
Context micro_batch_context(std::int64_t batch, std::int64_t micro);

// What the trainer and the evaluator need of a model's graph for b examples: ModelGraph's
// four values set, of this graph, with inputs [b, ...] f32 and labels ([b] i32 class indices
// or [b, ...] f32 targets) the graph's inputs, a loss of one element, outputs [b, ...]; no other graph input that the loss or the
// outputs read (nothing would feed it); and the store's parameters, in its order. Throws Error
// naming the values and shapes, `context` first.
void check_model(const ModelGraph& m, const Graph& g, const std::vector<std::string>& names,
                 std::int64_t b, const std::string& context = {});

// Whether the outputs are class scores [B, C] and the labels class indices [B] i32: what
// accuracy needs (Evaluation::has_accuracy).
bool has_accuracy(const ModelGraph& m);

// Number of rows whose largest output is the label; counts into confusion[label * C + pred].
// Only for has_accuracy's graphs.
std::int64_t count_correct(const Tensor& outputs, const Tensor& labels,
                           std::vector<std::int64_t>* confusion);

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
  bool classes = false;  // has_accuracy(m): correct() counts

  // `context`: why a graph of b examples is built (build_model); empty when the user chose b.
  Part(const ModelFn& model, ParamStore& store, std::int64_t b, const Context& context = {});
  void bind() { ex->bind(m.inputs, inputs).bind(m.labels, labels); }
  void load(const data::Dataset& data, std::span<const std::int64_t> indices) {
    data::load_examples(data, indices, inputs, labels);
  }
  // The trainer's: the images augmented (data::load_images).
  void load(const data::Dataset& data, std::span<const std::int64_t> indices,
            const data::Augment& augment, std::uint64_t epoch) {
    data::load_examples(data, indices, inputs, labels, augment, epoch);
  }
  double loss() const { return (*ex)[m.loss].at(0); }
  std::int64_t correct() const {
    return classes ? count_correct((*ex)[m.outputs], labels, nullptr) : 0;
  }
};

}  // namespace tbgrad::nn::detail
