"""The use-cases behind the external trials' endpoints (service/api/trials.py parses and shapes;
the store's claims fence each write by its token): claim, report, heartbeat, complete, fail.

Here is what each decides: which trial a claim gets and TPE's configuration for it; whether a
report stops its trial (a non-finite metric: diverged; the study's pruner at a rung: stopped);
that a non-finite final metric is a divergence; that a write after the study ended ends its trial
as the study's end ends a running one (410); that a retry under the same claim answers as the
first call did, and a lapsed or foreign claim is refused. No HTTP: a refusal is a `Refused`
(service/domain/refusals.py), which the api answers with its status, field and message.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from service.control.external import ExternalSamplers, claim_body, next_group
from service.control.pruners import Report, pruner_for
from service.domain.outcomes import ACCEPTED, ClaimOutcome
from service.domain.refusals import Conflict, Gone, InvalidField, NotFound, Refused
from service.domain.statuses import TERMINAL
from service.store.interface import Store
from service.store.models import Study

MAX_METRIC = 1e100  # |the study's metric| above this is treated as non-finite (the trial diverges)
RESERVED_METRICS = ("wall_time_s", "epoch_time_s", "peak_memory_mb")  # what the service's own trials report
MAX_RESERVED = 1e9


@dataclass(frozen=True)
class Verdict:
    """A report's answer: whether the claimant stops training, and why."""
    should_stop: bool
    reason: str | None = None


@dataclass(frozen=True)
class Lease:
    """A heartbeat's answer: the trial's status and its lease (None: it ended under this claim)."""
    trial_id: int
    status: str
    lease_expires_at: datetime | None


@dataclass(frozen=True)
class Finished:
    """A completion's or failure's answer: the status the trial ended with."""
    trial_id: int
    status: str


def stop_reason(study: Study) -> str:
    return f"stopped: the study was {study.status}"


def checked_metrics(metrics: dict[str, Any], metric: str, required: bool) -> dict[str, float | None]:
    """The metrics as a report row: numbers (bool is not one), non-finite ones as None (JSON
    has no NaN; the trial's divergence is decided from them). `InvalidField` naming `metrics.<name>`."""
    out: dict[str, float | None] = {}
    for name, value in metrics.items():
        if not name or len(name) > 64:
            raise InvalidField("metrics", f"metric names are 1..64 characters, got {name[:70]!r}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidField(f"metrics.{name}", f"must be a number, got {value!r:.80}")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond float's range (JSON allows any number of digits)
            number = math.inf
        if name in RESERVED_METRICS and not 0 <= number <= MAX_RESERVED:
            # they feed time-to-target, the analysis' time per epoch and memory, and suite scores
            raise InvalidField(f"metrics.{name}", f"must be a number in 0..{MAX_RESERVED:g}, got {value!r:.80}")
        # a study metric this large is a divergence too: it would overflow the summaries' sums
        finite = math.isfinite(number) and (name != metric or abs(number) <= MAX_METRIC)
        out[name] = number if finite else None
    if required and metric not in metrics:
        raise InvalidField(f"metrics.{metric}", f"the study's metric {metric!r} is missing from the report")
    return out


def _aware(expires: datetime | None) -> datetime | None:
    if expires is not None and expires.tzinfo is None:  # SQLite returns naive UTC datetimes
        return expires.replace(tzinfo=UTC)
    return expires


def _external(study: Study) -> None:
    if not study.resolved.external:
        raise Conflict("execution", f"study {study.id!r} runs its trials on the cluster (execution: ray); "
                                    "only a study submitted with execution: external is claimed by clients")


def _conflict(fence: str, trial_id: int) -> Conflict:
    why = ("its lease expired (no report within ROOTFREE_EXTERNAL_LEASE_S); the trial went back to pending"
           if fence == ClaimOutcome.EXPIRED else "it is not the trial's current claim (its lease expired and the trial "
                                      "went back to pending, or to another client)")
    return Conflict("claim_token", f"this claim on trial {trial_id} is no longer valid: {why}")


class ExternalTrials:
    """The claimants' calls on one store (`lease_s`: ROOTFREE_EXTERNAL_LEASE_S; `scheduler`: the
    policy that picks the group a claim draws from), with the app's sampler state. `_store` is the
    API's whole `Store`, not a runner's `RunnerStore`: the runner's parts name theirs `.store`
    (tests/service/store/test_store_interface.py holds those to `RunnerCalls`)."""

    def __init__(self, store: Store, samplers: ExternalSamplers, lease_s: float, scheduler: str = "fair"):
        self._store, self.samplers, self.lease_s, self.scheduler = store, samplers, lease_s, scheduler

    def claim(self, study: Study) -> dict[str, Any] | None:
        """The claimed trial as the claim's answer (service/control/external.py `claim_body`);
        None when nothing may start now. `Gone` once the study has ended."""
        _external(study)
        store = self._store
        if study.status in TERMINAL:
            self.samplers.forget(study.id)
            raise Gone(f"study {study.id!r} has ended ({study.status}): nothing left to claim")
        if study.status != "running":
            return None  # queued: the runner has not opened its first stage yet
        # lapsed claims, the count and the claim are one transaction under the study's lock: claims
        # that arrive together never exceed max_concurrent_trials
        t = store.claim_next_external(
            study.id, lambda counts: next_group(study.resolved, study.id, study.created_at.timestamp(), counts,
                                                self.scheduler),
            secrets.token_urlsafe(24), self.lease_s)
        if t is None:
            return None
        if study.resolved.protocol.method == "tpe" and not t.config:  # asked as slots free up
            t.config = self.samplers.ask(store, store.get_study(study.id), t.optimizer, t.stage, t.id)
            store.set_config(t.id, t.config)
        expires = _aware(t.lease_expires_at)
        return claim_body(study.resolved, t, expires or datetime.now(UTC) + timedelta(seconds=self.lease_s))

    def report(self, study: Study, trial_id: int, token: str, epoch: int, metrics: dict[str, Any]) -> Verdict:
        """One epoch's metrics (it renews the lease); the verdict ends the trial when it stops."""
        _external(study)
        store = self._store
        if study.status in TERMINAL:
            self._end_with_study(study, trial_id, token)
        spec = study.resolved
        metric, epochs = spec.metric, spec.budget["epochs"]
        if not 1 <= epoch <= epochs:  # 1-based, as the service's own trials report them
            raise InvalidField("epoch", f"must be 1..{epochs} (the study's budget.epochs), got {epoch}")
        row: dict[str, Any] = {**checked_metrics(metrics, metric, required=True), "epoch": epoch}
        outcome, t = store.report_external(study.id, trial_id, token, epoch, row, metric, self.lease_s)
        if outcome == ClaimOutcome.EPOCH:
            raise InvalidField("epoch", f"epoch {epoch} is lower than epoch {t.epochs} already reported "
                                        f"for trial {trial_id} (a repeated epoch replaces its report)")
        if outcome == ClaimOutcome.FINISHED:  # a retry after the trial ended under this claim: the same answer
            return Verdict(should_stop=True, reason=t.error or f"the trial has ended ({t.status})")
        if outcome != ClaimOutcome.OK:
            raise self._refused(study, trial_id, outcome)
        reason, status = None, None
        if study.status in TERMINAL:
            reason, status = stop_reason(study), "failed"
        elif row.get(metric) is None:
            reason, status = f"diverged: {metric} is not finite at epoch {epoch}", "diverged"
        elif (pruner := pruner_for(spec)) is not None and pruner.decides_at(t.stage, epoch):
            # the peers' reports are read only at a rung; a fresh pruner: they may have changed since
            decision = pruner.decide(
                Report(study.id, t.optimizer, t.stage, trial_id, epoch, row[metric]),
                lambda: store.rung_values_of_others(study.id, t.optimizer, t.stage, epoch, metric, trial_id))
            reason, status = decision.reason, "stopped" if decision.stop else None
        if status is None:
            return Verdict(should_stop=False)
        store.finish_external(study.id, trial_id, token, status, error=reason, metric=metric)
        self.samplers.tell(store, study, trial_id)
        return Verdict(should_stop=True, reason=reason)

    def heartbeat(self, study: Study, trial_id: int, token: str) -> Lease:
        """Renews a claim's lease without a report (a claimant alive in a long epoch)."""
        _external(study)
        if study.status in TERMINAL:
            self._end_with_study(study, trial_id, token)
        outcome, _ = self._store.renew_claim(study.id, trial_id, token, self.lease_s)
        if outcome not in ACCEPTED:
            raise self._refused(study, trial_id, outcome)
        t = self._store.trial(study.id, trial_id)
        return Lease(t.id, t.status, _aware(t.lease_expires_at) if t.status == "running" else None)

    def complete(self, study: Study, trial_id: int, token: str, status: str,
                 metrics: dict[str, Any] | None) -> Finished:
        """Ends the trial as `status` (completed, diverged, stopped); a non-finite final metric
        makes it diverged. A retry answers as the first call did; another status is a `Conflict`."""
        _external(study)
        if study.status in TERMINAL:
            self._end_with_study(study, trial_id, token)
        metric = study.resolved.metric
        final = checked_metrics(metrics, metric, required=False) if metrics else None
        wanted, error = status, None
        if final is not None and metric in final and final[metric] is None:
            # a non-finite (or beyond MAX_METRIC) final value is a divergence, as in a report
            wanted, error = "diverged", f"diverged: {metric} is not finite in the final metrics"
        outcome, ended = self._store.finish_external(study.id, trial_id, token, wanted, metrics=final,
                                                    metric=metric, error=error)
        if outcome == ClaimOutcome.FINISHED:
            self._ended_by_a_late_cancel(study, trial_id, token)
        if outcome == ClaimOutcome.METRIC:
            raise InvalidField(f"metrics.{metric}", f"a completed trial needs the study's metric {metric!r}: "
                                                    "report it for an epoch or send it in `metrics`")
        if outcome not in ACCEPTED:
            raise self._refused(study, trial_id, outcome)
        # a retry answers as before; another status is no retry
        if outcome == ClaimOutcome.FINISHED and ended != wanted:
            raise Conflict("status", f"trial {trial_id} has already ended as {ended!r} under this claim; "
                                     f"it cannot be completed as {status!r}")
        if outcome == ClaimOutcome.OK:
            self.samplers.tell(self._store, study, trial_id)
        return Finished(trial_id, ended)

    def fail(self, study: Study, trial_id: int, token: str, reason: str) -> Finished:
        """Ends the trial as failed, with the client's reason."""
        _external(study)
        if study.status in TERMINAL:  # as complete and heartbeat: the study's end is the reason
            self._end_with_study(study, trial_id, token)
        outcome, ended = self._store.finish_external(study.id, trial_id, token, "failed", error=reason or "failed")
        if outcome == ClaimOutcome.FINISHED:
            self._ended_by_a_late_cancel(study, trial_id, token)
        if outcome not in ACCEPTED:
            raise self._refused(study, trial_id, outcome)
        if outcome == ClaimOutcome.FINISHED and ended != "failed":  # as complete with another status: no retry
            raise Conflict("status", f"trial {trial_id} has already ended as {ended!r} under this claim; "
                                     "it cannot be failed")
        if outcome == ClaimOutcome.OK:
            self.samplers.tell(self._store, study, trial_id)
        return Finished(trial_id, ended)

    def _refused(self, study: Study, trial_id: int, outcome: str) -> Refused:
        """The refusal of a write the claim's fence refused: `NotFound` (no such trial here) or `Conflict`."""
        if outcome == ClaimOutcome.MISSING:
            return NotFound(f"trial {trial_id} not found in study {study.id!r}")
        if outcome == ClaimOutcome.EXPIRED:
            self._store.expire_claims(study.id)  # back to pending now, not at the next claim
        return _conflict(outcome, trial_id)

    def _end_with_study(self, study: Study, trial_id: int, token: str) -> None:
        """A report, heartbeat, completion or failure after the study ended: the trial ends as the
        study's end ends a trial that still runs (failed, "stopped: the study was ..."), and the
        answer is `Gone`, as it is for a claim the study's cancel ended. A trial the client itself
        ended under this claim before returns, for the caller's usual answer to a retry."""
        reason = stop_reason(study)
        outcome, _ = self._store.finish_external(study.id, trial_id, token, "failed", error=reason)
        if outcome == ClaimOutcome.FINISHED:
            t = self._store.trial(study.id, trial_id)
            if t is None or t.error != reason:
                return
        elif outcome != ClaimOutcome.OK:
            raise self._refused(study, trial_id, outcome)
        else:
            self.samplers.tell(self._store, study, trial_id)
        raise Gone(f"study {study.id!r} has ended ({study.status}): trial {trial_id} was recorded "
                   f"as failed ({reason})")

    def _ended_by_a_late_cancel(self, study: Study, trial_id: int, token: str) -> None:
        """A write that found its trial already ended: when a cancel committed after this request
        read the study, the study ended the claim, and the answer is its `Gone` (as had the cancel
        come first), not the answer to a retry of the client's own earlier end."""
        fresh = self._store.get_study(study.id)
        if fresh is not None and fresh.status in TERMINAL and study.status not in TERMINAL:
            self._end_with_study(fresh, trial_id, token)
