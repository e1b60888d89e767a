#include "graph/isa.hpp"

#include <hwy/highway.h>
#include <hwy/targets.h>

#include <cstdint>
#include <cstdlib>
#include <mutex>

#include "graph/tensor.hpp"

namespace tbgrad {
namespace {

struct Target {
  const char* name;
  std::int64_t bits;  // the Highway targets this name stands for
};

// Every name of this architecture, best first (Highway gives better targets lower bits).
std::vector<Target> all_targets() {
  return {
#if HWY_ARCH_X86
      {"avx512", HWY_AVX3_DL | HWY_AVX3},
      {"avx2", HWY_AVX2},
      {"sse4", HWY_SSE4},
#elif HWY_ARCH_ARM
      {"sve2", HWY_SVE2_128 | HWY_SVE2},
      {"sve", HWY_SVE_256 | HWY_SVE},
      {"neon", HWY_NEON},
#endif
      {"scalar", HWY_EMU128 | HWY_SCALAR},
  };
}

// Those compiled into this build (HWY_TARGETS: the same in every file of the library).
std::vector<Target> compiled_targets() {
  std::vector<Target> out;
  for (const Target& t : all_targets()) {
    if ((t.bits & HWY_TARGETS) != 0) out.push_back({t.name, t.bits & HWY_TARGETS});
  }
  return out;
}

std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (const std::string& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

struct State {
  std::mutex mutex;
  bool initialised = false;
  std::int64_t cpu = 0;       // what the CPU supports, read before any cap
  std::int64_t disabled = 0;  // the cap, as the targets it disables
  std::string env_error;  // a bad TBGRAD_MAX_ISA, reported on every use, not only the first
};

State& state() {
  static State s;
  return s;
}

// Highway 1.0.3's DisableTargets only masks what SupportedTargets() reports, and
// SupportedTargets() itself resets the dispatch tables' choice (GetChosenTarget()) to every
// target the CPU has before applying the mask; so the choice is updated again right after, and
// nothing else here calls SupportedTargets() (isa() reads the state kept below instead).
void disable_targets(State& s, std::int64_t mask) {
  s.disabled = mask;
  hwy::DisableTargets(mask);
  hwy::GetChosenTarget().Update(hwy::SupportedTargets());
}

// With the mutex held.
void initialise(State& s) {
  if (s.initialised) return;
  disable_targets(s, 0);
  s.cpu = hwy::SupportedTargets();
  s.initialised = true;
}

// With the mutex held; `source` names who asked, for the error.
void apply_cap(State& s, std::string_view name, const std::string& source) {
  if (name.empty() || name == "best") {
    disable_targets(s, 0);
    return;
  }
  for (const Target& t : compiled_targets()) {
    if (name != t.name) continue;
    const std::int64_t best_bit = t.bits & -t.bits;
    disable_targets(s, best_bit - 1);  // every target better than the cap
    return;
  }
  std::string hint;
  for (const Target& t : all_targets()) {
    if (name == t.name) {
      hint = " (not compiled into this build: a -DTBGRAD_NATIVE=ON build holds only the build "
             "machine's best target, and no build holds SVE)";
    }
  }
  throw Error(source + ": unknown SIMD target '" + std::string(name) + "'" + hint +
              "; this build knows: " + joined(known_isas()) + " (or 'best')");
}

}  // namespace

namespace detail {
void init_isa() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.initialised) {
    initialise(s);
    if (const char* env = std::getenv("TBGRAD_MAX_ISA")) {
      try {
        apply_cap(s, env, "TBGRAD_MAX_ISA");
      } catch (const Error& e) {
        s.env_error = e.what();
      }
    }
  }
  if (!s.env_error.empty()) throw Error(s.env_error);
}
}  // namespace detail

std::vector<std::string> known_isas() {
  std::vector<std::string> out;
  for (const Target& t : compiled_targets()) out.emplace_back(t.name);
  return out;
}

std::vector<std::string> supported_isas() {
  detail::init_isa();
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  std::vector<std::string> out;
  for (const Target& t : compiled_targets()) {
    if ((t.bits & s.cpu) != 0) out.emplace_back(t.name);
  }
  return out;
}

std::string isa() {
  detail::init_isa();
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  const std::int64_t usable = s.cpu & ~s.disabled & HWY_TARGETS;
  const std::int64_t best = usable != 0 ? usable & -usable : HWY_STATIC_TARGET;
  for (const Target& t : compiled_targets()) {
    if ((t.bits & best) != 0) return t.name;
  }
  return hwy::TargetName(best);
}

void set_max_isa(std::string_view name) {
  detail::init_isa();
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  apply_cap(s, name, "set_max_isa");
}

}  // namespace tbgrad
