// Shape ops.
#pragma once

#include "tbgrad/graph/graph.hpp"

namespace tbgrad {

// Same elements, new shape; one dimension may be -1 to be inferred.
Value reshape(Value x, Shape shape);
Value reshape(Value x, std::initializer_list<std::int64_t> dims);
// [N, ...] -> [N, product of the rest].
Value flatten(Value x);

}  // namespace tbgrad
