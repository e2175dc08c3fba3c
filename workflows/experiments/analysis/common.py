"""What every experiment's analysis stage shares: reading its inputs the way flow hands them to a
`command` stage, intervals (a percentile bootstrap over seeds, Wilson's score interval for an
accuracy), a Markdown table and a small SVG chart. Standard library only, so the analysis runs
wherever flow does; every random draw comes from a generator seeded by what it summarises, so
an analysis is as reproducible as the stages before it.
"""

import hashlib
import json
import math
import os
import random
from pathlib import Path
from xml.sax.saxutils import escape

OUT = Path(os.environ.get("FLOW_OUT", "."))


def runs(role):
    """The artifact directories of a list role, in the order the workflow lists them."""
    count = int(os.environ[f"FLOW_IN_{role}_COUNT"])
    return [Path(os.environ[f"FLOW_IN_{role}_{i}"]) for i in range(count)]


def param(key, default=None):
    """A `with:` value of the analysis stage, parsed as JSON (numbers, lists, mappings)."""
    raw = os.environ.get(f"FLOW_WITH_{key}")
    if raw is None:
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def summary(role="compare"):
    """The summary.json of the `compare` stage named by a single role."""
    return json.loads((Path(os.environ[f"FLOW_IN_{role}"]) / "summary.json").read_text())


def triple(s):
    """(mean, low, high) of one of `compare`'s summaries."""
    return s["mean"], s["ci_low"], s["ci_high"]


def metrics(run):
    """A training run's metrics.jsonl, one dictionary per step."""
    with open(run / "metrics.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def final(run, metric="val_loss"):
    """The last value of `metric` a training run logged."""
    values = [m[metric] for m in metrics(run) if m.get(metric) is not None]
    if not values:
        raise SystemExit(f"{run} logged no {metric}")
    return values[-1]


def evaluation(run):
    """An `eval` stage's metrics.json."""
    with open(run / "metrics.json") as f:
        return json.load(f)


def mean(values):
    return sum(values) / len(values)


def bootstrap(values, label, resamples=2000, confidence=0.95):
    """(mean, low, high): the mean and a percentile-bootstrap interval of it over `values` (the
    seeds of one arm). `label` seeds the resampling, so intervals do not move between runs."""
    values = list(values)
    m = mean(values)
    if len(values) == 1:
        return m, m, m
    rng = random.Random(hashlib.blake2b(label.encode(), digest_size=8).digest())
    means = sorted(mean([rng.choice(values) for _ in values]) for _ in range(resamples))
    tail = (1 - confidence) / 2
    return m, means[int(tail * (resamples - 1))], means[int(math.ceil((1 - tail) * (resamples - 1)))]


def wilson(correct, total, z=1.959964):
    """(accuracy, low, high): Wilson's 95% score interval of a proportion — sound at 0 and 1,
    where the normal approximation gives an interval of width 0."""
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return p, max(0.0, centre - half), min(1.0, centre + half)


def interval(summary, digits=3, percent=False):
    """"2.345 [2.301, 2.390]" from (mean, low, high)."""
    m, lo, hi = summary
    if percent:
        return f"{100 * m:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]"
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def table(header, rows):
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write(name, text):
    (OUT / name).write_text(text)


def write_json(name, value):
    write(name, json.dumps(value, indent=2, sort_keys=True) + "\n")


COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


class Chart:
    """A line or scatter chart with interval bars, one colour per series, as SVG text.

    A series is a name and points (x, y, low, high); `lines=False` draws the points alone (a
    trade-off plot), and a point's name, when given as a fifth element, is written beside it."""

    W, H, LEFT, RIGHT, TOP, BOTTOM = 640, 400, 70, 170, 30, 50

    def __init__(self, title, xlabel, ylabel, lines=True):
        self.title, self.xlabel, self.ylabel, self.lines = title, xlabel, ylabel, lines
        self.series = []
        self.hlines = []

    def add(self, name, points):
        self.series.append((name, [tuple(p) for p in points]))

    def hline(self, y, label):
        self.hlines.append((y, label))

    def svg(self):
        points = [p for _, ps in self.series for p in ps]
        xs = [p[0] for p in points]
        ys = [v for p in points for v in p[1:4]] + [y for y, _ in self.hlines]
        x0, x1 = _span(min(xs), max(xs))
        y0, y1 = _span(min(ys), max(ys))
        pw, ph = self.W - self.LEFT - self.RIGHT, self.H - self.TOP - self.BOTTOM

        def sx(x):
            return self.LEFT + (x - x0) / (x1 - x0) * pw

        def sy(y):
            return self.TOP + (1 - (y - y0) / (y1 - y0)) * ph

        out = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.W}" height="{self.H}" '
            f'font-family="sans-serif" font-size="11">',
            f'<rect width="{self.W}" height="{self.H}" fill="white"/>',
            f'<text x="{self.W / 2}" y="18" text-anchor="middle" font-size="13">{escape(self.title)}</text>',
            f'<rect x="{self.LEFT}" y="{self.TOP}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>',
        ]
        for t in _ticks(x0, x1):
            out.append(f'<line x1="{sx(t):.1f}" y1="{self.TOP + ph}" x2="{sx(t):.1f}" y2="{self.TOP + ph + 4}" stroke="#888"/>')
            out.append(f'<text x="{sx(t):.1f}" y="{self.TOP + ph + 16}" text-anchor="middle">{_fmt(t)}</text>')
        for t in _ticks(y0, y1):
            out.append(f'<line x1="{self.LEFT - 4}" y1="{sy(t):.1f}" x2="{self.LEFT}" y2="{sy(t):.1f}" stroke="#888"/>')
            out.append(f'<text x="{self.LEFT - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
        out.append(f'<text x="{self.LEFT + pw / 2}" y="{self.H - 12}" text-anchor="middle">{escape(self.xlabel)}</text>')
        out.append(
            f'<text x="16" y="{self.TOP + ph / 2}" text-anchor="middle" '
            f'transform="rotate(-90 16 {self.TOP + ph / 2})">{escape(self.ylabel)}</text>'
        )
        for y, label in self.hlines:
            out.append(f'<line x1="{self.LEFT}" y1="{sy(y):.1f}" x2="{self.LEFT + pw}" y2="{sy(y):.1f}" stroke="#555" stroke-dasharray="4 3"/>')
            out.append(f'<text x="{self.LEFT + pw - 4}" y="{sy(y) - 4:.1f}" text-anchor="end" fill="#555">{escape(label)}</text>')
        for i, (name, ps) in enumerate(self.series):
            colour = COLOURS[i % len(COLOURS)]
            if self.lines and len(ps) > 1:
                path = " ".join(f"{sx(p[0]):.1f},{sy(p[1]):.1f}" for p in ps)
                out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
            for p in ps:
                x, y, lo, hi = p[:4]
                if hi > lo:
                    out.append(f'<line x1="{sx(x):.1f}" y1="{sy(lo):.1f}" x2="{sx(x):.1f}" y2="{sy(hi):.1f}" stroke="{colour}"/>')
                out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"/>')
                if len(p) > 4:
                    # Left of points near the right edge, so that labels stay inside the plot.
                    right = sx(x) > self.LEFT + 0.75 * pw
                    lx, anchor = (sx(x) - 5, "end") if right else (sx(x) + 5, "start")
                    out.append(
                        f'<text x="{lx:.1f}" y="{sy(y) - 5:.1f}" text-anchor="{anchor}" fill="{colour}" '
                        f'font-size="10">{escape(p[4])}</text>'
                    )
            ly = self.TOP + 14 + 16 * i
            lx = self.W - self.RIGHT + 12
            out.append(f'<rect x="{lx}" y="{ly - 8}" width="10" height="10" fill="{colour}"/>')
            out.append(f'<text x="{lx + 14}" y="{ly + 1}">{escape(name)}</text>')
        out.append("</svg>\n")
        return "\n".join(out)


def _span(lo, hi):
    if hi == lo:
        return lo - 1, hi + 1
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def _ticks(lo, hi, n=6):
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * step:
            step *= m
            break
    t = math.ceil(lo / step) * step
    ticks = []
    while t <= hi + 1e-12:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _fmt(v):
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.1e}"
    return f"{v:g}"
