#!/usr/bin/env bash
# The S3 remote against the S3-compatible test server (moto, on loopback), compared in the same
# run with `aws s3 cp --recursive` (awscli from PyPI) moving the same files to the same server:
#   - push and pull of a 1 GiB checkpoint artifact (one file),
#   - push and pull of an artifact of 10,000 small files (4 KiB each),
#   - a no-op `flow apply` with a remote configured vs the same apply with `--offline`.
# The numbers of docs/benchmarks.md, section "S3 remote".
#
#   cargo build --release        # this script builds nothing: it runs target/release/flow
#   bash bench/remote.sh         # about 5 minutes; needs PyPI the first time (awscli, moto)
#
# Environment: FLOW (the flow binary, default target/release/flow), OUT (a directory for the
# run, default bench/out/remote; emptied first).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
flow=${FLOW:-$root/target/release/flow}
out=${OUT:-$root/bench/out/remote}
venv=$root/target/bench-venv
if [ ! -x "$venv/bin/aws" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "awscli>=1.36,<2"
fi
eval "$(bash "$root/scripts/s3-server.sh")"
trap 'kill "$FLOW_TEST_S3_PID" 2>/dev/null || true' EXIT
export AWS_ENDPOINT_URL=$FLOW_TEST_S3_ENDPOINT AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=testing \
  AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
bucket=$FLOW_TEST_S3_BUCKET
rm -rf "$out" && mkdir -p "$out" && cd "$out"
cat >wf.yaml <<'EOF'
version: 1
stages:
  checkpoint:
    kind: command
    run: head -c 1073741824 /dev/urandom > $FLOW_OUT/model.safetensors
  shards:
    kind: command
    run: |
      python3 -c '
      import os, sys
      out = os.environ["FLOW_OUT"]
      for i in range(10000):
          d = os.path.join(out, f"{i // 1000:02d}")
          os.makedirs(d, exist_ok=True)
          open(os.path.join(d, f"{i:05d}.bin"), "wb").write(os.urandom(4096))
      '
EOF
"$flow" apply wf.yaml --offline --cache a >/dev/null
now() { date +%s.%N; }
lap() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$2"; }

# flow: push both artifacts from store `a`, pull them into an empty store `b`; per-stage seconds
# come from the JSON stage lines.
"$flow" push wf.yaml --cache a --remote "s3://$bucket/flow" --json >push.jsonl
"$flow" pull wf.yaml --cache b --remote "s3://$bucket/flow" --json >pull.jsonl

# awscli: the same files, the same server.
aws=$venv/bin/aws
artifact() { python3 -c "import json,sys; print(json.load(open('wf.lock'))['stages'][sys.argv[1]]['artifact'])" "$1"; }
declare -A aws_up aws_down
for stage in checkpoint shards; do
  dir=a/artifacts/$(artifact $stage)
  t0=$(now); "$aws" s3 cp --recursive --quiet "$dir" "s3://$bucket/aws/$stage"; t1=$(now)
  "$aws" s3 cp --recursive --quiet "s3://$bucket/aws/$stage" "aws-down/$stage"; t2=$(now)
  aws_up[$stage]=$(lap "$t0" "$t1"); aws_down[$stage]=$(lap "$t1" "$t2")
  diff -r "$dir" "aws-down/$stage" >/dev/null
done
cmp "b/artifacts/$(artifact checkpoint)/model.safetensors" "a/artifacts/$(artifact checkpoint)/model.safetensors"

# No-op applies: everything is in store `b`; with the remote configured flow must not contact it.
python3 - "$flow" "$bucket" <<'PY' >noop.txt
import statistics, subprocess, sys, time
flow, bucket = sys.argv[1:3]
def run(extra):
    t = time.perf_counter()
    subprocess.run([flow, "apply", "wf.yaml", "--cache", "b", *extra], check=True, capture_output=True)
    return (time.perf_counter() - t) * 1000
remote, offline = [], []
for _ in range(30):
    remote.append(run(["--remote", f"s3://{bucket}/flow"]))
    offline.append(run(["--offline"]))
print(f"{statistics.median(remote):.1f} {statistics.median(offline):.1f}")
PY

python3 - "${aws_up[checkpoint]}" "${aws_down[checkpoint]}" "${aws_up[shards]}" "${aws_down[shards]}" <<'PY'
import json, sys
up_ck, down_ck, up_sh, down_sh = map(float, sys.argv[1:5])
def seconds(path):
    return {e["stage"]: e["seconds"] for e in map(json.loads, open(path)) if e.get("type") == "stage"}
push, pull = seconds("push.jsonl"), seconds("pull.jsonl")
size = {"checkpoint": 1 << 30, "shards": 10000 * 4096}
aws = {("checkpoint", "push"): up_ck, ("checkpoint", "pull"): down_ck, ("shards", "push"): up_sh, ("shards", "pull"): down_sh}
print("| artifact | direction | flow | aws s3 cp --recursive | flow throughput ÷ aws |")
print("|---|---|---|---|---|")
for stage, label in [("checkpoint", "1 GiB checkpoint (1 file)"), ("shards", "10,000 files × 4 KiB")]:
    for direction, times in [("push", push), ("pull", pull)]:
        f, a = times[stage], aws[(stage, direction)]
        mib = size[stage] / (1 << 20)
        print(f"| {label} | {direction} | {f:.2f} s ({mib / f:.0f} MiB/s) | {a:.2f} s ({mib / a:.0f} MiB/s) | {a / f:.2f}× |")
remote, offline = map(float, open("noop.txt").read().split())
print(f"\nno-op apply (2 stages, all local), median of 30: with a remote {remote:.1f} ms, --offline {offline:.1f} ms, difference {remote - offline:+.1f} ms")
PY
