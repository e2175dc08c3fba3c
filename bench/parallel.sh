#!/usr/bin/env bash
# Two built-in stages side by side: the two fine-tunes of workflows/multistage.yaml (at the
# reduced size of its test, 100 steps each) run together three ways — each stage on every core
# (what flow did before it split the cores: RAYON_NUM_THREADS set to the core count, which flow
# leaves alone), flow's own split, and one thread each. Wall time of each; docs/benchmarks.md.
#
#   cargo build --release && bash bench/parallel.sh
#
# Environment: FLOW (default target/release/flow), OUT (default bench/out/parallel; emptied).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
flow=${FLOW:-$root/target/release/flow}
out=${OUT:-$root/bench/out/parallel}
rm -rf "$out" && mkdir -p "$out"
cp "$root/workflows/multistage.yaml" "$out/"
cd "$out"
sets=(--set text.with.documents=600 --set corpus.with.vocab_size=512
      --set pretrain-small.with.steps=12 --set pretrain-small.with.batch=4 --set pretrain-small.with.warmup=2
      --set pretrain-grown.with.steps=12 --set pretrain-grown.with.warmup=2
      --set pretrain-grown.with.batch=4 --set anneal.with.steps=4 --set anneal.with.batch=4
      --set arithmetic.with.train=400 --set sort.with.train=400
      --set sft-arithmetic.with.steps=100 --set sft-sort.with.steps=100)
targets=(--target sft-arithmetic --target sft-sort)
"$flow" apply multistage.yaml --cache cache "${sets[@]}" --target anneal --target arithmetic --target sort >/dev/null 2>&1
cores=$(nproc)
for how in "every core each:$cores" "flow's split:" "one thread each:1"; do
  label=${how%%:*} threads=${how#*:}
  start=$(date +%s.%N)
  if [ -n "$threads" ]; then
    RAYON_NUM_THREADS=$threads "$flow" apply multistage.yaml --cache cache "${sets[@]}" "${targets[@]}" --force sft-arithmetic --force sft-sort >/dev/null 2>&1
  else
    env -u RAYON_NUM_THREADS "$flow" apply multistage.yaml --cache cache "${sets[@]}" "${targets[@]}" --force sft-arithmetic --force sft-sort >/dev/null 2>&1
  fi
  echo "$label: $(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')") s"
done
