#!/usr/bin/env bash
# The first command: installs what is missing, fetches and verifies MNIST, builds Release and
# trains the default model (extra arguments go to 'tbgrad-mnist train').
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"
"$root/scripts/install_deps.sh" --with-npm
"$root/scripts/fetch_mnist.sh" "$root/data/mnist"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build "$build" -j "$(nproc)" --target tbgrad-mnist
cd "$root"
exec "$build/apps/tbgrad-mnist" train --data "$root/data/mnist" "$@"
