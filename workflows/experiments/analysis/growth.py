"""Experiment 1's analysis: the final (decayed) validation loss of every arm at every budget, and
the compute each arm needs to reach the scratch arm's loss at the target budget, per seed,
interpolated linearly between the budgets (a crossing before the first budget or after the last
is reported as a bound, never extrapolated)."""

import json

from common import Chart, bootstrap, final, interval, param, runs, table, write, write_json


def per_token_flops(config, context):
    """Training FLOPs per token: 6 × the parameters of every matrix product (the tied output head
    included, the embedding lookup not) + 6 × layers × context × width for the attention scores
    and their weighted sum (Kaplan et al. 2020, forward ×3 for the backward pass)."""
    d, f, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    kv = config["num_key_value_heads"] / config["num_attention_heads"]
    per_layer = 2 * d * d + 2 * d * d * kv + 3 * d * f
    return 6 * (layers * per_layer + d * config["vocab_size"]) + 6 * layers * context * d


def crossing(points, target):
    """The compute at which a loss curve [(flops, loss)] first reaches `target`: ('=', x)
    interpolated, ('<', first) if it is already below, ('>', last) if it never gets there."""
    if points[0][1] <= target:
        return "<", points[0][0]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if y1 <= target:
            return "=", x0 + (y0 - target) / (y0 - y1) * (x1 - x0)
    return ">", points[-1][0]


def main():
    # [{name, label, small_steps (one number, or one per budget), budgets, large_steps (per budget)}]
    arms = {a["name"]: a for a in param("arms")}
    tokens = param("tokens_per_step")
    target_budget = param("target_budget")
    large_config = json.loads((runs("scratch")[0] / "config.json").read_text())
    small_config = dict(large_config, num_hidden_layers=param("small_layers"))
    context = param("context")
    f_large, f_small = per_token_flops(large_config, context), per_token_flops(small_config, context)

    loss = {}  # arm → budget → [loss per seed]
    flops = {}  # arm → budget → FLOPs
    for arm, spec in arms.items():
        dirs = runs(arm)
        # Each budget's runs are the members of one decay stage: one per seed, in seed order.
        seeds = len(dirs) // len(spec["budgets"])
        if seeds == 0 or len(dirs) != len(spec["budgets"]) * seeds:
            raise SystemExit(f"{arm}: {len(dirs)} runs for {len(spec['budgets'])} budgets")
        loss[arm], flops[arm] = {}, {}
        small = spec["small_steps"]
        small = small if isinstance(small, list) else [small] * len(spec["budgets"])
        for i, (budget, large_steps) in enumerate(zip(spec["budgets"], spec["large_steps"])):
            loss[arm][budget] = [final(d) for d in dirs[i * seeds:(i + 1) * seeds]]
            flops[arm][budget] = tokens * (small[i] * f_small + large_steps * f_large)

    target = sum(loss["scratch"][target_budget]) / seeds
    rows, reach, chart = [], {}, Chart(
        "G_stack growth 2 → 4 layers against scratch, after the same decay",
        "training compute (TFLOPs)", "validation loss (nats/token)"
    )
    for arm, spec in arms.items():
        points = []
        for budget in spec["budgets"]:
            s = bootstrap(loss[arm][budget], f"{arm}/{budget}")
            points.append((flops[arm][budget] / 1e12, *s))
            rows.append([spec["label"], budget, f"{flops[arm][budget] / 1e12:.3f}", interval(s)])
        chart.add(spec["label"], points)
        per_seed = []
        for s in range(seeds):
            curve = [(flops[arm][b], loss[arm][b][s]) for b in spec["budgets"]]
            per_seed.append(crossing(curve, target))
        reach[arm] = per_seed
    chart.hline(target, f"scratch at {target_budget}: {target:.3f}")

    scratch_flops = flops["scratch"][target_budget]
    reach_rows, summary = [], {}
    for arm, per_seed in reach.items():
        summary[arm] = {"per_seed": [[kind, x / 1e12] for kind, x in per_seed], "share": None}
        if all(kind == "=" for kind, _ in per_seed):
            s = bootstrap([x / scratch_flops for _, x in per_seed], f"reach/{arm}")
            summary[arm]["share"] = s
            text = interval(s, 2)
        elif all(kind == "<" for kind, _ in per_seed):
            text = f"< {max(x for _, x in per_seed) / scratch_flops:.2f} (below the target at its first budget)"
        else:
            text = "not every seed crosses between two budgets"
        reach_rows.append([arms[arm]["label"], ", ".join(f"{k if k != '=' else ''}{x / 1e12:.3f}" for k, x in per_seed), text])

    md = "Final validation loss after the 60-step decay (mean of "
    md += f"{seeds} seeds, 95 % bootstrap interval):\n\n"
    md += table(["arm", "budget (4-layer steps)", "TFLOPs", "val_loss"], rows)
    md += f"\nCompute to reach the scratch arm's loss at {target_budget} steps ({target:.3f}), "
    md += "per seed (TFLOPs; `<`/`>`: before the first or after the last budget), and as a share of "
    md += f"the scratch arm's compute at {target_budget} steps ({scratch_flops / 1e12:.3f} TFLOPs):\n\n"
    md += table(["arm", "TFLOPs per seed", "share of scratch's compute"], reach_rows)
    write("results.md", md)
    write_json("results.json", {"target": target, "loss": loss, "flops": flops, "reach": summary})
    write("growth.svg", chart.svg())


main()
