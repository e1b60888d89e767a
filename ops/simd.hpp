// Portable SIMD through GCC/Clang vector extensions: one register-width vector of T. The
// compiler maps it to AVX-512, AVX2 (two registers) or SSE as the target allows, and keeps
// small fixed arrays of them in registers, which plain arrays of scalars do not guarantee.
#pragma once

#include <cstring>

namespace tbgrad::detail {

template <typename T>
struct Simd {
  static constexpr int kLanes = 64 / sizeof(T);
  typedef T Vec __attribute__((vector_size(64)));

  static Vec load(const T* p) {
    Vec v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  static void store(T* p, Vec v) { std::memcpy(p, &v, sizeof v); }
  static Vec splat(T x) { return Vec{} + x; }
};

}  // namespace tbgrad::detail
