#!/usr/bin/env bash
# Runs the six experiments of workflows/experiments/ from an empty store, each in a store of
# its own (its runtime alone; one store for all six would train experiment 4's base once
# instead of three times), and refreshes what docs/experiments.md shows: each analysis's results.md and plots under docs/img/experiments/,
# and each experiment's `flow report` page under docs/experiments/.
#
#   bash bench/experiments.sh            # all six
#   bash bench/experiments.sh wsd cpt    # some
set -euo pipefail
source "$(dirname "$0")/common.sh"
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(growth wsd cpt anneal sft merge)
img="$root/docs/img/experiments"
pages="$root/docs/experiments"
mkdir -p "$img" "$pages"
total=0
for name in "${names[@]}"; do
  wf="$root/workflows/experiments/$name.yaml"
  store="$work/$name"
  start=$(date +%s.%N)
  "$flow" apply "$wf" --cache "$store" --json >"$out/experiment-$name.jsonl"
  end=$(date +%s.%N)
  stages=$(grep -c '"type":"stage"' "$out/experiment-$name.jsonl" || true)
  seconds=$(echo "$end - $start" | bc)
  total=$(echo "$total + $seconds" | bc)
  printf '%-8s %6.1f s  %s stages\n' "$name" "$seconds" "$stages"
  analysis=$("$flow" show "$wf" analysis --cache "$store" | awk '/^path/{print $2}')
  install -m 644 "$analysis/results.md" "$out/experiment-$name.md"
  for svg in "$analysis"/*.svg; do install -m 644 "$svg" "$img/$name-$(basename "$svg")"; done
  "$flow" report "$wf" --cache "$store" -o "$pages/$name.html"
done
printf 'total    %6.1f s\n' "$total"
