"""Numbers from a study's trials, as pure functions of plain data (no SQL, no HTTP): what the report
draws and `GET /studies/{id}/analysis` serves.

- `expected_best`: Dodge et al. (2019), "Show your work": the expected best objective of a random
  search with k trials, on a log-spaced grid of k from 1 to n (`k_grid`), computed exactly from the
  n observed search trials (the expected maximum of k draws with replacement from their empirical
  distribution, O(n) per k), with a bootstrap band (resampling the n trials; `BAND_RULE` states its
  Monte-Carlo error). A diverged or failed trial counts as a failure: it takes the
  worst finite objective of the optimizer's search trials, so it can never be the best, and a
  search whose k draws all failed gets that worst value.
- `edf`: the empirical distribution function of the objective, per stage.
- hyperparameter slices, divergence share, time per epoch and peak memory (the paper's Table 1
  columns), seed-run statistics and AlgoPerf-style time to a target.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

from service.domain.spec import ResolvedSpec, as_spec
from service.results.expected_best import (  # noqa: F401 - re-exported: the analysis' own names before the split
    BAND_LEVEL,
    BAND_RULE,
    K_POINTS,
    N_BOOT,
    band_error,
    expected_best,
    expected_max_curve,
    k_grid,
)
from service.results.search_luck import METHOD as LUCK_METHOD
from service.results.search_luck import add_robustness, search_comparisons
from service.results.verdicts import safe_stat, study_comparisons, usable

LOG_KINDS = ("log_uniform", "one_minus_log_uniform")
FAILURE_RULE = ("diverged and failed trials count as the worst finite objective among the optimizer's "
                "search trials (they can never be the best)")


def edf(values: Sequence[float]) -> list[list[float]]:
    """[[value, fraction of values <= value]] in ascending order (finite values only)."""
    v = sorted(x for x in values if x is not None and math.isfinite(x))
    n = len(v)
    return [[x, (i + 1) / n] for i, x in enumerate(v)]


def _searched(space: dict) -> list[str]:
    return [k for k, d in (space or {}).items() if isinstance(d, dict) and d.get("kind") not in ("fixed",)]


def analyse(spec: ResolvedSpec | dict, stage_spaces: dict, trials: Sequence[dict], target: float | None = None,
            costs: dict[str, dict] | None = None) -> dict:
    """Per optimizer: expected_best, edf per stage, diverged_share, hyperparameter slices with the
    stage ranges, time per epoch and peak memory, seed runs, time to `target`.

    `trials`: dicts with optimizer, stage, index, status, objective, config, seed, history.
    `costs`: what the histories would give, already aggregated (by the store, in SQL): per
    optimizer time_per_epoch_s, peak_memory_mb and (with `target`) time_to_target; given, the
    trials need no history. `spec`: the study's (a dict: `as_spec` reads it)."""
    spec = as_spec(spec)
    mode, metric = spec.mode, spec.metric
    search_stages = spec.protocol.search_stages
    out: dict[str, Any] = {"metric": metric, "mode": mode, "failures": FAILURE_RULE, "band": BAND_RULE,
                           "optimizers": {}}
    for opt in spec.optimizers:
        mine = [t for t in trials if t["optimizer"] == opt]
        search = [t for t in mine if t["stage"] <= search_stages and t["status"] in ("completed", "diverged", "failed")]
        search.sort(key=lambda t: (t["stage"], t["index"]))
        values = [t["objective"] if t["status"] == "completed" and usable(t["objective"]) else None for t in search]
        spaces = stage_spaces.get(opt, {})
        names = sorted({n for s in list(spaces.values())[:search_stages] for n in _searched(s)})
        slices = {}
        for name in names:
            slices[name] = {
                "log": any((spaces.get(str(st)) or {}).get(name, {}).get("kind") in LOG_KINDS
                           for st in range(1, search_stages + 1)),
                "ranges": {st: [d.get("low"), d.get("high")] for st, sp in spaces.items()
                           if int(st) <= search_stages for d in [sp.get(name, {})] if "low" in d},
                "points": [{"stage": t["stage"], "value": t["config"].get(name), "objective": t["objective"],
                            "status": t["status"]} for t in search if name in t["config"]
                           and (t["status"] != "completed" or usable(t["objective"]))],
            }
        if costs is None:
            epoch_times = [h["epoch_time_s"] for t in mine for h in t.get("history") or [] if h.get("epoch_time_s")]
            memory = [h["peak_memory_mb"] for t in mine for h in t.get("history") or [] if h.get("peak_memory_mb")]
            mine_costs = {"time_per_epoch_s": safe_stat(statistics.fmean, epoch_times),
                          "peak_memory_mb": max(memory) if memory else None}
            if target is not None:
                mine_costs["time_to_target"] = time_to_target(mine, metric, mode, target)
        else:
            mine_costs = costs.get(opt) or {"time_per_epoch_s": None, "peak_memory_mb": None}
        # one search's seed runs (repeat 0's; the search-level comparisons take every repeat's)
        seed_stage = [t for t in mine if t["stage"] == search_stages + 1 and t["index"] < spec.protocol.seeds]
        seed_values = [t["objective"] for t in seed_stage if t["status"] == "completed" and usable(t["objective"])]
        entry = {
            "search_trials": len(search),
            "expected_best": expected_best(values, mode),
            "edf": {str(st): edf([t["objective"] for t in search
                                  if t["stage"] == st and t["status"] == "completed" and usable(t["objective"])])
                    for st in range(1, search_stages + 1)},
            "diverged_share": (sum(t["status"] != "completed" for t in search) / len(search)) if search else None,
            "status_counts": {s: sum(t["status"] == s for t in mine)
                              for s in ("completed", "diverged", "failed", "stopped", "running", "pending")},
            "hyperparameters": slices,
            "time_per_epoch_s": mine_costs.get("time_per_epoch_s"),
            "peak_memory_mb": mine_costs.get("peak_memory_mb"),
            "seed_runs": {"n": len(seed_stage), "values": seed_values, "seeds": [t.get("seed") for t in seed_stage],
                          "mean": safe_stat(statistics.fmean, seed_values),
                          "std": safe_stat(statistics.stdev, seed_values) if len(seed_values) > 1 else None,
                          "median": safe_stat(statistics.median, seed_values)},
        }
        if target is not None:
            entry["time_to_target"] = mine_costs.get("time_to_target") or time_to_target([], metric, mode, target)
        out["optimizers"][opt] = entry
    out.update(study_comparisons(spec, trials))  # comparisons, comparison_method, no_verdict
    # imported here: search_luck builds on this module's expected-best functions

    add_robustness(spec, stage_spaces, trials, out["comparisons"])
    out["comparison_method"] = {**out["comparison_method"], **LUCK_METHOD}
    out["search_comparisons"] = search_comparisons(spec, trials)
    return out


def time_to_target(trials: Sequence[dict], metric: str, mode: str, target: float) -> dict:
    """AlgoPerf's question for one optimizer: the fastest trial to reach `target` (wall time of
    the first epoch at or beyond it), and the share of trials that reached it at all."""
    best = None
    reached = 0
    ran = [t for t in trials if t.get("history")]
    for t in ran:
        for h in t["history"]:
            v = h.get(metric)
            if v is None or not math.isfinite(v):
                continue
            if (v <= target) if mode == "min" else (v >= target):
                reached += 1
                if best is None or h.get("wall_time_s", math.inf) < best["wall_time_s"]:
                    best = {"trial_id": t.get("id"), "epoch": h.get("epoch"), "wall_time_s": h.get("wall_time_s")}
                break
    return {"target": target, "fastest": best, "reached_share": reached / len(ran) if ran else None}


def performance_profile(scores: dict[str, dict[str, float | None]], mode: str,
                        taus: Sequence[float] | None = None) -> dict[str, list[list[float]]]:
    """Dolan & Moré's performance profile across studies: scores[study][optimizer] -> per optimizer
    [[tau, share of studies where its score is within a factor tau of the best]]."""
    optimizers = sorted({o for s in scores.values() for o in s})
    ratios: dict[str, list[float]] = {o: [] for o in optimizers}
    for per in scores.values():
        vals = {o: v for o, v in per.items() if v is not None and math.isfinite(v) and v > 0}
        if not vals:
            continue
        best = min(vals.values()) if mode == "min" else max(vals.values())
        for o in optimizers:
            v = vals.get(o)
            ratios[o].append(math.inf if v is None else (v / best if mode == "min" else best / v))
    taus = list(taus or np.linspace(1.0, 3.0, 41))
    return {o: [[t, sum(r <= t for r in rs) / len(rs) if rs else 0.0] for t in taus] for o, rs in ratios.items()}
