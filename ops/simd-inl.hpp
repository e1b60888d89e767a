// Per-target SIMD helpers, included by kernel files inside HWY_BEFORE_NAMESPACE() /
// namespace tbgrad::HWY_NAMESPACE, once per target (Highway's foreach_target.h re-includes the
// kernel file, and with it this header, with HWY_TARGET set to each target in turn). The
// target-independent sizes are in ops/simd.hpp; Note [Vector widths] there.

// Per-target include guard, as Highway's own -inl.h headers do.
#if defined(TBGRAD_OPS_SIMD_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef TBGRAD_OPS_SIMD_INL_H_
#undef TBGRAD_OPS_SIMD_INL_H_
#else
#define TBGRAD_OPS_SIMD_INL_H_
#endif

#include <hwy/highway.h>

#include "ops/simd.hpp"

HWY_BEFORE_NAMESPACE();
namespace tbgrad::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// The vector descriptor every kernel uses: the target's full width, capped at kMaxVectorBytes.
template <typename T>
using Tag = hn::CappedTag<T, static_cast<std::size_t>(detail::kMaxLanes<T>)>;
template <typename T>
using VecT = hn::Vec<Tag<T>>;

template <typename T>
HWY_INLINE std::int64_t lanes() {
  return static_cast<std::int64_t>(hn::Lanes(Tag<T>()));
}

// Vector registers of the target, for sizing register tiles: 32 on AVX-512 and on AArch64
// (NEON), 16 on AVX2 and SSE4. The scalar target has none; its "vectors" are scalars,
// of which the compiler has 16 general-purpose or SSE registers.
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL || HWY_ARCH_ARM
inline constexpr int kVectorRegisters = 32;
#else
inline constexpr int kVectorRegisters = 16;
#endif

// An empty asm that claims to change v, so the compiler must hold v in a register. For a
// loaded vector used by several FMAs: without it GCC folds the load into each FMA as a memory
// operand, loading the vector once per use, and a register-tiled kernel then runs at the speed
// of the load ports (matmul tiles measured 1.9x faster on AVX-512 with it). Only where Highway's
// vector wraps one native register; a no-op elsewhere.
template <typename V>
HWY_INLINE void keep_in_register(V& v) {
#if HWY_ARCH_X86 && (HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL) && defined(__GNUC__)
  __asm__("" : "+v"(v.raw));  // any of zmm0-31
#elif HWY_ARCH_X86 && (HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_SSE4) && defined(__GNUC__)
  __asm__("" : "+x"(v.raw));
#elif HWY_ARCH_ARM_A64 && HWY_TARGET == HWY_NEON && defined(__GNUC__)
  __asm__("" : "+w"(v.raw));
#else
  (void)v;
#endif
}

// The sum of v's lanes in lane order (0, 1, 2, ...): a fixed order, so a result does not depend
// on how the compiler would have associated a tree of shuffles. Results still depend on the
// lane count, that is on the target (docs/design.md, Determinism).
template <typename T>
HWY_INLINE T horizontal_sum(VecT<T> v) {
  const Tag<T> d;
  HWY_ALIGN T buf[detail::kMaxLanes<T>];
  hn::Store(v, d, buf);
  T s = 0;
  const std::int64_t n = lanes<T>();
  for (std::int64_t l = 0; l < n; ++l) s += buf[l];
  return s;
}

// dst[0, n) = src[0, n) for short runs (a row of a small plane): whole vectors, the last one
// overlapping the one before it, and no call to memmove, whose fixed cost is larger than the
// copy at these lengths (std::copy per row took a tenth of the seed model's step). Runs shorter
// than a vector go one element at a time, in a loop of fixed length that the compiler unrolls
// rather than turning back into a call. src and dst must not overlap.
template <typename T>
HWY_INLINE void copy_row(const T* HWY_RESTRICT src, std::int64_t n, T* HWY_RESTRICT dst) {
  const Tag<T> d;
  const std::int64_t L = lanes<T>();
  if (n >= L) {
    std::int64_t j = 0;
    for (; j + L < n; j += L) hn::StoreU(hn::LoadU(d, src + j), d, dst + j);
    hn::StoreU(hn::LoadU(d, src + n - L), d, dst + n - L);
    return;
  }
#pragma GCC unroll 16
  for (std::int64_t j = 0; j < detail::kMaxLanes<T>; ++j) {
    if (j < n) dst[j] = src[j];
  }
}

#if HWY_TARGET != HWY_SCALAR
using V4f = hn::Vec<hn::Full128<float>>;  // four floats, on every target but scalar

// The 4 x 4 transpose of four 128-bit vectors of float: o[j] = lane j of v0, v1, v2, v3.
HWY_INLINE void transpose4(V4f v0, V4f v1, V4f v2, V4f v3, V4f (&o)[4]) {
  const hn::Full128<float> d4;
  const auto t0 = hn::InterleaveLower(d4, v0, v1), t1 = hn::InterleaveLower(d4, v2, v3);
  const auto t2 = hn::InterleaveUpper(d4, v0, v1), t3 = hn::InterleaveUpper(d4, v2, v3);
  o[0] = hn::ConcatLowerLower(d4, t1, t0);
  o[1] = hn::ConcatUpperUpper(d4, t1, t0);
  o[2] = hn::ConcatLowerLower(d4, t3, t2);
  o[3] = hn::ConcatUpperUpper(d4, t3, t2);
}
#endif

// y[begin, end) after the output epilogue (Note [Epilogues] in graph/op.hpp): the selects of the
// ReLU and of its gradient, as their own kernels make them, so exact on every target (NaN
// propagates: the select is on v <= 0, false for NaN). Called by
// a kernel on each block of its output right after computing it, while the block is in cache.
template <typename T>
HWY_INLINE void apply_epilogue(const detail::OutputEpilogue<T>& ep, T* HWY_RESTRICT y,
                               std::int64_t begin, std::int64_t end) {
  if (ep.kind == detail::OutputEpilogue<T>::kRelu) {
    for (std::int64_t i = begin; i < end; ++i) {
      const T v = y[i];
      y[i] = v <= T(0) ? T(0) : v;
    }
  } else if (ep.kind == detail::OutputEpilogue<T>::kReluMask) {
    const T* HWY_RESTRICT m = ep.mask;
    for (std::int64_t i = begin; i < end; ++i) {
      const T v = y[i];
      y[i] = m[i] <= T(0) ? T(0) : v;
    }
  }
}

}  // namespace tbgrad::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // TBGRAD_OPS_SIMD_INL_H_
