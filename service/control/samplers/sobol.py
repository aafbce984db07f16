"""Scrambled Sobol points (scipy.stats.qmc), seeded: the quasi-random draws of AlgoPerf's
external-tuning ruleset. Fixed when the stage opens; point i is a pure function of (seed, stage,
i): the first n points of the same scrambled sequence, whatever n is."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import qmc

from search_spaces import SearchSpace
from search_spaces.parameters import Fixed
from service.control.samplers.base import Sampler


def sobol_configs(space: SearchSpace, n: int, seed: int, stage: int = 1) -> list[dict[str, Any]]:
    names = [k for k, p in space.items() if not isinstance(p, Fixed)]
    if n <= 0:
        return []
    if names:
        # 2^m >= n points of the sequence: Sobol's balance holds for powers of two; the first n
        # are the same points for any m (the scrambling depends only on the seed).
        gen = qmc.Sobol(len(names), scramble=True, rng=np.random.default_rng((seed, stage, 1033)))
        units = gen.random_base2(max(0, math.ceil(math.log2(n))))[:n]
    else:
        units = np.zeros((n, 0))
    out = []
    for row in units:
        u = iter(row)
        out.append({k: (p.value if isinstance(p, Fixed) else p.from_unit(float(next(u)))) for k, p in space.items()})
    return out


class SobolSampler(Sampler):
    name = "sobol"

    def stage_configs(self, space: SearchSpace, n: int, seed: int, stage: int) -> list[dict[str, Any]]:
        return sobol_configs(space, n, seed, stage)
