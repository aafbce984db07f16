"""FastAPI dependencies: the study store and the runner live on app.state."""

from __future__ import annotations

from fastapi import HTTPException, Request

from ..models import Study
from ..settings import Settings
from ..store import StudyStore


def get_store(request: Request) -> StudyStore:
    return request.app.state.store


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_study_or_404(study_id: str, request: Request) -> Study:
    study = get_store(request).get_study(study_id)
    if study is None:
        raise HTTPException(404, f"study {study_id!r} not found")
    return study
