// Softmax family, along the last dimension.
#pragma once

#include "tbgrad/graph/graph.hpp"

namespace tbgrad {

Value softmax(Value x);
Value log_softmax(Value x);

// Mean over the batch of -log softmax(logits)[label]: logits [B, C], labels [B] (i32 in
// [0, C)) -> scalar []. Fused and stable (log-sum-exp with the row maximum subtracted). A label
// outside [0, C) makes the run throw tbgrad::Error.
Value softmax_cross_entropy(Value logits, Value labels);

// Gradient kernels the VJPs use.
Value softmax_backward(Value y, Value grad);      // y * (grad - sum(grad * y))
Value log_softmax_backward(Value y, Value grad);  // grad - exp(y) * sum(grad)
Value softmax_cross_entropy_backward(Value logits, Value labels, Value grad);

}  // namespace tbgrad
