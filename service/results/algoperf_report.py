"""The report of a suite run under the algoperf ruleset, as a pure function of plain data.

Per workload and optimizer: the optimizer's search trials split into its studies (the seeded
split of service/results/algoperf.py), each study's time (its trial that reaches the target at the
earliest evaluation, the accumulated training time there), the median over studies; across
workloads the 4x rule, the profile on 100 points in [1, 4], the score (trapezoid / 3), the
geometric-mean speed-up over the baseline and the tuning cost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from service.domain.ruleset import protocol_version
from service.domain.spec import ResolvedSpec, as_spec
from service.results import algoperf
from service.results.suites import speedups, tuning_cost

METHOD = {
    "ruleset": "AlgoPerf external tuning: per optimizer, studies x trials_per_study scrambled Sobol draws from its "
               "one search space, split at random into the studies; each trial trains once",
    "study_time": "per study, the trial that reaches the target at the earliest evaluation; its accumulated "
                  "training time (evaluation excluded) at that evaluation; infinite when none reaches it",
    "time_to_target": "median over studies (numpy's: infinite when the median touches a miss)",
    "four_x_rule": "a time over 4x the workload's fastest optimizer's time is set to infinity",
    "profile": "share of workloads with time / fastest time <= tau, on 100 evenly spaced tau in [1, 4]",
    "score": "trapezoid rule over the profile's 100 points, divided by 3 (AlgoPerf's performance_profile.py)",
    "speedup": "geometric mean over workloads (where both reach the target) of the baseline's median time / the "
               "optimizer's (before the 4x rule)",
    "tuning_cost": "trials run; CPU- and GPU-seconds: each trial's training wall time x its reserved CPUs, GPUs",
}
SCORED = ("completed", "stopped", "diverged", "failed")  # a trial that ran; its evaluations count


def optimizer_studies(spec: ResolvedSpec | dict, trials: Sequence[dict], optimizer: str,
                      target: float) -> list[dict]:
    """Per study of one optimizer on one workload: {"study", "time_s", "trial_id", "trials"}."""
    spec = as_spec(spec)
    r = spec.ruleset
    mine = [t for t in trials if t["optimizer"] == optimizer and t["stage"] == 1]
    groups = algoperf.by_study(mine, r["studies"], r["trials_per_study"], spec.protocol.seed, optimizer)
    out = []
    for j, group in enumerate(groups):
        ran = [t for t in group if t["status"] in SCORED]
        evals = [algoperf.evaluations(t.get("history") or [], spec.metric) for t in ran]
        time_s, pos = algoperf.study_time(evals, spec.metric, spec.mode, target)
        out.append({"study": j + 1, "time_s": time_s, "trial_id": ran[pos]["id"] if pos is not None else None,
                    "trials": len(ran), "planned": len(group)})
    return out


def algoperf_suite_report(suite_spec: dict, studies: Sequence[dict]) -> dict[str, Any]:
    """`studies`: in workload order, each {"id", "name", "status", "spec", "trials"} (spec typed or
    as stored; trials with histories); pure (inf inside, see service.results.suites.jsonable).
    `suite_spec`: the suite's spec as stored (a dict)."""
    optimizers, baseline = suite_spec["optimizers"], suite_spec.get("baseline")
    entries, medians = [], {}
    for i, (w, st) in enumerate(zip(suite_spec["workloads"], studies, strict=True)):
        key = f"{i + 1}: {w['name']}"
        target = w.get("target")
        entry = {"key": key, "study_id": st["id"], "name": st["name"], "status": st["status"],
                 "workload": w["name"], "budget": w.get("budget", {}), "metric": w.get("metric", ""),
                 "mode": w.get("mode", "min"), "target": target, "max_runtime_s": w.get("max_runtime_s"),
                 "studies": {}, "time_to_target": {}}
        spec = as_spec(st["spec"]) if st["spec"] is not None else None
        for o in optimizers:
            per = optimizer_studies(spec, st["trials"], o, target) if spec is not None else []
            med = algoperf.median_time([p["time_s"] for p in per])
            entry["studies"][o] = per
            entry["time_to_target"][o] = {"time_s": med, "reached": math.isfinite(med)}
        medians[key] = {o: entry["time_to_target"][o]["time_s"] for o in optimizers}
        entries.append(entry)
    sc = algoperf.scores(medians, optimizers)
    for e in entries:
        e["capped"] = sc["times"][e["key"]]
        e["ratios"] = sc["ratios"][e["key"]]
    return {"name": suite_spec["name"], "optimizers": optimizers, "baseline": baseline,
            "ruleset": suite_spec["ruleset"], "protocol_version": suite_spec.get("protocol_version")
            or protocol_version(suite_spec["ruleset"]), "workloads": entries, "taus": sc["taus"],
            "profile": {o: [[t, v] for t, v in zip(sc["taus"], sc["profile"][o], strict=True)] for o in optimizers},
            "scores": sc["scores"], "speedups": speedups(medians, optimizers, baseline),
            "tuning_cost": tuning_cost(studies, optimizers), "method": METHOD}
