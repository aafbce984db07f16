"""The typed rows of the store's aggregate reads (service/store/interface.py says which call returns
which): their fields named once, so the results, the runner and the followers read names, not
positions. The NamedTuples still unpack as the plain tuples they replaced (`for opt, stage,
status, n in store.count_trials(sid)`); the frozen dataclasses are read by attribute only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple


class TrialCount(NamedTuple):
    """How many of a study's trials of one group (optimizer, stage) are in one status."""

    optimizer: str
    stage: int
    status: str
    n: int  # not `count`: that would hide tuple.count


class StudyTrialCount(NamedTuple):
    """`TrialCount` of one of several studies (a page of `GET /studies`)."""

    study_id: str
    optimizer: str
    stage: int
    status: str
    n: int


@dataclass(frozen=True, slots=True)
class RankedTrial:
    """One of an optimizer's top-k finished trials, without its history (`best_trials`): `rank` 1
    is the best."""

    study_id: str
    id: int
    optimizer: str
    stage: int
    index: int
    objective: float
    config: dict[str, Any]
    rank: int


@dataclass(frozen=True, slots=True)
class SeedRun:
    """A trial of a study's seed stage (`seed_trials_many`): the seed re-runs of the best configuration."""

    study_id: str
    optimizer: str
    index: int
    status: str
    objective: float | None
    seed: int | None


class TrialProgress(NamedTuple):
    """How far a started trial is (`trial_progress`: what the MLflow follower mirrors)."""

    id: int
    status: str
    epochs: int


class OptimizerGauge(NamedTuple):
    """An optimizer's trials in one status and the epochs they reported (`optimizer_gauges`)."""

    optimizer: str
    status: str
    trials: int
    epochs: int | None  # SQL's SUM over no reported epoch


class ReportRow(NamedTuple):
    """One per-epoch report after a follower's cursor (`reports_after`)."""

    id: int
    trial_id: int
    epoch: int
    row: dict[str, Any]
    study_id: str
