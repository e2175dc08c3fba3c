#!/usr/bin/env bash
# The same bytes whatever SIMD the CPU offers (issue 18, point 4): runs workflows/tiny-lm.yaml
# from an empty store with flow built with gemm's AVX-512 kernels (the default) and without them
# (AVX2 + FMA only), and compares every stage's artifact digest in the two lock files. On an
# AVX-512 machine the two builds take different matrix kernels for every product; the fused
# training path must not let that change a bit. Also prints each run's wall time: the cost (or
# gain) of the wider kernels.
#
#   bash bench/simd.sh      # builds target/release/flow and target/no-avx512/release/flow
#
# Environment: WORKFLOW (default workflows/tiny-lm.yaml).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
workflow=${WORKFLOW:-$root/workflows/tiny-lm.yaml}
grep -q avx512f /proc/cpuinfo || echo "note: this CPU has no AVX-512: both builds take the AVX2 kernels" >&2
cargo build --release --manifest-path "$root/Cargo.toml" >/dev/null
CARGO_TARGET_DIR="$root/target/no-avx512" cargo build --release --no-default-features --manifest-path "$root/Cargo.toml" >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for build in avx512 avx2; do
  case $build in
    avx512) flow=$root/target/release/flow ;;
    avx2) flow=$root/target/no-avx512/release/flow ;;
  esac
  mkdir -p "$work/$build/.git"
  cp "$workflow" "$work/$build/workflow.yaml"
  start=$(date +%s.%N)
  (cd "$work/$build" && CI=1 "$flow" apply workflow.yaml --no-progress >/dev/null 2>&1)
  echo "$build: $(echo "$(date +%s.%N) - $start" | bc) s"
done
if diff <(grep -v '^#' "$work/avx512/workflow.lock") <(grep -v '^#' "$work/avx2/workflow.lock"); then
  echo "identical: every artifact digest of $(basename "$workflow") is the same with and without AVX-512"
else
  echo "DIFFERENT artifacts with and without AVX-512 (above)" >&2
  exit 1
fi
