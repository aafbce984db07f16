"""Pairwise verdicts between a study's optimizers from their seed runs, as pure functions of plain
data (no SQL, no HTTP): what `GET /studies/{id}/analysis` serves as `comparisons`, the report's
verdict table, the CLI's final table and the export.

For optimizers a and b (in the study's order) with seed-run objectives x_a, x_b:

- `diff` = mean(x_a) - mean(x_b), with a 95% interval [`lo`, `hi`]: Welch's t interval (unequal
  variances, Welch-Satterthwaite degrees of freedom); paired studies (`protocol.paired: true`,
  the runs matched by seed): the paired t interval of the per-seed differences.
- `p`: two-sided, for "no difference": a permutation test of |mean difference| over every split of
  the pooled runs into groups of the observed sizes (exact while there are at most 50,000 splits,
  else 20,000 random splits, seeded); paired: a sign-flip permutation test of the per-seed
  differences (exact up to 2^16 sign patterns, else 20,000 random ones).
- `verdict`: "<better> better than <worse>" (the study's mode decides which is better) when
  p < 0.05 and the interval excludes 0, else "not resolved with <n> seeds" (n: the fewer completed
  seed runs of the two, or the pairs).
- `seeds_needed`: seed runs per optimizer to resolve a true difference of the observed size with
  80% power at two-sided alpha 0.05, by the normal approximation n = (z_0.975 + z_0.8)^2 (s_a^2 +
  s_b^2) / diff^2 (paired: s_d^2 / diff^2), and never fewer than the test needs to reach p < 0.05
  at all (4 per optimizer unpaired: 2/C(8,4) = 0.029; 6 pairs paired: 2/2^6 = 0.031); None when the
  observed difference is 0 (no number of seeds resolves it).

Diverged or failed seed runs have no objective: they count in no mean (the report shows them).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

ALPHA = 0.05
POWER = 0.8
EXACT_SPLITS = 50_000
EXACT_SIGNS = 2**16
MONTE_CARLO = 20_000
MIN_UNPAIRED = 4  # the smallest n per group at which an exact permutation p can fall below 0.05
MIN_PAIRED = 6  # likewise for the sign-flip test (2/2^6 = 0.031)

METHOD = {
    "diff": "mean(a) - mean(b) of the completed seed runs",
    "interval": "95% Welch t interval (paired studies: paired t interval of the per-seed differences)",
    "p": (f"two-sided permutation test of |mean difference|: exact over all splits up to {EXACT_SPLITS:,}, "
          f"else {MONTE_CARLO:,} random splits (paired: sign-flip test, exact up to {EXACT_SIGNS:,} patterns)"),
    "verdict": f"resolved when p < {ALPHA} and the interval excludes 0; the better optimizer is named first",
    "seeds_needed": (f"seed runs per optimizer for {POWER:.0%} power at two-sided alpha {ALPHA} against a true "
                     "difference of the observed size (normal approximation), at least what the test needs "
                     f"to reach p < {ALPHA} ({MIN_UNPAIRED} unpaired, {MIN_PAIRED} paired)"),
}


# ----------------------------------------------------------------------- Student's t, without scipy
def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularised incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(ln) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` (real, > 0) degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(q: float, df: float) -> float:
    """The t with P(T <= t) = q (bisection on the CDF: monotone, 1e-12 accurate)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must lie in (0, 1), got {q}")
    if q < 0.5:
        return -t_quantile(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


# ----------------------------------------------------------------------- intervals and tests
def welch_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(lo, hi, df) of Welch's interval for mean(a) - mean(b); needs at least two runs each."""
    va, vb = statistics.variance(a), statistics.variance(b)
    sa, sb = va / len(a), vb / len(b)
    diff = statistics.fmean(a) - statistics.fmean(b)
    se = math.sqrt(sa + sb)
    if se == 0.0:
        return diff, diff, math.inf
    df = (sa + sb) ** 2 / (sa**2 / (len(a) - 1) + sb**2 / (len(b) - 1))
    half = t_quantile(0.5 + level / 2, df) * se
    return diff - half, diff + half, df


def paired_interval(d: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(lo, hi, df) of the paired t interval for the mean of the per-pair differences `d`."""
    mean, n = statistics.fmean(d), len(d)
    se = statistics.stdev(d) / math.sqrt(n)
    if se == 0.0:
        return mean, mean, n - 1
    half = t_quantile(0.5 + level / 2, n - 1) * se
    return mean - half, mean + half, n - 1


def permutation_p(a: Sequence[float], b: Sequence[float], seed: int = 0) -> float:
    """Two-sided permutation p of |mean(a) - mean(b)| (exact, or Monte Carlo past EXACT_SPLITS)."""
    pooled = np.asarray([*a, *b], dtype=float)
    na, n = len(a), len(a) + len(b)
    total = pooled.sum()
    observed = abs(statistics.fmean(a) - statistics.fmean(b))
    tol = 1e-12 * max(1.0, observed)
    if math.comb(n, na) <= EXACT_SPLITS:
        idx = np.fromiter(itertools.chain.from_iterable(itertools.combinations(range(n), na)), dtype=int)
        sums = pooled[idx.reshape(-1, na)].sum(axis=1)
        stats = np.abs(sums / na - (total - sums) / (n - na))
        return float(np.mean(stats >= observed - tol))
    rng = np.random.default_rng(seed)
    perms = np.argsort(rng.random((MONTE_CARLO, n)), axis=1)[:, :na]
    sums = pooled[perms].sum(axis=1)
    stats = np.abs(sums / na - (total - sums) / (n - na))
    return float((np.sum(stats >= observed - tol) + 1) / (MONTE_CARLO + 1))


def sign_flip_p(d: Sequence[float], seed: int = 0) -> float:
    """Two-sided sign-flip permutation p of |mean(d)| (exact, or Monte Carlo past EXACT_SIGNS)."""
    x = np.asarray(d, dtype=float)
    n = len(x)
    observed = abs(x.mean())
    tol = 1e-12 * max(1.0, observed)
    if 2**n <= EXACT_SIGNS:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
        stats = np.abs(signs @ x / n)
        return float(np.mean(stats >= observed - tol))
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(MONTE_CARLO, n))
    stats = np.abs(signs @ x / n)
    return float((np.sum(stats >= observed - tol) + 1) / (MONTE_CARLO + 1))


def seeds_needed(diff: float, variance: float, paired: bool = False,
                 alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Seed runs per optimizer to resolve a true difference `diff` at `power` (two-sided `alpha`):
    `variance` is s_a^2 + s_b^2 (unpaired) or the per-seed differences' s_d^2 (paired)."""
    if diff == 0.0 or not math.isfinite(diff):
        return None
    z = statistics.NormalDist()
    n = (z.inv_cdf(1 - alpha / 2) + z.inv_cdf(power)) ** 2 * variance / diff**2
    return max(math.ceil(n - 1e-9), MIN_PAIRED if paired else MIN_UNPAIRED)


# ----------------------------------------------------------------------- verdicts
def verdict_text(a: str, b: str, diff: float, resolved: bool, n: int, mode: str) -> str:
    if not resolved:
        return f"not resolved with {n} seeds"
    a_better = diff < 0 if mode == "min" else diff > 0
    return f"{a} better than {b}" if a_better else f"{b} better than {a}"


def compare(a: str, runs_a: Sequence[tuple[Any, float]], b: str, runs_b: Sequence[tuple[Any, float]],
            mode: str, paired: bool = False) -> dict[str, Any]:
    """One pair's comparison: {"a", "b", "diff", "lo", "hi", "p", "verdict", "seeds_needed"}.
    `runs_*`: (seed, objective) of the completed seed runs; paired: matched by seed."""
    if paired:
        by_b = {s: v for s, v in runs_b}
        pairs = [(v, by_b[s]) for s, v in runs_a if s in by_b]
        xa, xb = [p[0] for p in pairs], [p[1] for p in pairs]
        n = len(pairs)
    else:
        xa, xb = [v for _, v in runs_a], [v for _, v in runs_b]
        n = min(len(xa), len(xb))
    out: dict[str, Any] = {"a": a, "b": b, "diff": None, "lo": None, "hi": None, "p": None,
                           "verdict": f"not resolved with {n} seeds", "seeds_needed": None}
    if not xa or not xb:
        return out
    diff = statistics.fmean(xa) - statistics.fmean(xb)
    out["diff"] = diff
    if n < 2 or len(xa) < 2 or len(xb) < 2:
        return out  # no spread to judge the difference against
    if paired:
        d = [x - y for x, y in zip(xa, xb, strict=True)]
        lo, hi, _ = paired_interval(d)
        p = sign_flip_p(d)
        variance = statistics.variance(d)
    else:
        lo, hi, _ = welch_interval(xa, xb)
        p = permutation_p(xa, xb)
        variance = statistics.variance(xa) + statistics.variance(xb)
    resolved = p < ALPHA and (lo > 0 or hi < 0)
    out.update(lo=lo, hi=hi, p=p, verdict=verdict_text(a, b, diff, resolved, n, mode),
               seeds_needed=seeds_needed(diff, variance, paired))
    return out


def comparisons(runs: dict[str, Sequence[tuple[Any, float]]], optimizers: Sequence[str], mode: str,
                paired: bool = False) -> list[dict[str, Any]]:
    """Every pair (a before b in the study's order) of the optimizers that have seed runs."""
    have = [o for o in optimizers if runs.get(o)]
    return [compare(a, runs[a], b, runs[b], mode, paired) for a, b in itertools.combinations(have, 2)]


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


def runs_from_trials(spec: dict, trials: Sequence[dict]) -> dict[str, list[tuple[Any, float]]]:
    """(seed, objective) of each optimizer's completed seed runs, from the store's trial dicts."""
    stage = len(spec["protocol"]["stages"]) + 1
    out: dict[str, list[tuple[Any, float]]] = {}
    for t in sorted(trials, key=lambda t: (t["optimizer"], t["index"])):
        if t["stage"] == stage and t["status"] == "completed" and usable(t["objective"]):
            out.setdefault(t["optimizer"], []).append((t.get("seed"), t["objective"]))
    return out


def runs_from_seed_runs(seed_runs: dict[str, dict[str, Any] | None]) -> dict[str, list[tuple[Any, float]]]:
    """The same from the `seed_runs` summaries of `GET /studies/{id}` (values and seeds aligned)."""
    out = {}
    for opt, sr in seed_runs.items():
        if sr and sr.get("values"):
            seeds = sr.get("seeds") or [None] * len(sr["values"])
            out[opt] = [(seed, v) for seed, v in zip(seeds, sr["values"], strict=False) if usable(v)]
    return out


def no_verdict_reason(spec: dict, runs: dict[str, Sequence]) -> str | None:
    """Why a study has no verdict at all (None: it has at least one comparison)."""
    if len(spec["optimizers"]) < 2:
        return "the study has one optimizer: there is nothing to compare it with"
    if not spec["protocol"].get("seeds"):
        return ("the study has no seed runs (protocol.seeds is 0): a verdict needs each optimizer's best "
                "configuration re-trained with several seeds, and one best trial per optimizer says nothing "
                "about the spread; resubmit with protocol.seeds >= 4")
    if sum(1 for o in spec["optimizers"] if runs.get(o)) < 2:
        return "fewer than two optimizers have a completed seed run yet"
    return None


def study_comparisons(spec: dict, trials: Sequence[dict]) -> dict[str, Any]:
    """The analysis's additions: comparisons, the method, and why there are none (if so)."""
    runs = runs_from_trials(spec, trials)
    paired = bool(spec["protocol"].get("paired"))
    return {"comparisons": comparisons(runs, spec["optimizers"], spec["mode"], paired),
            "comparison_method": {**METHOD, "paired": paired},
            "no_verdict": no_verdict_reason(spec, runs)}


def unresolved_with(comps: Sequence[dict], optimizer: str) -> list[str]:
    """The optimizers whose comparison with `optimizer` is not resolved (ties in a ranking)."""
    out = []
    for c in comps:
        if c["verdict"].startswith("not resolved") and optimizer in (c["a"], c["b"]):
            out.append(c["b"] if c["a"] == optimizer else c["a"])
    return out


def export_comparisons(spec: dict, summaries: Sequence[dict]) -> list[dict[str, Any]]:
    """The comparisons from a `GET /studies/{id}` body's optimizer summaries (export, CLI)."""
    runs = runs_from_seed_runs({o["optimizer"]: o.get("seed_runs") for o in summaries})
    return comparisons(runs, spec["optimizers"], spec["mode"], bool(spec["protocol"].get("paired")))
