"""Experiment 2's analysis: WSD branches against cosine runs, per budget and peak rate, from the
`compare` stage's summary (mean and bootstrap interval over seeds); the best rate of each
schedule per budget; and the steps the shared constant phase saved."""

import re

from common import Chart, interval, param, summary, table, write, write_json


def main():
    compared = summary()
    budgets = param("budgets")
    result = {}  # (schedule, budget, lr) → (mean, low, high)
    for group in compared["groups"]:
        m = re.fullmatch(r"(wsd|cosine)-(\d+)@lr=([0-9.e-]+)", group["name"])
        if not m:
            raise SystemExit(f"unexpected group {group['name']}")
        f = group["finals"]["val_loss"]
        result[(m[1], int(m[2]), float(m[3]))] = (f["mean"], f["ci_low"], f["ci_high"])
    rates = sorted({lr for _, _, lr in result})

    rows = []
    for budget in budgets:
        for lr in rates:
            rows.append([budget, f"{lr:g}", interval(result[("wsd", budget, lr)]), interval(result[("cosine", budget, lr)])])
    best_rows, best = [], {}
    chart = Chart("WSD branches against cosine runs (labels: the best peak rate)", "budget (steps)", "validation loss (nats/token)")
    for schedule in ("wsd", "cosine"):
        points = []
        for budget in budgets:
            lr = min(rates, key=lambda r: result[(schedule, budget, r)][0])
            best[(schedule, budget)] = lr
            points.append((budget, *result[(schedule, budget, lr)], f"{lr:g}"))
        chart.add("WSD (branches)" if schedule == "wsd" else "cosine", points)
    for budget in budgets:
        w, c = best[("wsd", budget)], best[("cosine", budget)]
        best_rows.append([budget, f"{interval(result[('wsd', budget, w)])} at {w:g}", f"{interval(result[('cosine', budget, c)])} at {c:g}"])

    # Steps per seed and rate: the constant legs end at 80 % of the largest budget, each budget
    # adds its 20 % decay; separate runs would repeat the constant phase for every budget.
    shared = int(0.8 * max(budgets)) + sum(int(0.2 * b) for b in budgets)
    separate = sum(budgets)
    n = compared["groups"][0]["finals"]["val_loss"]["n"]
    md = f"Final validation loss (mean of {n} seeds, 95 % bootstrap interval) at every budget and peak rate:\n\n"
    md += table(["budget", "peak LR", "WSD", "cosine"], rows)
    md += "\nThe best peak rate of each schedule at each budget (chosen by the mean):\n\n"
    md += table(["budget", "WSD", "cosine"], best_rows)
    md += f"\nSteps per seed and rate for all three WSD budgets: {shared} with the shared constant phase, "
    md += f"{separate} as three separate runs ({100 * (1 - shared / separate):.0f} % saved).\n"
    write("results.md", md)
    write_json(
        "results.json",
        {
            "runs": [{"schedule": s, "budget": b, "lr": lr, "val_loss": v} for (s, b, lr), v in sorted(result.items())],
            "best": [{"schedule": s, "budget": b, "lr": lr} for (s, b), lr in sorted(best.items())],
            "steps_shared": shared,
            "steps_separate": separate,
        },
    )
    write("wsd.svg", chart.svg())


main()
