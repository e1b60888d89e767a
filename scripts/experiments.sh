#!/usr/bin/env bash
# Regenerates the experiments of docs/experiments.md: runs every training, keeps the raw
# per-epoch CSVs, step logs and JSON summaries, then draws the figures and writes the tables
# (scripts/plot_experiments.py, matplotlib).
#
#   bash scripts/experiments.sh            # the full study on real MNIST (about 10 minutes on
#                                          # 2 cores): docs/experiments/ and docs/experiments.md
#   bash scripts/experiments.sh --quick    # the same pipeline on 2,000 training images and one
#                                          # or two epochs (under a minute), into build/experiments-quick/
#
# Options: --quick, --out DIR (raw/ and figures/ go there), --doc FILE (the Markdown written),
# --threads N (default 2: the machine's cores; question 5 runs 1 and 2), --build-dir DIR,
# --data DIR. Thread scaling measured on a larger machine is drawn too if
# OUT/device/scaling_device.csv exists (scripts/scaling.sh with CSV=). Installs what is missing (as root), fetches and verifies MNIST, builds
# tbgrad-mnist (Release) if needed. Every run's command is kept in raw/commands.txt.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
quick=0 out="" doc="" threads=2 build="$root/build" data="$root/data/mnist"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) quick=1; shift ;;
    --out) out=$2; shift 2 ;;
    --doc) doc=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --build-dir) build=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "experiments.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if ((quick)); then
  out=${out:-$root/build/experiments-quick}
  doc=${doc:-$out/experiments.md}
else
  out=${out:-$root/docs/experiments}
  doc=${doc:-$root/docs/experiments.md}
fi

"$root/scripts/install_deps.sh" --with-npm --with-plot
"$root/scripts/fetch_mnist.sh" "$data"
bin="$build/apps/tbgrad-mnist"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build "$build" -j "$(nproc)" --target tbgrad-mnist > /dev/null

raw="$out/raw"
rm -rf "$raw" "$out/figures"
mkdir -p "$raw/steps" "$out/figures"
commands="$raw/commands.txt"
: > "$commands"

# Scale of each question: full study, or a smoke test of the same pipeline.
if ((quick)); then
  limit=2000 e_pool=2 e_batch=1 e_init=1 init_seeds="1 2" e_lr=1 thread_reps=1 e_best=2
else
  limit=0 e_pool=10 e_batch=5 e_init=3 init_seeds="1 2 3 4 5" e_lr=5 thread_reps=3 e_best=15
fi

# train NAME ARGS...: one training run; per-epoch CSV raw/NAME.csv, output raw/NAME.log, JSON
# summary raw/NAME.json ({"diverged": true, ...} if the loss became non-finite).
train() {
  local name=$1
  shift
  local args=(train --data "$data" --limit "$limit" --metrics "$raw/$name.csv" --json "$@")
  echo "tbgrad-mnist ${args[*]}" | sed "s|$data|data/mnist|g; s|$raw/|raw/|g" >> "$commands"
  local rc=0
  "$bin" "${args[@]}" > "$raw/$name.log" 2>&1 || rc=$?
  if ((rc == 0)); then
    tail -n 1 "$raw/$name.log" > "$raw/$name.json"
  elif ((rc == 3)); then
    printf '{"diverged": true, "message": "%s"}\n' "$(tail -n 1 "$raw/$name.log" | tr -d '"\\')" > "$raw/$name.json"
  else
    cat "$raw/$name.log" >&2
    echo "experiments.sh: run $name failed (exit $rc)" >&2
    exit 1
  fi
  printf '  %-28s %s\n' "$name" "$(grep -o '"test_accuracy":[0-9.e-]*' "$raw/$name.json" || echo diverged)"
}

echo "== 1. pooling or not (sgd 0.1, batch 32, $e_pool epochs)"
for model in seed seed-nopool; do
  train "pool_$model" --model "$model" --epochs "$e_pool" --optimizer sgd --lr 0.1 \
    --schedule constant --threads "$threads"
done

echo "== 2. batch size (sgd at lr 0.01 and 0.1, $e_batch epochs; step log of every step)"
for b in 1 32 256; do
  for lr in 0.01 0.1; do
    train "batch_${b}_lr$lr" --batch-size "$b" --epochs "$e_batch" --optimizer sgd --lr "$lr" \
      --schedule constant --threads "$threads" --step-log "$raw/steps/batch_${b}_lr$lr.csv"
  done
done

echo "== 3. initialization (sgd 0.1, $e_init epochs, seeds $init_seeds)"
for init in xavier uniform normal; do
  for seed in $init_seeds; do
    train "init_${init}_$seed" --init "$init" --seed "$seed" --epochs "$e_init" --optimizer sgd \
      --lr 0.1 --schedule constant --threads "$threads"
  done
done

echo "== 4. learning rate and optimizer (cosine schedule, $e_lr epochs)"
for spec in sgd:0.01 sgd:0.03 sgd:0.1 sgd:0.3 momentum:0.003 momentum:0.01 momentum:0.03 \
            momentum:0.1 adam:0.0003 adam:0.001 adam:0.003 adam:0.01; do
  opt=${spec%%:*} lr=${spec##*:}
  train "lr_${opt}_$lr" --optimizer "$opt" --lr "$lr" --epochs "$e_lr" --threads "$threads"
done

echo "== 5. threads (sgd 0.1, batch 32, 1 epoch, $thread_reps repetitions, alternating)"
for rep in $(seq 1 "$thread_reps"); do
  for model in seed seed-nopool; do
    for t in 1 2; do
      train "threads_${model}_t${t}_r$rep" --model "$model" --epochs 1 --optimizer sgd --lr 0.1 \
        --schedule constant --threads "$t"
    done
  done
done

echo "== 6. our best (each model's defaults, $e_best epochs)"
for model in seed seed-nopool lenet5; do
  train "best_$model" --model "$model" --epochs "$e_best" --threads "$threads" \
    --save "$raw/best_$model.ckpt"
  "$bin" eval --load "$raw/best_$model.ckpt" --data "$data" --json | tail -n 1 > "$raw/best_${model}_eval.json"
  echo "tbgrad-mnist eval --load raw/best_$model.ckpt --data data/mnist --json" >> "$commands"
done
"$bin" inspect --load "$raw/best_seed.ckpt" --data "$data" --index 0 --out "$raw/inspect_seed.json" > /dev/null
echo "tbgrad-mnist inspect --load raw/best_seed.ckpt --data data/mnist --index 0 --out raw/inspect_seed.json" >> "$commands"
rm -f "$raw"/best_*.ckpt

# The machine, for the tables.
{
  echo "{"
  echo "  \"cpu\": \"$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)\","
  echo "  \"cpus\": $(nproc),"
  echo "  \"date\": \"$(date -u +%Y-%m-%d)\","
  echo "  \"commit\": \"$(git -C "$root" rev-parse --short HEAD 2> /dev/null || echo unknown)\","
  echo "  \"quick\": $quick, \"limit\": $limit, \"threads\": $threads"
  echo "}"
} > "$raw/machine.json"

device_csv=""
[[ -f "$out/device/scaling_device.csv" ]] && device_csv="$out/device/scaling_device.csv"
/usr/bin/python3 "$root/scripts/plot_experiments.py" --raw "$raw" --figures "$out/figures" --doc "$doc" \
  --device-csv "$device_csv"
echo "experiments: wrote $doc and $(ls "$out/figures" | wc -l) figures in $out/figures"
