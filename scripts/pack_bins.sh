#!/usr/bin/env bash
# Copies a build's tbgrad-mnist and bench tools with the shared libraries they need (TBB, Boost
# program_options, libpng, tbgrad) into DIR, for a machine that lacks them; gzips MNIST beside.
# Usage: scripts/pack_bins.sh BUILD_DIR DIR
set -euo pipefail
build=$1
out=$2
mkdir -p "$out/bin" "$out/mnist"
for exe in apps/tbgrad-mnist bench/profile_step bench/fma_peak; do
  [[ -x "$build/$exe" ]] && cp "$build/$exe" "$out/bin/"
done
for lib in $(ldd "$build/apps/tbgrad-mnist" "$build/bench/profile_step" | awk '/=> \// { print $3 }' |
  grep -E 'tbgrad|tbb|boost|png' | sort -u); do
  cp -L "$lib" "$out/bin/"
done
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
for f in "$root"/data/mnist/*-ubyte; do
  [[ -f "$out/mnist/$(basename "$f").gz" ]] || gzip -c "$f" > "$out/mnist/$(basename "$f").gz"
done
