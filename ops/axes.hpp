// Internal helpers of the ops that take axes (reductions over axes, permute, concat, slice, pad):
// checking and normalising axis lists. Not installed as public API.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "graph/graph.hpp"
#include "graph/op.hpp"

namespace tbgrad::detail {

// "[0, -1]": an axis list as error messages show it.
inline std::string axes_str(const std::vector<int>& axes) {
  std::string s = "[";
  for (std::size_t i = 0; i < axes.size(); ++i) s += (i ? ", " : "") + std::to_string(axes[i]);
  return s + "]";
}

// `axis` of a tensor of rank `rank`, negative counting from the end (Python's convention), as an
// index in [0, rank); a ShapeError naming `op` and x outside [-rank, rank).
inline int normalize_axis(const char* op, const Value& x, int axis) {
  const int rank = x.shape().rank();
  if (axis < -rank || axis >= rank) {
    shape_error(op, "axis " + std::to_string(axis) + " is out of range for " + x.describe() +
                        " (rank " + std::to_string(rank) + ": axes " + std::to_string(-rank) +
                        " to " + std::to_string(rank - 1) + ")");
  }
  return axis < 0 ? axis + rank : axis;
}

// Which axes of x a list names (each normalised); a ShapeError for an axis out of range or named
// twice (also as a negative and a positive index).
inline std::array<bool, Shape::kMaxRank> axis_mask(const char* op, const Value& x,
                                                   const std::vector<int>& axes) {
  std::array<bool, Shape::kMaxRank> mask{};
  for (const int a : axes) {
    const int k = normalize_axis(op, x, a);
    if (mask[static_cast<std::size_t>(k)]) {
      shape_error(op, "axis " + std::to_string(a) + " appears twice in the axes " +
                          axes_str(axes) + " of " + x.describe());
    }
    mask[static_cast<std::size_t>(k)] = true;
  }
  return mask;
}

// Row-major strides of a shape.
inline std::array<std::int64_t, Shape::kMaxRank> strides_of(const Shape& s) {
  std::array<std::int64_t, Shape::kMaxRank> st{};
  std::int64_t stride = 1;
  for (int i = s.rank() - 1; i >= 0; --i) {
    st[static_cast<std::size_t>(i)] = stride;
    stride *= s[i];
  }
  return st;
}

}  // namespace tbgrad::detail
