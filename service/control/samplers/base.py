"""What a sampler is: how a stage's configurations are chosen (in the manner of Optuna's
`BaseSampler`). Two kinds: fixed up front when the stage opens (random, halton: trial i is a pure
function of the study seed, the optimizer, the stage and i), or asked one at a time as slots free
up, told each result (TPE: later trials learn from earlier ones)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from search_spaces import SearchSpace


class Sampler(ABC):
    name: str
    # A line for the study log when a stage opens (None: the stage's space says it all).
    note: str | None = None
    asks = False  # True: each configuration is asked when its trial is claimed and told its result (TPE)

    @abstractmethod
    def stage_configs(self, space: SearchSpace, n: int, seed: int, stage: int) -> list[dict[str, Any]]:
        """The stage's n configurations as its trials are created; `{}` where one is asked later."""

    def ask(self, study, optimizer: str, stage: int, trial_id: int) -> dict[str, Any]:
        """The configuration of a trial created without one (samplers that ask as slots free up)."""
        raise NotImplementedError(f"the {self.name} sampler fixes every configuration up front")

    def tell(self, trial) -> None:  # noqa: B027 - a fixed sampler learns nothing
        """A finished trial (the store's row): what a learning sampler learns from."""

    def forget(self, study_id: str) -> None:  # noqa: B027 - a fixed sampler keeps no state
        """The study has ended: drop what is kept for it."""
