// Measures this machine's peak single-precision FMA throughput on the SIMD target the library
// runs on (graph/isa.hpp; TBGRAD_MAX_ISA or set_max_isa choose another), the yardstick the op
// benchmarks report their `peak_fraction` against. The kernel is in bench/fma_kernel.cpp.
//
// m < 1 and a > 0 keep every accumulator at a normal number near a / (1 - m), so no denormal or
// overflow slows the loop down.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "graph/isa.hpp"

namespace tbgrad::bench {

// Runs `trips` loop trips on the current target; returns a value depending on every
// accumulator so nothing is optimised away. flops = trips * fma_flops_per_trip().
float fma_run(std::int64_t trips, float m, float a);
double fma_flops_per_trip();

struct FmaPeak {
  double gflops = 0;  // best over the trials, all threads together
  int threads = 1;
  std::string isa;    // the target it ran on
};

// Best GFLOP/s over `trials` runs of about `seconds` each, with `threads` std::threads running
// the kernel at once (each thread's flops over the slowest thread's time). The best, not the
// median: on a busy machine slowdowns only ever come from outside, so the maximum is the
// estimate of what the core can do.
inline FmaPeak measure_fma_peak(int threads = 1, double seconds = 0.1, int trials = 5) {
  using clock = std::chrono::steady_clock;
  // Calibrate the trip count on one thread.
  std::int64_t trips = 1 << 16;
  volatile float sink = 0;
  for (;;) {
    const auto t0 = clock::now();
    sink = sink + fma_run(trips, 0.999f, 1e-3f);
    const double dt = std::chrono::duration<double>(clock::now() - t0).count();
    if (dt >= seconds / 4 || trips > (std::int64_t{1} << 40)) {
      trips = static_cast<std::int64_t>(static_cast<double>(trips) * seconds / std::max(dt, 1e-9));
      break;
    }
    trips *= 4;
  }
  trips = std::max<std::int64_t>(trips, 1024);
  FmaPeak best{0, threads, tbgrad::isa()};
  for (int trial = 0; trial < trials; ++trial) {
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::vector<double> elapsed(static_cast<std::size_t>(threads), 0);
    std::vector<float> result(static_cast<std::size_t>(threads), 0);
    auto body = [&](int i) {
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) {
      }
      const auto t0 = clock::now();
      result[static_cast<std::size_t>(i)] = fma_run(trips, 0.999f, 1e-3f);
      elapsed[static_cast<std::size_t>(i)] =
          std::chrono::duration<double>(clock::now() - t0).count();
    };
    std::vector<std::thread> pool;
    for (int i = 1; i < threads; ++i) pool.emplace_back(body, i);
    while (ready.load() < threads - 1) std::this_thread::yield();
    go.store(true, std::memory_order_release);
    body(0);
    for (auto& t : pool) t.join();
    for (float r : result) sink = sink + r;
    const double slowest = *std::max_element(elapsed.begin(), elapsed.end());
    const double gflops =
        static_cast<double>(trips) * fma_flops_per_trip() * threads / slowest * 1e-9;
    best.gflops = std::max(best.gflops, gflops);
  }
  return best;
}

// The core clock in GHz, from a chain of dependent integer adds (one cycle each on every x86
// core of the last two decades). Best of `trials`; for turning GFLOP/s into flops per cycle.
inline double measure_clock_ghz(int trials = 5) {
  using clock = std::chrono::steady_clock;
  constexpr std::int64_t kTrips = 2'000'000;
  double best = 0;
  for (int trial = 0; trial < trials; ++trial) {
    std::uint64_t x = 0;
    const auto t0 = clock::now();
    for (std::int64_t t = 0; t < kTrips; ++t) {
#if defined(__x86_64__)
      // 32 dependent adds per trip; the loop's own increment and branch run alongside.
      asm volatile(
          ".rept 32\n\t"
          "add $1, %0\n\t"
          ".endr"
          : "+r"(x));
#else
      x += 1;
      asm volatile("" : "+r"(x));
#endif
    }
    const double dt = std::chrono::duration<double>(clock::now() - t0).count();
#if defined(__x86_64__)
    best = std::max(best, 32.0 * kTrips / dt * 1e-9);
#else
    best = std::max(best, 1.0 * kTrips / dt * 1e-9);
#endif
    if (x == 42) best += 0;  // x is used
  }
  return best;
}

}  // namespace tbgrad::bench
