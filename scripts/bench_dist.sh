#!/usr/bin/env bash
# Epoch benchmark of training over MPI processes (issue 14, docs/distributed.md): one epoch of
# the 60,000 MNIST training images, seed model, SGD lr 0.1 (constant), seed 1, for each batch
# size and each RANKSxTHREADS configuration, repetitions alternating so ratios are taken under
# the same load. A configuration with 1 rank runs without mpirun (the one-process baseline);
# the others run under mpirun, each rank on THREADS cores of its own (--map-by slot:PE=THREADS),
# oversubscribed when the host has fewer cores. Prints every run (training seconds, the
# allgather's microseconds and kilobytes per step), the medians, each configuration's speed-up
# over the first one of its batch size, and the CPU.
#
# A configuration RiT (e.g. 2i1) is the host's ceiling for R ranks: R independent processes of
# T threads each, without MPI, started together, each training on 60000/R of the images (the
# same first ones); its time is the slowest one's. That is R ranks' work with no exchange, no
# redundant work and no waiting for each other, under the same contention for the cores, caches
# and memory as R ranks have, so t(1x1) / t(RiT) bounds what R ranks can reach here.
#
# Usage: scripts/bench_dist.sh [--reps N] [--batches "32 256"] [--configs "1x1 1x2 2x1"]
#                              [--build DIR] [--data DIR]
#   e.g. on 16 cores: --configs "1x1 1x16 2x8 4x4 8x2 16x1"; the ceiling: --configs "1x1 2x1 2i1"
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
reps=3
batches="32 256"
configs="1x1 1x2 2x1"
build=$root/build
data=$root/data/mnist
while (($#)); do
  case $1 in
    --reps) reps=$2; shift 2 ;;
    --batches) batches=$2; shift 2 ;;
    --configs) configs=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    *) echo "bench_dist.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v mpirun > /dev/null || { echo "bench_dist.sh: mpirun not found (scripts/install_deps.sh --with-mpi)" >&2; exit 1; }
"$root/scripts/fetch_mnist.sh" "$data" > /dev/null
bin=$build/apps/tbgrad-mnist
[[ -x $bin ]] || { echo "bench_dist.sh: $bin not built" >&2; exit 1; }
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
cores=$(nproc)
field() { sed -n "s/.*\"$2\":\([0-9.e+-]*\).*/\1/p" <<<"$1"; }
median() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "== distributed epoch benchmark: seed model, sgd lr 0.1 constant, 1 epoch, ${reps} rep(s)"
echo "   machine: ${cores} CPUs, $(lscpu | sed -n 's/^Model name: *//p'); $(mpirun --version | head -1)"
echo "   load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A secs exch kb
read -r -a cfgs <<<"$configs"
for ((r = 1; r <= reps; ++r)); do
  order=("${cfgs[@]}")
  if ((r % 2 == 0)); then
    order=()
    for ((i = ${#cfgs[@]} - 1; i >= 0; --i)); do order+=("${cfgs[i]}"); done
  fi
  for b in $batches; do
    for c in "${order[@]}"; do
      np=${c%%[xi]*}
      t=${c##*[xi]}
      args=(train --data "$data" --epochs 1 --batch-size "$b" --optimizer sgd --lr 0.1
            --schedule constant --seed 1 --threads "$t" --json)
      if [[ $c == *i* ]]; then
        tmp=$(mktemp -d)
        pids=()
        for ((q = 0; q < np; ++q)); do
          "$bin" "${args[@]}" --limit $((60000 / np)) > "$tmp/$q" &
          pids+=($!)
        done
        for p in "${pids[@]}"; do wait "$p"; done
        slowest=0
        for ((q = 0; q < np; ++q)); do
          o=$(tail -1 "$tmp/$q")
          s=$(field "$o" train_seconds)
          if awk -v a="$s" -v b="$slowest" 'BEGIN {exit !(a > b)}'; then slowest=$s; out=$o; fi
        done
        rm -rf "$tmp"
      elif ((np == 1)); then
        out=$("$bin" "${args[@]}" | tail -1)
      else
        map=(--map-by "slot:PE=$t" --bind-to core)
        ((np * t > cores)) && map=(--oversubscribe --bind-to none)
        out=$(mpirun -np "$np" "${map[@]}" "$bin" "${args[@]}" | tail -1)
      fi
      s=$(field "$out" train_seconds)
      us=$(field "$out" exchange_us_per_step)
      bytes=$(field "$out" exchange_bytes_per_step)
      isa=$(sed -n 's/.*"isa":"\([a-z0-9]*\)".*/\1/p' <<<"$out")
      secs[$b,$c]+="$s "
      exch[$b,$c]+="$us "
      kb[$b,$c]=$(awk -v x="$bytes" 'BEGIN {printf "%.1f", x / 1024}')
      printf '  batch %-4s %5s (ranks x threads)  rep %d   train %7.3f s   allgather %7.1f us/step  %6s KB/step  [%s]\n' \
        "$b" "$c" "$r" "$s" "$us" "${kb[$b,$c]}" "$isa"
    done
  done
done
echo "== medians (speed-up: the first configuration's time / this one's)"
for b in $batches; do
  base=
  for c in "${cfgs[@]}"; do
    m=$(median "${secs[$b,$c]}")
    e=$(median "${exch[$b,$c]}")
    [[ -z $base ]] && base=$m
    printf '  batch %-4s %5s  %7.3f s   speed-up %5.2fx   allgather %7.1f us/step, %6s KB/step\n' \
      "$b" "$c" "$m" "$(awk -v a="$base" -v x="$m" 'BEGIN {print a / x}')" "$e" "${kb[$b,$c]}"
  done
done
