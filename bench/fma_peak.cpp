// Prints this machine's peak single-precision FMA throughput on every SIMD target of this build
// that the CPU supports (or only the one TBGRAD_MAX_ISA caps it at: then the targets below it),
// at one thread and at all threads, plus the clock it ran at and flops per cycle.
// Usage: fma_peak [threads] [seconds per trial]   (default: hardware threads, 0.2 s)
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "fma_peak.hpp"

int main(int argc, char** argv) {
  using namespace tbgrad::bench;
  const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int threads = argc > 1 ? std::atoi(argv[1]) : hw;
  const double seconds = argc > 2 ? std::atof(argv[2]) : 0.2;
  if (threads < 1 || seconds <= 0) {
    std::fprintf(stderr, "usage: fma_peak [threads >= 1] [seconds per trial > 0]\n");
    return 2;
  }
  std::string capped;
  try {
    capped = tbgrad::isa();  // the best target allowed (TBGRAD_MAX_ISA may cap it)
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fma_peak: %s\n", e.what());
    return 2;
  }
  const double ghz = measure_clock_ghz();
  std::printf("SIMD targets of this build on this CPU: ");
  for (const std::string& t : tbgrad::supported_isas()) std::printf("%s ", t.c_str());
  std::printf("(in use: %s); core clock (dependent integer adds) %.2f GHz\n", capped.c_str(), ghz);
  std::printf("%-8s %8s %12s %16s\n", "target", "threads", "GFLOP/s", "flops/cycle/core");
  bool below_cap = false;
  for (const std::string& t : tbgrad::supported_isas()) {
    below_cap = below_cap || t == capped;
    if (!below_cap) continue;
    tbgrad::set_max_isa(t);
    for (int n : {1, threads}) {
      const FmaPeak p = measure_fma_peak(n, seconds);
      std::printf("%-8s %8d %12.1f %16.1f\n", p.isa.c_str(), n, p.gflops, p.gflops / n / ghz);
      if (threads == 1) break;
    }
  }
  return 0;
}
