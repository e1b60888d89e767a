// Checked size arithmetic: the one home of the overflow rules for element counts, byte sizes,
// window geometry and reshape (docs/reliability.md, "Sizes"). Every shape rule computes sizes
// through these helpers, so a size that does not fit is a ShapeError naming the op and the
// values when the graph is built, never a wrapped-around count that a kernel later trusts.
//
// The rules:
//  - an element count (of a tensor, a padded buffer or a window view) is at most
//    kMaxElements, so its size in bytes at the widest dtype (8 bytes) fits in int64_t and
//    std::size_t, and nbytes() needs no further check;
//  - geometry (kernel, stride, padding, padded extent, output extent) fits in int, the type
//    the window view (ops/window.hpp) stores it in, and so does a window's area KH*KW (kernels
//    count its taps, and average pooling divides by it, in int);
//  - a kernel's workspace is an element count as well, checked when its op is created.
// A shape rule runs its size checks through naming(), so that their errors name the user's
// values too.
#pragma once

#include <climits>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <span>
#include <string>
#include <string_view>

#include "tbgrad/graph/tensor.hpp"

namespace tbgrad::checked {

inline constexpr std::int64_t kMaxElements = std::numeric_limits<std::int64_t>::max() / 8;
inline constexpr std::size_t kMaxElementBytes = 8;  // the widest dtype (f64)

[[noreturn]] inline void fail(std::string_view what, const std::string& message) {
  throw ShapeError(std::string(what) + ": " + message);
}

// Element count of `dims` (each >= 0); a zero dimension makes it 0 whatever the others are.
inline std::int64_t numel(std::span<const std::int64_t> dims, std::string_view what) {
  for (std::int64_t d : dims) {
    if (d < 0) fail(what, "dimension " + std::to_string(d) + " is negative");
    if (d == 0) return 0;
  }
  std::int64_t n = 1;
  for (std::int64_t d : dims) {
    if (__builtin_mul_overflow(n, d, &n) || n > kMaxElements) {
      fail(what,
           "the element count overflows (more than " + std::to_string(kMaxElements) + " elements)");
    }
  }
  return n;
}
inline std::int64_t numel(std::initializer_list<std::int64_t> dims, std::string_view what) {
  return numel(std::span<const std::int64_t>(dims.begin(), dims.size()), what);
}

// a * b for a, b >= 0, at most kMaxElements.
inline std::int64_t mul(std::int64_t a, std::int64_t b, std::string_view what) {
  return numel({a, b}, what);
}

// a + b for a, b >= 0, within int64_t.
inline std::int64_t add(std::int64_t a, std::int64_t b, std::string_view what) {
  std::int64_t s = 0;
  if (a < 0 || b < 0 || __builtin_add_overflow(a, b, &s)) {
    fail(what, std::to_string(a) + " + " + std::to_string(b) + " overflows");
  }
  return s;
}

// Bytes of `count` elements of `element_size` bytes; count <= kMaxElements keeps it exact.
inline std::size_t bytes(std::int64_t count, std::size_t element_size, std::string_view what) {
  if (count < 0 || count > kMaxElements || element_size > kMaxElementBytes) {
    fail(what, "a buffer of " + std::to_string(count) + " elements of " +
                   std::to_string(element_size) + " bytes is too large");
  }
  return static_cast<std::size_t>(count) * element_size;
}

// `v` as an int, for geometry: `name` says which value ("kernel height", "padded width").
inline int to_int(std::int64_t v, std::string_view what, std::string_view name) {
  if (v < INT_MIN || v > INT_MAX) {
    fail(what, std::string(name) + " " + std::to_string(v) + " is outside the int range (at most " +
                   std::to_string(INT_MAX) + ")");
  }
  return static_cast<int>(v);
}

// KH * KW of a window (each in the int range), checked to fit in int.
inline int window_area(int kh, int kw, std::string_view what) {
  const std::int64_t area = std::int64_t{kh} * kw;
  if (area > INT_MAX) {
    fail(what, "kernel " + std::to_string(kh) + "x" + std::to_string(kw) + " has " +
                   std::to_string(area) + " elements, more than the int range allows (" +
                   std::to_string(INT_MAX) + ")");
  }
  return static_cast<int>(area);
}

// Runs `checks`, a shape rule's size checks; a ShapeError from them gets `values` appended
// ("conv2d: kernel height 4294967297 is outside the int range (at most 2147483647); input x
// ([1,1,4,4]), weight w ([1,1,4294967297,1])"), so that it names the user's values too.
template <typename Fn>
auto naming(const std::string& values, Fn&& checks) -> decltype(checks()) {
  try {
    return checks();
  } catch (const ShapeError& e) {
    throw ShapeError(std::string(e.what()) + "; " + values);
  }
}

// One axis of a sliding window: the padded extent in + 2 * padding, checked to fit in int.
inline int padded_extent(std::int64_t in, int padding, std::string_view what,
                         std::string_view axis) {
  const std::int64_t p2 = 2 * static_cast<std::int64_t>(padding);  // |padding| <= INT_MAX
  return to_int(add(in, p2 < 0 ? 0 : p2, what), what, "padded " + std::string(axis));
}

}  // namespace tbgrad::checked
