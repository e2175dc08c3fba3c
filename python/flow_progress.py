"""Report a training script's progress and metrics to flow (protocol version 1).

One file, no dependencies: copy it next to your script, or put its folder on PYTHONPATH.

    from flow_progress import report

    for step in range(1, steps + 1):
        loss = train_step()
        report(step, total=steps, loss=loss, lr=scheduler.get_last_lr()[0])

Each call prints one line to stdout,

    @flow/1 {"step": 10, "total": 100, "loss": 2.31, "lr": 0.0003}

which `flow apply` reads while the stage runs: the live progress bar, `stage_progress` JSON
events, the run record's metrics, `flow show --plot`, `flow report` and the TensorBoard and
MLflow exports. Outside flow the lines are harmless text. The protocol is in flow's
docs/protocol.md.
"""

import json
import math
import sys

VERSION = 1
"""The protocol version these lines follow."""

_RESERVED = {"step", "total", "eta_s", "device"}


def _number(name, value):
    """A scalar as the protocol carries it: a float, or a string for NaN and infinities."""
    try:
        v = float(value)  # a Python number, a NumPy scalar or a one-element tensor
    except (TypeError, ValueError):
        raise TypeError(f"flow_progress: scalar {name!r} must be a number, not {value!r}") from None
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def _check_name(name):
    ok = 0 < len(name) <= 200 and all(c.isascii() and (c.isalnum() or c in "_-./") for c in name)
    if not ok:
        raise ValueError(f"flow_progress: scalar name {name!r} may hold only letters, digits and _ - . /")


def line(step, total=None, eta_s=None, device=None, **scalars):
    """The protocol line for one report, without its newline."""
    if isinstance(step, bool) or int(step) != step or step < 0:
        raise ValueError(f"flow_progress: step must be a whole number >= 0, not {step!r}")
    report = {"step": int(step)}
    if total is not None:
        if int(total) != total or total < 0:
            raise ValueError(f"flow_progress: total must be a whole number >= 0, not {total!r}")
        report["total"] = int(total)
    if eta_s is not None:
        report["eta_s"] = float(eta_s)
    if device is not None:
        report["device"] = str(device)
    for name, value in scalars.items():
        if value is None:
            continue
        _check_name(name)
        report[name] = _number(name, value)
    return "@flow/%d %s" % (VERSION, json.dumps(report, allow_nan=False, separators=(",", ":")))


def report(step, total=None, eta_s=None, device=None, file=None, **scalars):
    """Prints one report and flushes, so flow sees it now rather than when a buffer fills.

    `step` is required; `total` (the steps of the whole run) gives the progress bar its length.
    Every other keyword is a named scalar: `loss`, `lr`, `val_loss/wiki`, `tokens_per_s`, ...
    Names hold letters, digits and `_ - . /`. Names that are not Python identifiers go through
    a dict: `report(step, **{"val_loss/wiki": v})`.
    """
    out = sys.stdout if file is None else file
    out.write(line(step, total=total, eta_s=eta_s, device=device, **scalars) + "\n")
    out.flush()
