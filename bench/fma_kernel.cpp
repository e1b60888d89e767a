// The FMA peak kernel of bench/fma_peak.hpp, compiled once per SIMD target (Highway's
// foreach_target.h) and dispatched to the target the library runs on (graph/isa.hpp).
//
// kChains independent accumulators of one vector each, every one updated by acc = acc * m + a
// (one fused multiply-add per lane, 2 flops) per loop trip. Independent chains hide the FMA
// latency (4 cycles on recent x86 cores, 2 FMA pipes: at least 8 chains in flight); 16 chains on
// 32-register targets, 12 on 16-register ones, so nothing spills. SSE4 has no FMA: its "FMA" is
// a multiply and an add (4 flops per lane per trip counted as 2, as for the kernels).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "bench/fma_kernel.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include "fma_peak.hpp"
#include "ops/simd-inl.hpp"

HWY_BEFORE_NAMESPACE();
namespace tbgrad::HWY_NAMESPACE {

constexpr int kChains = kVectorRegisters >= 32 ? 16 : 12;

HWY_NOINLINE float FmaRun(std::int64_t trips, float m, float a) {
  const Tag<float> d;
  using V = VecT<float>;
  // Read through volatiles: with known constants the compiler could fold a chain that starts at
  // its fixed point a / (1 - m) away entirely.
  volatile float opaque_m = m, opaque_a = a, opaque_start = 1.0f;
  V acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = hn::Set(d, opaque_start * static_cast<float>(c + 1));
  const V vm = hn::Set(d, opaque_m), va = hn::Set(d, opaque_a);
  for (std::int64_t t = 0; t < trips; ++t) {
#pragma GCC unroll 16
    for (int c = 0; c < kChains; ++c) acc[c] = hn::MulAdd(acc[c], vm, va);
  }
  V s = acc[0];
  for (int c = 1; c < kChains; ++c) s = hn::Add(s, acc[c]);
  return horizontal_sum<float>(s);
}

double FmaFlopsPerTrip() { return 2.0 * kChains * static_cast<double>(lanes<float>()); }

}  // namespace tbgrad::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace tbgrad::bench {
HWY_EXPORT(FmaRun);
HWY_EXPORT(FmaFlopsPerTrip);
float fma_run(std::int64_t trips, float m, float a) {
  return HWY_DYNAMIC_DISPATCH(FmaRun)(trips, m, a);
}
double fma_flops_per_trip() { return HWY_DYNAMIC_DISPATCH(FmaFlopsPerTrip)(); }
}  // namespace tbgrad::bench
#endif
