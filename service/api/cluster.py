"""The /cluster resource: the Ray cluster's nodes and resources as the runner last recorded them,
and the queue of active studies in the order the scheduler serves them."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ..queue import queue
from ..schemas import ClusterOut
from ..store import StudyStore
from .deps import get_store

router = APIRouter(tags=["cluster"])


@router.get("/cluster", response_model=ClusterOut)
def cluster(store: StudyStore = Depends(get_store)):
    record = store.cluster()
    return ClusterOut(
        nodes=record.get("nodes", []),
        resources={"total": record.get("total", {}), "available": record.get("available", {})},
        queue=queue(store), updated_at=record.get("updated_at"))
