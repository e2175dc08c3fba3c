#!/usr/bin/env bash
# Training throughput and memory: flow's `pretrain` (candle, CPU) against PyTorch +
# transformers' LlamaForCausalLM on the same model shape, batch and sequence length.
# Results go to bench/out/train.json; copy the table into docs/benchmarks.md.
#
#   cargo build --release           # this script builds nothing: it runs target/release/flow
#   bash bench/train.sh             # both sizes, 40 steps, 2 threads
#   SIZES=small bash bench/train.sh
#   SIZES=fortunes THREADS=1 bash bench/train.sh   # real text (apt-get install fortunes), 1 thread
#
# Environment: SIZES ("small medium fortunes"; "tiny" smoke-tests the script), FLOW (the flow binary,
# default target/release/flow), STEPS (40), WARMUP (5, PyTorch's untimed steps),
# THREADS (2; RAYON_NUM_THREADS for flow/candle, torch.set_num_threads for PyTorch),
# PIP_ARGS (extra `pip install` arguments, e.g. "--index-url https://download.pytorch.org/whl/cpu").
#
# The first run creates bench/.venv-torch and installs torch and transformers from PyPI
# (about 5.6 GB with NVIDIA's libraries, which `import torch` needs even on CPU).
#
# What is measured, per size:
# - flow: a generated workflow (corpus → data → init → pretrain) in a temporary directory.
#   `--target init` is applied first, so the timed `flow apply --target pretrain` only trains.
#   tokens/s is the run record's `metrics.tokens_per_s` (cache/ac/<fingerprint>.json): flow's
#   running mean over all steps, the first included, and the final 1-window evaluation. Peak
#   RSS is `/usr/bin/time -v`'s "Maximum resident set size", which covers the
#   `flow run-stage` child that trains.
# - PyTorch: bench/torch_train.py with the shape read from the init artifact's config.json
#   (the data stage's BPE may learn fewer than vocab_size tokens), random tokens. tokens/s is
#   batch·seq / the median step after WARMUP untimed steps; "torch all" is the mean over all
#   steps like flow's figure. Peak RSS is the process's ru_maxrss.
# Both sides must see an idle machine: two threads competing with anything else (a cargo
# build) make OpenMP's PyTorch many times slower and the comparison meaningless.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
out="$here/out"
flow=${FLOW:-$root/target/release/flow}
venv="$here/.venv-torch"
SIZES=${SIZES:-small medium fortunes}
STEPS=${STEPS:-40}
WARMUP=${WARMUP:-5}
THREADS=${THREADS:-2}

if [ ! -x "$flow" ]; then
  echo "error: $flow does not exist; this script builds nothing." >&2
  echo "       Build it first: cargo build --release --manifest-path $root/Cargo.toml" >&2
  exit 1
fi
if [ ! -x /usr/bin/time ]; then
  echo "error: /usr/bin/time (GNU time) is missing: apt-get install time" >&2
  exit 1
fi
if ! { [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import torch, transformers' 2>/dev/null; }; then
  echo "== installing torch and transformers into $venv (about 5.6 GB)"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  echo '*' >"$venv/.gitignore" # as Python 3.13's venv does: never commit 5.6 GB
  # shellcheck disable=SC2086 # PIP_ARGS is a list of words
  "$venv/bin/python" -m pip install -q ${PIP_ARGS:-} torch transformers
fi
py="$venv/bin/python"

export CI=1 RAYON_NUM_THREADS="$THREADS"
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# name → vocab hidden layers heads kv_heads ffn batch seq (tied embeddings in both)
shape() {
  case "$1" in
    small) echo "2048 128 2 4 4 384 16 128" ;;
    medium) echo "8192 256 6 8 8 768 16 256" ;;
    # medium's shape on real text: the fortune files of Debian's `fortunes` package (2.6 MB),
    # on which the BPE learns the whole vocabulary of 8,192 (the generated corpus has fewer).
    fortunes) echo "8192 256 6 8 8 768 16 256" ;;
    tiny) echo "256 32 1 4 4 96 4 32" ;; # a smoke test of this script, not a benchmark
    *) echo "error: unknown size \`$1\` (small, medium, fortunes, tiny)" >&2; return 1 ;;
  esac
}

check_idle() {
  local load
  load=$(cut -d' ' -f1 /proc/loadavg)
  if awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
    echo "warning: load average $load: this machine is not idle; the numbers will be noisy" >&2
  fi
}

# `stage` line of STAGE in the JSON events file → "status fingerprint artifact"
stage_line() {
  python3 - "$1" "$2" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("type") == "stage" and e.get("stage") == sys.argv[2]:
        print(e["status"], e.get("fingerprint") or "-", e.get("artifact") or "-")
        break
else:
    print("missing - -")
PY
}

fail_stage() { # events-file stage stderr-file
  echo "error: flow did not run \`$2\`" >&2
  grep -h '"type":"stage"' "$1" >&2 || true
  tail -n 20 "$3" >&2 || true
  exit 1
}

# The machine's f32 matrix-multiplication peak on THREADS threads, as PyTorch (MKL/oneDNN) reaches
# it: the best of a few 2048³ products. Training GFLOP/s below are 6·params·tokens/s.
peak=$("$py" - "$THREADS" <<'PY'
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
a @ b
best = min((lambda t0: (a @ b, time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(8))
print(f"{2 * 2048 ** 3 / best / 1e9:.1f}")
PY
)
echo "== f32 matmul peak on $THREADS threads: $peak GFLOP/s"

rows="$work/rows.jsonl"
: >"$rows"
for size in $SIZES; do
  dims=$(shape "$size")
  read -r V H L NH KV F B S <<<"$dims"
  d="$work/$size"
  mkdir -p "$d"
  if [ "$size" = fortunes ]; then
    fortunes=/usr/share/games/fortunes
    [ -d "$fortunes" ] || { echo "error: $fortunes is missing: apt-get install fortunes" >&2; exit 1; }
    mkdir -p "$d/text"
    for f in "$fortunes"/*; do
      case $f in *.dat | *.u8) ;; *) [ -f "$f" ] && cp "$f" "$d/text/$(basename "$f").txt" ;; esac
    done
    data="    inputs: [text/*.txt]
    with: {vocab_size: $V, split: percent}"
  else
    data="    needs: {sources: [text]}
    with: {vocab_size: $V}"
  fi
  cat >"$d/wf.yaml" <<EOF
version: 1
name: bench-train-$size
store: {local: cache}
defaults: {seed: 1}
stages:
  text:
    kind: corpus
    with: {documents: 4000}
  data:
    kind: data
$data
  init:
    kind: init
    needs: {tokenizer: data}
    with: {layers: $L, hidden: $H, heads: $NH, kv_heads: $KV, ffn: $F, tie_embeddings: true}
  pretrain:
    kind: pretrain
    needs: {model: init, data: data}
    with:
      steps: $STEPS
      batch: $B
      seq_len: $S
      lr: 3.0e-3
      eval_every: 1000
      eval_windows: 1
      checkpoint_every: 0
EOF

  echo "== $size: corpus, data and init (not timed)"
  (cd "$d" && "$flow" apply wf.yaml --json --target init >init.jsonl 2>init.err) || fail_stage "$d/init.jsonl" init "$d/init.err"
  read -r status _ artifact <<<"$(stage_line "$d/init.jsonl" init)"
  [ "$status" = ran ] || [ "$status" = cached ] || fail_stage "$d/init.jsonl" init "$d/init.err"
  model="$d/cache/artifacts/$artifact"
  if [ ! -f "$model/config.json" ]; then
    model=$(cd "$d" && "$flow" show wf.yaml init --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["path"])')
  fi
  # The real shape (vocab_size may be below $V) and flow's parameter count, from the
  # safetensors header (a tied lm_head, if stored, is counted once).
  info=$(python3 - "$model" <<'PY'
import json, math, struct, sys, os
d = sys.argv[1]
c = json.load(open(os.path.join(d, "config.json")))
with open(os.path.join(d, "model.safetensors"), "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
tie = bool(c.get("tie_word_embeddings"))
params = sum(math.prod(t["shape"]) for k, t in header.items()
             if k != "__metadata__" and not (tie and k == "lm_head.weight"))
print(c["vocab_size"], c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"],
      c["num_key_value_heads"], c["intermediate_size"], "tie" if tie else "no-tie", params)
PY
)
  read -r vocab hidden layers heads kv ffn tie flow_params <<<"$info"
  [ "$vocab" = "$V" ] || echo "note: the data stage learned $vocab tokens (asked for $V); both models use $vocab"

  echo "== $size: flow pretrain, $STEPS steps of $B x $S"
  check_idle
  (cd "$d" && /usr/bin/time -v -o time.txt "$flow" apply wf.yaml --json --target pretrain >pretrain.jsonl 2>pretrain.err) ||
    fail_stage "$d/pretrain.jsonl" pretrain "$d/pretrain.err"
  read -r status fingerprint _ <<<"$(stage_line "$d/pretrain.jsonl" pretrain)"
  [ "$status" = ran ] || fail_stage "$d/pretrain.jsonl" pretrain "$d/pretrain.err"
  cp "$d/time.txt" "$out/train-$size-flow.time"
  cp "$d/cache/ac/$fingerprint.json" "$out/train-$size-flow-record.json"

  echo "== $size: PyTorch, $STEPS steps ($WARMUP untimed) of $B x $S"
  check_idle
  "$py" "$here/torch_train.py" --vocab "$vocab" --hidden "$hidden" --layers "$layers" --heads "$heads" \
    --kv-heads "$kv" --ffn "$ffn" "--$tie" --batch "$B" --seq "$S" --steps "$STEPS" \
    --warmup-steps "$WARMUP" --threads "$THREADS" >"$d/torch.json"
  cp "$d/torch.json" "$out/train-$size-torch.json"

  row=$(python3 - "$size" "$d/cache/ac/$fingerprint.json" "$d/time.txt" "$d/torch.json" "$flow_params" <<'PY'
import json, re, sys
size, record, timefile, torchfile, flow_params = sys.argv[1:]
rec = json.load(open(record))
rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(timefile).read())
wall = re.search(r"Elapsed \(wall clock\) time[^:]*: (\S+)", open(timefile).read())
t = json.loads(open(torchfile).read().strip().splitlines()[-1])
if int(flow_params) != t["params"]:
    sys.exit(f"error: {size}: flow's model has {flow_params} parameters, PyTorch's {t['params']}")
flow = {
    "tokens_per_s": rec["metrics"]["tokens_per_s"],
    "peak_rss_bytes": int(rss.group(1)) * 1024,
    "stage_seconds": rec["seconds"],
    "apply_wall": wall.group(1) if wall else None,
    "loss_last": rec["metrics"].get("loss"),
    "flow_version": rec.get("flow_version"),
    "fingerprint": rec["fingerprint"],
}
print(json.dumps({"size": size, "params": t["params"], "batch": t["batch"], "seq": t["seq"],
                  "config": t["config"], "flow": flow, "torch": t,
                  "tokens_per_s_ratio": flow["tokens_per_s"] / t["tokens_per_s"],
                  "rss_ratio": flow["peak_rss_bytes"] / t["peak_rss_bytes"]}))
PY
)
  echo "$row" >>"$rows"
done

python3 - "$rows" "$out/train.json" "$STEPS" "$WARMUP" "$THREADS" "$peak" <<'PY'
import json, platform, sys, datetime
path, steps, warmup, threads, peak = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
doc = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
       "host": platform.node(), "cpu": cpu, "steps": steps, "warmup_steps": warmup,
       "threads": threads, "matmul_peak_gflops": peak, "results": rows}
json.dump(doc, open(path, "w"), indent=2)
gb = lambda b: f"{b / 1e9:.2f} GB"
print()
print(f"{'size':8} {'params':>8} {'batch×seq':>10} {'flow tok/s':>11} {'torch tok/s':>12} {'ratio':>6} "
      f"{'torch all':>10} {'flow RSS':>9} {'torch RSS':>10} {'ratio':>6} {'flow GF/s':>10} {'torch GF/s':>11}")
for r in rows:
    f, t = r["flow"], r["torch"]
    print(f"{r['size']:8} {r['params'] / 1e6:7.2f}M {str(r['batch']) + '×' + str(r['seq']):>10} "
          f"{f['tokens_per_s']:11.0f} {t['tokens_per_s']:12.0f} {r['tokens_per_s_ratio']:6.2f} "
          f"{t['tokens_per_s_all_steps']:10.0f} {gb(f['peak_rss_bytes']):>9} {gb(t['peak_rss_bytes']):>10} "
          f"{r['rss_ratio']:6.2f} {6 * r['params'] * f['tokens_per_s'] / 1e9:10.1f} "
          f"{6 * r['params'] * t['tokens_per_s'] / 1e9:11.1f}")
print(f"\nratios are flow / PyTorch; torch {rows[0]['torch']['torch'] if rows else '?'}, {threads} threads, "
      f"{steps} steps; 'torch all' is PyTorch's mean over all steps, as flow's figure is; "
      f"GF/s = 6·params·tokens/s, against a measured f32 matmul peak of {peak:.1f} GFLOP/s")
print(f"written to {path}")
PY
