"""The report page of a suite under the algoperf ruleset: its version stamp in the header; per
workload the per-study times and their median; the profile plot, scores, speed-ups and tuning cost."""

from __future__ import annotations

import html
from datetime import UTC, datetime

from service.results.report import STYLE, _fmt, plots


def _t(v) -> str:
    s = _fmt(v, 4)
    return "∞ (missed)" if s == "–" else f"{s} s"


def render_algoperf_report(data: dict) -> str:
    opts = data["optimizers"]
    pv, r = data["protocol_version"], data["ruleset"]
    title = f"rootfree suite report: {data['name']}"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
             f"<p><strong>Protocol: {html.escape(str(pv['ruleset']))} {html.escape(str(pv['version']))} "
             f"(rootfree {html.escape(str(pv['rootfree']))})</strong> — {r['studies']} studies × "
             f"{r['trials_per_study']} trials per optimizer and workload; late stops "
             f"{'on' if r.get('stop_late') else 'off'}.</p>"
             f"<p>Suite <code>{html.escape(data['id'])}</code>, {html.escape(data['status'])}; generated "
             f"{datetime.now(UTC).isoformat(timespec='seconds')}. Baseline: "
             f"{html.escape(str(data['baseline'] or 'none'))}.</p>"]
    rows = "".join(
        f"<tr><td>{html.escape(o)}</td><td>{_fmt(data['scores'][o], 4)}</td>"
        f"<td>{_fmt((data['speedups'].get(o) or {}).get('geomean'), 3)}"
        f" <small>({(data['speedups'].get(o) or {}).get('workloads', 0)} workloads)</small></td>"
        f"<td>{data['tuning_cost'][o]['trials']}</td><td>{_fmt(data['tuning_cost'][o]['cpu_s'], 4)}</td>"
        f"<td>{_fmt(data['tuning_cost'][o]['gpu_s'], 4)}</td></tr>" for o in opts)
    parts.append("<section id='scores'><h2>Scores</h2><table><thead><tr><th>optimizer</th>"
                 "<th>score (trapezoid over 100 τ in [1,4] / 3)</th><th>geo-mean speed-up over the baseline</th>"
                 "<th>trials</th><th>CPU-seconds</th><th>GPU-seconds</th></tr></thead><tbody>" + rows
                 + "</tbody></table>")
    prof = {o: [[t, s] for t, s in pts] for o, pts in data["profile"].items()}
    parts.append(f"<figure>{plots.profile(prof)}<figcaption>Performance profile: the share of workloads on which "
                 "each optimizer's median time to target (after the 4× rule) is within a factor τ of the fastest "
                 "optimizer's.</figcaption></figure></section>")
    for w in data["workloads"]:
        budget = ", ".join(f"{k}={v}" for k, v in w["budget"].items())
        n = max((len(v) for v in w["studies"].values()), default=0)
        head = "".join(f"<th>study {j + 1}</th>" for j in range(n))
        body = "".join(
            f"<tr><td>{html.escape(o)}</td>"
            + "".join(f"<td>{_t(s['time_s'])} <small>({s['trials']}/{s['planned']} trials"
                      + (f", trial {s['trial_id']}" if s["trial_id"] is not None else "") + ")</small></td>"
                      for s in w["studies"][o])
            + f"<td><strong>{_t(w['time_to_target'][o]['time_s'])}</strong></td><td>{_t(w['capped'][o])}</td>"
              f"<td>{_fmt(w['ratios'][o], 3)}</td></tr>" for o in opts)
        parts.append(f"<section><h2>{html.escape(w['key'])} <small>({html.escape(budget)}; "
                     f"{html.escape(w['status'])})</small></h2><p>study <code>{html.escape(w['study_id'])}</code>; "
                     f"target {html.escape(w['metric'])} {'≤' if w['mode'] == 'min' else '≥'} {_fmt(w['target'])}"
                     f"{'; max_runtime ' + _fmt(w['max_runtime_s']) + ' s' if w.get('max_runtime_s') else ''}</p>"
                     f"<table><thead><tr><th>optimizer</th>{head}<th>median</th><th>after the 4× rule</th>"
                     f"<th>ratio</th></tr></thead><tbody>{body}</tbody></table></section>")
    parts.append("<ul>" + "".join(f"<li><small>{html.escape(k)}: {html.escape(v)}</small></li>"
                                  for k, v in data["method"].items()) + "</ul></body></html>")
    return "".join(parts)
