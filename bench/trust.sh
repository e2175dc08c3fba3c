#!/usr/bin/env bash
# What trust costs a no-op apply: bench/gen_dag.py's 200-stage DAG, everything in the local
# store, applied by a build without trust (OLD_FLOW), by this build, and by this build with
# trusted keys and a signing key configured — in the same run. Local hits are never checked
# (the local store is trusted), so the cost is reading the keys. Results in
# bench/out/trust-noop.json.
#
#   bash bench/trust.sh OLD_FLOW
set -euo pipefail
source "$(dirname "$0")/common.sh"
old=$(realpath "$1")
new=$flow
python3 "$here/gen_dag.py" flow 20 10 "$work/d"
cd "$work/d" && mkdir -p .git
"$new" key generate bench --out "$work/bench.secret" > "$work/bench.public" 2>/dev/null
"$new" key generate other --out "$work/other.secret" > "$work/other.public" 2>/dev/null
keys="$(cat "$work/bench.public"),$(cat "$work/other.public")"
"$new" apply workflow.yaml --no-progress >/dev/null 2>&1
# Every command goes through `env`, so the one that needs it for its variables pays no more.
hyperfine --style basic --warmup 10 --runs 150 -N --export-json "$out/trust-noop.json" \
  --command-name before "env $old apply workflow.yaml --no-progress" \
  --command-name after "env $new apply workflow.yaml --no-progress" \
  --command-name "after, with trust" "env FLOW_TRUSTED_KEYS=$keys FLOW_SIGNING_KEY=$work/bench.secret $new apply workflow.yaml --no-progress"
