#!/usr/bin/env bash
# Includes point down only (docs/design.md, Layers): each library folder includes its own
# headers and those of the layers below it, never one above or beside it (data/ once included
# nn/ for the random generator while nn/ included data/). Prints every include that breaks this.
set -euo pipefail
root=$1
declare -A allowed=(
  [graph]="graph"
  [ops]="graph ops"
  [autodiff]="graph ops autodiff"
  [data]="graph data"
  [distributed]="distributed"
  [nn]="graph ops autodiff data distributed nn"
)
layers="graph|ops|autodiff|data|distributed|dist|nn"
bad=0
for layer in "${!allowed[@]}"; do
  [[ -d "$root/$layer" ]] || continue
  while IFS= read -r hit; do
    target=$(sed -E "s@.*#include [\"<](tbgrad/)?($layers)/.*@\2@" <<<"$hit")
    if [[ " ${allowed[$layer]} " != *" $target "* ]]; then
      echo "${hit#"$root"/}: $layer/ includes $target/, which is not below it" >&2
      bad=1
    fi
  done < <(grep -rnE "#include [\"<](tbgrad/)?($layers)/" "$root/$layer" || true)
done
exit $bad
