// Shape ops.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "tbgrad/graph/graph.hpp"

namespace tbgrad {

// Same elements, new shape; one dimension may be -1 to be inferred.
Value reshape(Value x, Shape shape);
Value reshape(Value x, std::initializer_list<std::int64_t> dims);
// [N, ...] -> [N, product of the rest].
Value flatten(Value x);

// Axes moved and elements copied (ops/layout.cpp). Axes may be negative, counting from the end.
//
// permute: output axis i is x's axis order[i] (torch.permute); the gradient permutes back.
Value permute(Value x, const std::vector<int>& order);
// Axes a and b swapped (torch.transpose).
Value transpose(Value x, int a, int b);
// The inputs side by side along `axis` (torch.cat); every other axis must match. One input is
// returned as it is.
Value concat(std::span<const Value> xs, int axis);
Value concat(const std::vector<Value>& xs, int axis);  // concat({a, b}, 1)
// Elements start, start + step, ... before end of `axis` (Python's x[start:end:step] on that
// axis, torch's slicing): negative indices count from the end and both are clamped to the axis,
// so slice(x, 0, -3, 1000) takes the last three; an empty range gives a size-0 axis. The step
// must be positive (as torch's).
Value slice(Value x, int axis, std::int64_t start, std::int64_t end, std::int64_t step = 1);
// Parts of `axis` of the given sizes, which must add up to its size (torch.split with a list).
std::vector<Value> split(Value x, const std::vector<std::int64_t>& sizes, int axis = 0);
// Constant padding as F.pad(x, pads, value=value): (left, right) pairs for the last axes, the
// last axis first ({1, 1, 2, 2} pads W by 1 and H by 2 on each side). Negative amounts crop.
Value pad(Value x, const std::vector<std::int64_t>& pads, double value = 0.0);
// A per-channel vector [C] shaped to scale or shift x [N, C, ...] along its channel axis 1:
// [C, 1, 1] for x [N, C, H, W], [C] for x [N, C]. mul(x, per_channel(gamma, x)).
Value per_channel(Value v, const Value& x);

// slice's gradient kernel: `shape` with zeros, except the positions slice(.., axis, start, end,
// step) takes, which hold grad. Differentiable (its VJP is the slice).
Value slice_backward(Value grad, const Shape& shape, int axis, std::int64_t start,
                     std::int64_t end, std::int64_t step = 1);

}  // namespace tbgrad
