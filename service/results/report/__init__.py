"""The study report: one self-contained HTML page (no scripts, fonts or images from a network)
that answers "does the root-free optimizer beat its baseline here, and how sure are we".

`service.results.study_results.study_results(store, study)` gathers the numbers once (a typed
`StudyResults`); `render_report` turns one or several studies' results into the page. The API
(`GET /studies/{id}/report`) and the CLI (`rootfree report ID [ID ...] -o FILE`) share both.
"""

from __future__ import annotations

import html
import importlib.metadata
import itertools
import json
import math
from datetime import UTC, datetime

import yaml

from service.results.analysis import performance_profile
from service.results.report import plots
from service.results.study_results import StudyResults, curve_trials
from service.results.verdicts import unresolved_with

LIBRARIES = ("rootfree", "torch", "ray", "optuna", "fastapi", "sqlalchemy", "matplotlib", "numpy")


def _versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def _fmt(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}g}" if isinstance(v, float) else html.escape(str(v))


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>"


def headline(o: dict) -> tuple[float | None, float | None, str]:
    """What an optimizer scores in a comparison: the seed runs' mean ± std when there are seed
    runs, else the best search trial."""
    seeds = o.get("seed_runs") or {}
    if seeds.get("mean") is not None:
        return seeds["mean"], seeds.get("std"), f"seed mean of {len(seeds['values'])}"
    return o.get("best_objective"), None, "best trial"


def _comparison_table(r: StudyResults) -> str:
    metric = r.spec.metric
    by = r.summaries
    rows = []
    comps = r.comparisons
    for rank, opt in enumerate(r.ranking, start=1):
        o, a = by[opt], r.analysis["optimizers"][opt]
        value, std, what = headline(o)
        ties = unresolved_with(comps, opt)
        if ties:  # the order against these is not resolved by the seed runs
            what += "; not resolved against " + ", ".join(ties)
        seeds = o.get("seed_runs") or {}
        cfg = ", ".join(f"{k}={_fmt(v, 3)}" for k, v in (o.get("best_config") or {}).items())
        rows.append(
            f"<tr><td>{rank}</td><td>{html.escape(opt)}</td><td>{_fmt(value)}{' ± ' + _fmt(std, 2) if std else ''}"
            f" <small>({what})</small></td><td>{_fmt(o['best_objective'])}</td><td>{_fmt(o['top_k_mean'])}</td>"
            f"<td>{_fmt(seeds.get('median'))}</td><td>{_fmt(a['diverged_share'], 2)}</td>"
            f"<td>{_fmt(a['time_per_epoch_s'], 3)}</td><td>{_fmt(a['peak_memory_mb'], 4)}</td>"
            f"<td><code>{cfg}</code></td></tr>")
    return ("<table><thead><tr><th>#</th><th>optimizer</th><th>" + html.escape(metric) + "</th><th>best trial</th>"
            "<th>top-k mean</th><th>seed median</th><th>diverged share</th><th>s / epoch</th>"
            "<th>peak MB</th><th>best configuration</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def ranking_text(data: dict) -> str:
    """The ranking with ">" where the seed runs resolve the neighbours' order and "≈" where not
    (`data`: {"analysis", "ranking"}, as `StudyResults.verdicts()` gives them)."""
    comps = {frozenset((c["a"], c["b"])): c for c in data["analysis"].get("comparisons") or []
             if c.get("level", "seed") == "seed"}
    order = data["ranking"]
    out = html.escape(order[0]) if order else ""
    for prev, opt in itertools.pairwise(order):
        c = comps.get(frozenset((prev, opt)))
        tied = c is None or c["verdict"].startswith("not resolved")
        out += (" ≈ " if tied else " &gt; ") + html.escape(opt)
    return out


def verdict_table(data: dict) -> str:
    """The pairwise verdicts (service/results/verdicts.py), or why there are none (`data`:
    {"analysis", "ranking"}, as `StudyResults.verdicts()` gives them)."""
    a = data["analysis"]
    comps = a.get("comparisons") or []
    if not comps:
        return ("<h3>Verdicts</h3><p class='no-verdict'><strong>No verdict is possible:</strong> "
                + html.escape(a.get("no_verdict") or "no pair of optimizers has seed runs") + "</p>")
    m = a.get("comparison_method") or {}
    rows = "".join(
        f"<tr><td>{html.escape(c['a'])}</td><td>{html.escape(c['b'])}</td><td>{_fmt(c['diff'])}</td>"
        f"<td>[{_fmt(c['lo'])}, {_fmt(c['hi'])}]</td><td>{_fmt(c['p'], 3)}</td><td>{_fmt(c.get('p_adjusted'), 3)}</td>"
        f"<td><strong>{html.escape(c['verdict'])}</strong>{_level(c)}</td><td>{_robustness(c.get('robustness'))}</td>"
        f"<td>{_needed(c)}</td></tr>"
        for c in comps)
    return ("<h3>Verdicts</h3><table class='verdicts'><thead><tr><th>a</th><th>b</th><th>diff = a − b</th>"
            "<th>95% interval</th><th>p</th><th>p (Holm)</th><th>verdict</th><th>search-space audit</th>"
            "<th>seeds needed</th></tr></thead><tbody>"
            + rows + "</tbody></table>" + _search_line(a) + "<p><small>"
            + html.escape(f"{'Paired by seed. ' if m.get('paired') else ''}Interval: {m.get('interval')}. "
                          f"p: {m.get('p')}. p (Holm): {m.get('p_adjusted')}. {m.get('verdict')}. "
                          f"Seeds needed: {m.get('seeds_needed')}. Search-space audit: {m.get('robustness')}. "
                          f"Search level: {m.get('search_comparisons')}.")
            + "</small></p>")


def _level(c: dict) -> str:
    return " (search level: per-repeat outcomes)" if c.get("level") == "search" else ""


def _needed(c: dict) -> str:
    return _fmt(c["seeds_needed"]) if "seeds_needed" in c else f"{_fmt(c.get('repeats_needed'))} repeats"


def _robustness(r: dict | None) -> str:
    """"holds in 3 of 4 sub-spaces (flips: lr upper half)", or – for an unresolved verdict."""
    if not r:
        return "–"
    if not r["subspaces"]:
        return "no sub-space with enough trials"
    flips = f" (flips: {', '.join(r['flips'])})" if r.get("flips") else ""
    return html.escape(f"holds in {r['agree']} of {r['subspaces']} sub-spaces{flips}")


def _search_line(a: dict) -> str:
    """The search-level line: per pair, P(a's k-trial search ends better than b's) at the stage-1 size."""
    luck = a.get("search_comparisons") or []
    if not luck:
        return ""
    k = max(x["k"] for x in luck)
    parts = [f"P({x['a']} beats {x['b']}) = {x['p_a_wins']:.2f} [{x['lo']:.2f}, {x['hi']:.2f}]"
             for x in luck if x["k"] == k]
    return ("<p class='search-level'>" + html.escape(f"Search level ({k}-trial random searches, 90% band): "
                                                       + "; ".join(parts)) + "</p>")


def _study_section(r: StudyResults) -> str:
    study, a, spec = r.study, r.analysis, r.spec
    metric, p = spec.metric, spec.protocol
    by_opt: dict[str, dict[str, list]] = {}
    search_stages = p.search_stages
    for opt in spec.optimizers:
        curves = curve_trials(spec, r.trials, opt)
        by_opt[opt] = {"best": [t["history"] for t in curves if t["stage"] <= search_stages],
                       "seeds": [t["history"] for t in curves if t["stage"] == search_stages + 1]}
    figs = [
        _figure(plots.expected_best(a, metric),
                f"Expected best {metric} of a random search with k trials (Dodge et al. 2019), per optimizer, "
                f"with a 90% bootstrap band; {a['failures']}."),
        _figure(plots.edf(a, metric), f"Empirical distribution of the {metric} of the search trials, per stage."),
        _figure(plots.learning_curves(by_opt, metric),
                f"Learning curves: {metric} per epoch of each optimizer's three best search trials (solid) "
                "and of the seed re-runs of its best configuration (dashed)."),
    ]
    names = sorted({n for o in a["optimizers"].values() for n in o["hyperparameters"]},
                   key=lambda n: (n != "lr", n))
    for name in names:
        figs.append(_figure(plots.hyperparameter(a, name, metric),
                            f"{metric} against {name}{' (log scale)' if name == 'lr' else ''}, stage 1 (circles) "
                            "and stage 2 (triangles); the shaded band is the narrowed stage-2 range."))
    if any(o["seed_runs"]["values"] for o in a["optimizers"].values()):
        figs.append(_figure(plots.seeds(a, metric),
                            f"{metric} of the best configuration re-trained with fresh seeds (box: quartiles; "
                            "dots: runs)."))
    figs.append(_figure(plots.status_counts(a), "Trials per status and optimizer: completed, diverged (the loss "
                                                "or the metric became NaN/inf), failed, stopped early."))
    figs.append(_figure(plots.cost(a), "Mean time per epoch and peak memory of each optimizer's trials "
                                       "(the paper's Table 1 columns; CPU: resident memory, GPU: allocated)."))
    spaces = yaml.safe_dump(study["stage_spaces"], sort_keys=True)
    spec_yaml = yaml.safe_dump(study["spec"], sort_keys=False)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in study["notes"])
    return (f"<section id='study-{study['id']}'><h2>{html.escape(study['name'])} "
            f"<small>({html.escape(spec.workload)}, {html.escape(study['status'])})</small></h2>"
            f"<p>study <code>{study['id']}</code>, owner {html.escape(str(study['owner']))}, "
            f"{p.scheme} scheme, stages {list(p.stages)}, seed runs {p.seeds}; "
            f"{metric} ({'lower' if spec.mode == 'min' else 'higher'} is better).</p>"
            + verdict_table(r.verdicts())
            + f"<p>Ranking: {ranking_text(r.verdicts())} (by the seed runs' mean where there are seed runs, "
            "else by the best trial; &gt;: resolved by the seed runs, ≈: not resolved, a tie).</p>"
            + _comparison_table(r) + "".join(figs)
            + f"<h3>Stage notes</h3><ul>{notes or '<li>none</li>'}</ul>"
            + f"<h3>Spec</h3><pre>{html.escape(spec_yaml)}</pre>"
            + f"<h3>Stage spaces</h3><pre>{html.escape(spaces)}</pre>"
            + "<h3>Reproduce</h3><pre>"
            + html.escape("# save the spec above as study.yaml, then:\nrootfree submit study.yaml\n"
                          "rootfree watch <new id>\nrootfree report <new id> -o report.html\n")
            + "</pre></section>")


def _cross_study(datas: list[StudyResults]) -> str:
    metrics = {d.spec.metric for d in datas}
    modes = {d.spec.mode for d in datas}
    optimizers = sorted({o for d in datas for o in d.spec.optimizers})
    rows, panels, scores = [], [], {}
    for d in datas:
        st = d.study
        by = d.summaries
        cells, prow = [], []
        scores[st["id"]] = {}
        for opt in optimizers:
            if opt not in by:
                cells.append("<td>–</td>")
                continue
            value, std, what = headline(by[opt])
            scores[st["id"]][opt] = value
            prow.append({"optimizer": opt, "value": value, "std": std})
            cells.append(f"<td>{_fmt(value)}{' ± ' + _fmt(std, 2) if std else ''} <small>({what})</small></td>")
        rows.append(f"<tr><td>{html.escape(st['name'])}</td><td>{html.escape(d.spec.workload)}</td>"
                    + "".join(cells) + "</tr>")
        panels.append({"name": st["name"], "workload": d.spec.workload, "metric": d.spec.metric, "rows": prow})
    table = ("<table><thead><tr><th>study</th><th>workload</th>"
             + "".join(f"<th>{html.escape(o)}</th>" for o in optimizers) + "</tr></thead><tbody>"
             + "".join(rows) + "</tbody></table>")
    out = "<section id='across'><h2>Across studies</h2>" + table
    out += _figure(plots.figure_one(panels), "Each study's result per optimizer, in the layout of the paper's "
                                              "Figure 1: seed mean ± std where there are seed runs, else the best "
                                              "trial.")
    if len(modes) == 1:
        out += _figure(plots.profile(performance_profile(scores, modes.pop())),
                       "Performance profile (Dolan & Moré): the share of studies in which each optimizer is within "
                       "a factor τ of the best optimizer of that study" + (
                           f" ({', '.join(sorted(metrics))})." if metrics else "."))
    return out + "</section>"


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1150px;color:#222;
padding:0 1em}h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.85em}th,td{border:1px solid #ddd;padding:.3em .5em;
text-align:left;vertical-align:top}th{background:#f5f5f5}figure{margin:1.5em 0}figure svg{max-width:100%;
height:auto}figcaption{font-size:.85em;color:#555;max-width:800px}pre{background:#f7f7f7;padding:.8em;
overflow:auto;font-size:.8em}code{font-size:.85em}small{color:#666}
"""


def render_report(datas: list[StudyResults]) -> str:
    """The page for one or several studies' results (several: a cross-study section first)."""
    title = (f"rootfree report: {datas[0].study['name']}" if len(datas) == 1
             else f"rootfree report: {len(datas)} studies")
    versions = _versions()
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
             f"<p>Generated {datetime.now(UTC).isoformat(timespec='seconds')} by rootfree. A best-of-N "
             "search result is one lucky draw: read the expected-best curves and the seed runs before the "
             "table.</p>"]
    if len(datas) > 1:
        parts.append(_cross_study(datas))
    parts.extend(_study_section(d) for d in datas)
    parts.append("<section><h2>Library versions</h2><table><tbody>"
                 + "".join(f"<tr><td>{k}</td><td>{html.escape(v)}</td></tr>" for k, v in versions.items())
                 + "</tbody></table>"
                 + f"<pre>{html.escape(json.dumps({'studies': [d.study['id'] for d in datas]}))}</pre>"
                 + "</section></body></html>")
    return "".join(parts)
