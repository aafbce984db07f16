"""The report's figures, drawn with matplotlib and returned as inline SVG (fonts as paths, no
external reference: the page opens anywhere, offline)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from service.results.verdicts import usable  # noqa: E402

plt.rcParams.update({"svg.fonttype": "path", "figure.dpi": 100, "font.size": 9, "axes.grid": True,
                     "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
                     # Titles and labels carry users' strings (study names, choice values): plain
                     # text, never math text or LaTeX (a name "$\nosuchcmd$" made the report a 500).
                     "text.parse_math": False, "text.usetex": False})
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
STAGE_MARKERS = {1: "o", 2: "^", 3: "s", 4: "D"}


ORDER = ("sgd", "adamw", "rmsprop", "shampoo", "rfrmsprop", "rfshampoo", "ifshampoo")


def color(optimizer: str) -> str:
    """One colour per optimizer on every figure of a page."""
    i = ORDER.index(optimizer) if optimizer in ORDER else len(ORDER) + sum(map(ord, optimizer))
    return COLORS[i % len(COLORS)]


def svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _finite(v) -> bool:
    """A value a figure can place: finite and of a size matplotlib's tick locators can handle
    (a finite 1.5e308 made them fail: a 500 for the whole report)."""
    return v is not None and isinstance(v, int | float) and usable(float(v))


def expected_best(analysis: dict, metric: str) -> str:
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for opt, a in analysis["optimizers"].items():
        curve = a["expected_best"]
        if not curve:
            continue
        k = [p["trials"] for p in curve]
        ax.plot(k, [p["mean"] for p in curve], color=color(opt), label=opt)
        ax.fill_between(k, [p["lo"] for p in curve], [p["hi"] for p in curve], color=color(opt), alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("number of search trials (k)")
    ax.set_ylabel(f"expected best {metric}")
    ax.legend(frameon=False)
    return svg(fig)


def edf(analysis: dict, metric: str) -> str:
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    styles = ["-", "--", ":", "-."]
    for opt, a in analysis["optimizers"].items():
        for j, (stage, points) in enumerate(sorted(a["edf"].items())):
            if points:
                ax.step([p[0] for p in points], [p[1] for p in points], where="post", color=color(opt),
                        linestyle=styles[j % len(styles)], label=f"{opt} stage {stage}")
    ax.set_xlabel(metric)
    ax.set_ylabel("share of trials at or below")
    ax.legend(frameon=False, fontsize=7)
    return svg(fig)


def learning_curves(curves: dict[str, dict[str, list[list[dict]]]], metric: str) -> str:
    """curves[optimizer] = {"best": [history, ...], "seeds": [history, ...]}."""
    opts = list(curves)
    fig, axes = plt.subplots(1, max(1, len(opts)), figsize=(3.2 * max(1, len(opts)), 3.0), squeeze=False,
                             sharey=True)
    for i, opt in enumerate(opts):
        ax = axes[0][i]
        for j, h in enumerate(curves[opt]["best"]):
            pts = [(r["epoch"], r[metric]) for r in h if _finite(r.get(metric))]
            if pts:
                ax.plot(*zip(*pts, strict=True), color=color(opt), alpha=1.0 - 0.25 * j, marker="o", markersize=3,
                        label="best search trials" if j == 0 else None)
        for j, h in enumerate(curves[opt]["seeds"]):
            pts = [(r["epoch"], r[metric]) for r in h if _finite(r.get(metric))]
            if pts:
                ax.plot(*zip(*pts, strict=True), color="0.45", linewidth=0.8, linestyle="--",
                        label="seed runs" if j == 0 else None)
        ax.set_title(opt)
        ax.set_xlabel("epoch")
        if i == 0:
            ax.set_ylabel(metric)
        ax.legend(frameon=False, fontsize=7)
    return svg(fig)


def hyperparameter(analysis: dict, name: str, metric: str) -> str:
    opts = [(o, a["hyperparameters"][name]) for o, a in analysis["optimizers"].items() if name in a["hyperparameters"]]
    fig, axes = plt.subplots(1, len(opts), figsize=(3.2 * len(opts), 3.0), squeeze=False, sharey=True)
    for i, (opt, sl) in enumerate(opts):
        ax = axes[0][i]
        r2 = sl["ranges"].get("2")
        if r2 and _finite(r2[0]) and _finite(r2[1]):
            ax.axvspan(r2[0], r2[1], color=color(opt), alpha=0.12, label="stage-2 range")
        for stage in sorted({p["stage"] for p in sl["points"]}):
            pts = [(p["value"], p["objective"]) for p in sl["points"]
                   if p["stage"] == stage and _finite(p["objective"]) and _finite(p["value"])]
            if pts:
                ax.scatter(*zip(*pts, strict=True), s=14, color=color(opt), marker=STAGE_MARKERS.get(stage, "o"),
                           alpha=0.8 if stage > 1 else 0.5, label=f"stage {stage}")
        if sl["log"]:
            ax.set_xscale("log")
        ax.set_title(opt)
        ax.set_xlabel(name)
        if i == 0:
            ax.set_ylabel(metric)
        ax.legend(frameon=False, fontsize=7)
    return svg(fig)


def seeds(analysis: dict, metric: str) -> str:
    items = [(o, a["seed_runs"]["values"]) for o, a in analysis["optimizers"].items() if a["seed_runs"]["values"]]
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(items), 3.2))
    ax.boxplot([v for _, v in items], showfliers=False)
    for i, (opt, v) in enumerate(items):
        ax.scatter([i + 1 + 0.06 * ((j % 5) - 2) for j in range(len(v))], v, s=14, color=color(opt), zorder=3)
    ax.set_xticks(range(1, len(items) + 1), [o for o, _ in items])
    ax.set_ylabel(metric)
    return svg(fig)


def status_counts(analysis: dict) -> str:
    opts = list(analysis["optimizers"])
    statuses = ["completed", "diverged", "failed", "stopped"]
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(opts), 3.0))
    bottom = [0] * len(opts)
    for j, s in enumerate(statuses):
        vals = [analysis["optimizers"][o]["status_counts"].get(s, 0) for o in opts]
        ax.bar(opts, vals, bottom=bottom, color=["#4c72b0", "#dd8452", "#c44e52", "#8c8c8c"][j], label=s)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_ylabel("trials")
    ax.legend(frameon=False, fontsize=7)
    return svg(fig)


def cost(analysis: dict) -> str:
    opts = list(analysis["optimizers"])
    fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.0))
    t = [analysis["optimizers"][o]["time_per_epoch_s"] or 0 for o in opts]
    m = [analysis["optimizers"][o]["peak_memory_mb"] or 0 for o in opts]
    axes[0].bar(opts, t, color=[color(o) for o in opts])
    axes[0].set_ylabel("mean time per epoch (s)")
    axes[1].bar(opts, m, color=[color(o) for o in opts])
    axes[1].set_ylabel("peak memory (MB)")
    return svg(fig)


def figure_one(studies: Sequence[dict]) -> str:
    """The paper's Figure 1 layout: one panel per study (workload), a bar per optimizer."""
    fig, axes = plt.subplots(1, len(studies), figsize=(3.2 * len(studies), 3.2), squeeze=False)
    for i, st in enumerate(studies):
        ax = axes[0][i]
        opts = [r["optimizer"] for r in st["rows"]]
        vals = [r["value"] if r["value"] is not None else 0 for r in st["rows"]]
        errs = [r["std"] or 0 for r in st["rows"]]
        ax.bar(opts, vals, yerr=errs, capsize=3, color=[color(o) for o in opts])
        ax.set_title(f"{st['name']} ({st['workload']})", fontsize=8)
        ax.set_ylabel(st["metric"])
        ax.tick_params(axis="x", labelrotation=30)
    return svg(fig)


def profile(prof: dict[str, list[list[float]]]) -> str:
    fig, ax = plt.subplots(figsize=(6.0, 3.2))
    for opt, pts in sorted(prof.items()):
        ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", color=color(opt), label=opt)
    ax.set_xlabel("factor τ from the best optimizer of each study")
    ax.set_ylabel("share of studies")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(frameon=False)
    return svg(fig)
