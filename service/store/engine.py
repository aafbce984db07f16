"""The database under the study store: the engine (SQLite in WAL mode, or any SQLAlchemy URL such
as PostgreSQL), the Alembic migrations, the base every part of the store builds on, and what a
caller needs to tell an outage from a bug (`StoreUnavailable`, `transient`)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, make_url
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"


class MigrationRefused(RuntimeError):
    """A migration found data it must not change on its own (it names what, for the operator)."""


class StoreUnavailable(RuntimeError):
    """The database named by the settings cannot be reached."""


def make_engine(url: str, immediate: bool = False) -> Engine:
    """An engine for `url`. ``immediate`` (SQLite only): every transaction starts with BEGIN
    IMMEDIATE, so its first statement already holds the database's write lock (the runner's
    fenced transactions: the lease check and the write that follows are one transaction; Python's
    sqlite3 would otherwise begin only at the first write, after the check). WAL readers are
    not blocked by it."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # No pre-ping: a connection to a file cannot go stale, and the ping is a round trip on
        # every checkout (three or four per GET /studies/{id}).
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        # As many pooled connections as the API's thread pool runs handlers (anyio's 40): an
        # overflow connection is opened (with its PRAGMAs) and closed again on every request.
        if make_url(url).database not in (None, "", ":memory:"):  # a file (memory: one connection)
            kwargs.update(pool_size=40, max_overflow=20)
    else:
        kwargs.update(pool_size=20, max_overflow=20, pool_pre_ping=True)
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # WAL: readers never block the writer
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
            if immediate:  # SQLAlchemy's pysqlite recipe: we emit BEGIN, not the driver
                dbapi_conn.isolation_level = None

        if immediate:
            @event.listens_for(engine, "begin")
            def _begin_immediate(conn):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
    return engine


def migrate(engine: Engine) -> None:
    """Brings the schema to the newest Alembic revision."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()
    except OperationalError as e:
        raise StoreUnavailable(
            f"cannot reach the study database {engine.url.render_as_string(hide_password=True)}: "
            f"{e.orig}") from None


def now() -> datetime:
    return datetime.now(UTC)


def transient(e: BaseException) -> bool:
    """A database error worth retrying: the server is down or restarting, a connection was cut,
    SQLite is busy. Not: a constraint or a programming error."""
    if isinstance(e, OperationalError | InterfaceError):
        return True
    return isinstance(e, DBAPIError) and bool(e.connection_invalidated)


class StoreBase:
    """What every repository of the study store (one per table group: studies.py, trials.py, ...)
    and the `StudyStore` facade over them share: the URL, the engine and the sessions every
    transaction opens through (`session()`: the runner's store swaps in fenced ones with
    `with_sessions`, so no part may open a session another way)."""

    def __init__(self, url: str, engine: Engine, sessions: sessionmaker):
        self.url, self.engine, self.sessions = url, engine, sessions

    def session(self) -> Session:
        return self.sessions()

    def with_sessions(self, sessions: sessionmaker):
        """This store with its transactions opened through `sessions` (the same engine)."""
        other = copy.copy(self)
        other.sessions = sessions
        return other
