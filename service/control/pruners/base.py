"""What a pruner is: it sees each report of a trial and says whether the trial goes on, and why not.

The Ray trials (service/control/driver.py) and the external trials (control/external_trials.py) ask the
same pruner. A pruner owns the state its decisions need (ASHA: the values recorded at each rung),
loading it from the store the first time it is asked, so a restarted controller decides alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Report:
    """One epoch report of one trial, as a pruner needs it."""

    study_id: str
    optimizer: str
    stage: int
    trial_id: int
    epoch: int
    value: float | None  # the study's metric at this epoch
    train_time_s: float | None = None  # accumulated training time (the algoperf ruleset's late stops)


@dataclass(frozen=True)
class Decision:
    stop: bool
    reason: str | None = None  # why the trial stops, shown in its error field and the study log


GO_ON = Decision(False)

# The values other trials of the same group reported at this epoch (read from the store).
PeersLoader = Callable[[], Sequence[float]]


class Pruner(ABC):
    @abstractmethod
    def decides_at(self, stage: int, epoch: int) -> bool:
        """Whether a report of this stage and epoch is decided on at all (the store is read only then)."""

    @abstractmethod
    def decide(self, report: Report, peers: PeersLoader) -> Decision:
        """Whether the trial of this report goes on."""
