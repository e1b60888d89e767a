#!/usr/bin/env bash
# The library and its op tests built with clang and -Werror (the Highway kernels must compile
# with GCC and clang alike), then the op tests run; and tests/test_api.cpp, the public API's
# calling forms, which both compilers must accept.
# Usage: scripts/test_clang.sh [BUILD_DIR [extra cmake arguments]]   (default: build-clang/;
#        x86-64 target names; CI passes -DCMAKE_CXX_FLAGS=-march=x86-64-v3, an AVX2 CPU's level)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build-clang}"
shift || true
"$root/scripts/install_deps.sh" --with-clang
CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTBGRAD_WERROR=ON \
  -DTBGRAD_BUILD_APPS=OFF -DTBGRAD_BUILD_BENCH=OFF "$@" > /dev/null
cmake --build "$build" -j "$(nproc)" --target test_ops_forward test_ops_gradcheck test_isa test_core \
  test_api
# The op tests at the default target and capped at each lower one (tests/isa_main.cpp skips a
# cap this CPU lacks or that is its best), then the core, target-selection and API tests.
for isa in "" avx2 sse4 scalar; do
  for t in test_ops_forward test_ops_gradcheck; do
    TBGRAD_MAX_ISA=$isa "$build/tests/$t" --gtest_brief=1
  done
done
for t in test_isa test_core test_api; do "$build/tests/$t" --gtest_brief=1; done
echo "clang: library and op tests passed"
