"""What the `rootfree` commands show: a study's progress (a rich table with progress bars on a
terminal, plain lines otherwise), the final comparison, the verdicts, the queue and a suite's
report. Pure: bodies of the API in, text or rich renderables out (rich is imported on use)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from service.domain.statuses import FINISHED as TRIAL_FINISHED

if TYPE_CHECKING:
    from rich.text import Text


def finished(by_status: dict[str, int]) -> int:
    """Trials that have ended, from one stage's `by_status` counts of `GET /studies/{id}`."""
    return sum(n for status, n in by_status.items() if status in TRIAL_FINISHED)


def plain_progress(study: dict) -> str:
    lines = [f"study {study['id']} ({study['name']}): {study['status']}"]
    metric = study["spec"]["metric"]
    for o in study["optimizers"]:
        for stage, c in o["stages"].items():
            done = finished(c["by_status"])
            extra = ", ".join(f"{k} {v}" for k, v in sorted(c["by_status"].items()))
            lines.append(f"  {o['optimizer']:<10} stage {stage} {done}/{c['total']}  ({extra})")
        best = o["best_objective"]
        lines.append(f"  {'':<10} best {metric}: {best:.4f}" if best is not None else f"  {'':<10} best {metric}: -")
    return "\n".join(lines)


def plain(value) -> Text:
    """A user's string (a study name, a choice value) for rich: text, never markup (a "[/bold]"
    would crash the table, a "[link=...]" would put a hyperlink in the terminal)."""
    from rich.text import Text

    return Text(str(value))


def render(study: dict):
    """Live progress per optimizer and stage: a rich table with progress bars (plain lines when
    the output is not a terminal: see service/cli/live.py)."""
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    metric = study["spec"]["metric"]
    seeds_stage = str(len(study["spec"]["protocol"]["stages"]) + 1)
    place = study.get("queue") or {}
    title = f"study {study['id'][:8]} ({study['name']}): {study['status']}"
    if place:
        title += f" — queue position {place['position']}, {place['running']} running, {place['pending']} pending"
    table = Table(title=plain(title), title_justify="left")
    for col in ("optimizer", "stage", "progress", "done", "statuses", f"best {metric}"):
        table.add_column(plain(col))
    for o in study["optimizers"]:
        for stage, c in o["stages"].items():
            done = finished(c["by_status"])
            statuses = ", ".join(f"{k} {v}" for k, v in sorted(c["by_status"].items()))
            best = o["best_objective"]
            table.add_row(plain(o["optimizer"]), plain("seeds" if stage == seeds_stage else stage),
                          ProgressBar(total=max(c["total"], 1), completed=done, width=24),
                          f"{done}/{c['total']}", plain(statuses),
                          f"{best:.4f}" if best is not None and stage == "1" else "")
    return table


def comparison_table(study: dict):
    """The final comparison, best first (by the seed runs' mean where there are seed runs)."""
    from rich.table import Table

    from service.results.summary import ranking

    metric = study["spec"]["metric"]
    table = Table(title=plain(f"{study['name']}: {metric} ({'lower' if study['spec']['mode'] == 'min' else 'higher'} "
                              "is better)"), title_justify="left")
    for col in ("#", "optimizer", f"best {metric}", "top-k mean", "seed mean ± std (n)", "best config"):
        table.add_column(plain(col))
    fmt = lambda v: f"{v:.4f}" if v is not None else "-"  # noqa: E731
    for rank, o in enumerate(ranking(study), start=1):
        sr = o.get("seed_runs") or {}
        seeds = (f"{fmt(sr['mean'])} ± {fmt(sr.get('std'))} ({len(sr['values'])})" if sr.get("mean") is not None
                 else "-")
        cfg = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in (o["best_config"] or {}).items())
        table.add_row(str(rank), plain(o["optimizer"]), fmt(o["best_objective"]), fmt(o["top_k_mean"]), seeds,
                      plain(cfg))
    return table


def verdict_table(study: dict):
    """The pairwise verdicts of the seed runs (service/results/verdicts.py), or why there are none; user
    strings (optimizer names) go in as plain Text, never as rich markup."""
    from rich.text import Text

    from service.results.verdicts import export_comparisons, no_verdict_reason, runs_from_seed_runs

    comps = export_comparisons(study["spec"], study["optimizers"])
    if not comps:
        runs = runs_from_seed_runs({o["optimizer"]: o.get("seed_runs") for o in study["optimizers"]})
        why = no_verdict_reason(study["spec"], runs) or "no pair of optimizers has seed runs"
        return Text(f"No verdict is possible: {why}")
    paired = " (paired by seed)" if study["spec"]["protocol"].get("paired") else ""
    return pairs_table(comps, f"verdicts{paired}")


def pairs_table(comps: list[dict], title: str):
    """Pairwise comparisons (service/results/verdicts.py) as a rich table; names as plain Text."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(f"{title}: diff = a - b, 95% interval and p of one t test (Welch-Hsu, or paired t), "
                             "Holm-adjusted p over every pair"), title_justify="left")
    for col in ("a", "b", "diff", "95% interval", "p", "p (Holm)", "verdict", "seeds needed"):
        table.add_column(col)
    fmt = lambda v: f"{v:.4g}" if v is not None else "-"  # noqa: E731
    for c in comps:
        table.add_row(Text(c["a"]), Text(c["b"]), fmt(c["diff"]), f"[{fmt(c['lo'])}, {fmt(c['hi'])}]",
                      fmt(c["p"]), fmt(c.get("p_adjusted")),
                      Text(c["verdict"] + (" (search level)" if c.get("level") == "search" else "")),
                      fmt(c.get("seeds_needed", c.get("repeats_needed"))))
    return table


def search_line(analysis: dict):
    """The search-level line under the verdicts: per pair, P(a's k-trial random search ends better
    than b's) at the stage-1 size, from `GET /studies/{id}/analysis`'s search_comparisons."""
    from rich.text import Text

    luck = analysis.get("search_comparisons") or []
    if not luck:
        return Text("search level: no pair of optimizers has stage-1 results")
    k = max(x["k"] for x in luck)
    parts = [f"P({x['a']} beats {x['b']}) = {x['p_a_wins']:.2f} [{x['lo']:.2f}, {x['hi']:.2f}]"
             for x in luck if x["k"] == k]
    return Text(f"search level ({k}-trial random searches, resampled stage-1 trials, 90% band): " + "; ".join(parts))


def console(stream=None):
    from rich.console import Console

    return Console(file=stream or sys.stdout, width=None if (stream or sys.stdout).isatty() else 140)


def queue_table(cluster: dict) -> str:
    """`GET /cluster` as text: the nodes with their resources, then the queue in serving order."""
    def res(r: dict) -> str:
        return ", ".join(f"{k}={v:g}" for k, v in sorted(r.items()) if k in ("CPU", "GPU") or v)

    lines = [f"{'node':<14}{'alive':<7}resources"]
    for n in cluster["nodes"]:
        lines.append(f"{n['node_id'][:12]:<14}{'yes' if n['alive'] else 'no':<7}{res(n['resources'])}")
    if not cluster["nodes"]:
        lines.append("(no nodes recorded yet: the runner has not started)")
    total, avail = cluster["resources"].get("total", {}), cluster["resources"].get("available", {})
    lines.append(f"total: {res(total) or '-'}   available: {res(avail) or '-'}")
    lines.append("")
    lines.append(f"{'#':<4}{'study':<10}{'name':<24}{'status':<9}{'priority':>8}{'running':>9}{'pending':>9}")
    for q in cluster["queue"]:
        lines.append(f"{q['position']:<4}{q['study_id'][:8]:<10}{q['name'][:23]:<24}{q['status']:<9}"
                     f"{q['priority']:>8}{q['running']:>9}{q['pending']:>9}")
    if not cluster["queue"]:
        lines.append("(no queued or running studies)")
    return "\n".join(lines)


def _num(v, d: int = 4) -> str:
    return f"{v:.{d}g}" if isinstance(v, int | float) else "-"


def _scores_table(report: dict, title: str):
    """A suite's scores per optimizer: score, geometric-mean speed-up, tuning cost (both report kinds)."""
    from rich.table import Table
    from rich.text import Text

    scores = Table(title=Text(title), title_justify="left")
    for col in ("optimizer", "score", "speed-up (workloads)", "trials", "CPU-s", "GPU-s"):
        scores.add_column(col)
    for o in report["optimizers"]:
        sp, cost = report["speedups"].get(o) or {}, report["tuning_cost"][o]
        scores.add_row(Text(o), _num(report["scores"][o], 3),
                       f"{_num(sp.get('geomean'), 3)} ({sp.get('workloads', 0)})",
                       str(cost["trials"]), _num(cost["cpu_s"]), _num(cost["gpu_s"]))
    return scores


def suite_tables(report: dict) -> list:
    """The suite report's numbers as rich tables (user strings as plain Text, never markup)."""
    from rich.table import Table
    from rich.text import Text

    if report.get("ruleset"):
        return algoperf_tables(report)
    opts = report["optimizers"]
    scores = _scores_table(report, f"suite {report['name']}: {report['status']} (baseline {report['baseline'] or '-'})")
    out: list = [scores]
    ttt = Table(title="time to target (s, epoch; - = missed)", title_justify="left")
    for col in ("workload", "target", *opts):
        ttt.add_column(Text(col))
    for w in report["workloads"]:
        cells = [f"{_num(v['time_s'], 3)}, {_num(v['epochs'], 3)}" if v["reached"] else "missed"
                 for v in (w["time_to_target"][o] for o in opts)]
        ttt.add_row(Text(w["key"]), _num(w["target"]), *cells)
    out.append(ttt)
    for w in report["workloads"]:
        if not w["comparisons"]:
            out.append(Text(f"{w['key']}: no verdict is possible: {w.get('no_verdict')}"))
            continue
        out.append(pairs_table(w["comparisons"], f"{w['key']}: verdicts"))
    return out


def algoperf_tables(report: dict) -> list:
    """A suite under the algoperf ruleset: the scores, then per workload each study's time to
    target and the median per optimizer (user strings as plain Text)."""
    from rich.table import Table
    from rich.text import Text

    opts, pv = report["optimizers"], report.get("protocol_version") or {}
    scores = _scores_table(report, f"suite {report['name']}: {report['status']} ({pv.get('ruleset')} "
                                   f"{pv.get('version')}, baseline {report['baseline'] or '-'})")
    out: list = [scores]
    for w in report["workloads"]:
        n = max((len(v) for v in w["studies"].values()), default=0)
        t = Table(title=Text(f"{w['key']}: time to target {_num(w['target'])} (s; - = missed)"), title_justify="left")
        for col in ("optimizer", *(f"study {j + 1}" for j in range(n)), "median", "after 4x rule"):
            t.add_column(col)
        for o in opts:
            t.add_row(Text(o), *(_num(s["time_s"], 3) for s in w["studies"][o]),
                      _num(w["time_to_target"][o]["time_s"], 3), _num(w["capped"][o], 3))
        out.append(t)
    return out
