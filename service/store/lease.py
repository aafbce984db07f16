"""Which controller may run trials: a lease in the study store, renewed, fenced.

Any number of `rootfree serve` processes may share one database; exactly one runs trials (the
leader). The leader holds the row ``rf_lease(name="runner")`` with its holder id, a fencing
token that grows with every change of holder, and an expiry it pushes forward every
``renew_s``. A standby tries to take the lease every few seconds and gets it only once the
expiry has passed, so it takes over within ``ttl_s`` (plus one try) of the leader's death.

Fencing: every write of the runner runs `Lease.check` inside its own transaction (the store's
``fence``), which reads the row (``FOR SHARE`` on PostgreSQL, so a takeover's update waits for
the write to commit; on SQLite the runner's transactions begin with ``BEGIN IMMEDIATE``, which
holds the write lock from the check on) and raises `LeaseLost` unless this holder still holds this token and the
expiry has not passed. A paused-but-alive old leader therefore cannot write over the new one.
One exception to waiting for the expiry: the `serve` whose runner process died frees that runner's
lease at once (`release_dead_holder`), since it reaped the process and knows it is not merely paused.
And a leader that has not renewed for ``ttl_s - fence_margin_s`` stops its own trials (the
runner asks `expiring`) before any standby may take over, so no trial is run by both.

Times are UTC from the controller's clock, written by the holder and compared by the standbys:
controllers of one database are expected to keep their clocks in sync (NTP), as Optuna's
heartbeats and Kubernetes' leases expect.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.store.models import Lease as LeaseRow

NAME = "runner"


class LeaseLost(RuntimeError):
    """This controller no longer holds the runner lease: it must stop writing."""


def holder_id() -> str:
    """Who holds a lease: host, pid and a random part (a pid can be reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(t: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes for timezone-aware columns: they were written as UTC.
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


# The fence runs at the start of every runner transaction: its statement is built once.
_CHECK = (select(LeaseRow.holder, LeaseRow.token, LeaseRow.expires_at)
          .where(LeaseRow.name == bindparam("name")).with_for_update(read=True))


class Lease:
    def __init__(self, engine: Engine, holder: str | None = None, ttl_s: float = 30.0,
                 fence_margin_s: float = 5.0, name: str = NAME):
        if ttl_s <= fence_margin_s:
            raise ValueError(f"lease ttl_s ({ttl_s}) must exceed fence_margin_s ({fence_margin_s})")
        self.engine, self.name = engine, name
        self.holder = holder or holder_id()
        self.ttl_s, self.fence_margin_s = ttl_s, fence_margin_s
        self.token: int | None = None  # the fencing token while held
        self.took_over_from: str | None = None  # the previous holder, when the last acquire took over
        self.expires_at: datetime | None = None
        self._renewed_at = 0.0  # monotonic time of the last successful acquire/renew
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ holding
    def acquire(self) -> bool:
        """Takes the lease if it is free or expired (or already ours); True when held."""
        now = _now()
        expires = now + timedelta(seconds=self.ttl_s)
        with Session(self.engine) as s:
            row = s.get(LeaseRow, self.name)
            if row is None:
                s.add(LeaseRow(name=self.name, holder=self.holder, token=1, expires_at=expires,
                               acquired_at=now))
                try:
                    s.commit()
                except IntegrityError:  # another controller created it first
                    return False
                return self._held(1, expires)
            if row.holder == self.holder and row.token == self.token and _aware(row.expires_at) > now:
                return self.renew()
            if _aware(row.expires_at) > now:
                return False  # someone else holds it
            token, previous = row.token + 1, row.holder
            # Only while it is still expired: a holder that renewed since our read keeps it.
            n = s.execute(update(LeaseRow).where(LeaseRow.name == self.name, LeaseRow.token == row.token,
                                                 LeaseRow.expires_at <= now)
                          .values(holder=self.holder, token=token, expires_at=expires, acquired_at=now)
                          .execution_options(synchronize_session=False)).rowcount
            s.commit()
            if n != 1:
                return False
            self.took_over_from = previous
            return self._held(token, expires)

    def renew(self) -> bool:
        """Pushes the expiry forward; False (and no longer held) once the row's holder or token
        changed, or once it expired: an expired lease may be taken by a standby at any moment, so
        it is never extended (the runner stops and acquires it anew, with a new token)."""
        if self.token is None:
            return False
        now = _now()
        expires = now + timedelta(seconds=self.ttl_s)
        with Session(self.engine) as s:
            n = s.execute(update(LeaseRow).where(LeaseRow.name == self.name, LeaseRow.holder == self.holder,
                                                 LeaseRow.token == self.token, LeaseRow.expires_at > now)
                          .values(expires_at=expires).execution_options(synchronize_session=False)).rowcount
            s.commit()
        if n != 1:
            self._drop()
            return False
        return self._held(self.token, expires)

    def release(self) -> None:
        """Gives the lease up at once (a clean stop: a standby need not wait for the expiry)."""
        if self.token is None:
            return
        with Session(self.engine) as s:
            s.execute(update(LeaseRow).where(LeaseRow.name == self.name, LeaseRow.holder == self.holder,
                                             LeaseRow.token == self.token)
                      .values(expires_at=_now()))
            s.commit()
        self._drop()

    def _held(self, token: int, expires: datetime) -> bool:
        with self._lock:
            self.token, self.expires_at, self._renewed_at = token, expires, time.monotonic()
        return True

    def _drop(self) -> None:
        with self._lock:
            self.token, self.expires_at = None, None

    @property
    def held(self) -> bool:
        return self.token is not None

    def expiring(self) -> bool:
        """True when this holder has not renewed for so long that a standby may take over soon:
        the runner stops its trials then, so no trial runs under two leaders."""
        return self.token is None or time.monotonic() - self._renewed_at > self.ttl_s - self.fence_margin_s

    # ------------------------------------------------------------------ fencing
    def check(self, session: Session) -> None:
        """Raises LeaseLost unless this holder still holds the lease (inside the caller's
        transaction, so the write that follows is fenced)."""
        token = self.token
        if token is None:
            raise LeaseLost(f"{self.holder} does not hold the runner lease")
        row = session.execute(_CHECK, {"name": self.name}).first()
        if row is None or row.holder != self.holder or row.token != token:
            self._drop()
            raise LeaseLost(f"the runner lease is held by {row.holder if row else 'nobody'} now")
        if _aware(row.expires_at) <= _now():
            raise LeaseLost("the runner lease has expired")


def release_dead_holder(engine: Engine, holder: str, name: str = NAME) -> bool:
    """Expires the lease at once if `holder` still holds it; True when it did. Only for the process
    that started that holder and saw it exit (the `serve` that supervises its runner): a standby
    cannot tell a dead leader from a paused one and waits for the expiry, but a parent that reaped
    its child knows. The next holder's token is still one higher, so nothing of the dead one's
    could write after it anyway."""
    now = _now()
    with Session(engine) as s:
        n = s.execute(update(LeaseRow).where(LeaseRow.name == name, LeaseRow.holder == holder,
                                             LeaseRow.expires_at > now)
                      .values(expires_at=now).execution_options(synchronize_session=False)).rowcount
        s.commit()
    return n == 1


def current(engine: Engine, name: str = NAME) -> dict | None:
    """The lease row as the API shows it (holder, token, expires_at), or None."""
    with Session(engine) as s:
        row = s.get(LeaseRow, name)
        if row is None:
            return None
        return {"holder": row.holder, "token": row.token, "expires_at": _aware(row.expires_at),
                "acquired_at": _aware(row.acquired_at)}
