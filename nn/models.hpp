// The networks the MNIST trainer offers, built on the public graph API like any user's model
// (tbgrad/nn/train.hpp): parameters live in a ParamStore (tbgrad/nn/params.hpp), so graphs of
// several batch sizes share one set of weights.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tbgrad/graph/graph.hpp"
#include "tbgrad/nn/init.hpp"
#include "tbgrad/nn/params.hpp"
#include "tbgrad/nn/train.hpp"

namespace tbgrad::nn {

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
};

// "seed" (the reference CNN), "seed-nopool", "lenet5", "resnet" (scripts/pytorch_mnist.py's
// residual network: batch norm, whose buffers live in the store, and dropout). Throws tbgrad::Error for other names.
Network build_network(const std::string& model, Graph& g, std::int64_t batch, ParamStore& store);
// The same model as a builder for the library's Trainer and Evaluator (tbgrad/nn/train.hpp).
ModelFn model_fn(const std::string& model);
const std::vector<std::string>& model_names();

}  // namespace tbgrad::nn
