// Matrix products.
#pragma once

#include "tbgrad/graph/graph.hpp"

namespace tbgrad {

struct MatmulOptions {
  bool transpose_a = false;
  bool transpose_b = false;
};

// op(a) [M, K] x op(b) [K, N] -> [M, N], where op transposes when asked.
//
// Batched, as torch.matmul: operands of rank 3 or more are stacks of matrices, the last two
// axes a matrix and the others batch axes, which broadcast like NumPy's (aligned at the right,
// a 1 or a missing axis stretching; a 2-D operand is one matrix for every batch entry):
// op(a) [..., M, K] x op(b) [..., K, N] -> [broadcast batch, M, N], e.g. attention's
// [B, H, T, D] x [B, H, T, D] with transpose_b -> [B, H, T, T]. The flags transpose the last two
// axes of an operand (torch's x.transpose(-1, -2)). Each matrix is computed by the 2-D kernel,
// so its bits are those of the 2-D product of its matrices; a broadcast operand is read in
// place, never copied; a's matrices times a 2-D b (a not transposed) are one [batch * M, K]
// product. The gradient of a broadcast operand is summed over the axes it was broadcast along.
// Differences from torch.matmul: 1-D operands (torch's vector products) are a ShapeError:
// reshape a vector to [1, K] or [K, 1]; and the transpose flags have no torch counterpart.
Value matmul(Value a, Value b, MatmulOptions options = {});

// Fully connected layer: x [B, in] · weightᵀ (weight [out, in]) + bias [out] -> [B, out].
Value linear(Value x, Value weight, Value bias);
Value linear(Value x, Value weight);

}  // namespace tbgrad
