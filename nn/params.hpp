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

// What a parameter is, recorded when it is created: nn::initialize draws weights and sets the
// others to their constant (biases and shifts 0, scales 1), and an optimizer's weight decay may
// leave biases and normalisation parameters out (ParamStore::role, roles()).
enum class Role {
  kWeight,     // drawn by the initializer (rank >= 2: its fans are its shape's)
  kBias,       // zeros
  kNormScale,  // a normalisation's gamma: ones
  kNormShift,  // a normalisation's beta: zeros
};
const char* role_name(Role role);  // "weight", "bias", "norm_scale", "norm_shift"

class ParamStore {
 public:
  // The parameter `name` in graph g: created (zero-filled) on first use, shared afterwards.
  // Throws tbgrad::Error if `name` exists with another shape. Its role is kWeight for a rank of
  // 2 or more, kBias below (what nn::initialize always did with them).
  Value param(Graph& g, const std::string& name, Shape shape, DType dtype);
  // Of the graph's floating type.
  Value param(Graph& g, const std::string& name, Shape shape) {
    return param(g, name, shape, g.dtype());
  }
  // With its role: the role given when the parameter is created is the one it keeps.
  Value param(Graph& g, const std::string& name, Shape shape, Role role, DType dtype);
  Value param(Graph& g, const std::string& name, Shape shape, Role role) {
    return param(g, name, shape, role, g.dtype());
  }

  const std::vector<std::string>& names() const { return names_; }  // creation order
  // The trainable tensors, in creation order: what an optimizer updates. Buffers are not among
  // them.
  const std::vector<Tensor>& tensors() const { return tensors_; }
  const std::vector<Role>& roles() const { return roles_; }  // by parameter, in creation order
  // The role of parameter `name`; throws tbgrad::Error for a name the store has no parameter of.
  Role role(const std::string& name) const;
  const Tensor* find(const std::string& name) const;
  std::int64_t count() const;  // total number of scalars of the parameters (buffers not counted)

  // Buffers: non-trainable state kept beside the parameters (batch_norm's running mean and
  // variance), saved and loaded by name in checkpoints (nn/params_io.hpp), never given to an
  // optimizer (they are not in tensors()) and never differentiated (in a graph a buffer is a
  // constant that shares the store's storage, so graph.params() does not list it). The buffer
  // `name` in graph g: created filled with `init` on first use, shared afterwards. Throws
  // tbgrad::Error if `name` exists with another shape or dtype, or names a parameter.
  Value buffer(Graph& g, const std::string& name, Shape shape, double init, DType dtype);
  Value buffer(Graph& g, const std::string& name, Shape shape, double init = 0.0) {
    return buffer(g, name, shape, init, g.dtype());
  }
  const std::vector<std::string>& buffer_names() const { return buffer_names_; }
  const std::vector<Tensor>& buffers() const { return buffers_; }
  const Tensor* find_buffer(const std::string& name) const;
  // Every buffer back to the value it was created with (nn::initialize calls it).
  void reset_buffers() const;

 private:
  std::vector<std::string> names_;
  std::vector<Tensor> tensors_;
  std::vector<Role> roles_;
  std::vector<std::string> buffer_names_;
  std::vector<Tensor> buffers_;
  std::vector<double> buffer_init_;
};

enum class Init { kXavierUniform, kHeNormal, kUniform, kNormal };
// "xavier" | "he" | "uniform" (U(-1,1), the naive init) | "normal" (N(0,1)).
Init parse_init(const std::string& name);
const char* init_name(Init init);
// By role (nn::Role), in creation order: weights drawn with `init` (a weight of rank below 2 as
// if it were [n, 1]), biases and normalisation shifts zero, normalisation scales one; and every
// buffer back to its initial value.
void initialize(const ParamStore& store, Init init, Rng& rng);

}  // namespace tbgrad::nn
