// Reductions and their adjoint, broadcasting.
#pragma once

#include "tbgrad/graph/graph.hpp"

namespace tbgrad {

Value sum(Value x);   // all elements -> scalar []
Value mean(Value x);  // all elements -> scalar []

// Sums x down to `shape`, the inverse of broadcasting: every dimension of `shape` must be 1 or
// equal to x's trailing dimension. Returns x itself when the shapes already match.
Value sum_to(Value x, Shape shape);
// Broadcasts x up to `shape` (NumPy rules). Returns x itself when the shapes already match.
Value broadcast_to(Value x, Shape shape);

}  // namespace tbgrad
