"""Studies whose trials run anywhere (`execution: external`): the group a claim draws from, the
claim's answer and the samplers' state, which the claim use-cases (service/control/external_trials.py)
use apart from their HTTP (service/api/trials.py) and their SQL (the store).

The runner still drives an external study's stages (it opens stage 2 around stage 1's best
trials, then the seed runs, and ends the study); it only never sends its trials to Ray. A client
claims a pending trial under a lease, reports epochs (each renews the lease; the study's pruner
answers as it does for Ray trials) and completes or fails it. A claim whose lease passes goes back
to pending, and the old claimant's writes answer 409: no trial is counted twice.
"""

from __future__ import annotations

import threading
from typing import Any

from service.control.scheduler import Group, StudyState, policy
from service.domain.records import TrialCount
from service.domain.spec import ResolvedSpec
from service.domain.statuses import FINISHED


def next_group(spec: ResolvedSpec, study_id: str, created: float,
               counts: list[TrialCount], scheduler: str = "fair") -> tuple[str, int] | None:
    """The (optimizer, stage) the scheduler's policy hands the next claim of this study, from the
    store's (optimizer, stage, status, count) rows; None when nothing may start now (no pending
    trial, or `max_concurrent_trials` claims out)."""
    by_group: dict[tuple[str, int], dict[str, int]] = {}
    for opt, stage, status, n in counts:
        by_group.setdefault((opt, stage), {})[status] = n
    order = {o: i for i, o in enumerate(spec.optimizers)}
    groups = [Group(opt, stage, order.get(opt, len(order)), runnable=c.get("pending", 0),
                    running=c.get("running", 0),
                    finished=sum(v for k, v in c.items() if k in FINISHED) == sum(c.values()))
              for (opt, stage), c in sorted(by_group.items())]
    running = sum(g.running for g in groups)
    # The clients' machines have their own resources: what one trial asks for always fits.
    state = StudyState(study_id, spec.priority, created, running, spec.max_concurrent_trials, {}, tuple(groups))
    choice = policy(scheduler).choose([state], {})
    return (choice.optimizer, choice.stage) if choice else None


def claim_body(spec: ResolvedSpec, trial, lease_expires_at) -> dict[str, Any]:
    """The claim response: everything a client needs to train the trial."""
    p = spec.protocol
    return {"trial_id": trial.id, "optimizer": trial.optimizer, "stage": trial.stage,
            "seed": trial.seed if trial.seed is not None else p.seed, "budget": dict(spec.budget),
            "hyperparameters": trial.config, "workload": spec.workload,
            "schedule": "constant" if p.scheme == "original" else "workload",
            "metric": spec.metric, "mode": spec.mode, "claim_token": trial.claim_token,
            "lease_expires_at": lease_expires_at}


class ExternalSamplers:
    """The API process's sampler state for external studies, and its lock (Optuna's samplers are
    not thread-safe; the API serves a thread pool): TPE asks as claims arrive and learns from each
    ended trial; a fixed sampler (random, halton) drew its configurations when the stage opened.
    One per app (`app.state.external_samplers`); the use-cases call `ask`, `tell` and `forget`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samplers = None  # service.control.samplers.Samplers, made on the first ask (it imports Optuna)

    def __getitem__(self, method: str):
        return self._samplers[method] if self._samplers is not None else None

    def ask(self, store, study, optimizer: str, stage: int, trial_id: int) -> dict[str, Any]:
        """TPE's configuration for a just-claimed trial (`study` as the store has it now)."""
        from service.control.samplers import Samplers

        with self._lock:
            if self._samplers is None:
                self._samplers = Samplers(store)
            return self._samplers["tpe"].ask(study, optimizer, stage, trial_id)

    def tell(self, store, study, trial_id: int) -> None:
        """An external trial ended: a sampler that asks learns its result (nothing to read otherwise)."""
        if self._samplers is None or not self._samplers[study.resolved.protocol.method].asks:
            return
        t = store.trial(study.id, trial_id)
        if t is not None:
            with self._lock:
                self._samplers[study.resolved.protocol.method].tell(t)

    def forget(self, study_id: str) -> None:
        """Drops an ended or deleted study's sampler state, so the API's state does not grow."""
        if self._samplers is not None:
            with self._lock:
                self._samplers.forget(study_id)
