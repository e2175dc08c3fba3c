"""A small character-level language model in PyTorch, trained as a flow `command` stage.

Inputs come from flow's environment: the text stage's artifact in $FLOW_IN_text, the
parameters in $FLOW_WITH_*, a directory kept across interrupted attempts in $FLOW_RESUME, the
output directory in $FLOW_OUT. Progress goes to flow through flow_progress.report (protocol
version 1, docs/protocol.md).
"""

import json
import math
import os
import time

import torch
from torch import nn

from flow_progress import report


def param(name, kind):
    return kind(os.environ[f"FLOW_WITH_{name}"])


steps, lr, batch, context, seed = (param("steps", int), param("lr", float), param("batch", int),
                                   param("context", int), param("seed", int))
torch.manual_seed(seed)
torch.set_num_threads(int(os.environ.get("RAYON_NUM_THREADS", "0")) or torch.get_num_threads())

with open(os.path.join(os.environ["FLOW_IN_text"], "documents.jsonl")) as f:
    text = "\n".join(json.loads(line)["text"] for line in f)
chars = sorted(set(text))
ids = torch.tensor([chars.index(c) for c in text], dtype=torch.long)
split = int(len(ids) * 0.9)
train_ids, val_ids = ids[:split], ids[split:]


class CharModel(nn.Module):
    def __init__(self, vocab, dim=64):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.rnn = nn.GRU(dim, dim, batch_first=True)
        self.head = nn.Linear(dim, vocab)

    def forward(self, x):
        h, _ = self.rnn(self.embed(x))
        return self.head(h)


def batch_of(source, generator):
    starts = torch.randint(0, len(source) - context - 1, (batch,), generator=generator)
    x = torch.stack([source[s:s + context] for s in starts])
    y = torch.stack([source[s + 1:s + context + 1] for s in starts])
    return x, y


model = CharModel(len(chars))
opt = torch.optim.AdamW(model.parameters(), lr=lr)
loss_fn = nn.CrossEntropyLoss()
generator = torch.Generator().manual_seed(seed)
resume = os.path.join(os.environ["FLOW_RESUME"], "checkpoint.pt")
start = 0
if os.path.exists(resume):
    state = torch.load(resume)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    generator.set_state(state["generator"])
    start = state["step"]
    history = state["history"]
else:
    history = []

val_gen = torch.Generator().manual_seed(seed + 1)
val_batches = [batch_of(val_ids, val_gen) for _ in range(4)]
began = time.monotonic()
for step in range(start + 1, steps + 1):
    x, y = batch_of(train_ids, generator)
    loss = loss_fn(model(x).reshape(-1, len(chars)), y.reshape(-1))
    opt.zero_grad()
    loss.backward()
    opt.step()
    row = {"loss": loss.item(), "lr": lr, "tokens_per_s": (step - start) * batch * context / (time.monotonic() - began)}
    if step % 50 == 0 or step == steps:
        with torch.no_grad():
            row["val_loss"] = sum(loss_fn(model(vx).reshape(-1, len(chars)), vy.reshape(-1)).item()
                                  for vx, vy in val_batches) / len(val_batches)
    # The artifact keeps what a rerun reproduces; the wall-clock rate goes only to flow.
    history.append({"step": step, **{k: v for k, v in row.items() if k != "tokens_per_s"}})
    if "val_loss" in row:
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "generator": generator.get_state(),
                    "step": step, "history": history}, resume)
    report(step, total=steps, **row)

out = os.environ["FLOW_OUT"]
torch.save(model.state_dict(), os.path.join(out, "model.pt"))
with open(os.path.join(out, "vocab.json"), "w") as f:
    json.dump(chars, f)
with open(os.path.join(out, "history.jsonl"), "w") as f:
    for row in history:
        f.write(json.dumps(row) + "\n")
final = history[-1]
print(f"final loss {final['loss']:.3f}, val loss {final.get('val_loss', math.nan):.3f} (uniform: {math.log(len(chars)):.3f})")
