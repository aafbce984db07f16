"""The suite report page: per workload the verdicts and times to target; across workloads the
performance profile, the score, the speed-up over the baseline and the tuning cost."""

from __future__ import annotations

import html
from datetime import UTC, datetime

from service.results.report import STYLE, _fmt, plots


def _time(v: dict) -> str:
    if not v["reached"]:
        return "∞ (missed)"
    return f"{_fmt(v['time_s'], 3)} s, epoch {_fmt(v['epochs'], 3)}"


def _version(data: dict) -> str:
    pv = data.get("protocol_version")
    if not pv:
        return ""
    return (f" Protocol: {html.escape(str(pv.get('ruleset')))} {html.escape(str(pv.get('version')))} "
            f"(rootfree {html.escape(str(pv.get('rootfree')))}).")


def _verdicts(w: dict) -> str:
    if not w["comparisons"]:
        return f"<p><strong>No verdict is possible:</strong> {html.escape(w.get('no_verdict') or '')}</p>"
    rows = "".join(
        f"<tr><td>{html.escape(c['a'])}</td><td>{html.escape(c['b'])}</td><td>{_fmt(c['diff'])}</td>"
        f"<td>[{_fmt(c['lo'])}, {_fmt(c['hi'])}]</td><td>{_fmt(c['p'], 3)}</td><td>{_fmt(c.get('p_adjusted'), 3)}</td>"
        f"<td><strong>{html.escape(c['verdict'])}</strong></td>"
        f"<td>{_fmt(c.get('seeds_needed', c.get('repeats_needed')))}</td></tr>"
        for c in w["comparisons"])
    return ("<table class='verdicts'><thead><tr><th>a</th><th>b</th><th>diff = a − b</th><th>95% interval</th>"
            "<th>p</th><th>p (Holm)</th><th>verdict</th><th>seeds needed</th></tr></thead><tbody>" + rows
            + "</tbody></table>")


def render_suite_report(data: dict) -> str:
    opts = data["optimizers"]
    title = f"rootfree suite report: {data['name']}"
    head = "".join(f"<th>{html.escape(o)}</th>" for o in opts)
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
             f"<p>Suite <code>{html.escape(data['id'])}</code>, {html.escape(data['status'])}; generated "
             f"{datetime.now(UTC).isoformat(timespec='seconds')}. Baseline: "
             f"{html.escape(str(data['baseline'] or 'none'))}.{_version(data)}</p>"]
    score_rows = "".join(
        f"<tr><td>{html.escape(o)}</td><td>{_fmt(data['scores'][o], 3)}</td>"
        f"<td>{_fmt((data['speedups'].get(o) or {}).get('geomean'), 3)}"
        f" <small>({(data['speedups'].get(o) or {}).get('workloads', 0)} workloads)</small></td>"
        f"<td>{data['tuning_cost'][o]['trials']}</td><td>{_fmt(data['tuning_cost'][o]['cpu_s'], 4)}</td>"
        f"<td>{_fmt(data['tuning_cost'][o]['gpu_s'], 4)}</td></tr>" for o in opts)
    parts.append("<section id='scores'><h2>Across workloads</h2><table><thead><tr><th>optimizer</th>"
                 "<th>score (profile integral over τ∈[1,4] / 3)</th><th>geo-mean speed-up over the baseline</th>"
                 "<th>trials</th><th>CPU-seconds</th><th>GPU-seconds</th></tr></thead><tbody>" + score_rows
                 + "</tbody></table>")
    ttt_rows = "".join(
        f"<tr><td>{html.escape(w['key'])}</td><td>{_fmt(w['target'])} <small>({html.escape(w['target_source'])})"
        "</small></td>" + "".join(f"<td>{_time(w['time_to_target'][o])}</td>" for o in opts) + "</tr>"
        for w in data["workloads"])
    parts.append("<h3>Time to target</h3><table><thead><tr><th>workload</th><th>target</th>" + head
                 + "</tr></thead><tbody>" + ttt_rows + "</tbody></table>")
    prof = {o: [[t, s] for t, s in pts] for o, pts in data["profile"].items()}
    parts.append(f"<figure>{plots.profile(prof)}<figcaption>Performance profile: the share of workloads on which "
                 "each optimizer reaches the target within a factor τ of the fastest optimizer's time (a miss is "
                 "infinite).</figcaption></figure>")
    m = data["method"]
    parts.append("<ul>" + "".join(f"<li><small>{html.escape(k)}: {html.escape(v)}</small></li>"
                                  for k, v in m.items()) + "</ul></section>")
    for w in data["workloads"]:
        budget = ", ".join(f"{k}={v}" for k, v in w["budget"].items())
        parts.append(f"<section><h2>{html.escape(w['key'])} <small>({html.escape(budget)}; "
                     f"{html.escape(w['status'])})</small></h2><p>study <code>{html.escape(w['study_id'])}</code>, "
                     f"{html.escape(w['metric'])} ({'lower' if w['mode'] == 'min' else 'higher'} is better)</p>"
                     + _verdicts(w) + "</section>")
    parts.append("</body></html>")
    return "".join(parts)

