"""Who is calling: bearer tokens, users, the admin role, and the audit trail.

Tokens are 256-bit random strings shown once at creation and stored only as their SHA-256 (a
random 256-bit secret needs no slow hash: there is nothing to guess; the digest is the lookup
key, so checking a token is one indexed read, cached for `CACHE_S`). Each carries a user name
and an admin flag. `current_user` is the one FastAPI dependency every router uses; with
``ROOTFREE_AUTH=none`` (a loopback-only development server) everyone is the local admin.

Ownership: a study records its owner; a user sees and acts on their own studies only (another
user's study answers 404, so its existence is not revealed); admins see and act on all.

The SQL is the store's: service/store/tokens.py (the token rows), service/store/audit.py (the trail).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass

from fastapi import HTTPException, Request
from sqlalchemy.engine import Engine

from service.store import tokens as token_rows
from service.store.audit import append as audit  # the routers and the runner append through this name
from service.store.models import ApiToken

__all__ = ["CACHE_S", "LAST_USED_EVERY_S", "LOCAL_ADMIN", "TOKEN_PREFIX", "USER_NAME", "Principal", "TokenCache",
           "audit", "client_address", "create_token", "current_user", "fold_user", "list_tokens", "new_token",
           "require_admin", "revoke_tokens", "token_hash", "unauthorized"]

TOKEN_PREFIX = "rf_"
# User names: plain ASCII, no ":" or spaces (a name is shown, logged and compared; issue 19). Stores
# from before this rule may hold other names: they keep working, only new ones are refused.
USER_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
CACHE_S = 2.0  # a revoked token stops working within this long on every controller
LAST_USED_EVERY_S = 60.0  # `last used` is written at most this often per token (no write per call)


@dataclass(frozen=True)
class Principal:
    user: str
    admin: bool
    token_id: int | None = None

    def owns(self, owner: str | None) -> bool:
        # Plain equality: names are not secrets, and compare_digest raises on non-ASCII str.
        return self.admin or (owner is not None and owner == self.user)


LOCAL_ADMIN = Principal("local", admin=True)


def fold_user(name: str) -> str:
    """User names compare case-insensitively: `Alice` and `alice` are one user, stored folded
    (migration 0014 folded the names stored before; issue 30)."""
    return name.casefold()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)  # 256 bits


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(engine: Engine, user: str, admin: bool = False, actor: str = "cli",
                 client: str | None = None) -> tuple[str, int]:
    """Makes a token for `user`; returns (the token, shown this once; its id)."""
    user = user.strip()
    # checked as typed, then folded: casefold maps some non-ASCII letters onto ASCII ones (U+017F
    # long s -> "s", U+212A Kelvin sign -> "k"), which would make "ſam" another name for "sam"
    if not USER_NAME.fullmatch(user):
        raise ValueError(f"user {user!r}: a user name is 1 to 64 of the characters A-Z a-z 0-9 . _ @ - "
                         "(letters, digits, dot, underscore, at sign, hyphen)")
    user = fold_user(user)
    token = new_token()
    return token, token_rows.add_token(engine, user, admin, token_hash(token), actor, client)


def list_tokens(engine: Engine) -> list[ApiToken]:
    return token_rows.list_tokens(engine)


def revoke_tokens(engine: Engine, *, user: str | None = None, token_id: int | None = None,
                  actor: str = "cli", client: str | None = None) -> int:
    """Revokes every live token of `user`, or the token `token_id`; returns how many."""
    if (user is None) == (token_id is None):
        raise ValueError("give exactly one of user or token id")
    return token_rows.revoke_tokens(engine, user=None if user is None else fold_user(user.strip()),
                                    token_id=token_id, actor=actor, client=client)


class TokenCache:
    """token hash -> Principal (or None for unknown/revoked), kept `CACHE_S`."""

    def __init__(self, engine: Engine, ttl_s: float = CACHE_S):
        self.engine, self.ttl_s = engine, ttl_s
        self._entries: dict[str, tuple[float, Principal | None]] = {}
        self._used: dict[int, float] = {}
        self._lock = threading.Lock()

    def last_known(self, token: str) -> Principal | None:
        """What the last successful lookup of `token` found, however old (None: never found or
        revoked): for /healthz, which must tell an admin the details while the database is down."""
        with self._lock:
            hit = self._entries.get(token_hash(token))
        return hit[1] if hit is not None else None

    def lookup(self, token: str) -> Principal | None:
        digest = token_hash(token)
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(digest)
        if hit is not None and now - hit[0] < self.ttl_s:
            principal = hit[1]
        else:
            row = token_rows.live_token(self.engine, digest)
            principal = Principal(row.user, row.admin, row.id) if row else None
            with self._lock:
                if len(self._entries) > 10_000:  # bounded: a flood of wrong tokens costs no memory
                    self._entries.clear()
                self._entries[digest] = (now, principal)
        if principal is None:
            return None
        with self._lock:  # one request writes `last used`, not every request of a burst
            due = now - self._used.get(principal.token_id, -1e9) > LAST_USED_EVERY_S
            if due:
                self._used[principal.token_id] = now
        if due:
            token_rows.touch_token(self.engine, principal.token_id)
        return principal


def unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


def current_user(request: Request) -> Principal:
    """The FastAPI dependency: the caller, from `Authorization: Bearer <token>`."""
    settings = request.app.state.settings
    if settings.auth == "none":
        return LOCAL_ADMIN
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("authentication required: send Authorization: Bearer <token> "
                           "(rootfree token create --user NAME makes one)")
    principal = request.app.state.tokens.lookup(token.strip())
    if principal is None:
        raise unauthorized("the token is not valid (unknown or revoked)")
    request.state.principal = principal
    return principal


def require_admin(request: Request) -> Principal:
    principal = current_user(request)
    if not principal.admin:
        raise HTTPException(403, "this needs an admin token")
    return principal


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None
