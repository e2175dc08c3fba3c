#!/usr/bin/env bash
# The multi-stage example from an empty store: wall time, each stage's time, the val loss after
# every training stage, task accuracies and answer losses of every model, the zero-growth
# check and the equal-FLOPs comparison — the numbers of docs/multistage.md. Then a second
# apply that changes only the merge, to show what re-runs.
#
#   cargo build --release           # this script builds nothing: it runs target/release/flow
#   bash bench/multistage.sh        # about 2 minutes on 2 cores
#
# Environment: FLOW (the flow binary, default target/release/flow), OUT (a directory for the
# run, default bench/out/multistage; emptied first). Run it on an idle machine: the wall time
# is the number to compare with the 15-minute budget.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
flow=${FLOW:-$root/target/release/flow}
out=${OUT:-$root/bench/out/multistage}
rm -rf "$out" && mkdir -p "$out"
cp "$root/workflows/multistage.yaml" "$out/"
cd "$out"
start=$(date +%s.%N)
"$flow" apply multistage.yaml --cache "$out/cache" --json >run.jsonl
end=$(date +%s.%N)
"$flow" apply multistage.yaml --cache "$out/cache" --json --set merge.with.density=0.5 >rerun.jsonl
python3 - "$start" "$end" <<'EOF'
import json, sys
start, end = map(float, sys.argv[1:3])
def stages(path):
    out = {}
    for line in open(path):
        e = json.loads(line)
        if e.get("type") == "stage":
            out[e["stage"]] = e
    return out
run = stages("run.jsonl")
def artifact(stage, name):
    return json.load(open(f"cache/artifacts/{run[stage]['artifact']}/{name}"))
print(f"wall time from an empty store: {end - start:.0f} s")
print("\nstage seconds:", ", ".join(f"{s} {e['seconds']:.0f}" for s, e in sorted(run.items(), key=lambda x: -x[1]["seconds"]) if e["seconds"] >= 1))
print("\n| stage | steps | final train loss | final val loss (its own data) |\n|---|---|---|---|")
for s in ["pretrain-small", "pretrain-grown", "anneal", "sft-arithmetic", "sft-sort", "pretrain-scratch"]:
    t = artifact(s, "trainer_state.json")
    print(f"| {s} | {t['steps']} | {t['final_loss']:.3f} | {t['final_val_loss']:.3f} |")
print("\n| model | corpus val loss | arithmetic accuracy | arithmetic answer loss | sort accuracy | sort answer loss |\n|---|---|---|---|---|---|")
for s in ["eval-anneal", "eval-arithmetic", "eval-sort", "eval-merge"]:
    m = artifact(s, "metrics.json")
    t = m["tasks"]
    print(f"| {s.removeprefix('eval-')} | {m['val_loss']:.3f} | {t['arithmetic']['accuracy']:.0%} | {t['arithmetic']['answer_loss']:.3f} | {t['sort']['accuracy']:.0%} | {t['sort']['answer_loss']:.3f} |")
small, zero = artifact("eval-small", "metrics.json")["val_loss"], artifact("eval-zero", "metrics.json")["val_loss"]
print(f"\nright after stacking (G_stack, untrained): val loss {artifact('eval-stacked', 'metrics.json')['val_loss']:.4f}")
print(f"zero growth: val loss {small!r} before, {zero!r} after ({'equal' if small == zero else 'DIFFERENT'})")
grown, scratch = artifact("eval-grown", "metrics.json")["val_loss"], artifact("eval-scratch", "metrics.json")["val_loss"]
print(f"equal FLOPs: grown then trained {grown:.4f}, from scratch {scratch:.4f}")
rerun = stages("rerun.jsonl")
print("\nafter --set merge.with.density=0.5, ran:", sorted(s for s, e in rerun.items() if e["status"] == "ran"))
EOF
