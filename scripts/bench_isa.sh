#!/usr/bin/env bash
# The per-SIMD-target benchmark of docs/performance.md, in one invocation: the CPU (lscpu model
# name and SIMD flags), each target's FMA peak (fma_peak), then for each target the seed
# model's ops at batch 32 on one thread with their fraction of that target's peak (bench_ops +
# bench/summarize_ops.py) and the epoch benchmark at 1 and 2 threads (scripts/bench_epoch.sh,
# PyTorch in the same run unless --no-torch), each target capped with TBGRAD_MAX_ISA (and
# PyTorch capped to it alike: bench_epoch.sh's header).
#
#   bash scripts/bench_isa.sh [--isas avx512,avx2,sse4] [--reps 5] [--no-torch] [--no-ops]
#                             [--build-dir build] [--out bench-isa]
#
# Default targets: every one this build and CPU support except scalar. Results go to --out
# (fma_peak.txt, ops-ISA.json/.md, epoch-ISA.txt) and the summaries to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
isas="" reps=5 torch=() ops=1 build=build out=bench-isa
while [[ $# -gt 0 ]]; do
  case "$1" in
    --isas) isas=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --no-torch) torch=(--no-torch); shift ;;
    --no-ops) ops=0; shift ;;
    --build-dir) build=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "bench_isa.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
cmake --build "$build" -j "$(nproc)" --target tbgrad-mnist fma_peak bench_ops > /dev/null
mkdir -p "$out"
echo "== CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -n1)"
echo "   SIMD flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -xE 'sse4_1|sse4_2|avx|avx2|fma|avx512f|avx512bw|avx512vl|avx512dq|asimd|sve|sve2' | tr '\n' ' ')"
"$build/bench/fma_peak" 2 0.2 | tee "$out/fma_peak.txt"
if [[ -z $isas ]]; then
  isas=$("$build/bench/fma_peak" 1 0.01 | sed -n 's/^SIMD targets of this build on this CPU: \(.*\)(in use.*/\1/p' |
         tr ' ' '\n' | grep -v -e '^$' -e '^scalar$' | paste -sd, -)
fi
IFS=, read -r -a isa_list <<< "$isas"
for isa in "${isa_list[@]}"; do
  if [[ $ops -eq 1 ]]; then
    echo "== $isa: seed model ops, batch 32, 1 thread (bench_ops, medians of 3)"
    TBGRAD_MAX_ISA=$isa "$build/bench/bench_ops" --threads=1 \
      --benchmark_filter='BM_Op/seed/|BM_TrainStep/seed/batch:32' --benchmark_repetitions=3 \
      --benchmark_min_time=0.2 --benchmark_out="$out/ops-$isa.json" --benchmark_out_format=json \
      > /dev/null 2>&1
    python3 bench/summarize_ops.py "$out/ops-$isa.json" | tee "$out/ops-$isa.md"
  fi
  echo "== $isa: epoch benchmark"
  TBGRAD_MAX_ISA=$isa bash scripts/bench_epoch.sh --build-dir "$build" --threads 1,2 --reps "$reps" \
    "${torch[@]}" | tee "$out/epoch-$isa.txt" | sed -n '/^== medians/,$p'
done
