#!/usr/bin/env bash
# Runs every test of flow. This is the README's test command and what CI runs (.ci/run).
# Services the tests need are started and stopped here.
set -euo pipefail
cd "$(dirname "$0")/.."
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast "$@"
else
  cargo test --no-fail-fast "$@"
fi
