"""The expected best objective of a random search with k trials (Dodge et al. 2019, "Show your
work"), computed exactly from the n observed search trials (the expected maximum of k draws with
replacement from their empirical distribution, O(n) per k), on a log-spaced grid of k (`k_grid`),
with a bootstrap band (`BAND_RULE` states its Monte-Carlo error). Pure numpy: the analysis and the
search-luck comparisons both build on it."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


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
