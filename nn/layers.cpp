#include "nn/layers.hpp"

#include <cstdint>
#include <span>
#include <string>
#include <vector>

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

Value layer_norm_layer(Graph& g, ParamStore& store, const std::string& name, Value x,
                       int normalized_rank, LayerNormOptions options) {
  const int rank = x.valid() ? x.shape().rank() : 0;
  if (normalized_rank < 1 || normalized_rank > rank) {
    shape_error("layer_norm", "normalized rank " + std::to_string(normalized_rank) +
                                  " must be from 1 to the rank of " + x.describe() +
                                  " (the normalized shape is x's last axes)");
  }
  std::vector<std::int64_t> dims;
  for (int i = rank - normalized_rank; i < rank; ++i) dims.push_back(x.shape()[i]);
  const Shape ns{std::span<const std::int64_t>(dims)};
  const DType t = x.dtype();
  Value weight = store.param(g, name + ".weight", ns, Role::kNormScale, t);
  Value bias = store.param(g, name + ".bias", ns, Role::kNormShift, t);
  return layer_norm(x, normalized_rank, weight, bias, options);
}

Value group_norm_layer(Graph& g, ParamStore& store, const std::string& name, Value x,
                       std::int64_t groups, GroupNormOptions options) {
  if (!x.valid() || x.shape().rank() < 2) {
    shape_error("group_norm", "input " + x.describe() +
                                  " must have rank 2 or more: [N, C] or [N, C, ...]");
  }
  const Shape c{x.shape()[1]};
  if (groups < 1 || c[0] % groups != 0) {
    shape_error("group_norm", "the channels C = " + std::to_string(c[0]) + " of " + x.describe() +
                                  " must be divisible by groups = " + std::to_string(groups));
  }
  const DType t = x.dtype();
  Value weight = store.param(g, name + ".weight", c, Role::kNormScale, t);
  Value bias = store.param(g, name + ".bias", c, Role::kNormShift, t);
  return group_norm(x, groups, weight, bias, options);
}

}  // namespace tbgrad::nn
