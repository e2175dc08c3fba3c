#!/usr/bin/env bash
# Checks a CUDA build of flow (scripts/build-cuda.sh) on a GPU machine: a few minutes, no
# network, no Rust toolchain; it needs the NVIDIA driver and a Python with PyTorch (whose
# NVIDIA libraries the binary uses). Results go to $OUT (default target/gpu-check):
# gpu-check.json and one line per check on stdout.
#
#   bash scripts/gpu-check.sh   # FLOW_BIN, else target/cuda/release/flow, else target/cuda/flow.gz
#
# 1. forward: the same initialised model evaluated on the CPU and on the GPU (f32): the
#    validation losses agree to 1e-4, and init gives the same artifact on both.
# 2. step: one pretrain step on each: the gradient norm agrees to 1e-4 (relative) and every
#    weight to 1e-3 (lr 4e-4: AdamW's first step moves each weight by ±lr, so even a
#    near-zero gradient whose sign differs between devices stays within it).
# 3. tiny: workflows/tiny-lm.yaml (reduced) trains on the GPU; its loss falls.
# 4. throughput: a ~90M-parameter model (hidden 768, 12 layers, vocab 8192), batch 16 × 512,
#    f32 and bf16, tokens/s and model FLOPs utilisation, beside PyTorch (eager
#    LlamaForCausalLM, bench/torch_train.py) on the same GPU, shape and batch.
#
# GPU_CHECK_DEVICE=cpu runs the same script on the CPU (a dry run of the script itself, with
# small sizes), e.g. `FLOW_BIN=target/release/flow GPU_CHECK_DEVICE=cpu bash scripts/gpu-check.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
device=${GPU_CHECK_DEVICE:-cuda}
out=$(realpath -m "${OUT:-target/gpu-check}")
rm -rf "$out" && mkdir -p "$out"
flow=${FLOW_BIN:-target/cuda/release/flow}
# What scripts/build-cuda.sh packs for carrying to a GPU machine.
if [ -z "${FLOW_BIN:-}" ] && [ ! -x "$flow" ] && [ -f target/cuda/flow.gz ]; then
  gunzip -c target/cuda/flow.gz >"$out/flow" && chmod +x "$out/flow" && flow="$out/flow"
fi
flow=$(realpath "$flow")
results="$out/results.jsonl"
: >"$results"
note() { echo "$*"; }
record() { echo "$1" >>"$results"; }

# The CUDA 13 libraries: from the Python environment's NVIDIA wheels (the driver is the
# machine's own).
libs=$(python3 - <<'PY'
import glob, os, site, sys
roots = set(site.getsitepackages() + [site.getusersitepackages()] + [p for p in sys.path if p.endswith("site-packages")])
dirs = set()
for r in roots:
    for d in glob.glob(os.path.join(r, "nvidia", "**", "lib"), recursive=True):
        if any(glob.glob(os.path.join(d, f"lib{n}.so*")) for n in ("cublas", "cudart", "curand", "nvrtc")):
            dirs.add(d)
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ldd "$flow" | grep -q "not found"; then
  ldd "$flow" | grep "not found"
  echo "FAIL: libraries missing (LD_LIBRARY_PATH=$LD_LIBRARY_PATH)"
  exit 1
fi
if [ "$device" != cpu ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
fi
if [ "$device" = cpu ]; then small=1; else small=0; fi

# flow apply in its own store; prints the JSON events.
apply() { local cache=$1; shift; "$flow" apply "$out/wf.yaml" --json --cache "$out/$cache" "$@"; }
artifact() { grep "\"stage\":\"$2\"" "$1" | grep '"type":"stage"' | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["artifact"])'; }
file_of() { echo "$out/$1/artifacts/$(artifact "$out/$2.jsonl" "$3")/$4"; }

cat >"$out/wf.yaml" <<'EOF'
version: 1
defaults: {seed: 3}
stages:
  text: {kind: corpus, with: {documents: 400}}
  data: {kind: data, needs: {sources: [text]}, with: {vocab_size: 512, val_fraction: 0.1}}
  model: {kind: init, needs: {tokenizer: data}, with: {layers: 2, hidden: 128, heads: 4, ffn: 384}}
  score: {kind: eval, needs: {model: model, data: data}, with: {seq_len: 64, windows: 16}}
  step:
    kind: pretrain
    needs: {model: model, data: data}
    with: {steps: 1, batch: 4, seq_len: 64, lr: 4.0e-4, warmup: 0}
EOF

# 1 and 2: the same stages on the CPU and on the device, in two stores.
apply cpu --device cpu >"$out/cpu.jsonl"
apply dev --device "$device" >"$out/dev.jsonl"
python3 - "$(file_of cpu cpu score metrics.json)" "$(file_of dev dev score metrics.json)" \
  "$(artifact "$out/cpu.jsonl" model)" "$(artifact "$out/dev.jsonl" model)" >>"$results" <<'PY'
import json, sys
a, b = (json.load(open(p))["val_loss"] for p in sys.argv[1:3])
ok = abs(a - b) <= 1e-4 * max(1.0, abs(a)) and sys.argv[3] == sys.argv[4]
print(json.dumps({"check": "forward", "ok": ok, "val_loss_cpu": a, "val_loss_device": b, "diff": abs(a - b), "same_init": sys.argv[3] == sys.argv[4]}))
PY
python3 - "$(file_of cpu cpu step model.safetensors)" "$(file_of dev dev step model.safetensors)" \
  "$(file_of cpu cpu step metrics.jsonl)" "$(file_of dev dev step metrics.jsonl)" >>"$results" <<'PY'
import json, struct, sys
from array import array
def load(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        assert meta["dtype"] == "F32", meta["dtype"]
        lo, hi = meta["data_offsets"]
        out[name] = array("f", data[8 + n + lo:8 + n + hi])
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
diff = max(max(abs(x - y) for x, y in zip(a[k], b[k])) for k in a)
na, nb = (json.loads(open(p).readline())["grad_norm"] for p in sys.argv[3:5])
ok = diff <= 1e-3 and a.keys() == b.keys() and abs(na - nb) <= 1e-4 * na
print(json.dumps({"check": "step", "ok": ok, "max_abs_diff": diff, "tensors": len(a), "grad_norm_cpu": na, "grad_norm_device": nb}))
PY

# 3: the tiny example, reduced, on the device.
sets=(--set text.with.documents=1500 --set rich-text.with.documents=300 --set corpus.with.vocab_size=512
  --set pretrain.with.steps=60 --set pretrain.with.warmup=5 --set anneal.with.steps=10 --set eval.with.windows=8)
cp workflows/tiny-lm.yaml "$out/tiny-lm.yaml"
"$flow" apply "$out/tiny-lm.yaml" --json --cache "$out/tiny" --device "$device" "${sets[@]}" >"$out/tiny.jsonl"
python3 - "$out/tiny.jsonl" "$out/tiny" >>"$results" <<'PY'
import json, sys
events = [json.loads(l) for l in open(sys.argv[1])]
stage = next(e for e in events if e["type"] == "stage" and e["stage"] == "pretrain")
rows = [json.loads(l) for l in open(f"{sys.argv[2]}/artifacts/{stage['artifact']}/metrics.jsonl")]
summary = events[-1]
print(json.dumps({"check": "tiny", "ok": summary["failed"] == 0 and rows[-1]["loss"] < rows[0]["loss"] - 1.0,
                  "loss_first": rows[0]["loss"], "loss_last": rows[-1]["loss"], "seconds": summary["seconds"]}))
PY

# 4: throughput, flow and PyTorch, f32 and bf16.
if [ "$small" = 1 ]; then
  shape=(64 2 4 192 1024) batch=2 seq=64 steps=4 docs=3000
else
  shape=(768 12 12 2048 8192) batch=16 seq=512 steps=30 docs=40000
fi
read -r hidden layers heads ffn vocab <<<"${shape[*]}"
cat >"$out/big.yaml" <<EOF
version: 1
defaults: {seed: 5}
stages:
  text: {kind: corpus, with: {documents: $docs}}
  data: {kind: data, needs: {sources: [text]}, with: {vocab_size: $vocab, val_fraction: 0.01}}
  model: {kind: init, needs: {tokenizer: data}, with: {layers: $layers, hidden: $hidden, heads: $heads, ffn: $ffn}}
  f32:
    kind: pretrain
    needs: {model: model, data: data}
    with: {steps: $steps, batch: $batch, seq_len: $seq, lr: 1.0e-3, warmup: 2, eval_every: 1000, checkpoint_every: 1000}
  bf16:
    kind: pretrain
    needs: {model: model, data: data}
    with: {steps: $steps, batch: $batch, seq_len: $seq, lr: 1.0e-3, warmup: 2, eval_every: 1000, checkpoint_every: 1000, precision: bf16}
EOF
"$flow" apply "$out/big.yaml" --json --cache "$out/big" --device "$device" --jobs 1 >"$out/big.jsonl"
for dtype in f32 bf16; do
  if python3 -c "import transformers" 2>/dev/null; then
    python3 bench/torch_train.py --device "$device" --dtype "$dtype" --vocab "$vocab" --hidden "$hidden" --layers "$layers" \
      --heads "$heads" --ffn "$ffn" --tie --batch "$batch" --seq "$seq" --steps "$steps" --warmup-steps 5 --threads 8 \
      >"$out/torch-$dtype.json" || echo '{"error": "bench/torch_train.py failed"}' >"$out/torch-$dtype.json"
  else
    echo '{"error": "transformers is not installed: no PyTorch peer"}' >"$out/torch-$dtype.json"
  fi
done
python3 - "$out" "$device" >>"$results" <<'PY'
import json, sys
out, device = sys.argv[1], sys.argv[2]
events = [json.loads(l) for l in open(f"{out}/big.jsonl")]
stages = {e["stage"]: e for e in events if e["type"] == "stage"}
name = open(f"{out}/gpu.txt").read().strip() if device != "cpu" else "cpu"
# Dense peak of one H100/H200 SXM: bf16 tensor cores 989 TFLOP/s; f32 (TF32 tensor cores) 495.
peak = {"f32": 494.7e12, "bf16": 989.4e12}
for dtype in ("f32", "bf16"):
    s = stages[dtype]
    metrics = [json.loads(l) for l in open(f"{out}/big/artifacts/{s['artifact']}/metrics.jsonl")]
    progress = [e["progress"] for e in events if e["type"] == "stage_progress" and e["stage"] == dtype and "tokens_per_s" in e["progress"]]
    flow_tps = progress[-1]["tokens_per_s"]
    model = json.load(open(f"{out}/big/artifacts/{s['artifact']}/config.json"))
    h, l, f, v = model["hidden_size"], model["num_hidden_layers"], model["intermediate_size"], model["vocab_size"]
    params = v * h + l * (4 * h * h + 3 * h * f + 2 * h) + h
    torch = json.load(open(f"{out}/torch-{dtype}.json"))
    torch_tps = torch.get("tokens_per_s_all_steps")
    mfu = lambda tps: 6 * params * tps / peak[dtype]
    # The target: at least half PyTorch's eager tokens/s; without a PyTorch result there is
    # nothing to judge, and the line says SKIP.
    ok = None if not torch_tps else flow_tps >= 0.5 * torch_tps
    print(json.dumps({"check": f"throughput-{dtype}", "ok": ok, "gpu": name, "params": params,
                      "flow_tokens_per_s": flow_tps, "flow_mfu": mfu(flow_tps),
                      "torch_tokens_per_s": torch_tps, "torch_mfu": torch_tps and mfu(torch_tps),
                      "ratio": torch_tps and flow_tps / torch_tps, "torch": torch,
                      "loss_first": metrics[0]["loss"], "loss_last": metrics[-1]["loss"]}))
PY

python3 - "$results" "$out/gpu-check.json" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
json.dump(rows, open(sys.argv[2], "w"), indent=2)
for r in rows:
    shown = {k: v for k, v in r.items() if k not in ("check", "ok")}
    verdict = {True: "PASS", False: "FAIL", None: "SKIP"}[r["ok"]]
    print(f"{verdict} {r['check']}: {json.dumps(shown)}")
sys.exit(0 if all(r["ok"] is not False for r in rows) else 1)
PY
