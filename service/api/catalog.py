"""What can be tuned: workloads, optimizers with their default spaces, and a health check."""

from __future__ import annotations

from fastapi import APIRouter, Depends

import search_spaces
from workers import workloads

from ..store import StudyStore
from .deps import get_store

router = APIRouter(tags=["catalog"])


@router.get("/workloads")
def list_workloads():
    return [{"name": w.name, "description": w.description, "metric": w.metric, "mode": w.mode,
             "default_budget": w.default_budget, "schedule": w.schedule}
            for w in map(workloads.get, workloads.names())]


@router.get("/optimizers")
def list_optimizers():
    return [{"name": n, "hyperparameters": list(search_spaces.accepted_hyperparameters(n)),
             "default_space": search_spaces.default_space(n).to_dict()}
            for n in search_spaces.optimizer_names()]


@router.get("/healthz")
def healthz(store: StudyStore = Depends(get_store)):
    store.list_studies(None, 1, 0)  # the database answers
    return {"status": "ok"}
