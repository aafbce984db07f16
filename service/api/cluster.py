"""The /cluster resource: the Ray cluster's nodes and resources as the runner last recorded them,
and the queue of active studies in the order the scheduler serves them."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from service.api.auth import Principal, current_user
from service.api.deps import get_store
from service.api.schemas import ClusterOut
from service.control.queue_view import queue
from service.store.study_store import StudyStore

router = APIRouter(tags=["cluster"])


@router.get("/cluster", response_model=ClusterOut)
def cluster(store: StudyStore = Depends(get_store), user: Principal = Depends(current_user)):
    """Everyone sees the whole queue (where their studies stand); another user's studies show
    only their place, priority and counts, not their id, name or owner (unless the caller is an
    admin)."""
    record = store.cluster()
    entries = queue(store)
    for e in entries:
        if not user.owns(e.pop("owner")):
            e.update(study_id="-", name="(another user's study)")
    return ClusterOut(
        nodes=record.get("nodes", []),
        resources={"total": record.get("total", {}), "available": record.get("available", {})},
        queue=entries, updated_at=record.get("updated_at"))
