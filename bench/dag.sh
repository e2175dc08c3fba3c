#!/usr/bin/env bash
# Benchmark flow's scheduler and cache against Snakemake and DVC on generated DAGs of trivial
# shell stages (issue 2). Results go to bench/out/; copy the tables into docs/benchmarks.md.
#
#   bash bench/dag.sh            # flow + Snakemake + DVC (installs the peers in bench/.venv)
#   PEERS=0 bash bench/dag.sh    # flow only
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
out="$here/out"
mkdir -p "$out"
cargo build --release --manifest-path "$root/Cargo.toml" >/dev/null
flow="$root/target/release/flow"
gen="$here/gen_dag.py"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CI=1

echo "== flow, 200 stages (20 x 10), and the same commands run bare"
d="$work/flow200"
python3 "$gen" flow 20 10 "$d"
python3 "$gen" flow 20 10 "$d/changed" --change L10S5
# The floor: the same 200 commands with no tool, layer by layer, two at a time (bench/gen_dag.py
# bare), each writing a plain file — what flow's per-stage overhead is measured against.
python3 "$gen" bare 20 10 "$work/bare"
# Every full run starts from an empty store (an empty out/ for the bare commands), timed two
# ways. First with the last run's output moved aside: on ext4 without a journal (this machine's
# disk) each new inode is found by skipping, one by one, every inode of its block group freed
# in the last minutes (`recently_deleted`), so an `rm -rf` of the last store right before a run
# makes that run pay for the deletion. Then with it deleted just before, the worst case.
trash="$work/trash"
mkdir -p "$trash"
aside='$(date +%s%N)'
cd "$d"
mkdir -p .git
hyperfine --style basic --warmup 1 --runs 10 --export-json "$out/flow-200-full.json" \
  --prepare "mv cache $trash/$aside 2>/dev/null; rm -f workflow.lock" "$flow apply workflow.yaml --no-progress"
(cd "$work/bare" && hyperfine --style basic --warmup 1 --runs 10 --export-json "$out/bare-200-full.json" \
  --prepare "mv out $trash/$aside 2>/dev/null; true" "sh bare.sh")
hyperfine --style basic --warmup 1 --runs 10 --export-json "$out/flow-200-full-rm.json" \
  --prepare 'rm -rf cache workflow.lock' "$flow apply workflow.yaml --no-progress"
(cd "$work/bare" && hyperfine --style basic --warmup 1 --runs 10 --export-json "$out/bare-200-full-rm.json" \
  --prepare 'rm -rf out' "sh bare.sh")
"$flow" apply workflow.yaml >/dev/null 2>&1
hyperfine --style basic --warmup 3 --runs 30 -N --export-json "$out/flow-200-noop.json" \
  "$flow apply workflow.yaml --no-progress"
cp -a cache cache.base && cp workflow.lock workflow.lock.base
cp changed/workflow.yaml workflow-changed.yaml
hyperfine --style basic --warmup 1 --runs 10 --export-json "$out/flow-200-change.json" \
  --prepare 'rm -rf cache workflow-changed.lock && cp -a cache.base cache && cp workflow.lock.base workflow-changed.lock' \
  "$flow apply workflow-changed.yaml --no-progress"
"$flow" apply workflow-changed.yaml --json 2>/dev/null | tail -1 | tee "$out/flow-200-change-summary.json"

echo "== flow, 10,000 stages (100 x 100) and plan scaling"
for n in 1000 10000; do
  d="$work/flow$n"
  python3 "$gen" flow $((n / 100)) 100 "$d"
  cd "$d" && mkdir -p .git
  hyperfine --style basic --runs 3 --export-json "$out/flow-$n-plan-cold.json" "$flow plan workflow.yaml"
done
cd "$work/flow10000"
/usr/bin/time -v "$flow" apply workflow.yaml --no-progress 2> "$out/flow-10000-full.time" >/dev/null || true
grep -E "Elapsed|Maximum resident" "$out/flow-10000-full.time"
hyperfine --style basic --warmup 1 --runs 10 -N --export-json "$out/flow-10000-noop.json" "$flow apply workflow.yaml --no-progress"
for n in 1000 10000; do
  cd "$work/flow$n"
  [ -d cache/ac ] || "$flow" apply workflow.yaml --no-progress >/dev/null 2>&1
  hyperfine --style basic --warmup 1 --runs 10 -N --export-json "$out/flow-$n-plan.json" "$flow plan workflow.yaml"
done

echo "== hashing a 1 GiB file: flow hash vs b3sum"
if command -v b3sum >/dev/null; then
  head -c 1073741824 /dev/urandom > "$work/big.bin"
  hyperfine --style basic --warmup 2 --runs 10 -N --export-json "$out/hash-1g.json" \
    "$flow hash $work/big.bin" "b3sum $work/big.bin"
  rm -f "$work/big.bin"
else
  echo "skipped: b3sum is not installed (\`apt-get install b3sum\`)"
fi

if [ "${PEERS:-1}" = 1 ]; then
  venv="$here/.venv"
  [ -x "$venv/bin/snakemake" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q snakemake dvc; }
  echo "== Snakemake, 200 stages"
  d="$work/smk"
  python3 "$gen" snakemake 20 10 "$d"
  python3 "$gen" snakemake 20 10 "$d/changed" --change L10S5
  cd "$d"
  hyperfine --style basic --runs 3 --export-json "$out/snakemake-200-full.json" \
    --prepare 'rm -rf out .snakemake' "$venv/bin/snakemake -c2 -q"
  hyperfine --style basic --runs 5 --export-json "$out/snakemake-200-noop.json" "$venv/bin/snakemake -c2 -q"
  # Restore outputs *and* Snakemake's metadata before each timed run, or later runs see the
  # changed code as already built.
  cp -a out out.base; cp -a .snakemake .snakemake.base
  hyperfine --style basic --runs 3 --export-json "$out/snakemake-200-change.json" \
    --prepare 'rm -rf out .snakemake && cp -a out.base out && cp -a .snakemake.base .snakemake && cp changed/Snakefile Snakefile' \
    "$venv/bin/snakemake -c2 -q"
  echo "== DVC, 200 stages"
  d="$work/dvc"
  python3 "$gen" dvc 20 10 "$d"
  python3 "$gen" dvc 20 10 "$d/changed" --change L10S5
  cd "$d" && git init -q && "$venv/bin/dvc" init -q
  hyperfine --style basic --runs 1 --export-json "$out/dvc-200-full.json" "$venv/bin/dvc repro -q"
  hyperfine --style basic --runs 3 --export-json "$out/dvc-200-noop.json" "$venv/bin/dvc repro -q"
  cp changed/dvc.yaml dvc.yaml
  hyperfine --style basic --runs 1 --export-json "$out/dvc-200-change.json" "$venv/bin/dvc repro -q"
fi

python3 - "$out" <<'PY'
import json, sys, os
out = sys.argv[1]
def mean(name):
    p = os.path.join(out, name + ".json")
    if not os.path.exists(p):
        return None
    data = json.load(open(p))
    # Only hyperfine's exports: bench/train.sh writes its own JSON into the same folder.
    results = data.get("results") if isinstance(data, dict) else None
    return results if isinstance(results, list) and all("mean" in r for r in results) else None
for name in sorted(f[:-5] for f in os.listdir(out) if f.endswith(".json") and not f.endswith("summary.json")):
    for r in mean(name) or []:
        print(f"{name:28s} {r['command'][:60]:60s} mean {r['mean']*1000:9.1f} ms  ± {r['stddev']*1000 if r['stddev'] else 0:7.1f}")
for way in ["full", "full-rm"]:
    f, b = mean(f"flow-200-{way}"), mean(f"bare-200-{way}")
    if f and b:
        print(f"flow / bare, 200 stages {way}: {f[0]['mean'] / b[0]['mean']:.2f}x (slowest flow run {max(f[0]['times']) / b[0]['mean']:.2f}x)")
PY
