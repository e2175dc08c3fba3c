"""Experiment 3's analysis: per continuation arm, the final loss on the old domain (A) and the new
one (B), the worst loss on A during the run (the stability gap: how far above the pretrained
model's loss on A it rose) and the curves of both, from the `compare` stages' summaries."""


from common import Chart, interval, summary, table, triple, write, write_json

A, B = "val_loss/data-a", "val_loss/data-b"
ARMS = ["keep-0", "keep-5", "keep-25", "rewarm-0", "rewarm-5", "rewarm-25"]


def describe(arm):
    schedule, replay = arm.split("-")
    how = "constant 3e-4 (no re-warm)" if schedule == "keep" else "re-warm to 3e-3, cosine"
    return how, f"{replay} %"




def main():
    groups = {g["name"]: g for g in summary("compare")["groups"]}
    base = summary("base")["groups"][0]["finals"]
    base_a, base_b = triple(base[A]), triple(base[B])

    rows, result = [], {}
    for arm in ARMS:
        g = groups[arm]
        curve_a = g["curves"][A]
        worst = max(curve_a, key=lambda p: p["mean"])
        how, replay = describe(arm)
        result[arm] = {
            "a": triple(g["finals"][A]),
            "b": triple(g["finals"][B]),
            "worst_a": worst["mean"],
            "worst_a_step": worst["step"],
        }
        rows.append(
            [
                how,
                replay,
                interval(result[arm]["a"]),
                interval(result[arm]["b"]),
                f"{worst['mean']:.3f} at step {worst['step']} (+{worst['mean'] - base_a[0]:.3f})",
            ]
        )

    n = base[A]["n"]
    md = f"The pretrained model ({n} seeds): loss on A {interval(base_a)}, on B {interval(base_b)}.\n\n"
    md += f"After 400 steps on B (mean of {n} seeds, 95 % bootstrap interval); the worst loss on A "
    md += "during the run, and how far above the pretrained model's it rose:\n\n"
    md += table(["learning rate", "A replayed", "loss on A", "loss on B", "worst loss on A"], rows)
    write("results.md", md)
    write_json("results.json", {"base": {"a": base_a, "b": base_b}, "arms": result})

    tradeoff = Chart("Continual pretraining: the final trade-off", "loss on B (new domain)", "loss on A (old domain)", lines=False)
    for arm in ARMS:
        a, b = result[arm]["a"], result[arm]["b"]
        how, replay = describe(arm)
        tradeoff.add(f"{arm.split('-')[0]}, {replay} replay", [(b[0], *a)])
    tradeoff.add("pretrained on A", [(base_b[0], *base_a)])
    write("tradeoff.svg", tradeoff.svg())

    for key, metric, name in (("a", A, "the old domain A"), ("b", B, "the new domain B")):
        curves = Chart(f"Loss on {name} while training on B", "step of the continuation", f"loss on {key.upper()}")
        for arm in ARMS:
            curves.add(arm, [(p["step"], p["mean"], p["ci_low"], p["ci_high"]) for p in groups[arm]["curves"][metric]])
        curves.hline(base_a[0] if key == "a" else base_b[0], "pretrained on A")
        write(f"curves-{key}.svg", curves.svg())


main()
