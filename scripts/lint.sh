#!/usr/bin/env bash
# Static analysis of the project's own code with clang-tidy and the checked-in .clang-tidy.
# Usage: scripts/lint.sh [FILE_REGEX]   (default: every .cpp of the project)
# Configures build-lint/ (compile commands only; nothing is built) and fails on any finding.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${LINT_BUILD_DIR:-$root/build-lint}"
filter="${1:-}"

"$root/scripts/install_deps.sh" --with-clang-tidy
tidy=$(command -v clang-tidy-14 || command -v clang-tidy)
runner=$(command -v run-clang-tidy-14 || command -v run-clang-tidy)
# clang as the compiler, so the compile commands hold only flags clang understands. The fuzz
# harnesses are compiled into test_fuzz_regressions, so they are checked as part of the tests.
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_EXPORT_COMPILE_COMMANDS=ON > /dev/null

# Project sources only (not build trees or the install-test consumer's generated files).
if [[ -z "$filter" ]]; then
  filter="$root/(graph|ops|autodiff|nn|apps/mnist|tests|fuzz|examples|bench)/[^/]*\\.cpp$"
fi
"$runner" -clang-tidy-binary "$tidy" -p "$build" -j "$(nproc)" -quiet \
  -extra-arg=-Wno-unknown-warning-option "$filter" 2>&1 |
  sed -r 's/\x1b\[[0-9;]*m//g' > "$build/clang-tidy.log" || true
# run-clang-tidy's exit code does not always reflect findings; count them from the log (colour
# codes stripped above).
grep -E '^/.*:[0-9]+:[0-9]+: (warning|error):' "$build/clang-tidy.log" | sort -u > "$build/findings.txt" || true
findings=$(wc -l < "$build/findings.txt")
checked=$(grep -cE '^[^ ]*clang-tidy[^ ]* ' "$build/clang-tidy.log" || true)
if ((findings > 0)); then
  cat "$build/findings.txt"
  echo "scripts/lint.sh: $findings clang-tidy finding(s) in $checked translation units; full log: $build/clang-tidy.log" >&2
  exit 1
fi
if ((checked == 0)); then
  echo "scripts/lint.sh: clang-tidy checked nothing; see $build/clang-tidy.log" >&2
  exit 1
fi
echo "lint: clang-tidy clean ($checked translation units)"
