"""FastAPI dependencies: the study store and the runner live on app.state."""

from __future__ import annotations

import time

from fastapi import Depends, HTTPException, Path, Request

from ..auth import Principal, current_user
from ..models import Study
from ..settings import Settings
from ..store import StudyStore


def get_store(request: Request) -> StudyStore:
    return request.app.state.store


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_study_or_404(request: Request, study_id: str = Path(max_length=64),
                     user: Principal = Depends(current_user)) -> Study:
    """The study, if the caller may see it: its owner or an admin. Another user's study answers
    exactly like a missing one (its existence is not revealed)."""
    study = get_store(request).get_study(study_id)
    if study is None or not user.owns(study.owner):
        raise HTTPException(404, f"study {study_id!r} not found")
    return study


def leader_info(request: Request, max_age_s: float = 2.0) -> dict:
    """What the leading runner recorded of itself (holder, pid, dashboard_url, node_id), cached
    for a moment: `GET /studies/{id}` shows the dashboard links on every poll, on every
    controller (a standby shows the leader's)."""
    cached = getattr(request.app.state, "leader_info", None)
    if cached is None or time.monotonic() - cached[0] > max_age_s:
        cached = (time.monotonic(), get_store(request).cluster().get("runner") or {})
        request.app.state.leader_info = cached
    return cached[1]


def queue_snapshot(request: Request, max_age_s: float = 1.0) -> list[dict]:
    """The queue of active studies (service.queue), cached for a moment: every `GET /studies/{id}`
    of an active study shows its place, and recomputing the whole queue per poll costs the API
    two grouped queries."""
    from ..queue import queue

    cached = getattr(request.app.state, "queue_snapshot", None)
    if cached is None or time.monotonic() - cached[0] > max_age_s:
        cached = (time.monotonic(), queue(get_store(request)))
        request.app.state.queue_snapshot = cached
    return cached[1]
