// Reverse-mode automatic differentiation.
#pragma once

#include <span>
#include <vector>

#include "tbgrad/graph/graph.hpp"

namespace tbgrad {

// Appends to the graph the nodes computing d loss / d w for every w in `wrt` and returns them,
// in the order of `wrt`. `loss` must have exactly one element. Gradients are ordinary values:
// run them with an Executor, or differentiate them again where their ops have VJPs. Where a
// value feeds several ops, the contributions add up. A `wrt` the loss does not depend on gets a
// zero constant of its shape.
std::vector<Value> grad(Value loss, std::span<const Value> wrt);
std::vector<Value> grad(Value loss, std::initializer_list<Value> wrt);
Value grad(Value loss, Value wrt);

}  // namespace tbgrad
