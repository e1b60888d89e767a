#include "nn/layers.hpp"

#include "graph/op.hpp"

namespace tbgrad::nn {

Value batch_norm_layer(Graph& g, ParamStore& store, const std::string& name, Value x,
                       BatchNormOptions options) {
  if (!x.valid() || x.shape().rank() < 2) {
    shape_error("batch_norm", "input " + x.describe() +
                                  " must have rank 2 or more: [N, C] or [N, C, ...]");
  }
  const Shape c{x.shape()[1]};
  const DType t = x.dtype();
  Value gamma = store.param(g, name + ".weight", c, Role::kNormScale, t);
  Value beta = store.param(g, name + ".bias", c, Role::kNormShift, t);
  Value mean = store.buffer(g, name + ".running_mean", c, 0.0, t);
  Value var = store.buffer(g, name + ".running_var", c, 1.0, t);
  return batch_norm(x, gamma, beta, mean, var, options);
}

}  // namespace tbgrad::nn
