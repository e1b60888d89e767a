#!/usr/bin/env bash
# Epoch benchmark of the training library (issue 12), in one invocation so ratios are taken
# under the same load: for each repetition and thread count, alternating,
#   app        tbgrad-mnist train --model seed (SGD lr 0.1, constant schedule, seed 1)
#   user-seed  the same network written as a user would, trained through the library API
#   custom     the user network of examples/custom_cnn.cpp, through the same API
# (bench/train_library.cpp), one epoch of the 60,000 MNIST training images at batch 32. Prints
# every run, then the medians, user-seed / app per thread count and each model's 1 -> 2 thread
# speed-up.
#
# --baseline BIN adds a fourth row, BIN (another build's tbgrad-mnist, say of the commit before
# the library) run like `app`, to check the app did not get slower.
#
# Usage: scripts/bench_library.sh [--reps N] [--threads 1,2] [--build DIR] [--data DIR] [--baseline BIN]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
reps=5
threads=1,2
build=$root/build
data=$root/data/mnist
baseline=
while (($#)); do
  case $1 in
    --reps) reps=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --baseline) baseline=$2; shift 2 ;;
    *) echo "bench_library.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
"$root/scripts/fetch_mnist.sh" "$data" >/dev/null
cmake --build "$build" --target tbgrad-mnist train_library -j2 >/dev/null
IFS=, read -r -a ts <<<"$threads"
models=(app user-seed custom)
[[ -n $baseline ]] && models+=(baseline)
declare -A runs
field() { sed -n "s/.*\"$2\":\([0-9.e+-]*\).*/\1/p" <<<"$1"; }
echo "== library epoch benchmark: batch 32, sgd lr 0.1, 1 epoch, threads ${threads}, ${reps} rep(s)"
echo "   machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 1; r <= reps; ++r)); do
  order=("${models[@]}")
  if ((r % 2 == 0)); then  # alternate the order between repetitions
    order=()
    for ((i = ${#models[@]} - 1; i >= 0; --i)); do order+=("${models[i]}"); done
  fi
  for t in "${ts[@]}"; do
    for m in "${order[@]}"; do
      if [[ $m == app || $m == baseline ]]; then
        bin=$build/apps/tbgrad-mnist
        [[ $m == baseline ]] && bin=$baseline
        out=$("$bin" train --data "$data" --epochs 1 --batch-size 32 --optimizer sgd \
              --lr 0.1 --schedule constant --threads "$t" --seed 1 --json | tail -1)
      else
        out=$("$build/bench/train_library" "$m" "$data" "$t" 1 32)
      fi
      s=$(field "$out" train_seconds)
      acc=$(field "$out" test_accuracy)
      runs[$m,$t]+="$s "
      printf '  %-9s %d threads  rep %d   train %8.3f s  test acc %s\n' "$m" "$t" "$r" "$s" "$acc"
    done
  done
done
median() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "== medians over $reps rep(s) (load average now: $(cut -d' ' -f1-3 /proc/loadavg))"
declare -A med
for t in "${ts[@]}"; do
  for m in "${models[@]}"; do
    med[$m,$t]=$(median "${runs[$m,$t]}")
    printf '  %-9s %d threads  train %8.3f s\n' "$m" "$t" "${med[$m,$t]}"
  done
  awk -v a="${med[user-seed,$t]}" -v b="${med[app,$t]}" -v t="$t" \
    'BEGIN {printf "  user-seed / app at %d threads: %.3f\n", t, a / b}'
  if [[ -n $baseline ]]; then
    awk -v a="${med[app,$t]}" -v b="${med[baseline,$t]}" -v t="$t" \
      'BEGIN {printf "  app / baseline at %d threads: %.3f\n", t, a / b}'
  fi
done
if ((${#ts[@]} >= 2)); then
  for m in "${models[@]}"; do
    awk -v a="${med[$m,${ts[0]}]}" -v b="${med[$m,${ts[1]}]}" -v m="$m" -v t0="${ts[0]}" -v t1="${ts[1]}" \
      'BEGIN {printf "  %s speed-up, %d -> %d threads: %.2fx\n", m, t0, t1, a / b}'
  done
fi
