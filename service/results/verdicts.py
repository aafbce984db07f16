"""Pairwise verdicts between a study's optimizers, as pure functions of plain data (no SQL, no HTTP):
what `GET /studies/{id}/analysis` serves as `comparisons`, the report's verdict table, the CLI's
final table, the export and `rootfree verdict` (`compare_runs`, for numbers got anywhere).

For optimizers a and b (in the study's order) with objectives x_a, x_b (seed runs, or per-repeat
search outcomes at the search level):

- `diff` = mean(x_a) - mean(x_b).
- `p` and the 95% interval [`lo`, `hi`] come from one test (p < 0.05 exactly when the interval
  excludes 0): unpaired, Welch's statistic (mean difference over sqrt(s_a^2/n_a + s_b^2/n_b))
  referred to Student's t with Hsu's min(n_a, n_b) - 1 degrees of freedom; paired (`protocol.paired:
  true`, runs matched by seed), the paired t test of the per-seed differences (n - 1 df).
  Why these: measured by seeded simulation (tests/service/results/test_verdict_calibration.py, bench/
  verdict_errors.py), Welch's own Satterthwaite df lets 6.5% of null p fall below 0.05 with 3 vs 8
  runs of sd 3 vs 1 (and 8% with 3 vs 10 runs of skewed noise); Hsu's df keeps both under 5%
  (it is the smallest df over every variance ratio, hence conservative). Permutation tests are
  exact only for exchangeable groups and have a floor (2/C(2n, n), 2/2^n) that Holm multiplies
  past 0.05 (three optimizers, six paired seeds: 3 x 2/64): the t tests have none.
- `p_adjusted`: Holm's step-down over every pair of the study (a suite: every pair of one workload's
  study), which keeps the chance of any false verdict in the family at or below 0.05.
- `verdict`: "<better> better than <worse>" (the study's mode decides which is better) when
  p_adjusted < 0.05, else "not resolved with <n> seeds" (n: the fewer runs of the two, or the pairs).
- `seeds_needed`: runs per optimizer for 80% power against a true difference of the observed size,
  by the same test's noncentral t at Holm's strictest level 0.05 / (pairs in the family), and at least
  4 (unpaired) or 6 (paired), the minimum the warnings ask for; None when the observed difference is 0.

Diverged or failed seed runs have no objective: they count in no mean (the report shows them).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import special

from service.domain.spec import ResolvedSpec, as_spec

ALPHA = 0.05
POWER = 0.8
MIN_UNPAIRED = 4  # below these the t test's calibration rests on normality alone and its power is slight
MIN_PAIRED = 6
MAX_SEEDS_NEEDED = 100_000

METHOD = {
    "diff": "mean(a) - mean(b) of the completed runs",
    "interval": ("95% interval of the same test as p: Welch's statistic on Student's t with Hsu's min(n_a, n_b) - 1 "
                 "degrees of freedom (paired studies: paired t interval of the per-seed differences, n - 1 df)"),
    "p": ("two-sided, the test of the interval: Welch's t with Hsu's degrees of freedom (paired: paired t); "
          "scipy.stats"),
    "multiplicity": "holm",
    "p_adjusted": "Holm's step-down over every pair of the study (family-wise error at most alpha)",
    "verdict": (f"resolved when p_adjusted < {ALPHA}; the better optimizer is named first (the interval is the "
                "pair's own: it can exclude 0 where Holm's p_adjusted does not resolve)"),
    "seeds_needed": (f"runs per optimizer for {POWER:.0%} power against a true difference of the observed size "
                     f"(noncentral t of the same test at alpha {ALPHA} / the pairs in the family), at least "
                     f"{MIN_UNPAIRED} unpaired, {MIN_PAIRED} paired"),
}


# ----------------------------------------------------------------------- the test
def t_test(xa: Sequence[float], xb: Sequence[float], paired: bool = False,
           level: float = 1 - ALPHA) -> tuple[float, float, float, float, float]:
    """(diff, lo, hi, p, variance) of mean(xa) - mean(xb): unpaired, Welch's statistic on Hsu's
    min(n_a, n_b) - 1 df; paired (xa[i] with xb[i]), the paired t. `variance`: s_a^2 + s_b^2, or
    the differences' s_d^2 (what `seeds_needed` scales). Needs at least two runs each."""
    a, b = np.asarray(xa, dtype=float), np.asarray(xb, dtype=float)
    if paired:
        d = a - b
        diff, variance = float(d.mean()), float(d.var(ddof=1))
        se, df = math.sqrt(variance / len(d)), len(d) - 1
    else:
        va, vb = float(a.var(ddof=1)), float(b.var(ddof=1))
        diff, variance = float(a.mean() - b.mean()), va + vb
        se, df = math.sqrt(va / len(a) + vb / len(b)), min(len(a), len(b)) - 1
    if se == 0.0 or not math.isfinite(se):
        # No spread (a deterministic workload, identical per-seed differences): the t statistic is
        # undefined, not infinite. The p is the exact test's smallest — every sign flip (paired) or
        # relabelling (unpaired) but the observed one and its mirror is further from zero — so 2 or
        # 3 identical runs can never make a verdict certain.
        if diff == 0.0:
            return diff, diff, diff, 1.0, variance
        arrangements = 2 ** len(a) if paired else math.comb(len(a) + len(b), len(a))
        return diff, diff, diff, min(1.0, 2 / arrangements), variance
    # scipy.special's t functions are what scipy.stats.t calls, without its per-call overhead
    half = float(special.stdtrit(df, 0.5 + level / 2)) * se
    p = float(2 * special.stdtr(df, -abs(diff) / se))
    return diff, diff - half, diff + half, p, variance


def holm(ps: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None stays None and is no hypothesis of the family):
    sorted ascending, p_(j) -> max over i <= j of min(1, (m - i + 1) p_(i))."""
    tested = sorted((p, i) for i, p in enumerate(ps) if p is not None)
    out: list[float | None] = [None] * len(ps)
    m, running = len(tested), 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def seeds_needed(diff: float, variance: float, paired: bool = False, alpha: float = ALPHA,
                 power: float = POWER, family: int = 1) -> int | None:
    """Runs per optimizer to resolve a true difference `diff` at `power` with the verdict's own test
    at level alpha / family (Holm's strictest step): `variance` is s_a^2 + s_b^2 (unpaired, equal
    n each) or the per-seed differences' s_d^2 (paired); noncentral t with n - 1 df either way."""
    if diff == 0.0 or not math.isfinite(diff) or not math.isfinite(variance):
        return None
    floor = MIN_PAIRED if paired else MIN_UNPAIRED
    if variance <= 0.0:
        return floor
    level = alpha / max(1, family)

    def achieved(n: int) -> float:
        ncp, crit = abs(diff) / math.sqrt(variance / n), special.stdtrit(n - 1, 1 - level / 2)
        return float(1 - special.nctdtr(n - 1, ncp, crit) + special.nctdtr(n - 1, ncp, -crit))

    # the normal approximation is a lower bound (t's tails are heavier): step up from it
    z = statistics.NormalDist()
    n = max(2, math.floor((z.inv_cdf(1 - level / 2) + z.inv_cdf(power)) ** 2 * variance / diff**2))
    while n < MAX_SEEDS_NEEDED and achieved(n) < power:
        n += 1
    return max(n, floor)


# ----------------------------------------------------------------------- verdicts
def verdict_text(a: str, b: str, diff: float, resolved: bool, n: int, mode: str) -> str:
    if not resolved:
        return f"not resolved with {n} seeds"
    a_better = diff < 0 if mode == "min" else diff > 0
    return f"{a} better than {b}" if a_better else f"{b} better than {a}"


def _matched(runs_a: Sequence[tuple[Any, float]], runs_b: Sequence[tuple[Any, float]],
             paired: bool) -> tuple[list[float], list[float], int]:
    if paired:
        by_b = {s: v for s, v in runs_b}
        pairs = [(v, by_b[s]) for s, v in runs_a if s in by_b]
        return [p[0] for p in pairs], [p[1] for p in pairs], len(pairs)
    xa, xb = [v for _, v in runs_a], [v for _, v in runs_b]
    return xa, xb, min(len(xa), len(xb))


def compare(a: str, runs_a: Sequence[tuple[Any, float]], b: str, runs_b: Sequence[tuple[Any, float]],
            mode: str, paired: bool = False, alpha: float = ALPHA) -> dict[str, Any]:
    """One pair's test alone: {"a", "b", "diff", "lo", "hi", "p", "verdict", "seeds_needed"}
    (the verdict on the unadjusted p: a family of one). `runs_*`: (seed, objective); paired:
    matched by seed."""
    xa, xb, n = _matched(runs_a, runs_b, paired)
    out: dict[str, Any] = {"a": a, "b": b, "diff": None, "lo": None, "hi": None, "p": None,
                           "verdict": f"not resolved with {n} seeds", "seeds_needed": None}
    if not xa or not xb:
        return out
    out["diff"] = statistics.fmean(xa) - statistics.fmean(xb)
    if n < 2 or len(xa) < 2 or len(xb) < 2:
        return out  # no spread to judge the difference against
    diff, lo, hi, p, variance = t_test(xa, xb, paired, 1 - alpha)
    out.update(diff=diff, lo=lo, hi=hi, p=p, verdict=verdict_text(a, b, diff, p < alpha, n, mode),
               seeds_needed=seeds_needed(diff, variance, paired, alpha))
    return out


def _family(runs: dict[str, Sequence[tuple[Any, float]]], optimizers: Sequence[str], mode: str,
            paired: bool, alpha: float) -> list[dict[str, Any]]:
    """Every pair (a before b in `optimizers`' order) of those with runs, Holm-adjusted as one family."""
    have = [o for o in optimizers if runs.get(o)]
    out = [compare(a, runs[a], b, runs[b], mode, paired, alpha) for a, b in itertools.combinations(have, 2)]
    family = sum(c["p"] is not None for c in out)
    for c, adjusted in zip(out, holm([c["p"] for c in out]), strict=True):
        c["p_adjusted"] = adjusted
        if adjusted is None:
            continue
        xa, xb, n = _matched(runs[c["a"]], runs[c["b"]], paired)
        c["verdict"] = verdict_text(c["a"], c["b"], c["diff"], adjusted < alpha, n, mode)
        variance = (statistics.variance([x - y for x, y in zip(xa, xb, strict=True)]) if paired
                    else statistics.variance(xa) + statistics.variance(xb))
        c["seeds_needed"] = seeds_needed(c["diff"], variance, paired, alpha, family=family)
    keys = ("a", "b", "diff", "lo", "hi", "p", "p_adjusted", "verdict", "seeds_needed")
    return [{k: c.get(k) for k in keys} for c in out]


def comparisons(runs: dict[str, Sequence[tuple[Any, float]]], optimizers: Sequence[str], mode: str,
                paired: bool = False, alpha: float = ALPHA) -> list[dict[str, Any]]:
    """Every pair (a before b in the study's order) of the optimizers that have seed runs, with Holm's
    adjustment over all of them. `runs`: (seed, objective) per optimizer."""
    return _family(runs, optimizers, mode, paired, alpha)


def compare_runs(runs: dict[str, list[float]], mode: str = "min", paired: bool = False,
                 alpha: float = ALPHA) -> list[dict]:
    """The verdicts for results got anywhere: `runs` maps each optimizer to its objectives (paired:
    the i-th value of each optimizer came from the same seed); every pair in the dict's order,
    Holm-adjusted, as {"a", "b", "diff", "lo", "hi", "p", "p_adjusted", "verdict", "seeds_needed"}."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    seeded = {}
    for o, vs in runs.items():
        try:
            values = [float(v) for v in vs]
        except (TypeError, ValueError):
            raise ValueError(f"runs[{o!r}] must be a list of numbers") from None
        seeded[o] = [(i, v) for i, v in enumerate(values) if usable(v)]  # NaN/inf: a failed run, left out
    return _family(seeded, list(runs), mode, paired, alpha)


# Objectives past this size are not results one can average (a finite 1.5e308 overflowed every
# sum over it: a 500 on each page that summarised the study). They are left out of statistics.
OBJECTIVE_BOUND = 1e100


def usable(x: float | None) -> bool:
    """A value that statistics may use: finite and of a size whose sums stay finite."""
    return x is not None and math.isfinite(x) and abs(x) <= OBJECTIVE_BOUND


def safe_stat(fn, values: Sequence[float]) -> float | None:
    """`fn(values)` (statistics.fmean, stdev, ...) over the usable values; None when there are none
    or the result is not a finite number."""
    v = [x for x in values if usable(x)]
    if not v:
        return None
    try:
        out = fn(v)
    except (OverflowError, ValueError, statistics.StatisticsError):
        return None
    return out if math.isfinite(out) else None


def runs_from_trials(spec: ResolvedSpec | dict, trials: Sequence[dict]) -> dict[str, list[tuple[Any, float]]]:
    """(seed, objective) of each optimizer's completed seed runs of one search (repeat 0's: the
    first protocol.seeds indices of the seed stage), from the store's trial dicts."""
    p = as_spec(spec).protocol
    stage, n = p.search_stages + 1, p.seeds
    out: dict[str, list[tuple[Any, float]]] = {}
    for t in sorted(trials, key=lambda t: (t["optimizer"], t["index"])):
        if t["stage"] == stage and t["index"] < n and t["status"] == "completed" and usable(t["objective"]):
            out.setdefault(t["optimizer"], []).append((t.get("seed"), t["objective"]))
    return out


def search_outcomes(spec: ResolvedSpec | dict, trials: Sequence[dict]) -> dict[str, list[tuple[Any, float]]]:
    """(repeat, outcome) per optimizer and repeat: the mean of the repeat's completed seed runs, or
    without seed runs the best objective of the repeat's search trials (what "tune it with this
    protocol, then use it" gives once)."""
    spec = as_spec(spec)
    stages, seeds, sign = spec.protocol.stages, spec.protocol.seeds, 1.0 if spec.mode == "min" else -1.0
    per: dict[str, dict[int, list[float]]] = {}
    for t in trials:
        if not usable(t["objective"]):
            continue
        if seeds and t["stage"] == len(stages) + 1 and t["status"] == "completed":
            per.setdefault(t["optimizer"], {}).setdefault(t["index"] // seeds, []).append(t["objective"])
        elif not seeds and t["stage"] <= len(stages) and t["status"] in ("completed", "stopped"):
            per.setdefault(t["optimizer"], {}).setdefault(t["index"] // stages[t["stage"] - 1], []).append(
                t["objective"])
    out = {}
    for opt, by_repeat in per.items():
        out[opt] = [(r, statistics.fmean(v) if seeds else sign * min(sign * x for x in v))
                    for r, v in sorted(by_repeat.items())]
    return out


def runs_from_seed_runs(seed_runs: dict[str, dict[str, Any] | None]) -> dict[str, list[tuple[Any, float]]]:
    """The same from the `seed_runs` summaries of `GET /studies/{id}` (values and seeds aligned)."""
    out = {}
    for opt, sr in seed_runs.items():
        if sr and sr.get("values"):
            seeds = sr.get("seeds") or [None] * len(sr["values"])
            out[opt] = [(seed, v) for seed, v in zip(seeds, sr["values"], strict=False) if usable(v)]
    return out


def no_verdict_reason(spec: ResolvedSpec | dict, runs: dict[str, Sequence], searches: int = 0) -> str | None:
    """Why a study has no verdict at all (None: it has at least one comparison; `searches`: how many
    search-level comparisons it has)."""
    spec = as_spec(spec)
    if len(spec.optimizers) < 2:
        return "the study has one optimizer: there is nothing to compare it with"
    if searches:
        return None
    if not spec.protocol.seeds:
        return ("the study has no seed runs (protocol.seeds is 0): a verdict needs each optimizer's best "
                "configuration re-trained with several seeds, and one best trial per optimizer says nothing "
                "about the spread; resubmit with protocol.seeds >= 4")
    if sum(1 for o in spec.optimizers if runs.get(o)) < 2:
        return "fewer than two optimizers have a completed seed run yet"
    return None


def study_comparisons(spec: ResolvedSpec | dict, trials: Sequence[dict]) -> dict[str, Any]:
    """The analysis's additions: comparisons (level "seed": one search's best, re-run with seeds;
    with protocol.repeats >= 2 also level "search": the per-repeat outcomes, unpaired, `repeats_needed`
    in place of `seeds_needed`; each level its own Holm family), the method, and why there are none."""
    spec = as_spec(spec)
    runs = runs_from_trials(spec, trials)
    paired = spec.protocol.paired
    comps = [{**c, "level": "seed"} for c in comparisons(runs, spec.optimizers, spec.mode, paired)]
    searches = []
    if spec.protocol.repeats >= 2:
        for c in comparisons(search_outcomes(spec, trials), spec.optimizers, spec.mode):
            needed = c.pop("seeds_needed")
            searches.append({**c, "verdict": c["verdict"].replace(" seeds", " repeats"),
                             "repeats_needed": needed, "level": "search"})
    return {"comparisons": comps + searches,
            "comparison_method": {**METHOD, "paired": paired, **(SEARCH_METHOD if searches else {})},
            "no_verdict": no_verdict_reason(spec, runs, len(searches))}


SEARCH_METHOD = {
    "search_level": ("level search: each repeat's outcome (its best configuration's seed-run mean, or without "
                     "seed runs its best search trial) per optimizer, compared unpaired with the same test; "
                     "Holm's family: the search-level pairs"),
    "repeats_needed": "repeats per optimizer for 80% power, as seeds_needed",
}


def unresolved_with(comps: Sequence[dict], optimizer: str) -> list[str]:
    """The optimizers whose comparison with `optimizer` is not resolved (ties in a ranking)."""
    out = []
    for c in comps:
        if c.get("level", "seed") != "seed":
            continue
        if c["verdict"].startswith("not resolved") and optimizer in (c["a"], c["b"]):
            out.append(c["b"] if c["a"] == optimizer else c["a"])
    return out


def export_comparisons(spec: ResolvedSpec | dict, summaries: Sequence[dict]) -> list[dict[str, Any]]:
    """The comparisons from a `GET /studies/{id}` body's optimizer summaries (export, CLI)."""
    spec = as_spec(spec)
    runs = runs_from_seed_runs({o["optimizer"]: o.get("seed_runs") for o in summaries})
    return comparisons(runs, spec.optimizers, spec.mode, spec.protocol.paired)
