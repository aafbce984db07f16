"""The API tokens (stored only as their SHA-256; service/api/auth.py makes and checks them): insert,
list, revoke, the lookup by digest and the `last used` stamp."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.store.audit import append as append_audit
from service.store.engine import now
from service.store.models import ApiToken


def add_token(engine: Engine, user: str, admin: bool, digest: str, actor: str, client: str | None) -> int:
    """Stores a token (its digest) and its token.create audit entry in one transaction; its id."""
    with Session(engine) as s:
        row = ApiToken(user=user, admin=admin, token_hash=digest, created_at=now())
        s.add(row)
        s.flush()
        append_audit(s, actor, "token.create", str(row.id), client, {"user": user, "admin": admin})
        s.commit()
        return row.id


def list_tokens(engine: Engine) -> list[ApiToken]:
    with Session(engine) as s:
        return list(s.scalars(select(ApiToken).order_by(ApiToken.id)))


def revoke_tokens(engine: Engine, *, user: str | None, token_id: int | None, actor: str,
                  client: str | None) -> int:
    """Revokes every live token of `user`, or the token `token_id` (with an audit entry each, in
    one transaction); returns how many."""
    with Session(engine) as s:
        q = select(ApiToken).where(ApiToken.revoked_at.is_(None))
        q = q.where(ApiToken.user == user) if user is not None else q.where(ApiToken.id == token_id)
        rows = list(s.scalars(q))
        for row in rows:
            row.revoked_at = now()
            append_audit(s, actor, "token.revoke", str(row.id), client, {"user": row.user})
        s.commit()
        return len(rows)


def live_token(engine: Engine, digest: str) -> ApiToken | None:
    """The unrevoked token with this digest (one indexed read), or None."""
    with Session(engine) as s:
        return s.scalar(select(ApiToken).where(ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None)))


def touch_token(engine: Engine, token_id: int) -> None:
    """Stamps the token's `last used` time."""
    with Session(engine) as s:
        s.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now()))
        s.commit()
