#!/usr/bin/env bash
# How `flow report` scales: the page of a 200-stage and a 10,000-stage workflow (bench/gen_dag.py,
# every stage built) — the time to write it, its size, and the time headless Chromium takes to
# load and draw it from a file:// URL, against an empty page in the same run. Results go to
# bench/out/report-*.json; docs/benchmarks.md has the table.
#
#   bash bench/report.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"
browse() { chromium --headless --no-sandbox --disable-gpu --no-first-run --host-resolver-rules="MAP * ~NOTFOUND" \
  --user-data-dir="$work/profile" --dump-dom "$1" 2>/dev/null; }
echo '<!DOCTYPE html><html><body><script>document.body.dataset.renderedMs = 0</script></body></html>' > "$work/empty.html"
for shape in "20 10" "100 100"; do
  set -- $shape
  n=$(($1 * $2))
  d="$work/flow$n"
  python3 "$here/gen_dag.py" flow "$1" "$2" "$d"
  cd "$d" && mkdir -p .git
  "$flow" apply workflow.yaml --no-progress >/dev/null 2>&1
  hyperfine --style basic --warmup 1 --runs 5 -N --export-json "$out/report-$n-write.json" "$flow report workflow.yaml -o report.html"
  bytes=$(stat -c %s report.html)
  hyperfine --style basic --warmup 1 --runs 5 --export-json "$out/report-$n-load.json" \
    "chromium --headless --no-sandbox --disable-gpu --no-first-run --user-data-dir=$work/profile --dump-dom file://$work/empty.html" \
    "chromium --headless --no-sandbox --disable-gpu --no-first-run --user-data-dir=$work/profile --dump-dom file://$d/report.html"
  drawn=$(browse "file://$d/report.html#L0S0" | grep -o 'data-rendered-ms="[0-9]*"' | grep -o '[0-9]*')
  nodes=$(browse "file://$d/report.html" | grep -o 'class="node ' | wc -l)
  echo "{\"stages\": $n, \"bytes\": $bytes, \"script_ms\": $drawn, \"nodes_drawn\": $nodes}" | tee "$out/report-$n-summary.json"
done
