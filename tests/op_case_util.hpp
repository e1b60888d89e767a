// What the files of the op table (tests/op_cases.hpp) share: the helpers that write a case's
// inputs and its PyTorch expression, and the functions that add each op family's cases. A family
// of ops lives in its own file (tests/op_cases*.cpp); make_table (tests/op_cases.cpp) calls each
// file's add_*_cases once.
#pragma once

#include <charconv>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "op_cases.hpp"

namespace tbgrad::testing::cases {

inline std::string str(std::int64_t v) {
  return std::to_string(v);
}

// A Python float literal that reads back as `v`.
inline std::string py_float(double v) {
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  if (ec != std::errc()) throw std::runtime_error("py_float: to_chars failed");
  return std::string(buf, end);
}

// "(2, 1)"
inline std::string py_pair(int a, int b) {
  return "(" + str(a) + ", " + str(b) + ")";
}

// A Python tuple: "()", "(7,)", "(2, 3, 4)".
inline std::string py_shape(const Shape& shape) {
  std::string s = "(";
  for (int i = 0; i < shape.rank(); ++i) s += (i ? ", " : "") + str(shape[i]);
  return s + (shape.rank() == 1 ? ",)" : ")");
}

// "3x4", "2x3x4x5"; "scalar" for [].
inline std::string shape_name(const Shape& shape) {
  if (shape.rank() == 0) return "scalar";
  std::string s;
  for (int i = 0; i < shape.rank(); ++i) s += (i ? "x" : "") + str(shape[i]);
  return s;
}

inline CaseInput uniform(std::string name, Shape shape, double lo = -1.0, double hi = 1.0) {
  return {.name = std::move(name), .shape = shape, .lo = lo, .hi = hi};
}
inline CaseInput away_from_zero(std::string name, Shape shape) {
  return {.name = std::move(name), .shape = shape, .kind = InputKind::kAwayFromZero};
}
inline CaseInput distinct(std::string name, Shape shape) {
  return {.name = std::move(name), .shape = shape, .kind = InputKind::kDistinct};
}
inline CaseInput labels(std::string name, Shape shape, int classes) {
  return {.name = std::move(name), .shape = shape, .kind = InputKind::kLabels, .classes = classes};
}

inline std::int64_t out_size(std::int64_t in, int k, int s, int p) {
  return (in + 2 * std::int64_t{p} - k) / s + 1;
}

using Table = std::vector<OpCase>;
using Inputs = std::span<const Value>;  // a Builder's inputs

// The op families' cases, one function per file of the table.
void add_core_cases(Table& t);  // tests/op_cases.cpp: the ops of the first release
void add_conv2_cases(Table& t);  // tests/op_cases_conv2.cpp: groups, dilation, transposed, global pools
void add_loss_cases(Table& t);  // tests/op_cases_loss.cpp: ops/loss.hpp
void add_bn_cases(Table& t);    // tests/op_cases_bn.cpp: batch_norm, its gradients, dropout
void add_math_cases(Table& t);  // tests/op_cases_math.cpp: exp, log, sqrt, rsqrt, neg, abs
void add_shape_cases(Table& t);  // tests/op_cases_shape.cpp: reductions over axes, layout ops
void add_norm_cases(Table& t);  // tests/op_cases_norm.cpp: layer_norm, group_norm, their gradients
void add_bmm_cases(Table& t);    // tests/op_cases_bmm.cpp: batched matmul (rank >= 3)

}  // namespace tbgrad::testing::cases
