"""Experiment 5's analysis: held-out accuracy per family against the loss on held-out corpus text,
for the base and for fine-tunes at each replay ratio (mean and bootstrap interval over seeds from
the `compare` stage; Wilson's interval of each single run's accuracy over its problems from
the evaluations themselves)."""


from common import Chart, evaluation, interval, runs, summary, table, triple, wilson, write, write_json

FAMILIES = ["sort", "reverse"]



def main():
    compared = summary()
    groups = {g["name"]: g for g in compared["groups"]}
    order = ["eval-base"] + sorted((n for n in groups if n != "eval-base"), key=lambda n: float(n.split("replay=")[1]))

    rows, result, series = [], {}, {fam: [] for fam in FAMILIES}
    chart = Chart("Fine-tuning: a skill against the corpus", "loss on held-out corpus text", "held-out accuracy (%)", lines=False)
    for name in order:
        f = {k: triple(v) for k, v in groups[name]["finals"].items()}
        label = "base (no fine-tuning)" if name == "eval-base" else f"fine-tuned, {100 * float(name.split('replay=')[1]):g} % replay"
        result[name] = f
        rows.append(
            [label, interval(f["val_loss"])]
            + [interval(f[f"tasks.{fam}.accuracy"], percent=True) for fam in FAMILIES]
            + [interval(f[f"tasks.{fam}.answer_loss"]) for fam in FAMILIES]
        )
        short = "base" if name == "eval-base" else f"{100 * float(name.split('replay=')[1]):g} %"
        for fam in FAMILIES:
            a = f[f"tasks.{fam}.accuracy"]
            series[fam].append((f["val_loss"][0], 100 * a[0], 100 * a[1], 100 * a[2], short))

    for fam in FAMILIES:
        chart.add(f"{fam} (label: replay)", series[fam])
    singles = []
    for i, run in enumerate(runs("evals")):
        m = evaluation(run)
        singles.append(
            [f"#{i + 1}"]
            + [
                interval(wilson(m["tasks"][fam]["correct"], m["tasks"][fam]["total"]), percent=True)
                + f" of {m['tasks'][fam]['total']}"
                for fam in FAMILIES
            ]
        )

    n = groups[order[-1]]["finals"]["val_loss"]["n"]
    md = f"Mean of {n} seeds (the base: one model), 95 % bootstrap interval over seeds:\n\n"
    md += table(
        ["model", "corpus text loss", "sort accuracy", "reverse accuracy", "sort answer loss", "reverse answer loss"], rows
    )
    md += "\nEach evaluation on its own, with Wilson's 95 % interval over its problems (in the order "
    md += "base, then each seed's fine-tunes by replay ratio — the order of the `evals` role):\n\n"
    md += table(["evaluation", "sort", "reverse"], singles)
    write("results.md", md)
    write_json("results.json", result)
    write("tradeoff.svg", chart.svg())


main()
