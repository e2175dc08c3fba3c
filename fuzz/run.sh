#!/usr/bin/env bash
# Fuzzes each target for SECONDS (default 300) with cargo-fuzz (libFuzzer) and prints, per
# target, the executions run and what was found. New crashing inputs land in
# fuzz/artifacts/<target>/; minimise one (`cargo +nightly fuzz tmin <target> <file>`), fix the
# bug, and keep the input in fuzz/regressions/<target>/, which the test suite replays.
#
#   rustup toolchain install nightly && cargo install cargo-fuzz
#   bash fuzz/run.sh [SECONDS] [TARGET...]
#
# Built without a sanitizer (`-s none`): the code under test is safe Rust, where libFuzzer's
# own checks (panics, timeouts, memory limit) are what find bugs, at several times the speed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-300}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(workflow manifest record)
cargo +nightly fuzz build -s none
for t in "${targets[@]}"; do
  case $t in workflow) dict=fuzz/dicts/yaml.dict ;; *) dict=fuzz/dicts/json.dict ;; esac
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log=$(mktemp)
  status=0
  # -rss_limit_mb and -timeout make an input that takes over 2 GiB or 10 s a finding.
  cargo +nightly fuzz run -s none "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" "fuzz/regressions/$t" -- \
    -max_total_time="$seconds" -dict="$dict" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 >"$log" 2>&1 || status=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  found=$(find "fuzz/artifacts/$t" -type f | wc -l)
  echo "$t: $execs executions in ${seconds} s, corpus $corpus inputs, exit $status, $found input(s) in fuzz/artifacts/$t"
  [ "$status" -eq 0 ] || tail -40 "$log"
  rm -f "$log"
done
