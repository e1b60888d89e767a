// Layers that own parameters and buffers in a ParamStore (tbgrad/nn/params.hpp).
#pragma once

#include <string>

#include "tbgrad/graph/graph.hpp"
#include "tbgrad/nn/params.hpp"
#include "tbgrad/ops/batch_norm.hpp"

namespace tbgrad::nn {

// batch_norm (tbgrad/ops/batch_norm.hpp) of x [N, C, *] with its state in `store`: the
// parameters "<name>.weight" (gamma, Role::kNormScale: initialised to 1) and "<name>.bias"
// (beta, Role::kNormShift: 0), and the buffers "<name>.running_mean" (0) and
// "<name>.running_var" (1), all [C] (PyTorch's BatchNorm2d names them so).
Value batch_norm_layer(Graph& g, ParamStore& store, const std::string& name, Value x,
                       BatchNormOptions options = {});

}  // namespace tbgrad::nn
