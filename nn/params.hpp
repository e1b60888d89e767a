// Parameters shared by graphs of several batch sizes (training, a short last batch,
// evaluation): a model builds its graph from a ParamStore, which creates each parameter on first
// use and hands the same storage to every later graph.
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
  // Of the graph's floating type.
  Value param(Graph& g, const std::string& name, Shape shape) {
    return param(g, name, shape, g.dtype());
  }

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

}  // namespace tbgrad::nn
