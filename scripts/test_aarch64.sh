#!/usr/bin/env bash
# Cross build for AArch64 (Debian's g++-aarch64-linux-gnu and multiarch :arm64 libraries, see
# cmake/aarch64-linux-gnu.cmake) and the library's tests run under qemu-user: installs what is
# missing (as root; adds the arm64 dpkg architecture), configures, builds and runs ctest.
# Usage: scripts/test_aarch64.sh [extra cmake arguments]   (build dir: build-aarch64/, or $BUILD_DIR)
#        (also: scripts/test.sh --aarch64 [extra cmake arguments])
# Then builds tests/hwy_probe the same way and runs it (the Highway targets qemu dispatches to).
# ctest runs one process per test binary here (TBGRAD_TESTS_PER_BINARY, on in cross builds:
# starting qemu costs ~0.3 s a process, tests/CMakeLists.txt).
# Not built: the MNIST trainer and its tests, the benchmarks. Not run: the install test (a host
# consumer), and two of the three no-allocation models (lenet5, seed_nopool: 45 s each under
# qemu, the same code paths as the seed model's), left out with GTEST_FILTER (a negative
# filter: every other binary runs whole). To run every built test:
#   ctest --test-dir build-aarch64 -j "$(nproc)"
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build-aarch64}"
"$root/scripts/install_deps.sh" --with-aarch64
start=$SECONDS
# TBGRAD_NATIVE=OFF: -march=native would describe the host, not the target. The library's
# kernels run on NEON (SVE is not compiled: docs/design.md, SIMD targets).
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_TOOLCHAIN_FILE="$root/cmake/aarch64-linux-gnu.cmake" \
  -DTBGRAD_NATIVE=OFF -DTBGRAD_BUILD_APPS=OFF -DTBGRAD_BUILD_BENCH=OFF \
  "$@" > /dev/null
cmake --build "$build" -j "$(nproc)"
echo "tbgrad: aarch64 build done in $((SECONDS - start)) s; tests under $(qemu-aarch64 --version 2> /dev/null | head -n 1 || echo qemu)"
GTEST_FILTER='-Models/SteadyState.TrainingStepAllocatesNothing/lenet5:Models/SteadyState.TrainingStepAllocatesNothing/seed_nopool' \
  ctest --test-dir "$build" --output-on-failure -j "$(nproc)"
# Google Highway (libhwy-dev:arm64) found, linked and dispatching under qemu: tests/hwy_probe.
cmake -S "$root/tests/hwy_probe" -B "$build/hwy_probe" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_TOOLCHAIN_FILE="$root/cmake/aarch64-linux-gnu.cmake" > /dev/null
cmake --build "$build/hwy_probe" -j "$(nproc)" > /dev/null
if ! ctest --test-dir "$build/hwy_probe" -V > "$build/hwy_probe/ctest.log" 2>&1; then
  cat "$build/hwy_probe/ctest.log"
  exit 1
fi
sed -n 's/^1: \(supported\|dispatched\)/tbgrad: Highway under qemu, \1/p' "$build/hwy_probe/ctest.log"
echo "tbgrad: aarch64 build and tests done in $((SECONDS - start)) s"
