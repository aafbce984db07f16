"""Random and Halton: a stage's configurations fixed when it opens (search_spaces.sampling)."""

from __future__ import annotations

from typing import Any

from search_spaces import SearchSpace, sample
from service.control.samplers.base import Sampler


class FixedSampler(Sampler):
    def __init__(self, method: str):
        self.name = method  # "random" (seeded uniform in each scale) or "halton" (scrambled, low discrepancy)

    def stage_configs(self, space: SearchSpace, n: int, seed: int, stage: int) -> list[dict[str, Any]]:
        return sample(space, n, seed, stage=stage, method=self.name)
