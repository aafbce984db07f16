"""Frozen targets (AlgoPerf's recipe), as pure functions of plain data.

A target set tunes baseline optimizers on each workload (`trials` scrambled Sobol draws each,
one study per workload), re-trains each baseline's best configuration `reruns` times (the study's
seed runs) and sets the workload's target to the median over reruns of each rerun's best
validation value, taken from the baseline whose median is best. Once every study has ended the
targets are frozen: stored with the set and never recomputed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from service.results.algoperf import evaluations
from service.results.algoperf_export import workload_dirs


def best_value(history: Sequence[dict], metric: str, mode: str) -> float | None:
    """A run's best finite validation value over its evaluations (None: none finite)."""
    vals = [e.get(metric) for e in evaluations(history, metric)]
    vals = [float(v) for v in vals if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)]
    if not vals:
        return None
    return min(vals) if mode == "min" else max(vals)


def workload_target(spec: dict, trials: Sequence[dict]) -> dict:
    """{"target", "optimizer", "reruns": {optimizer: [best values]}, "medians": {optimizer: median}}
    of one workload's study (spec: the study's; seed runs in stage len(stages) + 1)."""
    metric, mode = spec["metric"], spec["mode"]
    seed_stage = len(spec["protocol"]["stages"]) + 1
    reruns, medians = {}, {}
    for o in spec["optimizers"]:
        vals = [best_value(t.get("history") or [], metric, mode) for t in trials
                if t["optimizer"] == o and t["stage"] == seed_stage and t["status"] in ("completed", "diverged")]
        vals = [v for v in vals if v is not None]
        reruns[o] = vals
        if vals:
            medians[o] = float(np.median(vals))
    if not medians:
        return {"target": None, "optimizer": None, "reruns": reruns, "medians": medians}
    pick = (min if mode == "min" else max)(medians, key=medians.get)
    return {"target": medians[pick], "optimizer": pick, "reruns": reruns, "medians": medians}


def targets(workloads: Sequence[dict], studies: Sequence[dict]) -> dict:
    """{"targets": {workload key: value}, "detail": {workload key: workload_target(...)}} over the
    set's studies in workload order; a workload's key is its name (name_<k> when it appears twice)."""
    out, detail = {}, {}
    for key, st in zip(workload_dirs(workloads), studies, strict=True):
        d = workload_target(st["spec"], st["trials"]) if st["spec"] is not None else {"target": None}
        out[key], detail[key] = d["target"], d
    return {"targets": out, "detail": detail}
