#!/usr/bin/env bash
# Thread scaling of one training epoch: tbgrad-mnist (and PyTorch, when importable) at 1..N
# threads and two batch sizes, SGD lr 0.1, constant schedule; prints medians as a Markdown table.
#
# Usage: scripts/scaling.sh BIN_DIR DATA_DIR [THREADS...]   (default threads: 1 2 4 8 16)
#   BIN_DIR holds tbgrad-mnist and the shared libraries it needs (scripts/pack_bins.sh makes
#   one), so it runs on a machine without TBB or Boost. Env: REPS (default 3), TORCH_REPS
#   (default 1), BATCHES
#   (default "32 256"), MODEL (default seed), TORCH=0 to skip PyTorch, CSV=FILE to also append
#   "model,batch,threads,seconds,torch_seconds" rows (medians) to FILE.
set -euo pipefail
bin=$(cd "$1" && pwd)
data=$2
shift 2
threads=("$@")
((${#threads[@]})) || threads=(1 2 4 8 16)
reps=${REPS:-3}
torch_reps=${TORCH_REPS:-1}
batches=(${BATCHES:-32 256})
model=${MODEL:-seed}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export LD_LIBRARY_PATH="$bin:${LD_LIBRARY_PATH:-}"

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field() { sed -E "s/.*\"$1\": ?([0-9.eE+-]+).*/\1/"; }

torch_ok=0
if [[ "${TORCH:-1}" != 0 ]] && python3 -c "import torch, numpy" 2> /dev/null; then
  torch_ok=1
  echo "PyTorch $(python3 -c 'import torch; print(torch.__version__)')"
fi
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) ($(nproc) CPUs)"
echo
header="| threads |"
sep="|---|"
for b in "${batches[@]}"; do
  header+=" tbgrad b$b s/epoch | speedup |"
  sep+="---|---|"
  ((torch_ok)) && header+=" PyTorch b$b s/epoch | PyTorch/tbgrad |" && sep+="---|---|"
done
echo "$header"
echo "$sep"
declare -A base
for t in "${threads[@]}"; do
  row="| $t |"
  for b in "${batches[@]}"; do
    runs=()
    for ((r = 0; r < reps; r++)); do
      out=$("$bin/tbgrad-mnist" train --data "$data" --model "$model" --epochs 1 --batch-size "$b" \
        --optimizer sgd --lr 0.1 --schedule constant --threads "$t" --json | tail -n 1)
      runs+=("$(echo "$out" | field train_seconds)")
    done
    med=$(printf '%s\n' "${runs[@]}" | median)
    [[ -n "${base[$b]:-}" ]] || base[$b]=$med
    row+=" $(printf '%.3f' "$med") | $(awk -v a="${base[$b]}" -v m="$med" 'BEGIN { printf "%.2fx", a / m }') |"
    tmed=""
    if ((torch_ok)); then
      truns=()
      for ((r = 0; r < torch_reps; r++)); do
        tout=$(python3 "$here/pytorch_mnist.py" --data "$data" --model "$model" --batch-size "$b" \
          --lr 0.1 --threads "$t" | tail -n 1)
        truns+=("$(echo "$tout" | field train_seconds)")
      done
      tmed=$(printf '%s\n' "${truns[@]}" | median)
      row+=" $(printf '%.3f' "$tmed") | $(awk -v a="$tmed" -v m="$med" 'BEGIN { printf "%.1fx", a / m }') |"
    fi
    if [[ -n "${CSV:-}" ]]; then
      [[ -s "$CSV" ]] || echo "model,batch,threads,seconds,torch_seconds" > "$CSV"
      echo "$model,$b,$t,$med,$tmed" >> "$CSV"
    fi
  done
  echo "$row"
done
