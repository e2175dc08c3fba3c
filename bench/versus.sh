#!/usr/bin/env bash
# Two builds of flow against each other, in the same run, on bench/gen_dag.py's 200-stage DAG
# of trivial shell stages: a full run from an empty store (per-stage overhead: starting,
# supervising, relaying and committing each stage) and a no-op re-run. Results go to
# bench/out/versus-*.json.
#
#   bash bench/versus.sh OLD_FLOW NEW_FLOW
#
# e.g. OLD_FLOW built from an earlier commit:
#   git worktree add /tmp/base REV && (cd /tmp/base && cargo build --release) && cp /tmp/base/target/release/flow /tmp/flow-base
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$here/out"
mkdir -p "$out"
old=$(realpath "$1")
new=$(realpath "$2")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CI=1
python3 "$here/gen_dag.py" flow 20 10 "$work/a"
python3 "$here/gen_dag.py" flow 20 10 "$work/b"
mkdir -p "$work/a/.git" "$work/b/.git"
# Each binary in a directory of its own; the stores moved aside (not deleted) before each run
# (bench/dag.sh says why).
trash="$work/trash"
mkdir -p "$trash"
aside='$(date +%s%N)'
hyperfine --style basic --warmup 1 --runs 10 --export-json "$out/versus-200-full.json" \
  --prepare "cd $work/a && mv cache $trash/$aside 2>/dev/null; rm -f workflow.lock" \
  --command-name old "cd $work/a && $old apply workflow.yaml --no-progress" \
  --prepare "cd $work/b && mv cache $trash/$aside 2>/dev/null; rm -f workflow.lock" \
  --command-name new "cd $work/b && $new apply workflow.yaml --no-progress"
(cd "$work/a" && "$old" apply workflow.yaml --no-progress >/dev/null 2>&1)
(cd "$work/b" && "$new" apply workflow.yaml --no-progress >/dev/null 2>&1)
hyperfine --style basic --warmup 3 --runs 30 -N --export-json "$out/versus-200-noop.json" \
  --command-name old "$old apply $work/a/workflow.yaml --no-progress" \
  --command-name new "$new apply $work/b/workflow.yaml --no-progress"
