// Layers that own parameters and buffers in a ParamStore (tbgrad/nn/params.hpp).
#pragma once

#include <cstdint>
#include <string>

#include "tbgrad/graph/graph.hpp"
#include "tbgrad/nn/params.hpp"
#include "tbgrad/ops/batch_norm.hpp"
#include "tbgrad/ops/norm.hpp"

namespace tbgrad::nn {

// batch_norm (tbgrad/ops/batch_norm.hpp) of x [N, C, *] with its state in `store`: the
// parameters "<name>.weight" (gamma, Role::kNormScale: initialised to 1) and "<name>.bias"
// (beta, Role::kNormShift: 0), and the buffers "<name>.running_mean" (0) and
// "<name>.running_var" (1), all [C] (PyTorch's BatchNorm2d names them so).
Value batch_norm_layer(Graph& g, ParamStore& store, const std::string& name, Value x,
                       BatchNormOptions options = {});

// layer_norm (tbgrad/ops/norm.hpp) of x over its last `normalized_rank` axes with the parameters
// "<name>.weight" (Role::kNormScale: 1) and "<name>.bias" (Role::kNormShift: 0) in `store`, both
// of the normalized shape (PyTorch's LayerNorm names them so).
Value layer_norm_layer(Graph& g, ParamStore& store, const std::string& name, Value x,
                       int normalized_rank, LayerNormOptions options = {});

// group_norm (tbgrad/ops/norm.hpp) of x [N, C, *] in `groups` groups with the parameters
// "<name>.weight" (Role::kNormScale: 1) and "<name>.bias" (Role::kNormShift: 0), both [C]
// (PyTorch's GroupNorm names them so).
Value group_norm_layer(Graph& g, ParamStore& store, const std::string& name, Value x,
                       std::int64_t groups, GroupNormOptions options = {});

}  // namespace tbgrad::nn
