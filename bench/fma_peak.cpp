// Prints this machine's peak single-precision FMA throughput: one core and all threads, with
// 64-byte vectors (AVX-512 under -march=native where the CPU has it; the width ops/simd.hpp
// uses) and 32-byte ones (AVX2), plus the clock it ran at and flops per cycle.
// Usage: fma_peak [threads] [seconds per trial]   (default: hardware threads, 0.2 s)
#include <cstdio>
#include <cstdlib>
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
#if defined(__AVX512F__)
  const char* isa = "AVX-512";
#elif defined(__AVX2__)
  const char* isa = "AVX2";
#else
  const char* isa = "no AVX2";
#endif
  const double ghz = measure_clock_ghz();
  std::printf("compiled for %s; core clock (dependent integer adds) %.2f GHz\n", isa, ghz);
  std::printf("%-22s %8s %12s %16s\n", "kernel", "threads", "GFLOP/s", "flops/cycle/core");
  for (int t : {1, threads}) {
    const FmaPeak p64 = measure_fma_peak<64>(t, seconds);
    const FmaPeak p32 = measure_fma_peak<32>(t, seconds);
    std::printf("%-22s %8d %12.1f %16.1f\n", "fma f32, 64-byte vec", t, p64.gflops,
                p64.gflops / t / ghz);
    std::printf("%-22s %8d %12.1f %16.1f\n", "fma f32, 32-byte vec", t, p32.gflops,
                p32.gflops / t / ghz);
    if (threads == 1) break;
  }
  return 0;
}
