"""The report's figures, drawn with matplotlib and returned as inline SVG (fonts as paths, no
external reference: the page opens anywhere, offline).

Drawing is most of a report's cost (issue 19), so each figure is drawn once: not twice as
`bbox_inches="tight"` does (a dry draw to measure, then the real one); the tight box is measured
from the one draw and applied to the SVG's viewBox. Figures are made without pyplot (no global
figure list), log axes label ticks in plain text (no math text) and put minor ticks only where
they label a short range, and a legend is drawn only where something has a label."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
from matplotlib import ticker  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from service.results.verdicts import usable  # noqa: E402

matplotlib.rcParams.update({"svg.fonttype": "path", "figure.dpi": 100, "font.size": 9, "axes.grid": True,
                            "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
                            # Titles and labels carry users' strings (study names, choice values):
                            # plain text, never math text or LaTeX (a name "$\nosuchcmd$" made the
                            # report a 500).
                            "text.parse_math": False, "text.usetex": False})
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
STAGE_MARKERS = {1: "o", 2: "^", 3: "s", 4: "D"}
PAD_INCHES = 0.1  # around the tight box, as savefig's bbox_inches="tight" pads
# A scatter of more points than this is drawn as an image in the SVG (at RASTER_DPI): thousands of
# vector markers made a study's page megabytes and took longer to write than the rest of a figure.
RASTER_POINTS, RASTER_DPI = 1000, 150


ORDER = ("sgd", "adamw", "rmsprop", "shampoo", "rfrmsprop", "rfshampoo", "ifshampoo")


def color(optimizer: str) -> str:
    """One colour per optimizer on every figure of a page."""
    i = ORDER.index(optimizer) if optimizer in ORDER else len(ORDER) + sum(map(ord, optimizer))
    return COLORS[i % len(COLORS)]


def subplots(ncols: int = 1, figsize: tuple[float, float] = (6.4, 3.6), **kw):
    """A figure of one row of `ncols` axes: (figure, list of axes)."""
    fig = Figure(figsize=figsize)
    return fig, list(fig.subplots(1, ncols, squeeze=False, **kw)[0])


def svg(fig: Figure) -> str:
    """The figure as an `<svg>` element cropped to its tight box (labels, titles, axes) plus a
    pad. The box is measured in the draw that writes the SVG (its draw_event), with that draw's
    renderer and ticks: what savefig's bbox_inches="tight" finds with a second, dry draw."""
    box = []
    fig.canvas.mpl_connect("draw_event",
                           lambda ev: box.append(fig.get_tightbbox(ev.renderer, bbox_extra_artists=[])))
    buf = io.StringIO()
    fig.savefig(buf, format="svg", dpi=RASTER_DPI)  # the dpi of rasterized artists only: SVG is in points
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    if not box or not all(map(math.isfinite, box[-1].bounds)):
        return text
    x0, y0, x1, y1 = (v * 72 for v in box[-1].padded(PAD_INCHES).extents)  # inches -> SVG points
    top = fig.get_figheight() * 72 - y1  # SVG's y runs down from the top
    head = text[:text.index(">")]
    cropped = re.sub(r' width="[^"]*" height="[^"]*" viewBox="[^"]*"',
                     f' width="{x1 - x0:.2f}pt" height="{y1 - y0:.2f}pt" '
                     f'viewBox="{x0:.2f} {top:.2f} {x1 - x0:.2f} {y1 - y0:.2f}"', head, count=1)
    return cropped + text[len(head):]


def legend(ax, **kw) -> None:
    """A legend where an artist has a label (matplotlib warns of an empty one)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, frameon=False, **kw)


_SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


class PlainLogFormatter(ticker.LogFormatterSciNotation):
    """Log-axis tick labels as plain text ("10⁻³", "0.3", "3×10⁻⁵"): text.parse_math is off (users'
    strings), and matplotlib's labels are math text: they showed as "$\\mathdefault{10^{-3}}$"."""

    def __call__(self, x, pos=None):
        s = super().__call__(x, pos)
        if not (len(s) > 1 and s[0] == s[-1] == "$"):
            return s
        if "\\times" in s and "e" not in f"{x:.3g}":  # between decades: "0.5" reads better than "5×10⁻¹"
            return f"{x:.3g}"
        s = s[1:-1].replace("\\mathdefault", "").replace("\\times", "×")
        s = re.sub(r"\^\{([^}]*)\}", lambda m: m[1].translate(_SUPERSCRIPT), s)
        return s.replace("{", "").replace("}", "")


class ShortRangeMinorLocator(ticker.LogLocator):
    """Minor ticks on a log axis only where it spans a few decades (there they carry the labels);
    over more, the decades alone: dozens of minor ticks cost more to draw than the data."""

    def tick_values(self, vmin, vmax):
        lo, hi = sorted((vmin, vmax))
        if lo > 0 and math.log10(hi / lo) > 3:
            return []
        return super().tick_values(vmin, vmax)


def log_x(ax) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(PlainLogFormatter())
    ax.xaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))
    ax.xaxis.set_minor_locator(ShortRangeMinorLocator(subs="auto"))


def _finite(v) -> bool:
    """A value a figure can place: finite and of a size matplotlib's tick locators can handle
    (a finite 1.5e308 made them fail: a 500 for the whole report)."""
    return v is not None and isinstance(v, int | float) and usable(float(v))


def expected_best(analysis: dict, metric: str) -> str:
    fig, (ax,) = subplots(figsize=(6.4, 3.6))
    for opt, a in analysis["optimizers"].items():
        curve = a["expected_best"]
        if not curve:
            continue
        k = [p["trials"] for p in curve]
        ax.plot(k, [p["mean"] for p in curve], color=color(opt), label=opt)
        ax.fill_between(k, [p["lo"] for p in curve], [p["hi"] for p in curve], color=color(opt), alpha=0.15)
    log_x(ax)
    ax.set_xlabel("number of search trials (k)")
    ax.set_ylabel(f"expected best {metric}")
    legend(ax)
    return svg(fig)


def edf(analysis: dict, metric: str) -> str:
    fig, (ax,) = subplots(figsize=(6.4, 3.6))
    styles = ["-", "--", ":", "-."]
    for opt, a in analysis["optimizers"].items():
        for j, (stage, points) in enumerate(sorted(a["edf"].items())):
            if points:
                ax.step([p[0] for p in points], [p[1] for p in points], where="post", color=color(opt),
                        linestyle=styles[j % len(styles)], label=f"{opt} stage {stage}")
    ax.set_xlabel(metric)
    ax.set_ylabel("share of trials at or below")
    legend(ax, fontsize=7)
    return svg(fig)


def learning_curves(curves: dict[str, dict[str, list[list[dict]]]], metric: str) -> str:
    """curves[optimizer] = {"best": [history, ...], "seeds": [history, ...]}."""
    opts = list(curves)
    fig, axes = subplots(max(1, len(opts)), figsize=(3.2 * max(1, len(opts)), 3.0), sharey=True)
    for ax, opt in zip(axes, opts, strict=False):
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
        ax.set_title(opt, y=1.0)  # a fixed place: the automatic one measures the axes again
        ax.set_xlabel("epoch")
        legend(ax, fontsize=7)
    axes[0].set_ylabel(metric)
    return svg(fig)


def hyperparameter(analysis: dict, name: str, metric: str) -> str:
    opts = [(o, a["hyperparameters"][name]) for o, a in analysis["optimizers"].items() if name in a["hyperparameters"]]
    fig, axes = subplots(len(opts), figsize=(3.2 * len(opts), 3.0), sharey=True)
    for ax, (opt, sl) in zip(axes, opts, strict=True):
        r2 = sl["ranges"].get("2")
        if r2 and _finite(r2[0]) and _finite(r2[1]):
            ax.axvspan(r2[0], r2[1], color=color(opt), alpha=0.12, label="stage-2 range")
        for stage in sorted({p["stage"] for p in sl["points"]}):
            pts = [(p["value"], p["objective"]) for p in sl["points"]
                   if p["stage"] == stage and _finite(p["objective"]) and _finite(p["value"])]
            if pts:
                ax.scatter(*zip(*pts, strict=True), s=14, color=color(opt), marker=STAGE_MARKERS.get(stage, "o"),
                           alpha=0.8 if stage > 1 else 0.5, label=f"stage {stage}",
                           rasterized=len(pts) > RASTER_POINTS)
        if sl["log"]:
            log_x(ax)
        ax.set_title(opt, y=1.0)  # a fixed place: the automatic one measures the axes again
        ax.set_xlabel(name)
        legend(ax, fontsize=7)
    axes[0].set_ylabel(metric)
    return svg(fig)


def seeds(analysis: dict, metric: str) -> str:
    items = [(o, a["seed_runs"]["values"]) for o, a in analysis["optimizers"].items() if a["seed_runs"]["values"]]
    fig, (ax,) = subplots(figsize=(1.6 + 1.3 * len(items), 3.2))
    ax.boxplot([v for _, v in items], showfliers=False)
    for i, (opt, v) in enumerate(items):
        ax.scatter([i + 1 + 0.06 * ((j % 5) - 2) for j in range(len(v))], v, s=14, color=color(opt), zorder=3)
    ax.set_xticks(range(1, len(items) + 1), [o for o, _ in items])
    ax.set_ylabel(metric)
    return svg(fig)


def status_counts(analysis: dict) -> str:
    opts = list(analysis["optimizers"])
    statuses = ["completed", "diverged", "failed", "stopped"]
    fig, (ax,) = subplots(figsize=(1.6 + 1.2 * len(opts), 3.0))
    bottom = [0] * len(opts)
    for j, s in enumerate(statuses):
        vals = [analysis["optimizers"][o]["status_counts"].get(s, 0) for o in opts]
        ax.bar(opts, vals, bottom=bottom, color=["#4c72b0", "#dd8452", "#c44e52", "#8c8c8c"][j], label=s)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_ylabel("trials")
    legend(ax, fontsize=7)
    return svg(fig)


def cost(analysis: dict) -> str:
    opts = list(analysis["optimizers"])
    fig, axes = subplots(2, figsize=(7.0, 3.0))
    t = [analysis["optimizers"][o]["time_per_epoch_s"] or 0 for o in opts]
    m = [analysis["optimizers"][o]["peak_memory_mb"] or 0 for o in opts]
    axes[0].bar(opts, t, color=[color(o) for o in opts])
    axes[0].set_ylabel("mean time per epoch (s)")
    axes[1].bar(opts, m, color=[color(o) for o in opts])
    axes[1].set_ylabel("peak memory (MB)")
    return svg(fig)


def figure_one(studies: Sequence[dict]) -> str:
    """The paper's Figure 1 layout: one panel per study (workload), a bar per optimizer."""
    fig, axes = subplots(len(studies), figsize=(3.2 * len(studies), 3.2))
    for ax, st in zip(axes, studies, strict=True):
        opts = [r["optimizer"] for r in st["rows"]]
        vals = [r["value"] if r["value"] is not None else 0 for r in st["rows"]]
        errs = [r["std"] or 0 for r in st["rows"]]
        ax.bar(opts, vals, yerr=errs, capsize=3, color=[color(o) for o in opts])
        ax.set_title(f"{st['name']} ({st['workload']})", fontsize=8)
        ax.set_ylabel(st["metric"])
        ax.tick_params(axis="x", labelrotation=30)
    return svg(fig)


def profile(prof: dict[str, list[list[float]]]) -> str:
    fig, (ax,) = subplots(figsize=(6.0, 3.2))
    for opt, pts in sorted(prof.items()):
        ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", color=color(opt), label=opt)
    ax.set_xlabel("factor τ from the best optimizer of each study")
    ax.set_ylabel("share of studies")
    ax.set_ylim(-0.02, 1.02)
    legend(ax)
    return svg(fig)
