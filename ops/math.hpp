// Elementwise math, with torch's semantics: log, sqrt and rsqrt of negatives give NaN, and NaN
// propagates through every op and its gradient as in torch 1.13 (the exceptions torch makes too:
// pow(NaN, 0) = 1 with gradient 0, clamp's gradient at NaN is 0, where() does not read the side
// it does not pick, and maximum/minimum send a NaN's gradient to both inputs).
//
// Binary ops broadcast like add/sub/mul (ops/elementwise.hpp); their gradients are summed back to
// each operand's shape. Every op here is differentiable to second order: the gradient kernels
// below have VJPs of their own (the *_double_backward kernels, which give the second derivatives
// of gelu, silu and softplus, do not, so third derivatives of those three are not available).
//
// Where tbgrad differs from torch: pow's exponent and leaky_relu's slope must be finite, and
// softplus's beta finite and nonzero (torch takes any double); where's mask is an i32 or a float
// tensor, nonzero (NaN too) selecting `a`, rather than a bool tensor. pow's second derivative is
// 0 for exponents 0 and 1 (torch's is NaN at x = 0 for exponent 1).
#pragma once

#include "tbgrad/graph/graph.hpp"

namespace tbgrad {

Value exp(Value x);
Value log(Value x);    // log(0) = -inf
Value sqrt(Value x);
Value rsqrt(Value x);  // 1 / sqrt(x); rsqrt(0) = inf
Value neg(Value x);    // -x
Value abs(Value x);

// x^exponent (torch.pow with a scalar exponent); gradient exponent * x^(exponent - 1), and 0 for
// exponent 0 (also at x = 0, as torch).
Value pow(Value x, double exponent);
// min(max(x, lo), hi) (torch.clamp): lo > hi gives hi everywhere, a NaN bound NaN everywhere;
// infinite bounds clamp one side only. Gradient: passes where lo <= x <= hi, else 0 (also at NaN).
Value clamp(Value x, double lo, double hi);
// x > 0 ? x : negative_slope * x (F.leaky_relu); gradient negative_slope at 0, as torch.
Value leaky_relu(Value x, double negative_slope = 0.01);
// F.gelu: x * Phi(x) with the normal CDF from erf (kNone), or torch's approximate='tanh' form
// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (kTanh).
enum class GeluApproximation { kNone, kTanh };
Value gelu(Value x, GeluApproximation approximate = GeluApproximation::kNone);
Value silu(Value x);  // x * sigmoid(x) (F.silu)
// F.softplus: log(1 + exp(beta x)) / beta, and x itself where beta x > threshold.
Value softplus(Value x, double beta = 1.0, double threshold = 20.0);

// Broadcasting binary ops (NumPy rules, as add).
Value div(Value a, Value b);      // a / b (torch.div, true division); x / 0 = +-inf, 0 / 0 = NaN
// torch.maximum / torch.minimum: NaN if either input is NaN. Gradient: all to the larger
// (smaller) input, half to each at a tie, and all to both where either input is NaN (torch 1.13).
Value maximum(Value a, Value b);
Value minimum(Value a, Value b);
// torch.where(mask != 0, a, b), broadcasting among the three. mask: i32 (g.input_labels,
// g.input(..., DType::kI32)) or a float tensor of a's dtype; no gradient flows to it.
Value where(Value mask, Value a, Value b);

// Gradient kernels the VJPs above use, as torch's derivatives write them; `grad` has the saved
// value's shape. Each is differentiable (its VJP goes to the saved value and to grad).
Value exp_backward(Value y, Value grad);    // grad * y,               y = exp(x)
Value log_backward(Value x, Value grad);    // grad / x
Value sqrt_backward(Value y, Value grad);   // grad / (2 y),           y = sqrt(x)
Value rsqrt_backward(Value y, Value grad);  // -0.5 * grad * y^3,      y = rsqrt(x)
Value abs_backward(Value x, Value grad);    // grad * sgn(x) (sgn(0) = sgn(NaN) = 0, as torch)
Value pow_backward(Value x, Value grad, double exponent);  // grad * exponent * x^(exponent - 1)
Value clamp_backward(Value x, Value grad, double lo, double hi);  // lo <= x <= hi ? grad : 0
Value leaky_relu_backward(Value x, Value grad, double negative_slope = 0.01);
Value gelu_backward(Value x, Value grad,
                    GeluApproximation approximate = GeluApproximation::kNone);
Value silu_backward(Value x, Value grad);
Value softplus_backward(Value x, Value grad, double beta = 1.0, double threshold = 20.0);
// The share of maximum(a, b)'s gradient that goes to a, at the broadcast shape: 0 where a < b,
// 0.5 where a == b, else 1 (a > b, or either is NaN). b's share is maximum_grad_share(b, a);
// minimum's shares swap the two. Piecewise constant: its gradient is zero.
Value maximum_grad_share(Value a, Value b);

// Second-derivative kernels (grad * f''(x)) of the gradient kernels' VJPs. Not differentiable.
Value gelu_double_backward(Value x, Value grad,
                           GeluApproximation approximate = GeluApproximation::kNone);
Value silu_double_backward(Value x, Value grad);
Value softplus_double_backward(Value x, Value grad, double beta = 1.0, double threshold = 20.0);

}  // namespace tbgrad
