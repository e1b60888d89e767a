// Elementwise math (torch's semantics: log, sqrt and rsqrt of negatives give NaN, NaN stays NaN).
#pragma once

#include "tbgrad/graph/graph.hpp"

namespace tbgrad {

Value exp(Value x);
Value log(Value x);    // log(0) = -inf
Value sqrt(Value x);
Value rsqrt(Value x);  // 1 / sqrt(x); rsqrt(0) = inf
Value neg(Value x);    // -x
Value abs(Value x);

// Gradient kernels the VJPs above use, as torch's derivatives write them. Not differentiable.
Value exp_backward(Value y, Value grad);    // grad * y,               y = exp(x)
Value log_backward(Value x, Value grad);    // grad / x
Value sqrt_backward(Value y, Value grad);   // grad / (2 y),           y = sqrt(x)
Value rsqrt_backward(Value y, Value grad);  // -0.5 * grad * y^3,      y = rsqrt(x)
Value abs_backward(Value x, Value grad);    // grad * sgn(x) (sgn(0) = sgn(NaN) = 0, as torch)

}  // namespace tbgrad
