// The one home of SIMD sizes that do not depend on the target: the widest vector any compiled
// target uses (Note [Vector widths]), rounding up to whole vectors, and the padding a kernel may
// read past a row. The per-target side (lane counts, loads, horizontal sums, register budget)
// lives in ops/simd-inl.hpp, which kernels include inside Highway's per-target namespace.
//
// Note [Vector widths]: kernels are compiled once per target (SSE4, AVX2, AVX-512, scalar on
// x86; NEON on AArch64) by Highway's foreach_target.h and picked when they first run
// (graph/isa.hpp). Their vectors have Lanes(d) <= kMaxVectorBytes / sizeof(T) lanes: tags are
// capped at 64 bytes (which would also hold a scalable SVE target to 512 bits). Buffers are
// sized for the widest vector (workspace sizes must not depend on the target, which can change
// between planning and running), and each kernel lays its data out with its own lane count,
// which always fits, because every target's lane count divides the widest one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace tbgrad::detail {

inline constexpr std::int64_t kMaxVectorBytes = 64;

template <typename T>
inline constexpr std::int64_t kMaxLanes = kMaxVectorBytes / static_cast<std::int64_t>(sizeof(T));

// n rounded up to a whole number of `lanes`-wide vectors.
inline constexpr std::int64_t round_up(std::int64_t n, std::int64_t lanes) {
  return (n + lanes - 1) / lanes * lanes;
}

// Register tiles have compile-time sizes (their accumulators are arrays of vectors): calls
// fn.template operator()<N>() for the run-time n, 1 <= n <= Max, so that a kernel instantiates
// one tile per size it can meet, e.g.
//   with_tile_size<kMaxTileChannels>(ocb, [&]<int OCB>() { conv_forward_wide<T, OCB>(...); });
// An n outside [1, Max] is a bug in the caller's blocking; it aborts.
template <int Max, int N = 1, typename Fn>
inline void with_tile_size(int n, const Fn& fn) {
  if constexpr (N <= Max) {
    if (n == N) return fn.template operator()<N>();
    return with_tile_size<Max, N + 1>(n, fn);
  } else {
    std::fprintf(stderr, "tbgrad: internal error: tile size %d outside [1, %d]\n", n, Max);
    std::abort();
  }
}

// Note [Epilogues] (graph/op.hpp), as the kernels take it: what to apply to each block of their
// output right after writing it (apply_epilogue in ops/simd-inl.hpp).
template <typename T>
struct OutputEpilogue {
  enum Kind { kNone, kRelu, kReluMask };
  Kind kind = kNone;
  const T* mask = nullptr;  // kReluMask: indexed like the output
};

}  // namespace tbgrad::detail
