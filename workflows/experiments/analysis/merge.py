"""Experiment 6's analysis: each model's held-out accuracy on both families, with Wilson's 95 %
interval over its held-out problems, and its loss on held-out corpus text, from the `compare` stage's
summary (one run per model: the values are that run's)."""


from common import Chart, interval, summary, table, wilson, write, write_json

FAMILIES = ["sort", "spell"]


def label(group):
    name = group.removeprefix("eval-")
    if name.startswith("linear-"):
        return f"linear, t = {int(name.removeprefix('linear-')) / 100:g}"
    method, _, setting = name.partition("@")
    names = {"ft-sort": "fine-tune: sort", "ft-spell": "fine-tune: spell", "ft-both": "multi-task fine-tune",
             "base": "base", "task-arithmetic": "task arithmetic", "ties": "TIES", "dare-ties": "DARE-TIES"}
    setting = setting.replace("lambda=", "λ = ").replace("density=", "density ")
    return names[method] + (f", {setting}" if setting else "")


def main():
    compared = summary()
    rows, result = [], {}
    # Accuracy is 0 for most merges: the answer loss shows what is kept short of exact answers.
    chart = Chart("Merging two fine-tunes: one skill against the other", "sort answer loss", "spell answer loss", lines=False)
    points = {}  # one series per method, each point labelled with its setting
    for group in compared["groups"]:
        f = {k: v["mean"] for k, v in group["finals"].items()}
        acc = {fam: wilson(round(f[f"tasks.{fam}.correct"]), round(f[f"tasks.{fam}.total"])) for fam in FAMILIES}
        name = label(group["name"])
        loss = {fam: f[f"tasks.{fam}.answer_loss"] for fam in FAMILIES}
        result[group["name"]] = {"val_loss": f["val_loss"], "accuracy": acc, "answer_loss": loss}
        rows.append(
            [name]
            + [interval(acc[fam], percent=True) for fam in FAMILIES]
            + [f"{loss[fam]:.3f}" for fam in FAMILIES]
            + [f"{f['val_loss']:.3f}"]
        )
        method, _, setting = name.partition(", ")
        key, _, value = setting.rpartition(" ")
        series = f"{method} ({key.removesuffix(' =')})" if setting else method
        if method.startswith("fine-tune"):
            series, value = "fine-tunes", name.removeprefix("fine-tune: ")
        points.setdefault(series, []).append((loss["sort"], loss["spell"], loss["spell"], loss["spell"], value or name))
    for method, ps in points.items():
        chart.add(method, ps)
    md = "One run per model; Wilson's 95 % interval over its held-out problems:\n\n"
    md += table(["model", "sort accuracy", "spell accuracy", "sort answer loss", "spell answer loss", "corpus text loss"], rows)
    write("results.md", md)
    write_json("results.json", result)
    write("tradeoff.svg", chart.svg())


main()
