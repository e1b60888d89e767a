// Matrix products.
#pragma once

#include "tbgrad/graph/graph.hpp"

namespace tbgrad {

struct MatmulOptions {
  bool transpose_a = false;
  bool transpose_b = false;
};

// op(a) [M, K] x op(b) [K, N] -> [M, N], where op transposes when asked.
Value matmul(Value a, Value b, MatmulOptions options = {});

// Fully connected layer: x [B, in] · weightᵀ (weight [out, in]) + bias [out] -> [B, out].
Value linear(Value x, Value weight, Value bias);
Value linear(Value x, Value weight);

}  // namespace tbgrad
