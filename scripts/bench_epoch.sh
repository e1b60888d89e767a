#!/usr/bin/env bash
# Epoch benchmark: tbgrad-mnist against the same model in PyTorch, in one invocation.
#
#   bash scripts/bench_epoch.sh [--model seed] [--batch-size 32] [--threads 2|1,2] [--reps 3]
#                               [--lr 0.1] [--epochs 1] [--limit N] [--data data/mnist]
#                               [--optimizer sgd|momentum] [--weight-decay WD]
#                               [--schedule constant|cosine] [--warmup-epochs W]
#                               [--augment|--no-augment]
#                               [--build-dir build] [--tbgrad-bin PATH] [--python /usr/bin/python3]
#                               [--openblas-coretype NAME] [--torch-env VAR=VALUE]...
#                               [--torch-arg ARG]...
#                               [--install-torch] [--no-torch] [--no-per-cpu] [--torch-full-isa]
#
# Builds tbgrad-mnist (Release) if needed, then for each repetition runs
#   tbgrad-mnist train --epochs E --batch-size B --optimizer sgd --lr LR --schedule constant
#                      --threads T --json
# and scripts/pytorch_mnist.py with the same model, batch size, optimizer, learning rate,
# epochs and thread count, alternating which goes first (ABBA), each under /usr/bin/time -v.
# The training recipe goes to both sides under the same flag names: --optimizer, --schedule,
# and, when not at their defaults, --weight-decay WD (rank >= 2 parameters only),
# --warmup-epochs W (linear warmup over W epochs' steps; 0 <= W <= --epochs) and --augment
# (random crop of the 2-padded image, then a left-right flip); pytorch_mnist.py's docstring
# defines each step's learning rate. Defaults: sgd, lr 0.1, constant, no weight decay, no
# warmup, no augmentation (the command lines above), except for --model resnet (issue 29's
# residual network; e.g. --data /usr/share/datasets/fashion-mnist, from Debian's
# dataset-fashion-mnist): --optimizer momentum --lr 0.05 --weight-decay 5e-4 --schedule cosine
# --warmup-epochs 1 --augment. Any flag given wins; --no-augment turns the augmentation off.
# --threads 1,2 runs both thread counts in the same invocation and prints the speedup.
# --tbgrad-bin times a prebuilt tbgrad-mnist instead (say, an older commit's, built in a git
# worktree, to measure what an optimization bought); --torch-env adds environment settings to
# the PyTorch runs (e.g. OMP_WAIT_POLICY=PASSIVE), --torch-arg arguments to pytorch_mnist.py
# (e.g. --no-mkldnn): for finding PyTorch's best configuration on the machine.
# Prints every run's training seconds (the trainers' own figure: training loops only, no data
# loading or evaluation) and peak RSS, the medians, and the ratio PyTorch / tbgrad.
#
# When --threads lists 1 and a larger count N (and taskset exists), each repetition also runs
# tbgrad on one thread pinned to each of CPUs 0 .. N-1, first one CPU at a time, then on all N
# at once (N independent processes): on a shared VM the CPUs do not always run at the same
# speed, a CPU can slow down while its neighbour is busy (the host shares its cores, caches or
# power among guests), and an N-thread step waits for the slowest. For each of the two cases
# the summary prints each CPU's median and the speed-up N perfectly balanced threads would
# reach on CPUs of those speeds (the 1-thread median times the sum of 1 / each CPU's median),
# and the measured speed-up as a fraction of it: "all busy" is the ceiling this host gives at
# that moment. --no-per-cpu skips these runs.
#
# PyTorch (Debian python3-torch, with --install-torch as root: python3-torch python3-numpy
# libopenblas0-pthread) runs with OPENBLAS_NUM_THREADS=1 and OPENBLAS_CORETYPE=SkylakeX on an
# AVX-512 CPU (OpenBLAS 0.3.21 misdetects newer AVX-512 CPUs and falls back to a slow kernel;
# override with --openblas-coretype). Debian's torch reaches BLAS through libblas.so.3, an
# update-alternatives link; when it does not point to the pthread OpenBLAS, that library is
# LD_PRELOADed for the PyTorch runs.
#
# TBGRAD_MAX_ISA caps PyTorch too, so that capping both stands in for a CPU without the higher
# targets (the issue 11 comparison "on an AVX2-only CPU, or with TBGRAD_MAX_ISA=avx2"):
# avx2 runs PyTorch with OPENBLAS_CORETYPE=Haswell ONEDNN_MAX_CPU_ISA=AVX2
# ATEN_CPU_CAPABILITY=avx2, sse4 and scalar with OPENBLAS_CORETYPE=Nehalem
# ONEDNN_MAX_CPU_ISA=SSE41 ATEN_CPU_CAPABILITY=default (PyTorch has no lower level than SSE4.1).
# --torch-full-isa leaves PyTorch at the CPU's best instead; --openblas-coretype still wins.
set -euo pipefail
cd "$(dirname "$0")/.."

model=seed batch=32 threads=2 reps=3 lr="" epochs=1 limit=0 data=data/mnist
optimizer="" weight_decay="" schedule="" warmup="" augment=""  # "": the model's default
build=build python=/usr/bin/python3 install_torch=0 no_torch=0 coretype="" tbgrad_bin="" per_cpu=1
torch_full_isa=0
extra_env=() extra_args=()
usage() {
  local text
  text=$(awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0")
  if [[ ${1:-0} -eq 0 ]]; then echo "$text"; else echo "$text" >&2; fi
  exit "${1:-0}"
}
while [[ $# -gt 0 ]]; do
  case "$1" in
    --model) model=$2; shift 2 ;;
    --batch-size) batch=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --lr) lr=$2; shift 2 ;;
    --optimizer) optimizer=$2; shift 2 ;;
    --weight-decay) weight_decay=$2; shift 2 ;;
    --schedule) schedule=$2; shift 2 ;;
    --warmup-epochs) warmup=$2; shift 2 ;;
    --augment) augment=1; shift ;;
    --no-augment) augment=0; shift ;;
    --epochs) epochs=$2; shift 2 ;;
    --limit) limit=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --build-dir) build=$2; shift 2 ;;
    --python) python=$2; shift 2 ;;
    --openblas-coretype) coretype=$2; shift 2 ;;
    --tbgrad-bin) tbgrad_bin=$2; shift 2 ;;
    --torch-env) extra_env+=("$2"); shift 2 ;;
    --torch-arg) extra_args+=("$2"); shift 2 ;;
    --install-torch) install_torch=1; shift ;;
    --no-torch) no_torch=1; shift ;;
    --no-per-cpu) per_cpu=0; shift ;;
    --torch-full-isa) torch_full_isa=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "bench_epoch.sh: unknown option '$1'" >&2; usage 2 ;;
  esac
done
IFS=, read -r -a thread_list <<<"$threads"
for t in "${thread_list[@]}"; do
  [[ $t =~ ^[1-9][0-9]*$ ]] || { echo "bench_epoch.sh: --threads takes positive integers, e.g. 2 or 1,2" >&2; exit 2; }
done
[[ ${#thread_list[@]} -gt 0 ]] || { echo "bench_epoch.sh: --threads is empty" >&2; exit 2; }
for v in batch reps epochs; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "bench_epoch.sh: --${v/batch/batch-size} must be a positive integer" >&2; exit 2; }
done
[[ $limit =~ ^[0-9]+$ ]] || { echo "bench_epoch.sh: --limit must be >= 0" >&2; exit 2; }
# The training recipe: the model's defaults (see the header) for what was not given.
if [[ $model == resnet ]]; then
  : "${lr:=0.05}" "${optimizer:=momentum}" "${weight_decay:=5e-4}" "${schedule:=cosine}" "${warmup:=1}" "${augment:=1}"
else
  : "${lr:=0.1}" "${optimizer:=sgd}" "${weight_decay:=0}" "${schedule:=constant}" "${warmup:=0}" "${augment:=0}"
fi
[[ $optimizer == sgd || $optimizer == momentum ]] ||
  { echo "bench_epoch.sh: --optimizer must be sgd or momentum (both sides have them), got '$optimizer'" >&2; exit 2; }
[[ $schedule == constant || $schedule == cosine ]] ||
  { echo "bench_epoch.sh: --schedule must be constant or cosine, got '$schedule'" >&2; exit 2; }
[[ $weight_decay =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$ ]] ||
  { echo "bench_epoch.sh: --weight-decay must be a number >= 0, got '$weight_decay'" >&2; exit 2; }
[[ $warmup =~ ^[0-9]+$ && $warmup -le $epochs ]] ||
  { echo "bench_epoch.sh: --warmup-epochs must be an integer between 0 and --epochs ($epochs), got '$warmup'" >&2; exit 2; }
# The flags both sides get beyond today's command lines, only where they are not the defaults.
recipe_args=()
if awk -v w="$weight_decay" 'BEGIN { exit !(w + 0 != 0) }'; then recipe_args+=(--weight-decay "$weight_decay"); fi
[[ $warmup -gt 0 ]] && recipe_args+=(--warmup-epochs "$warmup")
[[ $augment -eq 1 ]] && recipe_args+=(--augment)
# pytorch_mnist.py's defaults are sgd and constant: its command line names them only otherwise.
pt_recipe=()
[[ $optimizer != sgd ]] && pt_recipe+=(--optimizer "$optimizer")
[[ $schedule != constant ]] && pt_recipe+=(--schedule "$schedule")
pt_recipe+=("${recipe_args[@]}")
recipe="$optimizer lr $lr, $schedule schedule"
[[ ${#recipe_args[@]} -gt 0 ]] && recipe+=", ${recipe_args[*]#--}"

apt_install() {
  if [[ $(id -u) -ne 0 ]]; then
    echo "bench_epoch.sh: not root, cannot install $*" >&2
    return 1
  fi
  echo "== apt-get install $*"
  local t0=$SECONDS
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  echo "   done in $((SECONDS - t0)) s"
}

# --- tbgrad-mnist, Release ---------------------------------------------------------------------
if [[ -n $tbgrad_bin ]]; then
  [[ -x $tbgrad_bin ]] || { echo "bench_epoch.sh: --tbgrad-bin $tbgrad_bin is not an executable" >&2; exit 2; }
  mnist=$tbgrad_bin build_type="prebuilt"
else
if [[ ! -f $build/CMakeCache.txt ]]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$build/CMakeCache.txt")
if [[ $build_type != Release ]]; then
  echo "bench_epoch.sh: warning: $build is a '$build_type' build, not Release; timings will not be representative" >&2
fi
if grep -q '^TBGRAD_SANITIZE:STRING=.\+' "$build/CMakeCache.txt"; then
  echo "bench_epoch.sh: warning: $build is built with sanitizers" >&2
fi
cmake --build "$build" --target tbgrad-mnist -j2 >/dev/null
mnist=$build/apps/tbgrad-mnist
[[ -x $mnist ]] || { echo "bench_epoch.sh: $mnist was not built" >&2; exit 1; }
fi

# --- /usr/bin/time for peak RSS ----------------------------------------------------------------
if [[ ! -x /usr/bin/time ]]; then
  apt_install time || true
fi
have_time=0
[[ -x /usr/bin/time ]] && have_time=1

# --- PyTorch -------------------------------------------------------------------------------------
torch_ok=0
torch_env=()
if [[ $no_torch -eq 0 ]]; then
  if [[ $install_torch -eq 1 ]] && ! "$python" -c 'import torch, numpy' 2>/dev/null; then
    apt_install python3-torch python3-numpy libopenblas0-pthread || true
  elif [[ $install_torch -eq 1 ]] && ! ls /usr/lib/*/openblas-pthread/libblas.so.3 >/dev/null 2>&1; then
    apt_install libopenblas0-pthread || true
  fi
  if "$python" -c 'import torch, numpy' 2>/dev/null; then
    torch_ok=1
  else
    echo "bench_epoch.sh: PyTorch not importable by $python (Debian: python3-torch; or pass" \
         "--install-torch as root): running tbgrad only" >&2
  fi
fi
blas_note=""
if [[ $torch_ok -eq 1 ]]; then
  torch_lib=$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))')
  blas=$(ldd "$torch_lib" 2>/dev/null | awk '$1 == "libblas.so.3" { print $3 }')
  blas_real=$(readlink -f "${blas:-/nonexistent}" 2>/dev/null || true)
  pthread_blas=$(ls /usr/lib/*/openblas-pthread/libblas.so.3 2>/dev/null | head -n1 || true)
  if [[ -z $blas ]]; then
    blas_note="torch does not link libblas.so.3 (bundled BLAS?)"
  elif [[ $blas_real == */openblas-pthread/* ]]; then
    blas_note="libblas.so.3 -> $blas_real"
  elif [[ -n $pthread_blas ]]; then
    torch_env+=("LD_PRELOAD=$pthread_blas${LD_PRELOAD:+:$LD_PRELOAD}")
    blas_note="libblas.so.3 -> $blas_real; LD_PRELOAD=$pthread_blas"
  else
    blas_note="libblas.so.3 -> $blas_real (NOT OpenBLAS pthread: install libopenblas0-pthread)"
    echo "bench_epoch.sh: warning: PyTorch uses $blas_real, not the pthread OpenBLAS" >&2
  fi
  # PyTorch's cap for TBGRAD_MAX_ISA (see the header); only below what the CPU has.
  cap_coretype="" cap_env=()
  if [[ $torch_full_isa -eq 0 ]]; then
    case ${TBGRAD_MAX_ISA:-} in
      avx2)
        if grep -qw avx512f /proc/cpuinfo; then
          cap_coretype=Haswell cap_env=(ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2)
        fi ;;
      sse4 | scalar)
        if grep -qw avx2 /proc/cpuinfo; then
          cap_coretype=Nehalem cap_env=(ONEDNN_MAX_CPU_ISA=SSE41 ATEN_CPU_CAPABILITY=default)
        fi ;;
    esac
  fi
  if [[ -z $coretype ]]; then
    if [[ -n $cap_coretype ]]; then coretype=$cap_coretype
    elif grep -qw avx512f /proc/cpuinfo; then coretype=SkylakeX
    elif grep -qw avx2 /proc/cpuinfo; then coretype=Haswell
    fi
  fi
  torch_env+=("OPENBLAS_NUM_THREADS=1")
  [[ -n $coretype ]] && torch_env+=("OPENBLAS_CORETYPE=$coretype")
  torch_env+=("${cap_env[@]}")
  torch_cap=none
  [[ ${#cap_env[@]} -gt 0 ]] && torch_cap=$TBGRAD_MAX_ISA
  torch_env+=("${extra_env[@]}")
  torch_version=$("$python" -c 'import torch; print(torch.__version__)')
fi

# --- the runs ------------------------------------------------------------------------------------
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The commands for T threads.
tb_cmd() {
  local -a c=("$mnist" train --data "$data" --model "$model" --epochs "$epochs" --batch-size "$batch"
              --optimizer "$optimizer" --lr "$lr" --schedule "$schedule" --threads "$1" --seed 1 --json
              "${recipe_args[@]}")
  [[ $limit -gt 0 ]] && c+=(--limit "$limit")
  cmd=("${c[@]}")
}
pt_cmd() {
  local -a c=(env "${torch_env[@]}" "$python" scripts/pytorch_mnist.py --data "$data" --model "$model"
              --epochs "$epochs" --batch-size "$batch" --lr "$lr" --threads "$1" --seed 1 "${pt_recipe[@]}"
              "${extra_args[@]}")
  [[ $limit -gt 0 ]] && c+=(--limit "$limit")
  cmd=("${c[@]}")
}

json_field() {  # json_field FILE KEY: the number after "KEY": on the file's last JSON line
  grep '^{' "$1" | tail -n1 | grep -o "\"$2\": *[-0-9.eE+]*" | sed 's/.*: *//'
}

# run NAME THREADS REP: runs one side; appends "name threads rep seconds rss_mb accuracy" to
# $tmp/results
run() {
  local name=$1 t=$2 rep=$3 out=$tmp/$1.$2.$3.out tv=$tmp/$1.$2.$3.time status=0
  local -a cmd
  if [[ $name == tbgrad ]]; then
    tb_cmd "$t"
  elif [[ $name == cpu* || $name == busy* ]]; then
    tb_cmd 1
    cmd=(taskset -c "${name//[a-z]/}" "${cmd[@]}")
  else
    pt_cmd "$t"
  fi
  if [[ $have_time -eq 1 ]]; then
    /usr/bin/time -v -o "$tv" "${cmd[@]}" >"$out" 2>"$out.err" || status=$?
  else
    "${cmd[@]}" >"$out" 2>"$out.err" || status=$?
  fi
  if [[ $status -ne 0 ]]; then
    echo "bench_epoch.sh: $name run $rep ($t threads) failed (exit $status): ${cmd[*]}" >&2
    tail -n 20 "$out" "$out.err" >&2
    exit 1
  fi
  local secs acc rss=NA
  secs=$(json_field "$out" train_seconds)
  acc=$(json_field "$out" test_accuracy)
  if [[ $have_time -eq 1 ]]; then
    rss=$(awk -F': ' '/Maximum resident set size/ { printf "%.1f", $2 / 1024 }' "$tv")
  fi
  [[ -n $secs ]] || { echo "bench_epoch.sh: no train_seconds in $name's output" >&2; cat "$out" >&2; exit 1; }
  echo "$name $t $rep $secs $rss $acc" >>"$tmp/results"
  printf '  %-8s %2s threads  rep %-3s train %8.3f s  peak RSS %7s MB  test acc %6.2f%%\n' \
    "$name" "$t" "$rep" "$secs" "$rss" "$(awk -v a="$acc" 'BEGIN { print 100 * a }')"
}

echo "== epoch benchmark: model $model, batch $batch, $recipe, threads ${thread_list[*]}," \
     "$epochs epoch(s)$([[ $limit -gt 0 ]] && echo ", first $limit images"), $reps rep(s)"
echo "   machine: $(nproc) CPUs, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n1); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
simd_flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -xE 'sse4_1|avx2|fma|avx512f|asimd|sve|sve2' | tr '\n' ' ')
echo "   cpu SIMD flags: ${simd_flags:-none}; TBGRAD_MAX_ISA=${TBGRAD_MAX_ISA:-(unset)}"
echo "   tbgrad:  $mnist ($build_type)"
if [[ $torch_ok -eq 1 ]]; then
  echo "   pytorch: $torch_version via $python; $blas_note"
  echo "            env: ${torch_env[*]}${extra_args[*]:+; args: ${extra_args[*]}}"
fi
: >"$tmp/results"
# One-thread runs pinned to each CPU the largest thread count uses (see the header).
pinned_cpus=()
max_t=0
has_one=0
for t in "${thread_list[@]}"; do
  [[ $t -gt $max_t ]] && max_t=$t
  [[ $t -eq 1 ]] && has_one=1
done
if [[ $per_cpu -eq 1 && $has_one -eq 1 && $max_t -gt 1 && $max_t -le $(nproc) ]] && command -v taskset >/dev/null; then
  for ((c = 0; c < max_t; c++)); do pinned_cpus+=("cpu$c"); done
fi
# Alternation: tbgrad and PyTorch take turns going first (ABBA), thread counts likewise, so a
# drift in the machine's load hits both sides alike.
for ((r = 1; r <= reps; r++)); do
  order=("${thread_list[@]}")
  if [[ $((r % 2)) -eq 0 ]]; then
    order=()
    for ((i = ${#thread_list[@]} - 1; i >= 0; i--)); do order+=("${thread_list[i]}"); done
  fi
  for t in "${order[@]}"; do
    if [[ $torch_ok -eq 1 && $((r % 2)) -eq 0 ]]; then
      run pytorch "$t" "$r"; run tbgrad "$t" "$r"
    else
      run tbgrad "$t" "$r"
      if [[ $torch_ok -eq 1 ]]; then run pytorch "$t" "$r"; fi
    fi
  done
  for c in "${pinned_cpus[@]}"; do run "$c" 1 "$r"; done
  if [[ ${#pinned_cpus[@]} -gt 0 ]]; then  # the same, on all those CPUs at once
    pids=()
    for c in "${pinned_cpus[@]}"; do run "busy${c#cpu}" 1 "$r" & pids+=($!); done
    for p in "${pids[@]}"; do wait "$p" || exit 1; done
  fi
done

# median NAME THREADS COLUMN
median() {
  awk -v n="$1" -v t="$2" -v c="$3" '$1 == n && $2 == t && $c != "NA" { print $c }' "$tmp/results" | sort -g |
    awk '{ v[NR] = $1 } END { if (NR == 0) print "NA"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# The SIMD target the tbgrad runs used (tbgrad-mnist's JSON summary says it).
isa=$(grep -h '^{' "$tmp"/tbgrad.*.out 2>/dev/null | tail -n1 | grep -o '"isa": *"[a-z0-9]*"' | sed 's/.*: *"//; s/"$//')
isa=${isa:-unknown}
echo "== medians over $reps rep(s) (load average now: $(cut -d' ' -f1-3 /proc/loadavg)); tbgrad SIMD target: $isa"
summaries=()
for t in "${thread_list[@]}"; do
  tb_s=$(median tbgrad "$t" 4); tb_rss=$(median tbgrad "$t" 5)
  printf '  tbgrad   %2s threads  train %8.3f s  peak RSS %7s MB\n' "$t" "$tb_s" "$tb_rss"
  summary="{\"isa\":\"$isa\",\"model\":\"$model\",\"batch_size\":$batch,\"threads\":$t,\"optimizer\":\"$optimizer\",\"lr\":$lr,\"schedule\":\"$schedule\",\"weight_decay\":$(awk -v w="$weight_decay" 'BEGIN { printf "%.10g", w }'),\"warmup_epochs\":$warmup,\"augment\":$([[ $augment -eq 1 ]] && echo true || echo false),\"epochs\":$epochs,\"limit\":$limit,\"reps\":$reps,\"tbgrad_train_seconds\":$tb_s,\"tbgrad_peak_rss_mb\":$tb_rss"
  if [[ $torch_ok -eq 1 ]]; then
    pt_s=$(median pytorch "$t" 4); pt_rss=$(median pytorch "$t" 5)
    ratio=$(awk -v a="$pt_s" -v b="$tb_s" 'BEGIN { printf "%.2f", a / b }')
    printf '  pytorch  %2s threads  train %8.3f s  peak RSS %7s MB\n' "$t" "$pt_s" "$pt_rss"
    echo "  ratio pytorch / tbgrad at $t threads: ${ratio}x"
    summary+=",\"pytorch_isa_cap\":\"$torch_cap\",\"pytorch_train_seconds\":$pt_s,\"pytorch_peak_rss_mb\":$pt_rss,\"ratio\":$ratio"
  fi
  summaries+=("$summary}")
done
if [[ ${#thread_list[@]} -gt 1 ]]; then
  first=${thread_list[0]} last=${thread_list[${#thread_list[@]} - 1]}
  speedup=$(awk -v a="$(median tbgrad "$first" 4)" -v b="$(median tbgrad "$last" 4)" 'BEGIN { printf "%.2f", a / b }')
  echo "  tbgrad speedup, $first -> $last threads: ${speedup}x"
  if [[ $torch_ok -eq 1 ]]; then
    pt_speedup=$(awk -v a="$(median pytorch "$first" 4)" -v b="$(median pytorch "$last" 4)" 'BEGIN { printf "%.2f", a / b }')
    echo "  pytorch speedup, $first -> $last threads: ${pt_speedup}x"
  fi
  if [[ ${#pinned_cpus[@]} -gt 0 ]]; then
    for mode in alone busy; do
      inv_sum=0
      for c in "${pinned_cpus[@]}"; do
        name=$c label="one at a time"
        [[ $mode == busy ]] && name=busy${c#cpu} label="all $max_t at once"
        m=$(median "$name" 1 4)
        printf '  tbgrad    1 thread on %-5s %-14s train %8.3f s\n' "$c," "$label" "$m"
        inv_sum=$(awk -v s="$inv_sum" -v m="$m" 'BEGIN { printf "%.9f", s + 1 / m }')
      done
      ideal=$(awk -v t="$(median tbgrad 1 4)" -v s="$inv_sum" 'BEGIN { printf "%.2f", t * s }')
      eff=$(awk -v a="$speedup" -v b="$ideal" 'BEGIN { printf "%.0f", 100 * a / b }')
      what="CPUs of these speeds"
      [[ $mode == busy ]] && what="CPUs of these speeds when all $max_t are busy"
      echo "  ideal speedup on $what, 1 -> $max_t threads: ${ideal}x; measured ${speedup}x (${eff}% of it)"
    done
  fi
fi
printf '%s\n' "${summaries[@]}"
