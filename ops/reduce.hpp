// Reductions and their adjoint, broadcasting.
#pragma once

#include <vector>

#include "tbgrad/graph/graph.hpp"

namespace tbgrad {

Value sum(Value x);   // all elements -> scalar []
Value mean(Value x);  // all elements -> scalar []

// Reductions over a list of axes (ops/reduce_axes.cpp), as torch.sum(x, dim=axes,
// keepdim=keepdims): negative axes count from the end; the reduced axes go, or stay as 1 with
// keepdims. An axis out of range or named twice is a ShapeError. An empty list reduces every
// axis (torch's convention for dim=[]; NumPy's axis=() would reduce none). Deterministic: every
// result sums its elements in x's row-major order, in double, whatever the thread count.
//   sum(x, {1}), sum(x, {0, 2}, true), mean(x, {-1}), max(x, {2, 3}), var(x, {0}, 0)
Value sum(Value x, const std::vector<int>& axes, bool keepdims = false);
Value mean(Value x, const std::vector<int>& axes, bool keepdims = false);
// torch.amax: NaN propagates (a NaN is the maximum); the gradient is split evenly between the
// elements equal to the maximum, as torch.amax's is (torch.max(x, dim) gives it to one index).
// No element to reduce is a ShapeError.
Value max(Value x, const std::vector<int>& axes, bool keepdims = false);
// torch.var(x, dim=axes, correction=correction, keepdim=keepdims): the sum of squared
// deviations from the mean divided by N - correction; 1 (the default) is torch 1.13's
// unbiased=True, 0 its unbiased=False (so var(x, axes, true/false) reads as torch's unbiased
// flag). Unlike torch, which returns nan or inf, N - correction <= 0 is a ShapeError.
Value var(Value x, const std::vector<int>& axes, int correction = 1, bool keepdims = false);
// The gradient kernel of max over axes: grad split between the elements of x equal to y =
// max(x, axes, keepdims); not differentiable itself.
Value max_backward(Value x, Value y, Value grad, const std::vector<int>& axes,
                   bool keepdims = false);

// Sums x down to `shape`, the inverse of broadcasting: every dimension of `shape` must be 1 or
// equal to x's trailing dimension. Returns x itself when the shapes already match.
Value sum_to(Value x, Shape shape);
// Broadcasts x up to `shape` (NumPy rules). Returns x itself when the shapes already match.
Value broadcast_to(Value x, Shape shape);

}  // namespace tbgrad
