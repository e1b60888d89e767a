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

// An empty asm that claims to change v, so the compiler must hold v in a register. For a
// loaded vector used by several FMAs: without it GCC folds the load into each FMA as a memory
// operand, loading the vector once per use, and a register-tiled kernel then runs at the speed
// of the load ports (half of what the FMA units do here: matmul tiles measured 1.9x faster).
template <typename V>
inline void keep_in_register(V& v) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __asm__("" : "+v"(v));
#else
  (void)v;
#endif
}

}  // namespace tbgrad::detail
