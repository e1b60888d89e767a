#include "graph/parallel.hpp"

#include <tbb/global_control.h>
#include <tbb/info.h>
#include <tbb/task_arena.h>

#include <memory>
#include <mutex>
#include <stdexcept>

namespace tbgrad {
namespace {

struct ThreadConfig {
  std::mutex mutex;
  int threads = 0;  // 0: TBB's default
  std::unique_ptr<tbb::global_control> control;
  std::unique_ptr<tbb::task_arena> arena;
};

ThreadConfig& config() {
  static ThreadConfig c;
  return c;
}

}  // namespace

void set_num_threads(int n) {
  if (n < 0) throw std::invalid_argument("set_num_threads: thread count must be >= 0");
  ThreadConfig& c = config();
  std::lock_guard<std::mutex> lock(c.mutex);
  c.arena.reset();
  c.control.reset();
  c.threads = n;
  if (n > 0) {
    // global_control lifts TBB's worker limit (it defaults to the core count); the arena then
    // asks for exactly n slots.
    c.control = std::make_unique<tbb::global_control>(
        tbb::global_control::max_allowed_parallelism, static_cast<std::size_t>(n));
    c.arena = std::make_unique<tbb::task_arena>(n);
  }
}

int num_threads() {
  ThreadConfig& c = config();
  std::lock_guard<std::mutex> lock(c.mutex);
  return c.threads > 0 ? c.threads : tbb::info::default_concurrency();
}

int& serial_depth() {
  thread_local int depth = 0;
  return depth;
}

int configured_num_threads() {
  ThreadConfig& c = config();
  std::lock_guard<std::mutex> lock(c.mutex);
  return c.threads;
}

void run_in_arena_raw(void (*fn)(void*), void* context) {
  tbb::task_arena* arena = config().arena.get();
  if (arena && serial_depth() == 0) {
    arena->execute([fn, context] { fn(context); });
  } else {
    fn(context);
  }
}

}  // namespace tbgrad
