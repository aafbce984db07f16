"""Deterministic sampling: trial i of a stage is a pure function of (seed, stage, i).

Each trial draws its numbers from its own generator, ``numpy.random.SeedSequence((seed, stage,
index))`` (PCG64, identical on every platform), so asking for trial 57 alone gives what a run of
100 gave at position 57 and a restarted study re-creates exactly the missing trials.
``method="halton"`` gives quasi-random points instead (the tuning playbook's recommendation for
exploration): point ``index`` of a Halton sequence in prime bases, shifted by a random offset
drawn from (seed, stage) (a Cranley-Patterson rotation, so different seeds give different sets).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .parameters import Fixed, SearchSpaceError
from .space import SearchSpace

METHODS = ("random", "halton")
MAX_SAMPLES = 100_000
_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79,
           83, 89, 97, 101, 103, 107, 109, 113)


def _check(seed: int, stage: int, method: str) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(stage, bool) or not isinstance(stage, int) or stage < 1:
        raise ValueError(f"stage must be a positive integer, got {stage!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _radical_inverse(index: int, base: int) -> float:
    result, f = 0.0, 1.0 / base
    while index > 0:
        index, digit = divmod(index, base)
        result += digit * f
        f /= base
    return result


def _unit_point(space: SearchSpace, index: int, seed: int, stage: int, method: str) -> list[float]:
    names = [n for n in space if not isinstance(space[n], Fixed)]
    if method == "random":
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence((seed, stage, index))))
        return [float(u) for u in rng.random(len(names))]
    if len(names) > len(_PRIMES):
        raise SearchSpaceError(f"halton sampling supports at most {len(_PRIMES)} parameters")
    shift = np.random.Generator(np.random.PCG64(np.random.SeedSequence((seed, stage)))).random(
        len(names))
    return [float((_radical_inverse(index + 1, b) + s) % 1.0)
            for b, s in zip(_PRIMES, shift, strict=False)]


def sample_one(space: SearchSpace, index: int, seed: int, stage: int = 1,
               method: str = "random") -> dict[str, Any]:
    """Configuration number `index` of `stage` (equal to ``sample(...)[index]``)."""
    _check(seed, stage, method)
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}")
    units = iter(_unit_point(space, index, seed, stage, method))
    return {name: (p.value if isinstance(p, Fixed) else p.from_unit(next(units)))
            for name, p in space.items()}


def sample(space: SearchSpace, n: int, seed: int, stage: int = 1,
           method: str = "random") -> list[dict[str, Any]]:
    """`n` configurations of `stage`, deterministic in (seed, stage, position)."""
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_SAMPLES:
        raise ValueError(f"n must be an integer in [0, {MAX_SAMPLES}], got {n!r}")
    return [sample_one(space, i, seed, stage, method) for i in range(n)]


def fresh_seeds(seed: int, n: int) -> list[int]:
    """`n` distinct 32-bit training seeds for re-running a configuration, a pure function of the
    study's seed, none equal to it (the search trials trained with it)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    out: list[int] = []
    i = 0
    while len(out) < n:
        value = int(np.random.SeedSequence((seed, 0x5EED, i)).generate_state(1)[0])
        if value != seed and value not in out:
            out.append(value)
        i += 1
    return out
