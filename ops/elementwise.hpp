// Elementwise ops. Binary ops broadcast like NumPy: shapes are aligned at their trailing
// dimensions and a dimension of 1 (or a missing one) stretches, so a bias [C,1,1] adds over
// [N,C,H,W] and a bias [F] adds over [N,F].
#pragma once

#include "tbgrad/graph/graph.hpp"

namespace tbgrad {

Value add(Value a, Value b);
Value sub(Value a, Value b);
Value mul(Value a, Value b);
Value scale(Value x, double factor);  // x * factor

Value relu(Value x);  // max(x, 0); NaN stays NaN (torch.relu)
Value sigmoid(Value x);
Value tanh(Value x);

// Gradient kernels the activations' VJPs use. Not differentiable themselves.
Value relu_backward(Value x, Value grad);     // 0 where x <= 0, else grad (NaN x: grad)
Value sigmoid_backward(Value y, Value grad);  // grad * y * (1 - y), y = sigmoid(x)
Value tanh_backward(Value y, Value grad);     // grad * (1 - y^2),    y = tanh(x)

// The shape two operands broadcast to; throws ShapeError naming `op` if they do not.
Shape broadcast_shapes(const char* op, const Value& a, const Value& b);

}  // namespace tbgrad
