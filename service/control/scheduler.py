"""Who runs next: the scheduling policy, pure and testable without Ray or a database.

The runner (mechanism) describes every active study as a `StudyState` — its priority, its
age, how many of its trials run, its cap, what one trial asks for, and its runnable groups (the
(optimizer, stage) pairs with pending trials) — and asks a policy which group gets the next trial
that fits the free resources. Two policies:

- `FairShare` (the default): higher `priority` first; among equal priority the study with the
  fewest running trials (ties: the older study); inside a study the group with the fewest running
  trials (ties: the spec's order). A study at its `max_concurrent_trials` is skipped, and so is
  a trial that does not fit what is free, so a smaller trial of another study can use the slot
  (backfill: a slot is never idle while some runnable trial fits it).
- `Sequential`: the order before this module existed, kept for `bench/scheduler.py`: the oldest
  study only, one (optimizer, stage) group at a time in the spec's order, the next group only
  when the previous one has finished.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# Numbers a resource request is compared with, with room for float sums (0.1 + 0.2 > 0.3).
_EPS = 1e-9


@dataclass(frozen=True)
class Group:
    """The trials of one (optimizer, stage) of a study."""

    optimizer: str
    stage: int
    order: int  # position in the spec (optimizer index); ties inside a study follow it
    runnable: int  # pending trials that may start now
    running: int = 0
    finished: bool = False  # every trial of the group has ended


@dataclass(frozen=True)
class StudyState:
    study_id: str
    priority: int
    created: float  # a sortable age: smaller is older
    running: int
    cap: int  # max_concurrent_trials
    request: Mapping[str, float]  # what one trial asks for, e.g. {"CPU": 1, "GPU": 0.5}
    groups: Sequence[Group] = field(default_factory=tuple)


@dataclass(frozen=True)
class Choice:
    study_id: str
    optimizer: str
    stage: int


def fits(request: Mapping[str, float], free: Mapping[str, float]) -> bool:
    return all(amount <= free.get(name, 0.0) + _EPS for name, amount in request.items() if amount > 0)


def queue_order(studies: Sequence[StudyState]) -> list[StudyState]:
    """The fair-share order: priority (high first), running trials (few first), age (old first)."""
    return sorted(studies, key=lambda s: (-s.priority, s.running, s.created, s.study_id))


class FairShare:
    name = "fair"

    def choose(self, studies: Sequence[StudyState], free: Mapping[str, float]) -> Choice | None:
        for study in queue_order(studies):
            if study.running >= study.cap or not fits(study.request, free):
                continue
            groups = [g for g in study.groups if g.runnable > 0]
            if groups:
                g = min(groups, key=lambda g: (g.running, g.order, g.stage))
                return Choice(study.study_id, g.optimizer, g.stage)
        return None


class Sequential:
    """One study at a time, one (optimizer, stage) group at a time (the pre-scheduler order)."""

    name = "sequential"

    def choose(self, studies: Sequence[StudyState], free: Mapping[str, float]) -> Choice | None:
        for study in sorted(studies, key=lambda s: (s.created, s.study_id)):
            groups = sorted((g for g in study.groups if not g.finished), key=lambda g: (g.order, g.stage))
            if not groups:
                continue  # everything ended: the next study
            g = groups[0]
            if g.runnable > 0 and study.running < study.cap and fits(study.request, free):
                return Choice(study.study_id, g.optimizer, g.stage)
            return None  # the head group is busy: nothing else may start
        return None


POLICIES = {"fair": FairShare, "sequential": Sequential}


def policy(name: str):
    try:
        return POLICIES[name]()
    except KeyError:
        raise ValueError(f"unknown scheduler {name!r}; known: {', '.join(POLICIES)}") from None


def free_resources(total: Mapping[str, float], used: Sequence[Mapping[str, float]]) -> dict[str, float]:
    free = dict(total)
    for request in used:
        for name, amount in request.items():
            free[name] = free.get(name, 0.0) - amount
    return free


def infeasible(request: Mapping[str, float], nodes: Sequence[Mapping[str, float]]) -> str | None:
    """The name of a resource that no node has enough of to run one trial, or None when some
    node could run it (nodes: the resources of each live node)."""
    if not nodes:
        return None
    if any(fits(request, node) for node in nodes):
        return None
    for name, amount in request.items():  # the first resource no node has enough of
        if amount > 0 and not any(node.get(name, 0.0) + _EPS >= amount for node in nodes):
            return name
    return next(name for name, amount in request.items() if amount > 0)
