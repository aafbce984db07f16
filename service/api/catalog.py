"""What can be tuned: workloads, and optimizers with their default spaces."""

from __future__ import annotations

from fastapi import APIRouter, Depends

import search_spaces
from workers import workloads

from ..auth import current_user

router = APIRouter(tags=["catalog"], dependencies=[Depends(current_user)])


@router.get("/workloads")
def list_workloads():
    return [{"name": w.name, "description": w.description, "metric": w.metric, "mode": w.mode,
             "default_budget": w.default_budget, "budget_limits": w.limits, "schedule": w.schedule}
            for w in map(workloads.get, workloads.names())]


@router.get("/optimizers")
def list_optimizers():
    return [{"name": n, "hyperparameters": list(search_spaces.accepted_hyperparameters(n)),
             "default_space": search_spaces.default_space(n).to_dict()}
            for n in search_spaces.optimizer_names()]
