"""The chance of at least one false verdict when every optimizer is equal (issue 32's table), git
main's procedure before issue 32 ("old") against `compare_runs` ("new"), on the same simulated runs.

    python bench/verdict_errors.py [--reps 2000] [--seed 0] [--grid]

old: per pair at 0.05, no multiplicity control; Welch's t interval (Satterthwaite df) must exclude 0
     and a permutation p of |mean difference| (exact over every split, the sizes here are all
     small enough) must be < 0.05; paired: the paired t interval and an exact sign-flip p.
new: `service.results.verdicts.compare_runs`: Welch's statistic on Hsu's df (paired: paired t), one
     test for p and the interval, Holm's step-down over every pair; verdict when p_adjusted < 0.05.
Runs are standard normal (a shared seed effect of sd 2 in paired cases, which pairing removes);
the 3 vs 8 case has sd 3 vs 1. Also: the power to find a 2-sd difference with 5 unpaired seeds.
The Monte-Carlo error column is one binomial standard error at the new rate.
--grid adds the calibration grid behind the choice of test: the false-verdict rate of one pair
(two equal-mean optimizers) through compare_runs at n = 3..10 with equal and unequal variances and
normal, exponential (skewed) and lognormal (very skewed) noise.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import numpy as np
from scipy import stats

from service.results.verdicts import compare_runs

CASES = [  # (label, optimizers, seeds, paired, sds (None: all 1), n per optimizer (None: seeds))
    ("3 optimizers, 6 paired seeds", 3, 6, True, None, None),
    ("4 optimizers, 6 paired seeds", 4, 6, True, None, None),
    ("4 optimizers, 10 paired seeds", 4, 10, True, None, None),
    ("5 optimizers, 5 unpaired seeds", 5, 5, False, None, None),
    ("2 optimizers, 3 vs 8 seeds, sd 3 vs 1", 2, None, False, (3.0, 1.0), (3, 8)),
]


def _splits(na: int, n: int) -> np.ndarray:
    return np.array(list(itertools.combinations(range(n), na)))


def old_resolved(xa: np.ndarray, xb: np.ndarray, paired: bool) -> bool:
    """git main's verdict for one pair (before issue 32)."""
    if paired:
        d = xa - xb
        n, mean = len(d), d.mean()
        se = d.std(ddof=1) / math.sqrt(n)
        half = stats.t.ppf(0.975, n - 1) * se
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
        p = np.mean(np.abs(signs @ d / n) >= abs(mean) - 1e-12 * max(1.0, abs(mean)))
        return p < 0.05 and (mean - half > 0 or mean + half < 0)
    na, nb = len(xa), len(xb)
    va, vb = xa.var(ddof=1) / na, xb.var(ddof=1) / nb
    diff = xa.mean() - xb.mean()
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    pooled = np.concatenate([xa, xb])
    sums = pooled[_splits(na, na + nb)].sum(axis=1)
    perm = np.abs(sums / na - (pooled.sum() - sums) / nb)
    p = np.mean(perm >= abs(diff) - 1e-12 * max(1.0, abs(diff)))
    return p < 0.05 and (diff - half > 0 or diff + half < 0)


def draw(rng, k: int, seeds: int | None, paired: bool, sds, ns) -> list[np.ndarray]:
    if paired:
        effect = rng.normal(0, 2, seeds)
        return [effect + rng.normal(0, 1, seeds) for _ in range(k)]
    sds = sds or (1.0,) * k
    ns = ns or (seeds,) * k
    return [rng.normal(0, sd, n) for sd, n in zip(sds, ns, strict=True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grid", action="store_true", help="also the calibration grid (n = 3..10, skew, variances)")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    print(f"chance of >= 1 false 'X better than Y' (all optimizers equal), {args.reps} seeded repetitions")
    print(f"{'case':<40}{'old':>8}{'new':>8}{'MC error':>10}")
    for label, k, seeds, paired, sds, ns in CASES:
        old = new = 0
        for _ in range(args.reps):
            runs = draw(rng, k, seeds, paired, sds, ns)
            old += any(old_resolved(runs[i], runs[j], paired) for i, j in itertools.combinations(range(k), 2))
            comps = compare_runs({f"o{i}": list(r) for i, r in enumerate(runs)}, paired=paired)
            new += any(not c["verdict"].startswith("not resolved") for c in comps)
        po, pn = old / args.reps, new / args.reps
        print(f"{label:<40}{po:>8.3f}{pn:>8.3f}{math.sqrt(max(pn * (1 - pn), 1e-9) / args.reps):>10.3f}")
    old = new = wrong = 0
    for _ in range(args.reps):
        good, bad = rng.normal(0, 1, 5), rng.normal(2, 1, 5)
        old += old_resolved(good, bad, False)
        (c,) = compare_runs({"good": list(good), "bad": list(bad)})
        new += c["verdict"] == "good better than bad"
        wrong += c["verdict"] == "bad better than good"
    print(f"{'power, 2-sd difference, 5 unpaired seeds':<40}{old / args.reps:>8.3f}{new / args.reps:>8.3f}"
          f"   (wrong direction, new: {wrong})")
    if args.grid:
        grid(rng, args.reps)
    print(f"[{time.perf_counter() - t0:.1f} s]")


def noise(rng, kind: str, sd: float, n: int) -> np.ndarray:
    """Mean-0 noise of standard deviation sd."""
    if kind == "normal":
        return rng.normal(0, sd, n)
    if kind == "exponential":
        return (rng.exponential(1, n) - 1) * sd
    x = rng.lognormal(0, 1, n)
    return (x - math.exp(0.5)) / math.sqrt((math.e - 1) * math.e) * sd


def grid(rng, reps: int) -> None:
    print(f"\none pair, equal means: P(false verdict) through compare_runs, {reps} repetitions per cell")
    print(f"{'n_a vs n_b':<12}{'sd_a/sd_b':<11}{'normal':>9}{'exponential':>13}{'lognormal':>11}")
    for na, nb in ((3, 3), (3, 8), (3, 10), (5, 5), (10, 10)):
        for sa, sb in ((1.0, 1.0), (3.0, 1.0), (1.0, 3.0)):
            rates = []
            for kind in ("normal", "exponential", "lognormal"):
                hits = sum(not compare_runs({"a": list(noise(rng, kind, sa, na)),
                                             "b": list(noise(rng, kind, sb, nb))})[0]["verdict"].startswith("not")
                           for _ in range(reps))
                rates.append(hits / reps)
            print(f"{f'{na} vs {nb}':<12}{f'{sa:g}/{sb:g}':<11}{rates[0]:>9.3f}{rates[1]:>13.3f}{rates[2]:>11.3f}")
    print(f"{'paired n':<12}{'sd_a/sd_b':<11}")
    for n in (3, 6, 10):
        for sa, sb in ((1.0, 1.0), (1.0, 3.0)):
            rates = []
            for kind in ("normal", "exponential", "lognormal"):
                hits = sum(not compare_runs({"a": list(noise(rng, kind, sa, n)), "b": list(noise(rng, kind, sb, n))},
                                            paired=True)[0]["verdict"].startswith("not") for _ in range(reps))
                rates.append(hits / reps)
            print(f"{n:<12}{f'{sa:g}/{sb:g}':<11}{rates[0]:>9.3f}{rates[1]:>13.3f}{rates[2]:>11.3f}")


if __name__ == "__main__":
    main()
