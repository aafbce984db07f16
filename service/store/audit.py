"""The audit trail: who changed what, when, from where (appended by the API, the CLI and the
runner; read by `GET /audit`)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.store.engine import now
from service.store.models import AuditEntry


def append(engine_or_session, actor: str, action: str, target: str | None = None,
           client: str | None = None, detail: dict | None = None) -> None:
    """Appends one entry to the audit trail (in the caller's session when given one)."""
    entry = AuditEntry(at=now(), actor=actor, action=action, target=target, client=client, detail=detail or {})
    if isinstance(engine_or_session, Session):
        engine_or_session.add(entry)
        return
    with Session(engine_or_session) as s:
        s.add(entry)
        s.commit()


def page(engine: Engine, limit: int, offset: int) -> tuple[list[AuditEntry], int]:
    """A page of entries, newest first, and how many there are in all."""
    with Session(engine) as s:
        total = s.scalar(select(func.count()).select_from(AuditEntry)) or 0
        rows = list(s.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit).offset(offset)))
    return rows, total


def deleted_study_owner(engine: Engine, study_id: str, user) -> bool:
    """Whether the audit trail records the deletion of study `study_id` owned by `user` (a
    Principal; an admin: anyone's). A claimant's late call on a deleted study answers 410."""
    with Session(engine) as s:
        rows = s.scalars(select(AuditEntry.detail).where(AuditEntry.action == "study.delete",
                                                         AuditEntry.target == study_id).limit(5))
        return any(user.owns((d or {}).get("owner")) for d in rows)
