// The one place kernels reach oneTBB: how work is split and how many threads run it.
//
// Note [Determinism]: results never depend on the thread count. parallel_for bodies write
// disjoint outputs, each output element computed by one task in a fixed order. Reductions whose
// result users see (weight gradients summed over a batch, loss sums) are split into chunks whose
// boundaries depend only on the problem size (fixed_chunks), each chunk reduced into its own slot
// of a workspace, and the slots combined serially in chunk order.
#pragma once

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>

#include "tbgrad/graph/tensor.hpp"

namespace tbgrad {

// The most threads set_num_threads accepts (docs/reliability.md, "Threads"). Far above any core
// count this library is tuned for; it keeps a typo (100000) from creating tens of thousands of
// OS threads.
inline constexpr int kMaxThreads = 1024;

// set_num_threads(n) could not start the n - 1 worker threads it needs (a process limit such as
// RLIMIT_NPROC, or no memory for their stacks). available() threads (the caller's included)
// could be started; nothing was changed, so the previous setting still holds.
class ThreadStartError : public Error {
 public:
  ThreadStartError(const std::string& message, int available)
      : Error(message), available_(available) {}
  int available() const { return available_; }

 private:
  int available_;
};

// Sets the number of threads kernels may use (1 = serial). 0 restores the default (all cores).
// Honoured exactly, also above the core count: it sizes both a tbb::global_control and the
// tbb::task_arena that executors run in. Throws Error for n outside [0, kMaxThreads], and
// ThreadStartError if the worker threads cannot be started (checked by starting them once,
// before TBB does, since TBB aborts the process when it cannot create a worker).
//
// Safe while other threads run executors: a run keeps the arena it started in until it ends,
// and the next run uses the new setting.
void set_num_threads(int n);
int num_threads();
int configured_num_threads();  // what set_num_threads last received (0 = default)
// set_num_threads for a count that worked before (ThreadScope's destructor): never throws; if
// the threads cannot be started again, it falls back to the default.
void restore_num_threads(int n) noexcept;

// RAII form, for tests and tools: restores the previous count on destruction.
class ThreadScope {
 public:
  explicit ThreadScope(int n) : previous_(configured_num_threads()) { set_num_threads(n); }
  ~ThreadScope() { restore_num_threads(previous_); }
  ThreadScope(const ThreadScope&) = delete;
  ThreadScope& operator=(const ThreadScope&) = delete;

 private:
  int previous_;
};

// Runs fn() inside the arena sized by set_num_threads (directly under a SerialScope, where
// nothing forks). Executors wrap each run in it. Takes a plain function pointer and context
// so that no std::function (which may allocate) is built.
void run_in_arena_raw(void (*fn)(void*), void* context);
// Takes lvalues and temporaries alike (run_in_arena([&] { ... })).
template <typename Fn>
void run_in_arena(Fn&& fn) {
  using F = std::remove_reference_t<Fn>;
  run_in_arena_raw([](void* f) { (*static_cast<F*>(f))(); },
                   const_cast<void*>(static_cast<const void*>(&fn)));
}

// While a SerialScope lives on a thread, parallel_for runs inline there: for callers that already
// split the work at a coarser level (one task per micro-batch) and want no nested fork/join.
int& serial_depth();
class SerialScope {
 public:
  SerialScope() { ++serial_depth(); }
  ~SerialScope() { --serial_depth(); }
  SerialScope(const SerialScope&) = delete;
  SerialScope& operator=(const SerialScope&) = delete;
};

namespace detail {
// Note [Upper vector state]: the Highway kernels' AVX2 and AVX-512 code leaves the upper halves
// of the vector registers "dirty", and on Intel cores legacy-SSE code run afterwards (everything
// outside the kernels is compiled for the x86-64 baseline) then pays for every instruction:
// measured on the Xeon (family 6 model 167) at batch 32, the softmax cross-entropy and its
// gradient took 113 and 88 us a step after the kernels, 3 to 5 us each with this, and the
// whole step 1094 us against 720 to 830 (bench/profile_step seed 32 1 30, target avx512). So
// every dispatch of a kernel, and every block a parallel_for runs (a kernel's blocks run on the
// worker threads), ends with end_vector_kernel(): a VZEROUPPER where the CPU has AVX, which
// costs a cycle or so where there is nothing to clear.
inline void end_vector_kernel() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool avx = __builtin_cpu_supports("avx");
  if (avx) __asm__ volatile("vzeroupper" ::: "memory");
#endif
}

}  // namespace detail

// Calls body(begin, end) over [0, n) in blocks. `grain` is the smallest block worth a task: pick
// it so one block is at least a few microseconds of work. A range of one block runs inline.
template <typename Body>
void parallel_for(std::int64_t n, std::int64_t grain, const Body& body) {
  if (n <= 0) return;
  grain = std::max<std::int64_t>(grain, 1);
  if (n <= grain || serial_depth() > 0) {
    body(std::int64_t{0}, n);
    return;
  }
  tbb::parallel_for(tbb::blocked_range<std::int64_t>(0, n, grain),
                    [&body](const tbb::blocked_range<std::int64_t>& r) {
                      body(r.begin(), r.end());
                      detail::end_vector_kernel();  // Note [Upper vector state]
                    });
}

// Like parallel_for with grain 1, but splits [0, n) evenly over the threads in the same way on
// every call (tbb::static_partitioner): with the same thread count, item i runs on the same
// thread each time, so the data it touched last call is still in that core's cache. For a few
// large items that each own a lot of memory (the trainer's micro-batches and their buffers).
template <typename Body>
void parallel_for_static(std::int64_t n, const Body& body) {
  if (n <= 0) return;
  if (n == 1 || serial_depth() > 0) {
    body(std::int64_t{0}, n);
    return;
  }
  tbb::parallel_for(
      tbb::blocked_range<std::int64_t>(0, n, 1),
      [&body](const tbb::blocked_range<std::int64_t>& r) {
        body(r.begin(), r.end());
        detail::end_vector_kernel();  // Note [Upper vector state]
      },
      tbb::static_partitioner());
}

// Number of chunks of at most `chunk` items covering n items: depends on n only (Note
// [Determinism]).
constexpr std::int64_t fixed_chunks(std::int64_t n, std::int64_t chunk) {
  return n <= 0 ? 0 : (n + chunk - 1) / chunk;
}

}  // namespace tbgrad
