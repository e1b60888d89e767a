#!/usr/bin/env bash
# Builds the libFuzzer targets (clang) and runs each for a bounded time, one after another.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET defaults to 30; TARGETs default to all seven:
#   fuzz_idx fuzz_idx_gz fuzz_checkpoint fuzz_image fuzz_trainer fuzz_cifar fuzz_png
# Build dir: build-fuzz/ (or $FUZZ_BUILD_DIR). The corpus each run grows is kept in
# <build>/corpus/<target> and reused by the next run; seeds are regenerated every time
# (fuzz/seeds.cpp) and every file of fuzz/regressions/<target>/ is replayed once first. A crash leaves its
# input in <build>/artifacts/<target>/: copy it into fuzz/regressions/<target>/ once fixed, and
# ctest's fuzz_regressions test replays it from then on. Exits 1 if any target found something.
# FUZZ_SEED=N fixes libFuzzer's random seed (default: a fresh one each run). CI sets it, so that
# its fuzz step on a fresh clone (no corpus yet) tries the same inputs every time, a prefix of
# what a longer run with that seed tries: exploration is the job of long runs with fresh seeds,
# and what they find is kept in fuzz/regressions/, which CI replays.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-30}"
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(fuzz_idx fuzz_idx_gz fuzz_checkpoint fuzz_image fuzz_trainer fuzz_cifar fuzz_png)
fi
build="${FUZZ_BUILD_DIR:-$root/build-fuzz}"
seed=()
if [[ -n "${FUZZ_SEED:-}" ]]; then
  [[ "$FUZZ_SEED" =~ ^[1-9][0-9]*$ ]] || { echo "scripts/fuzz.sh: FUZZ_SEED must be a positive integer" >&2; exit 2; }
  seed=("-seed=$FUZZ_SEED")
fi

"$root/scripts/install_deps.sh" --with-clang
if ! command -v clang++ > /dev/null; then
  echo "scripts/fuzz.sh: clang++ is needed (Debian: apt-get install clang libclang-rt-14-dev)" >&2
  exit 1
fi
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTBGRAD_FUZZ=ON -DTBGRAD_BUILD_TESTS=OFF -DTBGRAD_BUILD_APPS=OFF -DTBGRAD_BUILD_BENCH=OFF \
  -DTBGRAD_NATIVE=OFF > /dev/null
cmake --build "$build" -j "$(nproc)" --target fuzz_all

rm -rf "$build/seeds"
"$build/fuzz/make_seeds" "$build/seeds"

summary="$build/fuzz-summary.txt"
printf '%-16s %8s %12s %10s %8s %s\n' target seconds executions exec/s corpus result > "$summary"
status=0
for target in "${targets[@]}"; do
  short="${target#fuzz_}"
  corpus="$build/corpus/$short"
  artifacts="$build/artifacts/$short"
  regressions="$root/fuzz/regressions/$short"
  log="$build/logs/$target.log"
  mkdir -p "$corpus" "$artifacts" "$regressions" "$build/logs"
  dict=()
  [[ -f "$root/fuzz/$short.dict" ]] && dict=("-dict=$root/fuzz/$short.dict")
  echo "== $target: ${seconds}s (log: $log)"
  result=ok
  rm -f "$log.replay"
  # -malloc_limit_mb: one allocation above 256 MiB counts as a finding ("huge allocation");
  # the largest legitimate one is a 64-Mpixel image (64 MiB). -timeout: one input over 10 s is
  # a finding (a hang).
  # The kept regressions are replayed once each, not fuzzed from: some are deliberately huge
  # (a 64-Mpixel PNG) and, in the corpus, would take most of the run's executions.
  regression_files=("$regressions"/*)
  if [[ -e "${regression_files[0]}" ]]; then
    "$build/fuzz/$target" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=256 \
      -artifact_prefix="$artifacts/" "${regression_files[@]}" > "$log.replay" 2>&1 || result=FAILED
  fi
  "$build/fuzz/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -malloc_limit_mb=256 -print_final_stats=1 -artifact_prefix="$artifacts/" "${seed[@]}" "${dict[@]}" \
    "$corpus" "$build/seeds/$short" > "$log" 2>&1 || result=FAILED
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  files=$(find "$corpus" -type f | wc -l)
  if [[ "$result" != ok ]]; then
    status=1
    for f in "$log.replay" "$log"; do
      [[ -f "$f" ]] || continue
      grep -E "ERROR|SUMMARY|invariant|Test unit written" "$f" | head -n 20 >&2 || true
      tail -n 40 "$f" >&2
    done
  fi
  printf '%-16s %8s %12s %10s %8s %s\n' "$target" "$seconds" "${execs:-?}" "${rate:-?}" "$files" \
    "$result" | tee -a "$summary"
done
echo "fuzz summary: $summary"
cat "$summary"
exit "$status"
