#!/usr/bin/env bash
# Runs every test of flow. This is the README's test command and what CI runs (.ci/run).
# Services the tests need are started here and stopped when the tests end: an S3-compatible
# server on loopback (scripts/s3-server.sh) and a one-node Slurm cluster (scripts/slurm.sh),
# for the tests marked as needing them.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target
eval "$(bash scripts/s3-server.sh)"
trap 'kill "$FLOW_TEST_S3_PID" 2>/dev/null || true; bash scripts/slurm.sh stop >/dev/null' EXIT
eval "$(bash scripts/slurm.sh start)"
# The S3 and Slurm tests are `#[ignore]`d so that a bare `cargo test` without the services
# skips them visibly; here they run.
# The GPU tests (tests/gpu.rs) need a `--features cuda` build on a machine with a GPU:
# FLOW_TEST_CUDA=1 bash scripts/test.sh --features cuda runs them there.
if [ "${FLOW_TEST_CUDA:-0}" = 1 ]; then
  filter=()
else
  filter=(-E 'not test(/^gpu::/)')
fi
status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast --run-ignored all "${filter[@]}" "$@" || status=$?
else
  skip=()
  [ "${FLOW_TEST_CUDA:-0}" = 1 ] || skip=(--skip gpu::)
  cargo test --no-fail-fast "$@" -- --include-ignored "${skip[@]}" || status=$?
fi
if [ "${FLOW_TEST_CUDA:-0}" != 1 ]; then
  echo "skipped: no CUDA device — the tests in tests/gpu.rs need a --features cuda build on a GPU machine (FLOW_TEST_CUDA=1); scripts/gpu-check.sh checks a built binary there"
fi
exit "$status"
