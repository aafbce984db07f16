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

from service.results.verdicts import safe_stat, study_comparisons, usable

LOG_KINDS = ("log_uniform", "one_minus_log_uniform")
FAILURE_RULE = ("diverged and failed trials count as the worst finite objective among the optimizer's "
                "search trials (they can never be the best)")


def _oriented(values: Sequence[float], mode: str) -> np.ndarray:
    """Values turned so that larger is better."""
    v = np.asarray(values, dtype=float)
    return -v if mode == "min" else v


K_POINTS = 40  # the expected-best curve is evaluated on this many log-spaced k (all k when n <= K_POINTS)
N_BOOT = 100  # bootstrap draws for its band
BAND_LEVEL = 0.9


def band_error(n_boot: int = N_BOOT, level: float = BAND_LEVEL) -> float:
    """The Monte-Carlo error of the band's ends: each end is the (1-level)/2 or (1+level)/2
    quantile of `n_boot` bootstrap curves, so the share of curves outside it is uncertain by one
    binomial standard error, sqrt(q (1-q) / n_boot) with q = (1-level)/2 (0.022 at 100 draws: a
    90% band covers 90% +- 2.2 points per end)."""
    q = (1 - level) / 2
    return math.sqrt(q * (1 - q) / n_boot)


BAND_RULE = (f"the band is the {BAND_LEVEL:.0%} bootstrap interval from {N_BOOT} resamples of the search trials; "
             f"the share outside each end is uncertain by about +-{band_error():.3f} (Monte-Carlo error); the "
             f"mean is exact. The curve is evaluated at up to {K_POINTS} log-spaced k, always k = 1 and k = n")


def k_grid(n: int, points: int = K_POINTS) -> np.ndarray:
    """The k at which the expected-best curve is evaluated: every k up to `points`, else about
    `points` log-spaced values, always including 1 and n (the whole search)."""
    if n <= points:
        return np.arange(1, n + 1)
    return np.unique(np.rint(np.geomspace(1, n, points)).astype(np.int64))


def _max_weights(n: int, ks: np.ndarray) -> np.ndarray:
    """W[j, i] = P(the max of ks[j] draws is the i-th smallest of n values) = (i/n)^k - ((i-1)/n)^k."""
    p = np.arange(1, n + 1) / n
    k = np.asarray(ks, dtype=float)[:, None]
    return np.power(p, k) - np.power(p - 1 / n, k)


def expected_max_curve(better_is_larger: np.ndarray, ks: int | Sequence[int]) -> np.ndarray:
    """E[max of k draws with replacement] for each k in `ks` (an int: k = 1..ks), exactly (Dodge
    et al. 2019, eq. 1): with the values sorted ascending v_1..v_n,
    E = sum_i v_i [(i/n)^k - ((i-1)/n)^k]. O(n) per k over the values sorted once."""
    v = np.sort(np.asarray(better_is_larger, dtype=float))
    ks = np.arange(1, ks + 1) if isinstance(ks, int | np.integer) else np.asarray(ks)
    return _max_weights(len(v), ks) @ v


def expected_best(values: Sequence[float | None], mode: str, n_boot: int = N_BOOT, seed: int = 0,
                  level: float = BAND_LEVEL, points: int = K_POINTS) -> list[dict[str, float]]:
    """[{"trials": k, "mean", "lo", "hi"}] for k on `k_grid(len(values), points)` (every k for a
    small search; always k = 1 and k = n); None/NaN are failures. The band's error: `band_error`."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return []
    worst = max(finite) if mode == "min" else min(finite)
    filled = [v if v is not None and math.isfinite(v) else worst for v in values]
    x = np.sort(_oriented(filled, mode))
    n = len(x)
    ks = k_grid(n, points)
    weights = _max_weights(n, ks)  # depends on n only: shared by the mean and every resample
    mean = weights @ x
    rng = np.random.default_rng(seed)
    boots = np.empty((n_boot, len(ks)))
    chunk = max(1, 2_000_000 // n)  # resamples per step: bounded memory at any n
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        # x is sorted, so sorted indices give each resample already sorted
        idx = np.sort(rng.integers(0, n, (m, n)), axis=1)
        boots[start:start + m] = x[idx] @ weights.T
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    lo, hi = np.quantile(boots, lo_q, axis=0), np.quantile(boots, hi_q, axis=0)
    sign = -1.0 if mode == "min" else 1.0
    out = []
    for j, k in enumerate(ks):
        a, b = sign * lo[j], sign * hi[j]
        out.append({"trials": int(k), "mean": float(sign * mean[j]), "lo": float(min(a, b)), "hi": float(max(a, b))})
    return out


def edf(values: Sequence[float]) -> list[list[float]]:
    """[[value, fraction of values <= value]] in ascending order (finite values only)."""
    v = sorted(x for x in values if x is not None and math.isfinite(x))
    n = len(v)
    return [[x, (i + 1) / n] for i, x in enumerate(v)]


def _searched(space: dict) -> list[str]:
    return [k for k, d in (space or {}).items() if isinstance(d, dict) and d.get("kind") not in ("fixed",)]


def analyse(spec: dict, stage_spaces: dict, trials: Sequence[dict], target: float | None = None,
            costs: dict[str, dict] | None = None) -> dict:
    """Per optimizer: expected_best, edf per stage, diverged_share, hyperparameter slices with the
    stage ranges, time per epoch and peak memory, seed runs, time to `target`.

    `trials`: dicts with optimizer, stage, index, status, objective, config, seed, history.
    `costs`: what the histories would give, already aggregated (by the store, in SQL): per
    optimizer time_per_epoch_s, peak_memory_mb and (with `target`) time_to_target; given, the
    trials need no history."""
    mode, metric = spec["mode"], spec["metric"]
    search_stages = len(spec["protocol"]["stages"])
    out: dict[str, Any] = {"metric": metric, "mode": mode, "failures": FAILURE_RULE, "band": BAND_RULE,
                           "optimizers": {}}
    for opt in spec["optimizers"]:
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
        seed_stage = [t for t in mine if t["stage"] == search_stages + 1 and t["index"] < spec["protocol"]["seeds"]]
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
    from service.results.search_luck import METHOD as LUCK_METHOD
    from service.results.search_luck import add_robustness, search_comparisons

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
