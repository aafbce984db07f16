"""Trials that run anywhere (`execution: external`): claim, report, complete, fail.

Exact shapes (clients in any language depend on them):

- `POST /studies/{id}/trials/claim` -> 200 {"trial_id", "optimizer", "stage", "seed", "budget",
  "hyperparameters", "workload", "schedule", "metric", "mode", "claim_token", "lease_expires_at"};
  204 when nothing may start now (stage 2 waits for stage 1, `max_concurrent_trials` claims are
  out, the runner has not opened the study yet); 410 when the study has ended.
- `POST /studies/{id}/trials/{trial_id}/reports` {"claim_token", "epoch", "metrics"} -> 200
  {"should_stop", "reason"}; a report renews the claim's lease (ROOTFREE_EXTERNAL_LEASE_S).
- `POST .../complete` {"claim_token", "status", "metrics"?} and `.../fail` {"claim_token",
  "reason"} -> 200 {"trial_id", "status"}.
- `POST .../heartbeat` {"claim_token"} -> 200 {"trial_id", "status", "lease_expires_at"}: renews
  the lease of a claimant still alive in a long epoch (the agent and the Python client send it).

A claim whose lease passed answers 409 (its trial went back to pending, or to another client);
the same call retried under the same claim answers as the first did.
"""

from __future__ import annotations

import math
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from service.api.auth import Principal, current_user
from service.api.deps import external_samplers, get_app_settings, get_store, get_study_or_404
from service.api.errors import ApiError
from service.api.schemas import PlainText
from service.control.external import claim_body, next_group
from service.control.pruners import Report, pruner_for
from service.domain.outcomes import ACCEPTED, ClaimOutcome
from service.domain.statuses import TERMINAL
from service.settings import Settings
from service.store.audit import deleted_study_owner
from service.store.models import Study
from service.store.study_store import StudyStore

router = APIRouter(prefix="/studies", tags=["trials (external)"], dependencies=[Depends(current_user)])
MAX_ID = 2**31 - 1
MAX_METRIC = 1e100  # |the study's metric| above this is treated as non-finite (the trial diverges)
RESERVED_METRICS = ("wall_time_s", "epoch_time_s", "peak_memory_mb")  # what the service's own trials report
MAX_RESERVED = 1e9


class _Body(PlainText):
    model_config = ConfigDict(extra="forbid")


class ClaimOut(BaseModel):
    trial_id: int
    optimizer: str
    stage: int
    seed: int
    budget: dict[str, Any]
    hyperparameters: dict[str, Any]
    workload: str
    schedule: Literal["workload", "constant"]
    metric: str
    mode: Literal["min", "max"]
    claim_token: str
    lease_expires_at: datetime


class ReportIn(_Body):
    claim_token: str = Field(min_length=1, max_length=64)
    epoch: StrictInt = Field(ge=0, le=1_000_000)
    metrics: dict[str, Any] = Field(max_length=100)


class ReportOut(BaseModel):
    should_stop: bool
    reason: str | None = None


class CompleteIn(_Body):
    claim_token: str = Field(min_length=1, max_length=64)
    status: Literal["completed", "diverged", "stopped"]
    metrics: dict[str, Any] | None = Field(default=None, max_length=100)


class FailIn(PlainText):
    model_config = ConfigDict(extra="forbid")
    # a stderr tail or a traceback (tqdm's carriage returns, ANSI colours): sanitised and capped,
    # never refused, so a failing trial is always recorded as failed (issue 30)
    free_text: ClassVar[tuple[str, ...]] = ("reason",)
    claim_token: str = Field(min_length=1, max_length=64)
    reason: str = Field(default="the client failed the trial")

    @field_validator("reason")
    @classmethod
    def _some_reason(cls, v: str) -> str:
        return v or "the client failed the trial"


class HeartbeatIn(_Body):
    claim_token: str = Field(min_length=1, max_length=64)


class HeartbeatOut(BaseModel):
    trial_id: int
    status: str
    lease_expires_at: datetime | None  # None: the trial has ended under this claim


class FinishOut(BaseModel):
    trial_id: int
    status: str


def _external(study: Study) -> None:
    if not study.resolved.external:
        raise ApiError(409, "execution", f"study {study.id!r} runs its trials on the cluster (execution: ray); "
                                         "only a study submitted with execution: external is claimed by clients")


def _checked_metrics(metrics: dict[str, Any], metric: str, required: bool) -> dict[str, float | None]:
    """The metrics as a report row: numbers (bool is not one), non-finite ones as None (JSON
    has no NaN; the trial's divergence is decided from them). 422 naming `metrics.<name>`."""
    out: dict[str, float | None] = {}
    for name, value in metrics.items():
        if not name or len(name) > 64:
            raise ApiError(422, "metrics", f"metric names are 1..64 characters, got {name[:70]!r}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ApiError(422, f"metrics.{name}", f"must be a number, got {value!r:.80}")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond float's range (JSON allows any number of digits)
            number = math.inf
        if name in RESERVED_METRICS and not 0 <= number <= MAX_RESERVED:
            # they feed time-to-target, the analysis' time per epoch and memory, and suite scores
            raise ApiError(422, f"metrics.{name}", f"must be a number in 0..{MAX_RESERVED:g}, got {value!r:.80}")
        # a study metric this large is a divergence too: it would overflow the summaries' sums
        finite = math.isfinite(number) and (name != metric or abs(number) <= MAX_METRIC)
        out[name] = number if finite else None
    if required and metric not in metrics:
        raise ApiError(422, f"metrics.{metric}", f"the study's metric {metric!r} is missing from the report")
    return out


def _conflict(fence: str, trial_id: int) -> ApiError:
    why = ("its lease expired (no report within ROOTFREE_EXTERNAL_LEASE_S); the trial went back to pending"
           if fence == ClaimOutcome.EXPIRED else "it is not the trial's current claim (its lease expired and the trial "
                                      "went back to pending, or to another client)")
    return ApiError(409, "claim_token", f"this claim on trial {trial_id} is no longer valid: {why}")


def _tell_sampler(request: Request, store: StudyStore, study: Study, trial_id: int) -> None:
    external_samplers(request.app).tell(store, study, trial_id)


@router.post("/{study_id}/trials/claim", response_model=ClaimOut,
             responses={204: {"description": "nothing may start now: ask again later"},
                        410: {"description": "the study has ended"}})
def claim_trial(request: Request, study: Study = Depends(get_study_or_404),
                store: StudyStore = Depends(get_store), settings: Settings = Depends(get_app_settings)):
    _external(study)
    if study.status in TERMINAL:
        external_samplers(request.app).forget(study.id)
        raise HTTPException(410, f"study {study.id!r} has ended ({study.status}): nothing left to claim")
    if study.status != "running":
        return Response(status_code=204)  # queued: the runner has not opened its first stage yet
    # lapsed claims, the count and the claim are one transaction under the study's lock: claims
    # that arrive together never exceed max_concurrent_trials
    t = store.claim_next_external(
        study.id, lambda counts: next_group(study.resolved, study.id, study.created_at.timestamp(), counts,
                                            settings.scheduler),
        secrets.token_urlsafe(24), settings.external_lease_s)
    if t is None:
        return Response(status_code=204)
    if study.resolved.protocol.method == "tpe" and not t.config:  # asked as slots free up
        t.config = external_samplers(request.app).ask(store, store.get_study(study.id), t.optimizer, t.stage, t.id)
        store.set_config(t.id, t.config)
    expires = t.lease_expires_at
    if expires is not None and expires.tzinfo is None:  # SQLite returns naive UTC datetimes
        expires = expires.replace(tzinfo=UTC)
    return claim_body(study.resolved, t, expires or datetime.now(UTC) + timedelta(seconds=settings.external_lease_s))


def _refused(store: StudyStore, study: Study, trial_id: int, outcome: str) -> HTTPException | ApiError:
    """The answer to a write the claim's fence refused: 404 (no such trial here) or 409."""
    if outcome == ClaimOutcome.MISSING:
        return HTTPException(404, f"trial {trial_id} not found in study {study.id!r}")
    if outcome == ClaimOutcome.EXPIRED:
        store.expire_claims(study.id)  # back to pending now, not at the next claim
    return _conflict(outcome, trial_id)


def stop_reason(study: Study) -> str:
    return f"stopped: the study was {study.status}"


def _end_with_study(request: Request, store: StudyStore, study: Study, trial_id: int, token: str) -> None:
    """A report, heartbeat, completion or failure after the study ended: the trial ends as the
    study's end ends a trial that still runs (failed, "stopped: the study was ..."), and the
    answer is 410, as it is for a claim the study's cancel ended. A trial the client itself
    ended under this claim before returns, for the caller's usual answer to a retry."""
    reason = stop_reason(study)
    outcome, _ = store.finish_external(study.id, trial_id, token, "failed", error=reason)
    if outcome == ClaimOutcome.FINISHED:
        t = store.trial(study.id, trial_id)
        if t is None or t.error != reason:
            return
    elif outcome != ClaimOutcome.OK:
        raise _refused(store, study, trial_id, outcome)
    else:
        _tell_sampler(request, store, study, trial_id)
    raise HTTPException(410, f"study {study.id!r} has ended ({study.status}): trial {trial_id} was recorded "
                             f"as failed ({reason})")


def _ended_by_a_late_cancel(request: Request, store: StudyStore, study: Study, trial_id: int, token: str) -> None:
    """A write that found its trial already ended: when a cancel committed after this request read
    the study, the study ended the claim, and the answer is its 410 (as had the cancel come first),
    not the answer to a retry of the client's own earlier end."""
    fresh = store.get_study(study.id)
    if fresh is not None and fresh.status in TERMINAL and study.status not in TERMINAL:
        _end_with_study(request, store, fresh, trial_id, token)


def get_claimed_study(request: Request, study_id: str = Path(max_length=64),
                      user: Principal = Depends(current_user)) -> Study:
    """`get_study_or_404` for a claimant's writes, but a study deleted since its claim answers
    410 (its claims ended with it), not 404: the audit trail remembers the deletion and its owner."""
    try:
        return get_study_or_404(request, study_id, user)
    except HTTPException:
        store: StudyStore = request.app.state.store
        if deleted_study_owner(store.engine, study_id, user):
            raise HTTPException(410, f"study {study_id!r} was deleted: its claims have ended") from None
        raise


@router.post("/{study_id}/trials/{trial_id}/reports", response_model=ReportOut)
def report_epoch(body: ReportIn, request: Request, trial_id: int = Path(ge=1, le=MAX_ID),
                 study: Study = Depends(get_claimed_study), store: StudyStore = Depends(get_store),
                 settings: Settings = Depends(get_app_settings)):
    _external(study)
    if study.status in TERMINAL:
        _end_with_study(request, store, study, trial_id, body.claim_token)
    spec = study.resolved
    metric, epochs = spec.metric, spec.budget["epochs"]
    if not 1 <= body.epoch <= epochs:  # 1-based, as the service's own trials report them
        raise ApiError(422, "epoch", f"must be 1..{epochs} (the study's budget.epochs), got {body.epoch}")
    row: dict[str, Any] = {**_checked_metrics(body.metrics, metric, required=True), "epoch": body.epoch}
    outcome, t = store.report_external(study.id, trial_id, body.claim_token, body.epoch, row, metric,
                                       settings.external_lease_s)
    if outcome == ClaimOutcome.EPOCH:
        raise ApiError(422, "epoch", f"epoch {body.epoch} is lower than epoch {t.epochs} already reported "
                                     f"for trial {trial_id} (a repeated epoch replaces its report)")
    if outcome == ClaimOutcome.FINISHED:  # a retry after the trial ended under this claim: the same answer
        return ReportOut(should_stop=True, reason=t.error or f"the trial has ended ({t.status})")
    if outcome != ClaimOutcome.OK:
        raise _refused(store, study, trial_id, outcome)
    reason, status = None, None
    if study.status in TERMINAL:
        reason, status = f"stopped: the study was {study.status}", "failed"
    elif row.get(metric) is None:
        reason, status = f"diverged: {metric} is not finite at epoch {body.epoch}", "diverged"
    elif (pruner := pruner_for(spec)) is not None and pruner.decides_at(t.stage, body.epoch):
        # the peers' reports are read only at a rung; a fresh pruner: they may have changed since
        decision = pruner.decide(
            Report(study.id, t.optimizer, t.stage, trial_id, body.epoch, row[metric]),
            lambda: store.rung_values_of_others(study.id, t.optimizer, t.stage, body.epoch, metric, trial_id))
        reason, status = decision.reason, "stopped" if decision.stop else None
    if status is None:
        return ReportOut(should_stop=False)
    store.finish_external(study.id, trial_id, body.claim_token, status, error=reason, metric=metric)
    _tell_sampler(request, store, study, trial_id)
    return ReportOut(should_stop=True, reason=reason)


@router.post("/{study_id}/trials/{trial_id}/heartbeat", response_model=HeartbeatOut)
def heartbeat(body: HeartbeatIn, request: Request, trial_id: int = Path(ge=1, le=MAX_ID),
              study: Study = Depends(get_claimed_study), store: StudyStore = Depends(get_store),
              settings: Settings = Depends(get_app_settings)):
    """Renews a claim's lease without a report: `rootfree agent` and the Python client send it
    while the claimant is alive (an epoch may outlast the lease; a dead claimant sends nothing)."""
    _external(study)
    if study.status in TERMINAL:
        _end_with_study(request, store, study, trial_id, body.claim_token)
    outcome, _ = store.renew_claim(study.id, trial_id, body.claim_token, settings.external_lease_s)
    if outcome not in ACCEPTED:
        raise _refused(store, study, trial_id, outcome)
    t = store.trial(study.id, trial_id)
    expires = t.lease_expires_at if t.status == "running" else None
    if expires is not None and expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return HeartbeatOut(trial_id=t.id, status=t.status, lease_expires_at=expires)


@router.post("/{study_id}/trials/{trial_id}/complete", response_model=FinishOut)
def complete_trial(body: CompleteIn, request: Request, trial_id: int = Path(ge=1, le=MAX_ID),
                   study: Study = Depends(get_claimed_study), store: StudyStore = Depends(get_store)):
    _external(study)
    if study.status in TERMINAL:
        _end_with_study(request, store, study, trial_id, body.claim_token)
    metric = study.resolved.metric
    metrics = _checked_metrics(body.metrics, metric, required=False) if body.metrics else None
    wanted, error = body.status, None
    if metrics is not None and metric in metrics and metrics[metric] is None:
        # a non-finite (or beyond MAX_METRIC) final value is a divergence, as in a report
        wanted, error = "diverged", f"diverged: {metric} is not finite in the final metrics"
    outcome, status = store.finish_external(study.id, trial_id, body.claim_token, wanted, metrics=metrics,
                                            metric=metric, error=error)
    if outcome == ClaimOutcome.FINISHED:
        _ended_by_a_late_cancel(request, store, study, trial_id, body.claim_token)
    if outcome == ClaimOutcome.METRIC:
        raise ApiError(422, f"metrics.{metric}", f"a completed trial needs the study's metric {metric!r}: "
                                                 "report it for an epoch or send it in `metrics`")
    if outcome not in ACCEPTED:
        raise _refused(store, study, trial_id, outcome)
    if outcome == ClaimOutcome.FINISHED and status != wanted:  # a retry answers as before; another status is no retry
        raise ApiError(409, "status", f"trial {trial_id} has already ended as {status!r} under this claim; "
                                      f"it cannot be completed as {body.status!r}")
    if outcome == ClaimOutcome.OK:
        _tell_sampler(request, store, study, trial_id)
    return FinishOut(trial_id=trial_id, status=status)


@router.post("/{study_id}/trials/{trial_id}/fail", response_model=FinishOut)
def fail_trial(body: FailIn, request: Request, trial_id: int = Path(ge=1, le=MAX_ID),
               study: Study = Depends(get_claimed_study), store: StudyStore = Depends(get_store)):
    _external(study)
    if study.status in TERMINAL:  # as complete and heartbeat: the study's end is the reason
        _end_with_study(request, store, study, trial_id, body.claim_token)
    outcome, status = store.finish_external(study.id, trial_id, body.claim_token, "failed",
                                            error=body.reason or "failed")
    if outcome == ClaimOutcome.FINISHED:
        _ended_by_a_late_cancel(request, store, study, trial_id, body.claim_token)
    if outcome not in ACCEPTED:
        raise _refused(store, study, trial_id, outcome)
    if outcome == ClaimOutcome.FINISHED and status != "failed":  # as complete with another status: no retry
        raise ApiError(409, "status", f"trial {trial_id} has already ended as {status!r} under this claim; "
                                      "it cannot be failed")
    if outcome == ClaimOutcome.OK:
        _tell_sampler(request, store, study, trial_id)
    return FinishOut(trial_id=trial_id, status=status)
