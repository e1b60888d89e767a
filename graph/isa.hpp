// Which SIMD target the kernels run on (Note [Vector widths] in ops/simd.hpp).
//
// One build of the library holds every op's vectorised kernels compiled for several targets;
// on x86-64: "avx512" (Highway's AVX3: AVX-512 F/VL/DQ/BW), "avx2" (AVX2 + FMA), "sse4" and
// "scalar"; on AArch64: "neon" (SVE is not compiled: docs/design.md, SIMD targets). The best
// one this CPU supports is used, unless capped: by the environment variable TBGRAD_MAX_ISA (read
// once, the first time a kernel target is needed), or by set_max_isa(). As with oneDNN's ONEDNN_MAX_CPU_ISA, a cap
// above what the CPU supports changes nothing. A build with -DTBGRAD_NATIVE=ON compiles only
// the build machine's best target, so it cannot be capped below it.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace tbgrad {

// The target kernels run on now, e.g. "avx2".
std::string isa();

// Every target of this build that this CPU supports, best first (the list caps choose from).
std::vector<std::string> supported_isas();

// Every target name set_max_isa() accepts in this build, best first.
std::vector<std::string> known_isas();

// Caps the target at `name` (one of known_isas(), or "" / "best" to lift the cap). Throws
// tbgrad::Error naming the accepted values for an unknown name, or for a cap below every
// target this build holds. Takes effect for kernels started afterwards: call it before
// running executors, not while they run on other threads.
void set_max_isa(std::string_view name);

namespace detail {
// Applies TBGRAD_MAX_ISA the first time it is called (throws tbgrad::Error on a bad value,
// naming the variable); executors call it when they are built.
void init_isa();
}  // namespace detail

}  // namespace tbgrad
