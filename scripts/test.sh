#!/usr/bin/env bash
# Runs every test of flow. This is the README's test command and what CI runs (.ci/run).
# Services the tests need are started here and stopped when the tests end: an S3-compatible
# server on loopback (scripts/s3-server.sh), an MLflow tracking server with the Python that
# reads TensorBoard's files (scripts/mlflow-server.sh) and a one-node Slurm cluster
# (scripts/slurm.sh), for the tests marked as needing them.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target
# The mechanical guards first (seconds when the tree is clean): one format, and no clippy
# warning — which includes printing outside cli/output.rs and pub items nothing outside their
# module can reach (Cargo.toml's [lints], clippy.toml).
guards=0
cargo fmt --check || { echo "the tree is not rustfmt-clean: run \`cargo fmt\`" >&2; guards=1; }
cargo clippy --all-targets --quiet -- -D warnings || { echo "clippy found warnings (above)" >&2; guards=1; }
eval "$(bash scripts/s3-server.sh)"
trap 'kill "$FLOW_TEST_S3_PID" 2>/dev/null || true; bash scripts/slurm.sh stop >/dev/null' EXIT
eval "$(bash scripts/mlflow-server.sh)"
trap 'kill "$FLOW_TEST_S3_PID" "$FLOW_TEST_MLFLOW_PID" 2>/dev/null || true; bash scripts/slurm.sh stop >/dev/null' EXIT
# Starting Slurm needs root: as root a failed start fails the run; otherwise the Slurm tests
# are left out, and the run says so.
slurm=1
if slurm_env=$(bash scripts/slurm.sh start); then
  eval "$slurm_env"
elif [ "$(id -u)" = 0 ]; then
  echo "the Slurm test cluster did not start" >&2
  exit 1
else
  slurm=0
fi
# The S3, MLflow, TensorBoard and Slurm tests are `#[ignore]`d so that a bare `cargo test`
# without the services skips them visibly; here they run.
# The GPU tests (tests/gpu.rs) need a `--features cuda` build on a machine with a GPU:
# FLOW_TEST_CUDA=1 bash scripts/test.sh --features cuda runs them there.
# The report's test renders it in headless Chromium (Debian's package), installed here when
# missing and this is root; elsewhere that test is left out, and the run says so.
chromium=1
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; } || chromium=0
  else
    chromium=0
  fi
fi
# The PyTorch example's test (tests/examples.rs) runs where a Python with PyTorch is found: this
# one, if it has it, or bench/train.sh's venv; elsewhere it says it was skipped.
if [ -z "${FLOW_TEST_TORCH_PYTHON:-}" ] && ! python3 -c 'import torch' 2>/dev/null && [ -x bench/.venv-torch/bin/python ]; then
  export FLOW_TEST_TORCH_PYTHON=$PWD/bench/.venv-torch/bin/python
fi
left_out=()
[ "${FLOW_TEST_CUDA:-0}" = 1 ] || left_out+=(gpu)
[ "$slurm" = 1 ] || left_out+=(slurm)
[ "$chromium" = 1 ] || left_out+=(report)
status=0
if cargo nextest --version >/dev/null 2>&1; then
  expr="all()"
  for m in "${left_out[@]}"; do expr="$expr and not test(/^$m::/)"; done
  cargo nextest run --no-fail-fast --run-ignored all -E "$expr" "$@" || status=$?
else
  skip=()
  for m in "${left_out[@]}"; do skip+=(--skip "$m::"); done
  cargo test --no-fail-fast "$@" -- --include-ignored "${skip[@]}" || status=$?
fi
if [ "$chromium" = 0 ]; then
  echo "skipped: no Chromium — scripts/test.sh could not install it (it needs root and apt); the tests in tests/report.rs did not run"
fi
if [ -z "${FLOW_TEST_TORCH_PYTHON:-}" ] && ! python3 -c 'import torch' 2>/dev/null; then
  echo "skipped: no PyTorch — the PyTorch example's test (tests/examples.rs) did not run (set FLOW_TEST_TORCH_PYTHON to a Python that has it)"
fi
if [ "$slurm" = 0 ]; then
  echo "skipped: no Slurm cluster — scripts/slurm.sh could not start one (it needs root); the tests in tests/slurm.rs did not run"
fi
if [ "${FLOW_TEST_CUDA:-0}" != 1 ]; then
  echo "skipped: no CUDA device — the tests in tests/gpu.rs need a --features cuda build on a GPU machine (FLOW_TEST_CUDA=1); scripts/gpu-check.sh checks a built binary there"
fi
if [ "$guards" != 0 ]; then
  echo "failed: cargo fmt --check or cargo clippy -D warnings (above)"
  status=1
fi
exit "$status"
