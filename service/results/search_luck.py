"""The search's luck, from the recorded trials alone (pure functions of plain data, no SQL/HTTP):

- `search_comparisons`: for a pair of optimizers, the probability that a's k-trial random search ends
  better than b's (`p_a_wins`, a tie counting half), by resampling each optimizer's stage-1 trials
  (k draws with replacement: the expected-best analysis of Dodge et al. 2019 extended to a pair),
  exactly: with b's values sorted v_1..v_n, P = sum_j [(j/n)^k - ((j-1)/n)^k] (1 - (F_a(v_j)^k +
  F_a(v_j-)^k) / 2). Its 90% band [`lo`, `hi`]: the same over `N_BOOT` bootstrap resamples of both
  optimizers' trials. k: the stage-1 size, and the log-spaced k of the expected-best curve below it.
- `robustness` (the search-space audit): for a resolved verdict, its direction re-scored in every
  sub-space where one searched hyperparameter's stage-1 range is cut to its lower or upper half (in
  the space's own scale: log for log ranges), from the stage-1 trials inside, with the expected best
  of k trials (k: the stage-1 size) as the statistic; `{"subspaces", "agree"}` counts the sub-spaces
  with at least `MIN_INSIDE` trials of each optimizer, and in how many the direction holds.

Failures (diverged, failed) take the worst finite objective of the optimizer's stage-1 trials, as
in the expected-best curve (service/results/analysis.py).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from search_spaces import SearchSpace
from search_spaces.parameters import Choice, Fixed
from service.domain.spec import ResolvedSpec
from service.results.expected_best import expected_max_curve, k_grid
from service.results.verdicts import usable

N_BOOT = 200
BAND = 0.9
MIN_INSIDE = 2
K_POINTS = 5

METHOD = {
    "search_comparisons": ("p_a_wins: P(a's k-trial random search ends better than b's, a tie counting half), "
                           "k draws with replacement from each optimizer's stage-1 trials; lo, hi: the "
                           f"{BAND:.0%} band over {N_BOOT} bootstrap resamples of those trials"),
    "robustness": ("in how many sub-spaces (one searched hyperparameter's stage-1 range cut to its lower or upper "
                   "half, in the space's own scale) the verdict's direction holds, by the expected best of k "
                   f"stage-1 trials inside (k: the stage-1 size; sub-spaces with at least {MIN_INSIDE} trials of "
                   "each optimizer)"),
}


def _oriented_stage1(trials: Sequence[dict], optimizer: str, mode: str) -> tuple[np.ndarray, list[dict]]:
    """(values turned so larger is better, the trials), failures as the worst finite value."""
    mine = sorted((t for t in trials if t["optimizer"] == optimizer and t["stage"] == 1
                   and t["status"] in ("completed", "diverged", "failed")), key=lambda t: t["index"])
    ok = [t["objective"] for t in mine if t["status"] == "completed" and usable(t["objective"])]
    if not ok:
        return np.empty(0), []
    worst = max(ok) if mode == "min" else min(ok)
    v = np.array([t["objective"] if t["status"] == "completed" and usable(t["objective"]) else worst
                  for t in mine], dtype=float)
    return (-v if mode == "min" else v), mine


def _cdfs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(j/n for b's sorted values, F_a at them, F_a just below them): what p_wins needs, once per sample."""
    a, b = np.sort(a), np.sort(b)
    return (np.arange(1, len(b) + 1) / len(b), np.searchsorted(a, b, side="right") / len(a),
            np.searchsorted(a, b, side="left") / len(a))


def _p_from_cdfs(cdfs: tuple[np.ndarray, np.ndarray, np.ndarray], k: int) -> float:
    fb, right, left = cdfs
    wb = fb**k - (fb - 1 / len(fb)) ** k
    return float(wb @ (1.0 - (right**k + left**k) / 2))


def p_wins(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """P(max of k draws from a > max of k draws from b), ties half; larger is better."""
    return _p_from_cdfs(_cdfs(a, b), k)


def pair_search_comparison(a_vals: np.ndarray, b_vals: np.ndarray, ks: int | Sequence[int],
                           seed: int = 0) -> dict[str, float] | list[dict[str, float]]:
    """{"p_a_wins", "lo", "hi"} for one k (a list of them for several), one set of resamples for all."""
    rng = np.random.default_rng(seed)
    boots = [_cdfs(a_vals[rng.integers(0, len(a_vals), len(a_vals))],
                   b_vals[rng.integers(0, len(b_vals), len(b_vals))]) for _ in range(N_BOOT)]
    observed = _cdfs(a_vals, b_vals)
    out = []
    for k in ([ks] if isinstance(ks, int) else ks):
        lo, hi = np.quantile([_p_from_cdfs(c, k) for c in boots], [(1 - BAND) / 2, (1 + BAND) / 2])
        out.append({"p_a_wins": _p_from_cdfs(observed, k), "lo": float(lo), "hi": float(hi)})
    return out[0] if isinstance(ks, int) else out


def search_comparisons(spec: ResolvedSpec, trials: Sequence[dict]) -> list[dict[str, Any]]:
    """[{"a", "b", "k", "p_a_wins", "lo", "hi"}] for every pair of optimizers with stage-1 results."""
    n1 = spec.protocol.stages[0]
    ks = [int(k) for k in k_grid(n1, K_POINTS)]
    vals = {o: _oriented_stage1(trials, o, spec.mode)[0] for o in spec.optimizers}
    out = []
    for a, b in itertools.combinations([o for o in spec.optimizers if len(vals[o])], 2):
        for k, c in zip(ks, pair_search_comparison(vals[a], vals[b], ks), strict=True):
            out.append({"a": a, "b": b, "k": k, **c})
    return out


def _halves(space: dict) -> list[tuple[str, str, Any]]:
    """(name, "lower"/"upper", predicate on a value) for every searched range of a stage-1 space."""
    out = []
    for name, p in SearchSpace.from_dict(space).items():
        if isinstance(p, Choice | Fixed):
            continue
        # the midpoint in the sampling scale (log for log ranges), as a value: halves by value
        mid = p.unscale((p.scale(p.low) + p.scale(p.high)) / 2)
        out.append((name, "lower", lambda v, mid=mid: v <= mid))
        out.append((name, "upper", lambda v, mid=mid: v >= mid))
    return out


def robustness(spec: ResolvedSpec, stage_spaces: dict, trials: Sequence[dict], a: str, b: str,
               a_better: bool) -> dict[str, Any]:
    """The audit of one resolved verdict ("a better than b" when `a_better`)."""
    mode, k = spec.mode, spec.protocol.stages[0]
    data = {o: _oriented_stage1(trials, o, mode) for o in (a, b)}
    cuts: dict[tuple[str, str], dict[str, Any]] = {}
    for o in (a, b):
        space = (stage_spaces.get(o) or {}).get("1") or spec.search_spaces.get(o) or {}
        for name, half, inside in _halves(space):
            cuts.setdefault((name, half), {})[o] = inside
    subspaces = agree = 0
    flips = []
    for (name, half), preds in sorted(cuts.items()):
        best = {}
        for o in (a, b):
            values, rows = data[o]
            pred = preds.get(o)  # an optimizer that does not search this hyperparameter keeps every trial
            keep = [i for i, t in enumerate(rows) if pred is None or (_number(t["config"].get(name))
                                                                      and pred(t["config"][name]))]
            if len(keep) >= MIN_INSIDE:
                best[o] = float(expected_max_curve(values[keep], [k])[0])
        if len(best) < 2:
            continue
        subspaces += 1
        if (best[a] > best[b]) == a_better and best[a] != best[b]:
            agree += 1
        else:
            flips.append(f"{name} {half} half")
    return {"subspaces": subspaces, "agree": agree, "flips": flips}


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def add_robustness(spec: ResolvedSpec, stage_spaces: dict, trials: Sequence[dict], comps: list[dict]) -> None:
    """Each resolved comparison gains `robustness` (None where the verdict is not resolved)."""
    for c in comps:
        resolved = not c["verdict"].startswith("not resolved")
        c["robustness"] = (robustness(spec, stage_spaces, trials, c["a"], c["b"],
                                      c["verdict"].startswith(f"{c['a']} better than"))
                           if resolved else None)
