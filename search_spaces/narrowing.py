"""Stage-2 narrowing around the best stage-1 trials.

The rule, and why:

* Keep the ``top_k`` best successful trials (failed/diverged trials, objective None/NaN, are
  dropped). Choi et al. (2019) narrowed their second stage by hand around the best stage-1
  region; this does it mechanically.
* For each numeric parameter, take the span of the top-k values **in the parameter's sampling
  scale** (log for log-uniform, log(1 - value) for one_minus_log_uniform, linear otherwise) and
  pad it by ``margin`` times that span on each side (at least ``min_width`` of the stage-1 width,
  so one lucky trial does not collapse a range).
* Clip to the stage-1 bounds - except where a top-k trial sits at a bound (within ``edge`` of the
  stage-1 width): the best region may lie outside the range, as the Google tuning playbook warns
  about best points near a boundary, so a log-scale range is widened past that bound by the pad
  and a note says so. Linear (uniform) ranges are treated as hard limits (a momentum cannot
  pass 1); a note still flags the boundary.
* Choice parameters keep the options that occur among the top-k; fixed parameters stay fixed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .parameters import Choice, Fixed, LogUniform, OneMinusLogUniform, Parameter, SearchSpaceError
from .parameters import _Range as Range
from .space import SearchSpace


class NarrowingError(SearchSpaceError):
    """Too few successful stage-1 trials to derive a stage-2 space."""


def _ok(objective: Any) -> bool:
    return (isinstance(objective, int | float) and not isinstance(objective, bool)
            and math.isfinite(objective))


def narrow(space: SearchSpace, results: Sequence[tuple[dict[str, Any], float | None]],
           mode: str = "min", top_k: int = 10, margin: float = 0.25,
           min_width: float = 0.02, edge: float = 0.02) -> SearchSpace:
    """The stage-2 space around the `top_k` best of `results` (config, objective or None)."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 2:
        raise ValueError(f"top_k must be an integer >= 2, got {top_k!r}")
    if not (isinstance(margin, int | float) and 0 <= margin <= 10):
        raise ValueError(f"margin must be a number in [0, 10], got {margin!r}")
    good = [(c, float(o)) for c, o in results if _ok(o)]
    if len(good) < 2:
        raise NarrowingError(
            f"narrowing needs at least 2 successful trials, got {len(good)} of {len(results)} "
            "(the others failed or diverged)"
        )
    good.sort(key=lambda r: r[1], reverse=(mode == "max"))
    top = [c for c, _ in good[:top_k]]
    notes: list[str] = []
    params: dict[str, Parameter] = {}
    for name, p in space.items():
        values = [c[name] for c in top if name in c]
        if isinstance(p, Fixed) or not values:
            params[name] = p
        elif isinstance(p, Choice):
            kept = tuple(v for v in p.values if v in values)
            params[name] = Fixed(name, kept[0]) if len(kept) == 1 else Choice(name, kept)
        else:
            params[name] = _narrow_range(p, values, margin, min_width, edge, notes)
    return SearchSpace(params, notes=notes)


def _narrow_range(p: Range, values: list[float], margin: float, min_width: float, edge: float,
                  notes: list[str]) -> Parameter:
    lo1, hi1 = sorted((p.scale(p.low), p.scale(p.high)))  # 1-minus scale runs backwards
    width1 = hi1 - lo1
    xs = [p.scale(min(max(v, p.low), p.high)) for v in values]
    lo, hi = min(xs), max(xs)
    pad = max(margin * (hi - lo), min_width * width1 / 2)
    lo, hi = lo - pad, hi + pad
    widens = isinstance(p, LogUniform | OneMinusLogUniform)
    for side, at_bound in (("low", min(xs) - lo1 <= edge * width1),
                           ("high", hi1 - max(xs) <= edge * width1)):
        value_side = side if not isinstance(p, OneMinusLogUniform) else (
            "high" if side == "low" else "low")
        if at_bound and widens:
            notes.append(f"{p.name}: best trials sit at the stage-1 {value_side} bound "
                         f"({getattr(p, value_side)!r}); widened past it")
        elif at_bound:
            notes.append(f"{p.name}: best trials sit at the stage-1 {value_side} bound "
                         f"({getattr(p, value_side)!r}); a uniform range is kept as a hard limit")
    if not (widens and min(xs) - lo1 <= edge * width1):
        lo = max(lo, lo1)
    if not (widens and hi1 - max(xs) <= edge * width1):
        hi = min(hi, hi1)
    if isinstance(p, OneMinusLogUniform):
        hi = min(hi, 0.0)  # 1 - value <= 1, i.e. value >= 0
    a, b = sorted((p.unscale(lo), p.unscale(hi)))
    if p.int:
        a, b = math.floor(a), math.ceil(b)
        if a == b:
            return Fixed(p.name, int(a))
    return type(p)(p.name, low=a, high=b, int=p.int)
