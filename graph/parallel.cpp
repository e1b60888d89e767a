#include "graph/parallel.hpp"

#include <pthread.h>
#include <tbb/global_control.h>
#include <tbb/info.h>
#include <tbb/task_arena.h>

#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

namespace tbgrad {
namespace {

struct ThreadConfig {
  std::mutex mutex;
  int threads = 0;  // 0: TBB's default
  std::unique_ptr<tbb::global_control> control;
  // Shared: a run holds its own reference, so set_num_threads on another thread never frees
  // the arena under a running executor (the old one goes when its last run ends).
  std::shared_ptr<tbb::task_arena> arena;
};

ThreadConfig& config() {
  static ThreadConfig c;
  return c;
}

// Starts `count` threads with TBB's worker stack size, all alive at once, then ends them: TBB
// terminates the process when it cannot create a worker, so set_num_threads finds out first.
// Returns how many could be started and, when not all, the error of the first that failed.
int probe_threads(int count, int& error) {
  struct Gate {
    std::mutex mutex;
    std::condition_variable cv;
    bool open = false;
  } gate;
  auto body = [](void* arg) -> void* {
    auto* g = static_cast<Gate*>(arg);
    std::unique_lock<std::mutex> lock(g->mutex);
    g->cv.wait(lock, [g] { return g->open; });
    return nullptr;
  };
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  const std::size_t stack =
      tbb::global_control::active_value(tbb::global_control::thread_stack_size);
  if (stack > 0) pthread_attr_setstacksize(&attr, stack);
  std::vector<pthread_t> started;
  started.reserve(static_cast<std::size_t>(count));
  error = 0;
  for (int i = 0; i < count; ++i) {
    pthread_t t;
    const int rc = pthread_create(&t, &attr, +body, &gate);
    if (rc != 0) {
      error = rc;
      break;
    }
    started.push_back(t);
  }
  pthread_attr_destroy(&attr);
  {
    std::lock_guard<std::mutex> lock(gate.mutex);
    gate.open = true;
  }
  gate.cv.notify_all();
  for (pthread_t t : started) pthread_join(t, nullptr);
  return static_cast<int>(started.size());
}

void apply(ThreadConfig& c, int n) {
  // Old control first: with two max_allowed_parallelism controls alive TBB uses the smaller.
  c.arena.reset();
  c.control.reset();
  c.threads = n;
  if (n > 0) {
    // global_control lifts TBB's worker limit (it defaults to the core count); the arena then
    // asks for exactly n slots.
    c.control = std::make_unique<tbb::global_control>(
        tbb::global_control::max_allowed_parallelism, static_cast<std::size_t>(n));
    c.arena = std::make_shared<tbb::task_arena>(n);
  }
}

}  // namespace

void set_num_threads(int n) {
  if (n < 0 || n > kMaxThreads) {
    throw Error("set_num_threads: the thread count must be between 0 (the default) and " +
                std::to_string(kMaxThreads) + ", got " + std::to_string(n));
  }
  ThreadConfig& c = config();
  std::lock_guard<std::mutex> lock(c.mutex);
  if (n > 1) {
    int error = 0;
    const int started = probe_threads(n - 1, error);
    if (started < n - 1) {
      throw ThreadStartError("set_num_threads(" + std::to_string(n) + "): only " +
                                 std::to_string(started + 1) +
                                 " threads could be started (creating a thread failed: " +
                                 std::strerror(error) + ")",
                             started + 1);
    }
  }
  apply(c, n);
}

void restore_num_threads(int n) noexcept {
  try {
    set_num_threads(n);
  } catch (...) {
    ThreadConfig& c = config();
    std::lock_guard<std::mutex> lock(c.mutex);
    apply(c, 0);
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
  if (serial_depth() > 0) {
    fn(context);
    return;
  }
  std::shared_ptr<tbb::task_arena> arena;  // copied, not allocated: no heap use per run
  {
    ThreadConfig& c = config();
    std::lock_guard<std::mutex> lock(c.mutex);
    arena = c.arena;
  }
  if (arena) {
    arena->execute([fn, context] { fn(context); });
  } else {
    fn(context);
  }
}

}  // namespace tbgrad
