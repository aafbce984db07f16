"""FastAPI dependencies: the study store and the runner live on app.state."""

from __future__ import annotations

import threading
import time

from fastapi import Depends, HTTPException, Path, Request

from service.api.auth import Principal, current_user
from service.control import admission
from service.control.external import ExternalSamplers
from service.settings import Settings
from service.store.models import Study
from service.store.study_store import StudyStore


def get_store(request: Request) -> StudyStore:
    return request.app.state.store


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def adopt_cluster_catalog(store: StudyStore = Depends(get_store)) -> None:
    """Before a submission's body is validated: what only the cluster's nodes offer becomes known
    here (a dependency of the study, suite and target-set POSTs)."""
    admission.adopt_cluster_catalog(store)


def get_study_or_404(request: Request, study_id: str = Path(max_length=64),
                     user: Principal = Depends(current_user)) -> Study:
    """The study, if the caller may see it: its owner or an admin. Another user's study answers
    exactly like a missing one (its existence is not revealed)."""
    study = get_store(request).get_study(study_id)
    if study is None or not user.owns(study.owner):
        raise HTTPException(404, f"study {study_id!r} not found")
    return study


def _cached(request: Request, name: str, max_age_s: float, compute):
    """`compute()` kept on app.state for `max_age_s`: per-poll views that need not be exact to
    the millisecond (cleared by setting the attribute to None after a change)."""
    cached = getattr(request.app.state, name, None)
    if cached is None or time.monotonic() - cached[0] > max_age_s:
        cached = (time.monotonic(), compute())
        setattr(request.app.state, name, cached)
    return cached[1]


def leader_info(request: Request) -> dict:
    """What the leading runner recorded of itself (holder, pid, dashboard_url, node_id), cached
    for 2 s: `GET /studies/{id}` shows the dashboard links on every poll, on every controller
    (a standby shows the leader's)."""
    return _cached(request, "leader_info", 2.0, lambda: get_store(request).cluster().get("runner") or {})


def queue_snapshot(request: Request) -> list[dict]:
    """The queue of active studies (service.queue), cached for 1 s: every `GET /studies/{id}` of
    an active study shows its place, and recomputing the whole queue per poll costs the API two
    grouped queries."""
    from service.control.queue_view import queue

    return _cached(request, "queue_snapshot", 1.0, lambda: queue(get_store(request)))


_samplers_created = threading.Lock()


def external_samplers(app) -> ExternalSamplers:
    """The app's one `ExternalSamplers` (the external studies' sampler state), made on first use."""
    samplers = getattr(app.state, "external_samplers", None)
    if samplers is None:
        with _samplers_created:
            samplers = getattr(app.state, "external_samplers", None)
            if samplers is None:
                samplers = app.state.external_samplers = ExternalSamplers()
    return samplers
