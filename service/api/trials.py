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

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response

from service.api.auth import Principal, current_user
from service.api.deps import external_samplers, get_app_settings, get_store, get_study_or_404
from service.api.schemas import (
    ClaimOut,
    CompleteIn,
    FailIn,
    FinishOut,
    HeartbeatIn,
    HeartbeatOut,
    ReportIn,
    ReportOut,
)
from service.control.external_trials import ExternalTrials
from service.settings import Settings
from service.store.audit import deleted_study_owner
from service.store.models import Study
from service.store.study_store import StudyStore

router = APIRouter(prefix="/studies", tags=["trials (external)"], dependencies=[Depends(current_user)])
MAX_ID = 2**31 - 1


def external_trials(request: Request, store: StudyStore = Depends(get_store),
                    settings: Settings = Depends(get_app_settings)) -> ExternalTrials:
    """The use-cases (service/control/external_trials.py); their refusals are answered by the app's
    handler of `Refused` (service/api/errors.py)."""
    return ExternalTrials(store, external_samplers(request.app), settings.external_lease_s, settings.scheduler)


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


@router.post("/{study_id}/trials/claim", response_model=ClaimOut,
             responses={204: {"description": "nothing may start now: ask again later"},
                        410: {"description": "the study has ended"}})
def claim_trial(study: Study = Depends(get_study_or_404), trials: ExternalTrials = Depends(external_trials)):
    body = trials.claim(study)
    return Response(status_code=204) if body is None else body


@router.post("/{study_id}/trials/{trial_id}/reports", response_model=ReportOut)
def report_epoch(body: ReportIn, trial_id: int = Path(ge=1, le=MAX_ID),
                 study: Study = Depends(get_claimed_study), trials: ExternalTrials = Depends(external_trials)):
    verdict = trials.report(study, trial_id, body.claim_token, body.epoch, body.metrics)
    return ReportOut(should_stop=verdict.should_stop, reason=verdict.reason)


@router.post("/{study_id}/trials/{trial_id}/heartbeat", response_model=HeartbeatOut)
def heartbeat(body: HeartbeatIn, trial_id: int = Path(ge=1, le=MAX_ID),
              study: Study = Depends(get_claimed_study), trials: ExternalTrials = Depends(external_trials)):
    """Renews a claim's lease without a report: `rootfree agent` and the Python client send it
    while the claimant is alive (an epoch may outlast the lease; a dead claimant sends nothing)."""
    lease = trials.heartbeat(study, trial_id, body.claim_token)
    return HeartbeatOut(trial_id=lease.trial_id, status=lease.status, lease_expires_at=lease.lease_expires_at)


@router.post("/{study_id}/trials/{trial_id}/complete", response_model=FinishOut)
def complete_trial(body: CompleteIn, trial_id: int = Path(ge=1, le=MAX_ID),
                   study: Study = Depends(get_claimed_study), trials: ExternalTrials = Depends(external_trials)):
    done = trials.complete(study, trial_id, body.claim_token, body.status, body.metrics)
    return FinishOut(trial_id=done.trial_id, status=done.status)


@router.post("/{study_id}/trials/{trial_id}/fail", response_model=FinishOut)
def fail_trial(body: FailIn, trial_id: int = Path(ge=1, le=MAX_ID),
               study: Study = Depends(get_claimed_study), trials: ExternalTrials = Depends(external_trials)):
    done = trials.fail(study, trial_id, body.claim_token, body.reason)
    return FinishOut(trial_id=done.trial_id, status=done.status)
