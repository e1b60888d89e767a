#!/usr/bin/env bash
# The test command: installs what is missing, configures, builds and runs every test.
# Usage: scripts/test.sh [extra cmake arguments]   (build dir: build/, or $BUILD_DIR)
#        scripts/test.sh --asan [extra cmake arguments]   AddressSanitizer + UBSan (build-asan/)
#        scripts/test.sh --tsan [extra cmake arguments]   ThreadSanitizer (build-tsan/)
#        scripts/test.sh --aarch64 [extra cmake arguments]   AArch64 cross build, tests under
#                                                            qemu (build-aarch64/; scripts/test_aarch64.sh)
# The sanitizer runs fail on the first report (see docs/reliability.md).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ "${1:-}" == "--asan" || "${1:-}" == "--tsan" ]]; then
  mode="${1#--}"
  shift
  exec "$root/scripts/sanitize.sh" "$mode" "$@"
fi
if [[ "${1:-}" == "--aarch64" ]]; then
  shift
  exec "$root/scripts/test_aarch64.sh" "$@"
fi
build="${BUILD_DIR:-$root/build}"
"$root/scripts/install_deps.sh" --with-torch
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" > /dev/null
cmake --build "$build" -j "$(nproc)"
ctest --test-dir "$build" --output-on-failure -j "$(nproc)"
