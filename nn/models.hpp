// The networks the MNIST trainer offers, built on the public graph API. Parameters live in a
// ParamStore so graphs of several batch sizes (training, evaluation, a last partial batch)
// share one set of weights.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tbgrad/graph/graph.hpp"
#include "tbgrad/nn/init.hpp"

namespace tbgrad::nn {

class ParamStore {
 public:
  // The parameter `name` in graph g: created (zero-filled) on first use, shared afterwards.
  // Throws tbgrad::Error if `name` exists with another shape.
  Value param(Graph& g, const std::string& name, Shape shape, DType dtype);

  const std::vector<std::string>& names() const { return names_; }  // creation order
  const std::vector<Tensor>& tensors() const { return tensors_; }
  const Tensor* find(const std::string& name) const;
  std::int64_t count() const;  // total number of scalars

 private:
  std::vector<std::string> names_;
  std::vector<Tensor> tensors_;
};

enum class Init { kXavierUniform, kHeNormal, kUniform, kNormal };
// "xavier" | "he" | "uniform" (U(-1,1), the naive init) | "normal" (N(0,1)).
Init parse_init(const std::string& name);
const char* init_name(Init init);
// Weights (rank >= 2) drawn with `init`, biases zero, in creation order.
void initialize(const ParamStore& store, Init init, Rng& rng);

struct Network {
  Value images;  // [B, 1, 28, 28]
  Value labels;  // [B] i32
  Value logits;  // [B, 10]
  Value loss;    // [] mean cross-entropy
  std::vector<Value> params;      // in the store's order
  // Each layer's output, in order, for inspection: "conv1" (before its ReLU), "conv1.relu",
  // "pool1", ..., "fc3" (the logits).
  struct Layer {
    std::string name;
    Value value;
  };
  std::vector<Layer> layers;
  // Each fully connected layer, output = input · weightᵀ + bias: its weight's gradient over a
  // batch is the sum of the rows' outer products d(output)ᵀ · input, which callers can form
  // from the two [B, ·] matrices instead of asking grad() for it (the MNIST trainer does, to
  // move less data between threads). weight and bias index params.
  struct Linear {
    Value input, output;
    std::size_t weight, bias;
  };
  std::vector<Linear> linears;
};

// "seed" (the reference CNN), "seed-nopool", "lenet5". Throws tbgrad::Error for other names.
Network build_network(const std::string& model, Graph& g, std::int64_t batch, ParamStore& store);
const std::vector<std::string>& model_names();

}  // namespace tbgrad::nn
