"""AlgoPerf's external-tuning scoring, as pure functions of plain data (no SQL, no HTTP).

The same arithmetic as MLCommons AlgoPerf's `scoring/performance_profile.py` (rules v0.5/v0.6), so
the same measurements give the same number:

- **a study's time** on a workload: among its trials that reach the validation target at some
  evaluation, the one that reaches it at the *earliest evaluation index* (ties: the first trial);
  its time is the accumulated training time (evaluation excluded) at that evaluation. No trial
  reaches it: infinity (a miss).
- **a workload's time**: the median over the studies (numpy's median: the mean of the two middle
  values for an even count, so it is infinite as soon as the median touches a miss).
- **the 4x rule**: a time over 4x the fastest optimizer's time on that workload becomes infinity.
- **ratios**: time / fastest time (a miss, or a workload nobody solved: infinity).
- **profile**: rho(tau) = (workloads with ratio <= tau) / W on 100 evenly spaced tau in [1, 4].
- **score**: the trapezoid rule over those 100 points, divided by 3 (the range of tau).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from service.domain.spec import ResolvedSpec, as_spec

TAU_MIN, TAU_MAX, POINTS = 1.0, 4.0, 100
VERSIONS = {"0.5": (5, 5), "0.6": (3, 5)}  # ruleset version -> (studies, trials per study)


def taus() -> np.ndarray:
    return np.linspace(TAU_MIN, TAU_MAX, num=POINTS)


def _reached(value: Any, target: float, mode: str) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    return value <= target if mode == "min" else value >= target


def evaluations(history: Sequence[dict], metric: str) -> list[dict]:
    """A trial's evaluations in order, each {"global_step", "train_time_s", "eval_time_s", metric}:
    the `evals` a trial with `eval_every` records inside its per-epoch rows, or else one per epoch
    row (the training time then falls back to the epoch's wall time for older trials)."""
    out: list[dict] = []
    for row in history:
        if row.get("evals"):
            out.extend(row["evals"])
        elif "evals" not in row:
            out.append({"global_step": row.get("global_step"),
                        "train_time_s": row.get("train_time_s", row.get("wall_time_s")),
                        "eval_time_s": row.get("eval_time_s", 0.0), metric: row.get(metric),
                        "epoch": row.get("epoch")})
    return out


def first_reaching(evals: Sequence[dict], metric: str, mode: str, target: float) -> int | None:
    """The index of the first evaluation at or beyond `target` (None: never)."""
    for i, e in enumerate(evals):
        if _reached(e.get(metric), target, mode):
            return i
    return None


def study_time(trials: Sequence[Sequence[dict]], metric: str, mode: str, target: float) -> tuple[float, int | None]:
    """(time, position of the trial it came from) of one study: `trials` are its trials'
    evaluation lists in trial order. The trial that reaches the target at the earliest evaluation
    index wins (AlgoPerf compares evaluation indices, not times); (inf, None) for a miss."""
    best: tuple[int, int] | None = None
    for pos, evals in enumerate(trials):
        i = first_reaching(evals, metric, mode, target)
        if i is not None and (best is None or i < best[0]):
            best = (i, pos)
    if best is None:
        return math.inf, None
    t = trials[best[1]][best[0]].get("train_time_s")
    return (float(t) if isinstance(t, int | float) else math.inf), best[1]


def median_time(study_times: Sequence[float]) -> float:
    """numpy's median over the studies (inf propagates: [1, 2, inf] -> 2, [1, inf] -> inf)."""
    if not study_times:
        return math.inf
    return float(np.median(np.asarray(study_times, dtype=float)))


def four_x_rule(times: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """times[workload][optimizer] with every time over 4x that workload's fastest set to inf."""
    out = {}
    for w, per in times.items():
        best = min(per.values(), default=math.inf)
        out[w] = {o: (math.inf if t > TAU_MAX * best else t) for o, t in per.items()}
    return out


def ratios(times: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """time / the workload's fastest; where that is undefined (inf/inf, 0/0) the time itself is
    kept, as pandas' `update` with a NaN does in AlgoPerf (inf stays a miss, 0 stays within)."""
    out = {}
    for w, per in times.items():
        best = min(per.values(), default=math.inf)
        row = {}
        for o, t in per.items():
            with np.errstate(divide="ignore", invalid="ignore"):
                r = np.float64(t) / np.float64(best)
            row[o] = float(t) if math.isnan(r) else float(r)
        out[w] = row
    return out


def profile(rat: dict[str, dict[str, float]], optimizers: Sequence[str]) -> dict[str, list[float]]:
    """rho(tau) per optimizer on `taus()`: the share of the W workloads with ratio <= tau."""
    n = len(rat)
    grid = taus()
    return {o: [(sum(r.get(o, math.inf) <= tau for r in rat.values()) / n) if n else 0.0 for tau in grid]
            for o in optimizers}


def score(rho: Sequence[float]) -> float:
    """The trapezoid rule over the profile's 100 points, divided by 3 (tau's range)."""
    y, x = np.asarray(rho, dtype=float), taus()
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2 / (TAU_MAX - TAU_MIN))


def scores(times: dict[str, dict[str, float]], optimizers: Sequence[str]) -> dict[str, Any]:
    """times[workload][optimizer] (median over studies, inf for a miss) -> the 4x rule, ratios,
    profile and score, exactly in AlgoPerf's order."""
    capped = four_x_rule(times)
    rat = ratios(capped)
    rho = profile(rat, optimizers)
    return {"times": capped, "ratios": rat, "taus": [float(t) for t in taus()], "profile": rho,
            "scores": {o: score(rho[o]) for o in optimizers}}


def study_split(n_trials: int, studies: int, seed: int, optimizer: str) -> list[int]:
    """Study number (0-based) of each of an optimizer's trial indices: a seeded random permutation
    of the quasi-random draws cut into `studies` equal parts (so each study holds a random subset
    of the sequence, as AlgoPerf's independent studies do). A pure function of its arguments."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence((seed, zlib.crc32(optimizer.encode()), 33))))
    perm = rng.permutation(n_trials)
    per = n_trials // studies if studies else 0
    out = [0] * n_trials
    for pos, index in enumerate(perm):
        out[int(index)] = min(pos // per, studies - 1) if per else 0
    return out


def by_study(trials: Iterable[dict], studies: int, trials_per_study: int, seed: int,
             optimizer: str) -> list[list[dict]]:
    """An optimizer's search trials (dicts with `index`) grouped into its studies, each in index
    order."""
    split = study_split(studies * trials_per_study, studies, seed, optimizer)
    out: list[list[dict]] = [[] for _ in range(studies)]
    for t in sorted(trials, key=lambda t: t["index"]):
        if 0 <= t["index"] < len(split):
            out[split[t["index"]]].append(t)
    return out


FINISHED_TRIAL = ("completed", "stopped", "diverged", "failed", "cancelled")


def fastest_median_bound(spec: ResolvedSpec | dict, trials: Sequence[dict], target: float) -> float:
    """An upper bound, from what is recorded now, on the fastest optimizer's median time on this
    workload (its study's `trials` with histories): a study whose trials have all ended has its
    time known; one still running counts as a miss (the median only falls as its studies end).
    inf until some optimizer has enough ended studies for a finite median."""
    spec = as_spec(spec)
    r = spec.ruleset
    best = math.inf
    for o in spec.optimizers:
        mine = [t for t in trials if t["optimizer"] == o and t["stage"] == 1]
        times = []
        for group in by_study(mine, r["studies"], r["trials_per_study"], spec.protocol.seed, o):
            if len(group) < r["trials_per_study"] or any(t["status"] not in FINISHED_TRIAL for t in group):
                times.append(math.inf)
                continue
            evals = [evaluations(t.get("history") or [], spec.metric) for t in group]
            times.append(study_time(evals, spec.metric, spec.mode, target)[0])
        best = min(best, median_time(times))
    return best


def late(train_time_s: float | None, bound: float) -> bool:
    """Whether a trial at this accumulated training time is past 4x the bound (strictly, as the
    4x rule): any target it reaches from now on takes longer than 4x the fastest median."""
    return isinstance(train_time_s, int | float) and math.isfinite(bound) and train_time_s > TAU_MAX * bound
