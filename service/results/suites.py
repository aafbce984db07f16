"""A suite's status and report, as pure functions of plain data (no SQL, no HTTP).

A suite runs the same optimizers, protocol and search spaces on several workloads, one ordinary
study each. Its report scores the optimizers across workloads the way AlgoPerf does (Dahl et al.
2023, "Benchmarking Neural Network Training Algorithms"):

- **time to target** per workload and optimizer: the workload's target is given, or the baseline
  optimizer's median seed result. A run's time is the wall time (and epoch) of its first epoch at
  or beyond the target; a run that never reaches it takes infinity (a miss). The optimizer's time
  is the lower median over its seed runs (the tuned configuration re-trained; infinite when more
  than half missed), or, without seed runs, the time of its best search trial.
- **performance profile**: r = t / (the fastest optimizer's t on that workload) (infinite for a miss,
  and for everyone on a workload nobody solved); rho(tau) = the share of workloads with r <= tau.
- **score**: the integral of rho over tau in [1, 4], divided by 3 (1: fastest everywhere; 0: never
  within 4x of the fastest), computed exactly: (1 / 3W) sum over workloads of max(0, 4 - r).
- **speed-up over the baseline**: the geometric mean over workloads of t_baseline / t, over the
  workloads where both reach the target (how many is given).
- **tuning cost** per optimizer: its trials, and CPU- and GPU-seconds (the trials' training wall
  time times the CPUs and GPUs each trial reserved).

In JSON an infinite time or ratio is `null` with `reached: false`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from service.domain.spec import ResolvedSpec, as_spec
from service.domain.statuses import ACTIVE
from service.results.verdicts import study_comparisons

TAU_MAX = 4.0
METHOD = {
    "target": "given per workload, else the baseline optimizer's median seed result on that workload",
    "time_to_target": ("wall time (and epoch) of a run's first epoch at or beyond the target, infinite for a "
                       "miss; per optimizer the lower median over its seed runs (infinite when more than half "
                       "missed), without seed runs its best search trial"),
    "profile": "share of workloads where the optimizer's time is within a factor tau of the fastest optimizer's",
    "score": "integral of the performance profile over tau in [1, 4], divided by 3 (AlgoPerf)",
    "speedup": "geometric mean over workloads (where both reach the target) of the baseline's time / the time",
    "tuning_cost": "trials run; CPU- and GPU-seconds: each trial's training wall time x its reserved CPUs, GPUs",
    "verdicts": ("per workload: Holm's step-down over all of the suite's pairs of optimizers on that workload "
                 "(each workload is one family; service/results/verdicts.py)"),
}


def suite_status(statuses: Sequence[str]) -> str:
    """queued while none of its studies has started, running while any is queued or running,
    then failed if any failed, else cancelled if any was cancelled (or none is left), else completed."""
    s = set(statuses)
    if not s:
        return "cancelled"  # every study of it was deleted
    if s == {"queued"}:
        return "queued"
    if s & set(ACTIVE):
        return "running"
    if "failed" in s:
        return "failed"
    if "cancelled" in s:
        return "cancelled"
    return "completed"


def _reached(value: Any, target: float, mode: str) -> bool:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return False
    return value <= target if mode == "min" else value >= target


def run_time_to_target(history: Sequence[dict], metric: str, mode: str, target: float) -> tuple[float, float]:
    """(wall seconds, epoch) of the first epoch at or beyond `target`; (inf, inf) for a miss."""
    for row in history:
        if _reached(row.get(metric), target, mode):
            return float(row.get("wall_time_s") or 0.0), float(row.get("epoch") or 0)
    return math.inf, math.inf


def _median(values: Sequence[float]) -> float:
    """The lower median: infinite when more than half are. The lower one, because a target set at
    the baseline's median seed result is reached by exactly half of an even number of its runs, and
    the baseline should reach its own target."""
    v = sorted(values)
    return v[(len(v) - 1) // 2] if v else math.inf


def optimizer_time_to_target(spec: ResolvedSpec | dict, trials: Sequence[dict], optimizer: str,
                             target: float | None) -> dict:
    """{"time_s", "epochs", "reached", "runs", "from"} of one optimizer on one workload."""
    if target is None:
        return {"time_s": math.inf, "epochs": math.inf, "reached": False, "runs": 0, "from": "no target"}
    spec = as_spec(spec)
    metric, mode = spec.metric, spec.mode
    seed_stage = spec.protocol.search_stages + 1
    mine = [t for t in trials if t["optimizer"] == optimizer]
    seeds = [t for t in mine if t["stage"] == seed_stage and t["status"] in ("completed", "diverged", "failed")]
    if seeds:
        times = [run_time_to_target(t.get("history") or [], metric, mode, target) for t in seeds]
        time_s, epochs = _median([x[0] for x in times]), _median([x[1] for x in times])
        source = f"median of {len(seeds)} seed runs"
    else:
        search = [t for t in mine if t["stage"] < seed_stage and t["status"] in ("completed", "stopped")
                  and t["objective"] is not None]
        if not search:
            return {"time_s": math.inf, "epochs": math.inf, "reached": False, "runs": 0, "from": "no result"}
        sign = 1 if mode == "min" else -1
        best = min(search, key=lambda t: (sign * t["objective"], t["stage"], t["index"]))
        time_s, epochs = run_time_to_target(best.get("history") or [], metric, mode, target)
        source = f"best search trial {best.get('id')}"
    return {"time_s": time_s, "epochs": epochs, "reached": math.isfinite(time_s),
            "runs": len(seeds) or 1, "from": source}


def baseline_target(spec: ResolvedSpec | dict, trials: Sequence[dict], baseline: str) -> float | None:
    """The baseline optimizer's median seed result (None when it has none)."""
    seed_stage = as_spec(spec).protocol.search_stages + 1
    values = [t["objective"] for t in trials if t["optimizer"] == baseline and t["stage"] == seed_stage
              and t["status"] == "completed" and t["objective"] is not None and math.isfinite(t["objective"])]
    return statistics.median(values) if values else None


def profile_and_scores(times: dict[str, dict[str, float]], optimizers: Sequence[str],
                       taus: Sequence[float] | None = None) -> dict[str, Any]:
    """times[workload][optimizer] (seconds, inf for a miss) -> ratios, the profile on `taus` and
    the integrated score per optimizer."""
    ratios: dict[str, dict[str, float]] = {}
    for key, per in times.items():
        best = min((per.get(o, math.inf) for o in optimizers), default=math.inf)
        ratios[key] = {}
        for o in optimizers:
            t = per.get(o, math.inf)
            if math.isinf(best) or math.isinf(t):
                ratios[key][o] = math.inf
            elif best <= 0:
                ratios[key][o] = 1.0 if t <= 0 else math.inf  # reached at once: only a tie is as fast
            else:
                ratios[key][o] = t / best
    n = len(times)
    taus = list(taus) if taus is not None else [1 + 3 * i / 60 for i in range(61)]
    profile = {o: [[tau, (sum(r[o] <= tau for r in ratios.values()) / n) if n else 0.0] for tau in taus]
               for o in optimizers}
    scores = {o: (sum(max(0.0, TAU_MAX - max(1.0, r[o])) for r in ratios.values()) / (3 * n)) if n else 0.0
              for o in optimizers}
    return {"ratios": ratios, "profile": profile, "scores": scores}


def speedups(times: dict[str, dict[str, float]], optimizers: Sequence[str], baseline: str | None) -> dict:
    """Per optimizer: the geometric-mean speed-up over the baseline and over how many workloads."""
    if baseline is None:
        return {}
    out = {}
    for o in optimizers:
        logs = [math.log(per[baseline] / per[o]) for per in times.values()
                if math.isfinite(per.get(baseline, math.inf)) and math.isfinite(per.get(o, math.inf))
                and per[o] > 0 and per[baseline] > 0]
        out[o] = {"geomean": math.exp(statistics.fmean(logs)) if logs else None, "workloads": len(logs)}
    return out


def tuning_cost(studies: Sequence[dict], optimizers: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per optimizer over the suite's studies: trials run, CPU- and GPU-seconds."""
    out = {o: {"trials": 0, "cpu_s": 0.0, "gpu_s": 0.0} for o in optimizers}
    for st in studies:
        if st["spec"] is None:  # deleted
            continue
        res = as_spec(st["spec"]).resources
        for t in st["trials"]:
            if t["optimizer"] not in out or t["status"] in ("pending",):
                continue
            hist = t.get("history") or []
            wall = max((h.get("wall_time_s") or 0.0 for h in hist), default=0.0)
            c = out[t["optimizer"]]
            c["trials"] += 1
            c["cpu_s"] += wall * res.cpu
            c["gpu_s"] += wall * res.gpu
    return out


def suite_report(suite_spec: dict, studies: Sequence[dict]) -> dict[str, Any]:
    """The whole report. `studies`: in workload order, each {"id", "name", "status", "spec",
    "trials"} (spec: the study's, typed or as stored; trials: the store's trial dicts with
    histories); pure (inf inside, see `jsonable`). `suite_spec`: the suite's spec as stored (a dict:
    no typed model of it exists below the API's request schema)."""
    optimizers, baseline = suite_spec["optimizers"], suite_spec.get("baseline")
    entries, times = [], {}
    for i, (w, st) in enumerate(zip(suite_spec["workloads"], studies, strict=True)):
        key = f"{i + 1}: {w['name']}"
        if st["spec"] is None:  # the study was deleted: nothing to time, nothing to compare
            times[key] = dict.fromkeys(optimizers, math.inf)
            entries.append({"key": key, "study_id": st["id"], "name": st["name"], "status": st["status"],
                            "workload": w["name"], "budget": w.get("budget", {}), "metric": w.get("metric", ""),
                            "mode": w.get("mode", "min"), "target": w.get("target"), "target_source": "deleted",
                            "time_to_target": {o: {"time_s": math.inf, "epochs": math.inf, "reached": False,
                                                   "runs": 0, "from": "deleted"} for o in optimizers},
                            "comparisons": [], "no_verdict": "the study was deleted"})
            continue
        spec, trials = as_spec(st["spec"]), st["trials"]
        target, source = w.get("target"), "given"
        if target is None and baseline:
            target, source = baseline_target(spec, trials, baseline), f"median seed result of {baseline}"
        ttt = {o: optimizer_time_to_target(spec, trials, o, target) for o in optimizers}
        times[key] = {o: v["time_s"] for o, v in ttt.items()}
        entries.append({"key": key, "study_id": st["id"], "name": st["name"], "status": st["status"],
                        "workload": w["name"], "budget": dict(spec.budget), "metric": spec.metric,
                        "mode": spec.mode, "target": target, "target_source": source if target is not None
                        else "no target (the baseline has no completed seed run)",
                        "time_to_target": ttt, **study_comparisons(spec, trials)})
    prof = profile_and_scores(times, optimizers)
    for e in entries:
        e["ratios"] = prof["ratios"][e["key"]]
    return {"name": suite_spec["name"], "optimizers": optimizers, "baseline": baseline, "workloads": entries,
            "profile": prof["profile"], "scores": prof["scores"], "speedups": speedups(times, optimizers, baseline),
            "tuning_cost": tuning_cost(studies, optimizers), "method": METHOD}


def jsonable(value: Any) -> Any:
    """The report with every infinity (a miss) as None: JSON has no infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
