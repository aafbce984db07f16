"""The /audit resource: the trail of state changes (admins only)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from service.api.auth import Principal, require_admin
from service.api.deps import get_store
from service.store import audit as audit_trail
from service.store.study_store import StudyStore

router = APIRouter(tags=["audit"])


@router.get("/audit")
def read_audit(limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=10**9),
               _: Principal = Depends(require_admin), store: StudyStore = Depends(get_store)):
    """Newest first: time, actor, action (study.create, study.cancel, study.delete, token.create,
    token.revoke, runner.takeover), target id, client address."""
    rows, total = audit_trail.page(store.engine, limit, offset)
    items = [{"id": r.id, "at": r.at, "actor": r.actor, "action": r.action, "target": r.target,
              "client": r.client, "detail": r.detail} for r in rows]
    return {"items": items, "total": total, "limit": limit, "offset": offset}
