"""The /studies resource."""

from __future__ import annotations

import logging
import math
from typing import Literal
from urllib.parse import urlencode

import yaml
from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, PlainTextResponse

from service.api.auth import Principal, client_address, current_user
from service.api.deps import (
    adopt_cluster_catalog,
    external_samplers,
    get_app_settings,
    get_store,
    get_study_or_404,
    leader_info,
    queue_snapshot,
)
from service.api.errors import ApiError
from service.api.results import cached_analysis, cached_analysis_json, cached_report
from service.api.schemas import Export, StudyList, StudyOut, StudySpec, TrialOut
from service.control import studies
from service.control.queue_view import place
from service.domain.ruleset import protocol_version
from service.domain.statuses import ACTIVE
from service.results.feasibility import spec_warnings
from service.results.summary import best_configs, optimizer_summaries, optimizer_summaries_many, ranking
from service.settings import Settings
from service.store.models import Study
from service.store.study_log import log_path, ray_log_name, read_from, tail_with_offset
from service.store.study_store import StudyStore

router = APIRouter(prefix="/studies", tags=["studies"], dependencies=[Depends(current_user)])
log = logging.getLogger("rootfree.api")

MAX_LIMIT = 1000  # list endpoints: more in one page -> 422
MAX_OFFSET = 10**9
MAX_ID = 2**31 - 1  # trial ids are 32-bit integers in PostgreSQL


def study_out(store: StudyStore, study: Study, request: Request,
              summaries: list[dict] | None = None) -> StudyOut:
    leader = leader_info(request)
    base = f"/studies/{study.id}"
    dashboard, node = leader.get("dashboard_url"), leader.get("node_id")
    dashboard_log_url = (f"{dashboard}/api/v0/logs/file?"
                         + urlencode({"node_id": node, "filename": ray_log_name(study.id)})
                         if dashboard and node else None)
    return StudyOut(
        id=study.id, name=study.name, status=study.status, owner=study.owner, suite_id=study.suite_id,
        spec=study.spec,
        created_at=study.created_at, updated_at=study.updated_at, started_at=study.started_at,
        finished_at=study.finished_at, error=study.error, notes=study.notes or [],
        optimizers=summaries if summaries is not None else optimizer_summaries(store, study),
        dashboard_url=dashboard, dashboard_log_url=dashboard_log_url,
        queue=place(queue_snapshot(request), study.id) if study.status in ACTIVE else None,
        links={"self": base, "trials": f"{base}/trials", "best": f"{base}/best",
               "export": f"{base}/export", "logs": f"{base}/logs"},
        warnings=spec_warnings(study.resolved),
    )


@router.post("", status_code=201, response_model=StudyOut, dependencies=[Depends(adopt_cluster_catalog)])
def create_study(spec: StudySpec, request: Request, response: Response,
                 idempotency_key: str | None = Header(default=None, max_length=200),
                 store: StudyStore = Depends(get_store),
                 settings: Settings = Depends(get_app_settings), user: Principal = Depends(current_user)):
    study, created = studies.submit_study(store, settings, spec.resolved(), idempotency_key, user.user,
                                          {"actor": user.user, "client": client_address(request)})
    request.app.state.queue_snapshot = None  # the queue changed
    if not created:
        response.status_code = 200
    response.headers["Location"] = f"/studies/{study.id}"
    return study_out(store, study, request)


@router.get("", response_model=StudyList)
def list_studies(request: Request,
                 status: Literal["queued", "running", "completed", "failed", "cancelled"] | None = None,
                 limit: int = Query(20, ge=1, le=MAX_LIMIT), offset: int = Query(0, ge=0, le=MAX_OFFSET),
                 store: StudyStore = Depends(get_store), user: Principal = Depends(current_user)):
    """The caller's studies, newest first (an admin's: everyone's)."""
    rows, total = store.list_studies(status, limit, offset, owner=None if user.admin else user.user)
    summaries = optimizer_summaries_many(store, rows)  # a constant number of queries per page
    return StudyList(items=[study_out(store, s, request, summaries[s.id]) for s in rows], total=total,
                     limit=limit, offset=offset)


def _expire_lapsed(store: StudyStore, study: Study) -> None:
    """An external study's claims whose lease passed read as pending when read (the counts of
    `GET /studies/{id}` and `watch`, the trials), not only once the next claim arrives."""
    if study.resolved.external and study.status == "running" and store.has_lapsed_claims(study.id):
        store.expire_claims(study.id)


@router.get("/{study_id}", response_model=StudyOut)
def get_study(request: Request, study: Study = Depends(get_study_or_404),
              store: StudyStore = Depends(get_store)):
    _expire_lapsed(store, study)
    return study_out(store, study, request)


def trial_out(t, history: list | None = None) -> TrialOut:
    out = TrialOut.model_validate(t)
    out.history = history
    return out


@router.get("/{study_id}/trials", response_model=list[TrialOut])
def list_trials(response: Response,
                optimizer: str | None = Query(None, max_length=40), stage: int | None = Query(None, ge=1, le=100),
                status: Literal["pending", "running", "completed", "diverged", "failed", "stopped"] | None = None,
                limit: int = Query(100, ge=1, le=MAX_LIMIT), offset: int = Query(0, ge=0, le=MAX_OFFSET),
                after_id: int | None = Query(None, ge=1, le=MAX_ID, description=(
                    "keyset pagination: the trials after this one (the X-Next-After-Id header of the "
                    "previous page), in the same order; costs the same at any depth, unlike offset")),
                include: Literal["history"] | None = Query(None, description="history: add per-epoch reports "
                                                           "(of this page's trials only)"),
                study: Study = Depends(get_study_or_404), store: StudyStore = Depends(get_store)):
    _expire_lapsed(store, study)
    after = None
    if after_id is not None:
        after = store.trial(study.id, after_id)
        if after is None:
            raise ApiError(422, "query.after_id", f"trial {after_id} is not a trial of study {study.id!r}")
    trials = store.trials(study.id, optimizer, stage, status, limit, offset, after=after)
    if len(trials) == limit:  # a full page: there may be more
        response.headers["X-Next-After-Id"] = str(trials[-1].id)
    histories = store.histories([t.id for t in trials]) if include == "history" else {}
    return [trial_out(t, histories.get(t.id)) for t in trials]


@router.get("/{study_id}/trials/{trial_id}", response_model=TrialOut)
def get_trial(trial_id: int = Path(ge=1, le=MAX_ID), study: Study = Depends(get_study_or_404),
              store: StudyStore = Depends(get_store)):
    _expire_lapsed(store, study)
    t = store.trial(study.id, trial_id)
    if t is None:
        raise HTTPException(404, f"trial {trial_id} not found in study {study.id!r}")
    return trial_out(t, store.history(t.id))


@router.get("/{study_id}/logs", response_class=PlainTextResponse)
def study_logs(tail_lines: int = Query(200, alias="tail", ge=1, le=100_000),
               offset: int | None = Query(None, ge=0, le=2**62, description=(
                   "the complete lines written from this byte on (the X-Log-Offset header of the previous "
                   "answer) instead of the last `tail` lines: `rootfree logs -f` asks only for what is new")),
               study: Study = Depends(get_study_or_404),
               settings: Settings = Depends(get_app_settings)):
    """The last `tail` lines of the study's log stream (empty until the runner starts it). The
    X-Log-Offset header is where what was returned ends: pass it as `offset` to get what follows.
    An offset past the end (the file rotated) starts from the new file's beginning."""
    path = log_path(settings.storage_path, study.id)
    if offset is None:
        lines, end = tail_with_offset(path, tail_lines, within=path.parent)
        text = "\n".join(lines) + ("\n" if lines else "")
    else:
        text, end = read_from(path, offset, within=path.parent)
    return PlainTextResponse(text, headers={"X-Log-Offset": str(end)})


@router.post("/{study_id}/cancel", status_code=202, response_model=StudyOut)
def cancel_study(request: Request, study: Study = Depends(get_study_or_404),
                 store: StudyStore = Depends(get_store), user: Principal = Depends(current_user)):
    if studies.cancel_study(store, study, user.user, client_address(request), external_samplers(request.app)):
        request.app.state.queue_snapshot = None
    return study_out(store, store.get_study(study.id), request)


@router.delete("/{study_id}", status_code=204)
def delete_study(request: Request, study: Study = Depends(get_study_or_404),
                 store: StudyStore = Depends(get_store),
                 settings: Settings = Depends(get_app_settings), user: Principal = Depends(current_user)):
    studies.delete_study(store, study, user.user, client_address(request), settings.storage_path,
                         external_samplers(request.app))
    return Response(status_code=204)


@router.get("/{study_id}/analysis")
def analysis(request: Request,
             target: float | None = Query(None, description="a target objective for time_to_target"),
             study: Study = Depends(get_study_or_404), store: StudyStore = Depends(get_store)):
    """Per optimizer: expected best vs number of search trials (with a bootstrap band), the EDF of
    the objective per stage, the divergence share, the objective against each searched
    hyperparameter with the stages' ranges, time per epoch and peak memory, the seed runs, and
    (with `target`) the time to reach it."""
    if target is not None and not math.isfinite(target):
        raise ApiError(422, "query.target", "must be a finite number")
    # Cached until the study changes; a repeated request waits for the one being computed.
    return Response(cached_analysis_json(request, store, study, target), media_type="application/json")


@router.get("/{study_id}/report", response_class=HTMLResponse)
def report(request: Request, study: Study = Depends(get_study_or_404), store: StudyStore = Depends(get_store)):
    """One self-contained HTML page (plots inline as SVG; it needs no network). Cached until the
    study changes; a repeated request waits for the one being computed."""
    return HTMLResponse(cached_report(request, store, [study]))


@router.get("/{study_id}/best")
def best(k: int = Query(5, ge=1, le=1000), study: Study = Depends(get_study_or_404),
         store: StudyStore = Depends(get_store)):
    return best_configs(store, study, k)


@router.get("/{study_id}/export")
def export(request: Request, format: Literal["json", "yaml"] = "json",  # noqa: A002
           k: int = Query(1, ge=1, le=1000),
           study: Study = Depends(get_study_or_404), store: StudyStore = Depends(get_store)):
    summary = optimizer_summaries(store, study)
    order = ranking({"spec": study.spec, "optimizers": summary})
    spec = study.resolved
    doc = Export(study_id=study.id, workload=spec.workload, metric=spec.metric, mode=spec.mode,
                 best=best_configs(store, study, k),
                 ranking=[o["optimizer"] for o in order],
                 seed_runs={o["optimizer"]: o["seed_runs"] for o in summary if o.get("seed_runs")},
                 # the analysis' own verdicts (cached until the study changes): seed and search level,
                 # with their audit, exactly as GET /studies/{id}/analysis serves them
                 comparisons=cached_analysis(request, store, study).get("comparisons") or [],
                 protocol_version=spec.protocol_version or protocol_version(spec.ruleset)).model_dump()
    if format == "yaml":
        return Response(yaml.safe_dump(doc, sort_keys=False), media_type="application/yaml")
    return doc
