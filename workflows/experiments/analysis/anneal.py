"""Experiment 4's analysis: the loss on held-out corpus text, the loss of held-out problems'
answers and their accuracy, for the constant checkpoint and its three continuations, from the
`compare` stage's summary (mean and bootstrap interval over seeds)."""


from common import Chart, interval, summary, table, triple, write, write_json

# Group, label in the table, label in the plot.
ARMS = [
    ("eval-stable", "the constant-rate checkpoint", "checkpoint"),
    ("eval-constant", "+100 steps at constant 3e-3", "+100 constant"),
    ("eval-decay", "+100 steps decaying to 0, pretraining mixture", "+100 decay"),
    ("eval-decay-rich", "+100 steps decaying to 0, enriched mixture", "+100 decay, enriched"),
]



def main():
    compared = summary()
    groups = {g["name"]: g["finals"] for g in compared["groups"]}
    rows, result = [], {}
    chart = Chart("Anneal: corpus text against instruction answers", "loss on held-out corpus text", "answer loss (mean of the two families)", lines=False)
    for name, label, short in ARMS:
        f = groups[name]
        r = {k: triple(v) for k, v in f.items()}
        result[name] = r
        rows.append(
            [
                label,
                interval(r["val_loss"]),
                interval(r["tasks.sort.answer_loss"]),
                interval(r["tasks.reverse.answer_loss"]),
                interval(r["tasks.sort.accuracy"], percent=True),
                interval(r["tasks.reverse.accuracy"], percent=True),
            ]
        )
        answer = (r["tasks.sort.answer_loss"][0] + r["tasks.reverse.answer_loss"][0]) / 2
        chart.add(short, [(r["val_loss"][0], answer, answer, answer)])
    n = compared["groups"][0]["finals"]["val_loss"]["n"]
    md = f"Mean of {n} seeds, 95 % bootstrap interval; the same held-out problems for every model:\n\n"
    md += table(["model", "corpus text loss", "sort answer loss", "reverse answer loss", "sort accuracy", "reverse accuracy"], rows)
    write("results.md", md)
    write_json("results.json", result)
    write("anneal.svg", chart.svg())


main()
