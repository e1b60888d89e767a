#!/usr/bin/env bash
# The whole test suite under a sanitizer: scripts/test.sh --asan | --tsan runs this.
# Usage: scripts/sanitize.sh asan|tsan [extra cmake arguments]
#   asan: AddressSanitizer + LeakSanitizer + UndefinedBehaviorSanitizer, build dir build-asan/
#   tsan: ThreadSanitizer, build dir build-tsan/, against a TSan-instrumented build of the
#         installed oneTBB version (scripts/build_tbb_tsan.sh, kept in build-tsan/tbb-tsan/)
# ($BUILD_DIR overrides the build dir.) Every process of the run, the tbgrad-mnist children the
# CLI tests start included, writes its sanitizer reports to <build>/sanitizer-logs/; the run
# fails if a test fails or if any report was written, and prints the reports.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mode="${1:?usage: scripts/sanitize.sh asan|tsan [cmake arguments]}"
shift
jobs="$(nproc)"

case "$mode" in
  asan)
    build="${BUILD_DIR:-$root/build-asan}"
    sanitize="address;undefined"
    ;;
  tsan)
    build="${BUILD_DIR:-$root/build-tsan}"
    sanitize="thread"
    ;;
  *)
    echo "scripts/sanitize.sh: unknown mode '$mode' (expected asan or tsan)" >&2
    exit 2
    ;;
esac

"$root/scripts/install_deps.sh" --with-torch
extra=()
if [[ "$mode" == tsan ]]; then
  # TSan needs TBB itself instrumented (scripts/build_tbb_tsan.sh explains why).
  "$root/scripts/build_tbb_tsan.sh" "$build/tbb-tsan"
  extra+=("-DTBB_DIR=$build/tbb-tsan/lib/cmake/TBB")
fi
# -O1 -g1 (RelWithDebInfo's flags replaced): the SIMD kernels' explicit vector code (Highway
# intrinsics, always inlined) is the same vector code at -O1 as in the real build, and -g1 keeps
# the line tables the reports need. Against -O2 -g this halves the build
# (docs/reliability.md#sanitizers).
# Without MPI: Open MPI is not instrumented and leaks at exit by design, so its processes would
# fill the logs with reports that are not ours (test_mpi skips; docs/distributed.md).
# Without the benchmarks: no test runs them, and under the sanitizers they took a minute of the
# build.
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" \
  -DTBGRAD_MPI=OFF \
  -DTBGRAD_BUILD_BENCH=OFF "-DTBGRAD_SANITIZE=$sanitize" "${extra[@]}" "$@" > /dev/null
cmake --build "$build" -j "$jobs"

logs="$build/sanitizer-logs"
rm -rf "$logs"
mkdir -p "$logs"
# exitcode=86: a process with a report never exits with an exit code a test expects (the CLI
# tests expect 1 for bad input, which is the sanitizers' default).
common="exitcode=86:log_path=$logs/report:print_summary=1"
export ASAN_OPTIONS="$common:detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1:strict_string_checks=1:detect_invalid_pointer_pairs=0"
export UBSAN_OPTIONS="$common:print_stacktrace=1:halt_on_error=1"
export LSAN_OPTIONS="$common"
export TSAN_OPTIONS="$common:halt_on_error=0:second_deadlock_stack=1:history_size=7"

status=0
ctest --test-dir "$build" --output-on-failure -j "$jobs" --timeout 1500 || status=$?

shopt -s nullglob
reports=("$logs"/report*)
if ((${#reports[@]} > 0)); then
  echo "scripts/sanitize.sh: ${#reports[@]} sanitizer report file(s) in $logs:" >&2
  for r in "${reports[@]}"; do
    echo "===== $r" >&2
    head -n 80 "$r" >&2
  done
  status=1
fi
if ((status == 0)); then
  echo "sanitize ($mode): all tests passed, no sanitizer reports"
fi
exit "$status"
