#!/usr/bin/env python3
"""Train Hugging Face `LlamaForCausalLM` with the architecture flow's `init` kind makes, on CPU
(or `--device cuda`), and print one JSON line of measurements. The PyTorch peer of
bench/train.sh and of scripts/gpu-check.sh.

    python bench/torch_train.py --vocab 2048 --hidden 128 --layers 2 --heads 4 --kv-heads 4 \
        --ffn 384 --tie --batch 16 --seq 128 --steps 40 --warmup-steps 5 --threads 2

What matches flow's `pretrain`: the model (vocab, hidden, layers, heads, kv heads, SwiGLU
width, RMSNorm eps 1e-5, RoPE theta 10000, tied embeddings), f32, AdamW (lr 3e-3, betas
(0.9, 0.95), eps 1e-8, decoupled weight decay 0.1 on matrices only, as flow does), global-norm
clipping at 1.0, batch x (seq+1) token windows and mean next-token cross-entropy. What does
not, since it does not change the cost of a step: the tokens are uniformly random rather than
text, and the LR is constant rather than flow's cosine.

Every step after the first `--warmup-steps` is timed with time.perf_counter() (forward,
backward, clipping, optimizer step); `tokens_per_s` is batch*seq / the median step time.
`tokens_per_s_all_steps` is batch*seq*steps / the time of all steps, warm-up included: the
way flow's run record computes its `tokens_per_s` (a running mean from the first step).
"""

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab", type=int, required=True)
    p.add_argument("--hidden", type=int, required=True)
    p.add_argument("--layers", type=int, required=True)
    p.add_argument("--heads", type=int, required=True)
    p.add_argument("--kv-heads", type=int, default=None, help="default: --heads")
    p.add_argument("--ffn", type=int, default=None, help="default: 8/3 x hidden rounded up to 32, as flow")
    p.add_argument("--tie", action=argparse.BooleanOptionalAction, default=True,
                   help="tie the embedding and output matrices (default: --tie)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup-steps", type=int, default=5, help="untimed steps before the timed ones")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda (scripts/gpu-check.sh)")
    p.add_argument("--dtype", choices=["f32", "bf16"], default="f32",
                   help="bf16: autocast the forward pass, f32 master weights (flow's `precision: bf16`)")
    a = p.parse_args(argv)
    if a.kv_heads is None:
        a.kv_heads = a.heads
    if a.ffn is None:
        a.ffn = -(-(a.hidden * 8 // 3) // 32) * 32
    if a.steps <= a.warmup_steps:
        p.error("--steps must be larger than --warmup-steps")
    if a.hidden % a.heads or a.heads % a.kv_heads:
        p.error("--heads must divide --hidden and --kv-heads must divide --heads")
    return a


def main(argv=None):
    a = parse_args(argv)
    # Before torch is imported, so that OpenMP starts with this many threads too.
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(a.threads))

    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    torch.set_default_dtype(torch.float32)

    config = LlamaConfig(
        vocab_size=a.vocab,
        hidden_size=a.hidden,
        intermediate_size=a.ffn,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        num_key_value_heads=a.kv_heads,
        hidden_act="silu",
        rms_norm_eps=1e-5,
        rope_theta=10000.0,  # transformers 5 moves it into `rope_parameters`
        max_position_embeddings=max(a.seq, 2048),
        tie_word_embeddings=a.tie,
        bos_token_id=0,
        eos_token_id=0,
        use_cache=False,
        attn_implementation="eager",
    )
    theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta", getattr(config, "rope_theta", None))
    assert theta == 10000.0, f"RoPE theta came out as {theta}"
    model = LlamaForCausalLM(config).to(torch.float32).to(a.device)
    assert model.config._attn_implementation == "eager", model.config._attn_implementation
    assert model.config.tie_word_embeddings == a.tie
    if a.tie:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "embeddings not tied"

    # flow's init: N(0, 0.02) everywhere, residual writers scaled by 1/sqrt(2*layers), norms 1.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.02)
                if name.endswith(("o_proj.weight", "down_proj.weight")):
                    p.mul_(1.0 / math.sqrt(2 * a.layers))
            else:
                p.fill_(1.0)
    model.train()

    params = list(model.parameters())  # shared (tied) tensors appear once
    n_params = sum(p.numel() for p in params)
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=a.lr, betas=(0.9, 0.95), eps=1e-8,
    )

    gen = torch.Generator().manual_seed(a.seed)
    times, losses = [], []
    for step in range(a.steps):
        tokens = torch.randint(0, a.vocab, (a.batch, a.seq + 1), generator=gen, dtype=torch.long).to(a.device)
        x, y = tokens[:, :-1], tokens[:, 1:]
        t0 = time.perf_counter()
        with torch.autocast(device_type=a.device.split(":")[0], dtype=torch.bfloat16, enabled=a.dtype == "bf16"):
            logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        value = loss.item()  # waits for the GPU, so the time is the step's
        times.append(time.perf_counter() - t0)
        losses.append(value)
        if not math.isfinite(value):
            print(f"the loss diverged at step {step + 1} ({value})", file=sys.stderr)
            return 1

    timed = times[a.warmup_steps:]
    median = statistics.median(timed)
    tokens_per_step = a.batch * a.seq
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({
        "impl": "pytorch",
        "device": a.device,
        "dtype": a.dtype,
        "params": n_params,
        "batch": a.batch,
        "seq": a.seq,
        "tokens_per_s": tokens_per_step / median,
        "median_step_s": median,
        "peak_rss_bytes": rss_kib * 1024,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "steps": a.steps,
        "warmup_steps": a.warmup_steps,
        "min_step_s": min(timed),
        "tokens_per_s_all_steps": tokens_per_step * a.steps / sum(times),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "config": {
            "vocab_size": a.vocab, "hidden_size": a.hidden, "intermediate_size": a.ffn,
            "num_hidden_layers": a.layers, "num_attention_heads": a.heads,
            "num_key_value_heads": a.kv_heads, "tie_word_embeddings": a.tie,
        },
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
