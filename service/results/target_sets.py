"""Frozen targets (AlgoPerf's recipe), as pure functions of plain data.

A target set tunes baseline optimizers on each workload (`trials` scrambled Sobol draws each,
one study per workload), re-trains each baseline's best configuration `reruns` times (the study's
seed runs) and sets the workload's target to the median over reruns of each rerun's best
validation value, taken from the baseline whose median is best. Once every study has ended the
targets are frozen: stored with the set and never recomputed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from service.domain.spec import TARGET_SET_KIND, ResolvedSpec, as_spec
from service.results.algoperf import evaluations
from service.results.algoperf_export import workload_dirs
from service.results.suites import suite_status

if TYPE_CHECKING:
    from service.store.interface import Store
    from service.store.models import Suite

class TargetsUnavailable(ValueError):
    """A suite names a target set that is missing, not done, or lacks one of its workloads."""


def best_value(history: Sequence[dict], metric: str, mode: str) -> float | None:
    """A run's best finite validation value over its evaluations (None: none finite)."""
    vals = [e.get(metric) for e in evaluations(history, metric)]
    vals = [float(v) for v in vals if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)]
    if not vals:
        return None
    return min(vals) if mode == "min" else max(vals)


def workload_target(spec: ResolvedSpec | dict, trials: Sequence[dict]) -> dict:
    """{"target", "optimizer", "reruns": {optimizer: [best values]}, "medians": {optimizer: median}}
    of one workload's study (spec: the study's; seed runs in stage len(stages) + 1)."""
    spec = as_spec(spec)
    metric, mode = spec.metric, spec.mode
    seed_stage = spec.protocol.search_stages + 1
    reruns, medians = {}, {}
    for o in spec.optimizers:
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


def set_status(rows: list) -> str:
    """A target set's status from its studies; one deleted before the targets froze counts as
    cancelled (its workload can never have a target, so the set is never done)."""
    return suite_status([s.status if s is not None else "cancelled" for s in rows])


def refresh(store: Store, ts: Suite) -> dict:
    """The set's stored spec, with its targets frozen into it the first time every study has ended."""
    if ts.spec.get("targets") is not None:
        return ts.spec
    rows = store.suite_studies(ts.id)
    status = set_status(rows)
    if status in ("queued", "running"):
        return ts.spec
    studies = [{"spec": s.resolved, "trials": store.trial_dicts(s.id)} if s is not None
               else {"spec": None, "trials": []} for s in rows]
    computed = targets(ts.spec["workloads"], studies)
    spec = {**ts.spec, "targets": computed["targets"], "detail": computed["detail"], "final_status": status}
    store.set_suite_spec(ts.id, spec)
    return spec


def suite_targets(store: Store, owns: Callable[[str | None], bool], set_id: str, workloads: list[dict]) -> list[float]:
    """The targets a suite's workloads take from a done target set (by workload name; name_<k> where
    the set has a workload twice); `TargetsUnavailable` (the API's 422 naming `targets`) when it is
    missing, not done or lacks one. `owns(owner)`: whether the caller may use a set of that owner."""
    ts = store.get_suite(set_id)
    if ts is None or ts.spec.get("kind") != TARGET_SET_KIND or not owns(ts.owner):
        raise TargetsUnavailable(f"target set {set_id!r} not found")
    spec = refresh(store, ts)
    frozen = spec.get("targets")
    if frozen is None or spec.get("final_status") != "completed":
        state = "is not done yet" if frozen is None else f"ended {spec.get('final_status')}, not done"
        raise TargetsUnavailable(f"target set {set_id!r} {state}")
    out = []
    for i, w in enumerate(workloads):
        value = frozen.get(w["name"])
        if value is None:
            raise TargetsUnavailable(f"target set {set_id!r} has no target for workloads[{i}] "
                                     f"({w['name']!r}); it has {', '.join(frozen) or 'none'}")
        out.append(float(value))
    return out
