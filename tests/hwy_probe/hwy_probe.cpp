// Prints the Highway targets compiled in, those this CPU (or qemu) supports, the one
// HWY_DYNAMIC_DISPATCH picks, and each target's lane counts; fails if a target's dot product
// is wrong. Re-included once per target by foreach_target.h.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "hwy_probe.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <vector>

#ifndef HWY_PROBE_RESULT
#define HWY_PROBE_RESULT
struct ProbeResult {
  const char* target;
  std::size_t f32_lanes, f64_lanes;
  float dot;
};
#endif

HWY_BEFORE_NAMESPACE();
namespace probe::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

ProbeResult Probe(const float* x, const float* y, std::size_t n) {
  const hn::ScalableTag<float> d;
  const hn::ScalableTag<double> dd;
  const std::size_t lanes = hn::Lanes(d);
  auto acc = hn::Zero(d);
  for (std::size_t i = 0; i + lanes <= n; i += lanes) {
    acc = hn::MulAdd(hn::LoadU(d, x + i), hn::LoadU(d, y + i), acc);
  }
  return {hwy::TargetName(HWY_TARGET), lanes, hn::Lanes(dd), hn::GetLane(hn::SumOfLanes(d, acc))};
}

}  // namespace probe::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace probe {
HWY_EXPORT(Probe);

void print_targets(const char* what, std::int64_t targets) {
  std::printf("%s:", what);
  for (std::int64_t bit = 1; bit != 0 && bit <= targets; bit <<= 1) {
    if (targets & bit) std::printf(" %s", hwy::TargetName(bit));
  }
  std::printf("\n");
}
}  // namespace probe

int main() {
  const std::size_t n = 4096;  // a multiple of every target's lane count
  std::vector<float> x(n, 1.0f), y(n, 0.5f);
  probe::print_targets("compiled", HWY_TARGETS);
  probe::print_targets("supported", hwy::SupportedTargets());
  const ProbeResult chosen = HWY_DYNAMIC_DISPATCH(probe::Probe)(x.data(), y.data(), n);
  std::printf("dispatched: %s\n", chosen.target);
  int failures = 0;
  for (std::int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    const ProbeResult r = HWY_DYNAMIC_DISPATCH(probe::Probe)(x.data(), y.data(), n);
    const bool ok = r.dot == 0.5f * n;
    failures += !ok;
    std::printf("  %-8s f32 lanes %3zu (%4zu bits), f64 lanes %3zu, dot %s\n", r.target, r.f32_lanes,
                r.f32_lanes * 32, r.f64_lanes, ok ? "ok" : "WRONG");
  }
  hwy::SetSupportedTargetsForTest(0);
  return failures == 0 ? 0 : 1;
}
#endif  // HWY_ONCE
