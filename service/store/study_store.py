"""The SQL study store: engine setup, Alembic migrations, and the repository the API and the
runner use. SQLite (WAL mode) by default, any SQLAlchemy URL (PostgreSQL) through one setting.

Every reported trial result is committed as it arrives, so nothing a worker reported is lost when
a process dies. The runner's Optuna view (service/followers/optuna_view.py) mirrors the studies into Optuna
studies in the same database (Optuna's RDBStorage), named ``<study name>/<optimizer>``, so
``optuna-dashboard <url>`` shows them live with Optuna's plots and parameter importances.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import case, create_engine, delete, event, false, func, literal, select, text, tuple_, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import flag_modified

from service.spec import ResolvedSpec, spec_json
from service.statuses import ACTIVE, FINISHED, RESULTS, TERMINAL
from service.store.models import AuditEntry, ClusterRecord, Report, Study, Suite, Trial

log = logging.getLogger("rootfree.store")
MIGRATIONS = Path(__file__).parent / "migrations"


def _or_inf(x: float | None) -> float:
    return math.inf if x is None else x


class StoreUnavailable(RuntimeError):
    """The database named by the settings cannot be reached."""


class QuotaExceeded(RuntimeError):
    """The owner already has `active` queued or running studies, the limit is `limit`."""

    def __init__(self, active: int, limit: int):
        super().__init__(f"{active} active studies, the limit is {limit}")
        self.active, self.limit = active, limit


ADMISSION_LOCK = 0x7266  # the namespace of the per-owner advisory locks on PostgreSQL ("rf")


def lock_owner(s: Session, owner: str | None) -> None:
    """Serialises one owner's admissions until the session's transaction ends: PostgreSQL takes a
    transaction-scoped advisory lock on a hash of the name (other owners are not held up); SQLite
    has one writer anyway and takes its write lock now (BEGIN IMMEDIATE), so the count that
    follows sees every study committed before it."""
    conn = s.connection()
    if conn.dialect.name == "postgresql":
        digest = hashlib.sha256((owner or "").encode()).digest()
        conn.execute(text("SELECT pg_advisory_xact_lock(:ns, :key)"),
                     {"ns": ADMISSION_LOCK, "key": int.from_bytes(digest[:4], "big", signed=True)})
    elif conn.dialect.name == "sqlite":
        if not conn.connection.driver_connection.in_transaction:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:  # a transaction is already open (deferred): its first write takes the write lock
            conn.execute(update(Study).where(false()).values(status=Study.status))


CLAIM_LOCK = 0x7263  # the namespace of the per-study claim locks on PostgreSQL


def lock_study_claims(s: Session, study_id: str) -> None:
    """Serialises the claims of one external study until the transaction ends (its running count
    and the claim that follows are one decision): PostgreSQL takes a transaction-scoped advisory
    lock on a hash of the study id; SQLite takes the database's write lock, as `lock_owner`."""
    conn = s.connection()
    if conn.dialect.name == "postgresql":
        digest = hashlib.sha256(study_id.encode()).digest()
        conn.execute(text("SELECT pg_advisory_xact_lock(:ns, :key)"),
                     {"ns": CLAIM_LOCK, "key": int.from_bytes(digest[:4], "big", signed=True)})
    else:
        lock_owner(s, None)


def _active_studies(s: Session, owner: str | None) -> int:
    """The owner's queued or running studies (counted under `lock_owner`, in the insert's transaction)."""
    return s.scalar(select(func.count()).select_from(Study).where(
        Study.status.in_(ACTIVE),
        Study.owner.is_(None) if owner is None else Study.owner == owner)) or 0


def make_engine(url: str, immediate: bool = False) -> Engine:
    """An engine for `url`. ``immediate`` (SQLite only): every transaction starts with BEGIN
    IMMEDIATE, so its first statement already holds the database's write lock (the runner's
    fenced transactions: the lease check and the write that follows are one transaction; Python's
    sqlite3 would otherwise begin only at the first write, after the check). WAL readers are
    not blocked by it."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs.update(pool_size=20, max_overflow=20)
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


class StudyStore:
    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        migrate(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def session(self) -> Session:
        return self.sessions()

    # ------------------------------------------------------------------ studies
    def create_study(self, spec: ResolvedSpec, idempotency_key: str | None, owner: str | None = None,
                     audit: dict[str, Any] | None = None, max_active: int | None = None) -> tuple[Study, bool]:
        """Returns (study, created). A repeated idempotency key (per owner: one user's key never
        returns another user's study) returns the first study. `audit` (actor, client) writes the
        study.create entry in the same transaction. With `max_active`, raises `QuotaExceeded` when
        the owner already has that many queued or running studies; the count and the insert are
        one transaction under a per-owner lock, so parallel requests cannot all pass the count."""
        spec = spec_json(spec)
        key = idempotency_key or None
        # The owner and the key are two columns, unique as a pair (never one joined string: user
        # names may contain ":").
        same_key = (Study.idempotency_key == key,
                    Study.owner.is_(None) if owner is None else Study.owner == owner)
        with self.session() as s:
            if max_active is not None or key:
                lock_owner(s, owner)
            if key:
                existing = s.scalar(select(Study).where(*same_key))
                if existing:
                    return existing, False
            if max_active is not None:
                active = _active_studies(s, owner)
                if active >= max_active:
                    raise QuotaExceeded(active, max_active)
            study = Study(id=str(uuid.uuid4()), name=spec["name"], status="queued", spec=spec,
                          stage_spaces={}, notes=[], idempotency_key=key, owner=owner)
            s.add(study)
            if audit is not None:
                s.add(AuditEntry(at=now(), action="study.create", target=study.id, detail={"name": spec["name"]},
                                 **audit))
            try:
                s.commit()
            except IntegrityError:  # a concurrent retry with the same key won the race
                s.rollback()
                return s.scalar(select(Study).where(*same_key)), False
            return study, True

    def create_suite(self, spec: dict[str, Any], study_specs: list[ResolvedSpec], idempotency_key: str | None,
                     owner: str | None = None, audit: dict[str, Any] | None = None,
                     max_active: int | None = None) -> tuple[Suite, bool]:
        """The suite and its studies (queued, in the order of `study_specs`) in one transaction;
        returns (suite, created). A repeated idempotency key (per owner: the pair is unique, as for
        studies) returns the first suite. With `max_active`, raises `QuotaExceeded` when the owner's
        queued or running studies plus the suite's would pass it: counted under the same per-owner
        lock as a study's admission, so parallel submissions cannot all pass the count."""
        study_specs = [spec_json(s) for s in study_specs]
        key = idempotency_key or None
        same_key = (Suite.idempotency_key == key,
                    Suite.owner.is_(None) if owner is None else Suite.owner == owner)
        with self.session() as s:
            if max_active is not None or key:
                lock_owner(s, owner)
            if key:
                existing = s.scalar(select(Suite).where(*same_key))
                if existing:
                    return existing, False
            if max_active is not None:
                active = _active_studies(s, owner)
                if active + len(study_specs) > max_active:
                    raise QuotaExceeded(active, max_active)
            suite = Suite(id=str(uuid.uuid4()), name=spec["name"], spec=spec, owner=owner,
                          idempotency_key=key, created_at=now())
            ids = [str(uuid.uuid4()) for _ in study_specs]
            suite.spec = {**spec, "study_ids": ids}  # workload entry i -> its study, even after a deletion
            s.add(suite)
            s.flush()
            for i, (sid, study_spec) in enumerate(zip(ids, study_specs, strict=True)):
                # created_at one microsecond apart: the queue (oldest first) keeps the suite's order
                s.add(Study(id=sid, name=study_spec["name"], status="queued", spec=study_spec,
                            stage_spaces={}, notes=[], owner=owner, suite_id=suite.id,
                            created_at=suite.created_at + timedelta(microseconds=i)))
            if audit is not None:
                s.add(AuditEntry(at=now(), action="suite.create", target=suite.id,
                                 detail={"name": spec["name"], "studies": len(study_specs)}, **audit))
            try:
                s.commit()
            except IntegrityError:  # a concurrent retry with the same key won the race
                s.rollback()
                return s.scalar(select(Suite).where(*same_key)), False
            return suite, True

    def get_suite(self, suite_id: str) -> Suite | None:
        with self.session() as s:
            return s.get(Suite, suite_id)

    def suite_studies(self, suite_id: str) -> list[Study | None]:
        """The suite's studies in the order of its workload entries (None: deleted since)."""
        with self.session() as s:
            suite = s.get(Suite, suite_id)
            if suite is None:
                return []
            rows = {st.id: st for st in s.scalars(select(Study).where(Study.suite_id == suite_id))}
            return [rows.get(sid) for sid in suite.spec.get("study_ids", [])]

    def get_study(self, study_id: str) -> Study | None:
        with self.session() as s:
            return s.get(Study, study_id)

    def list_studies(self, status: str | None, limit: int, offset: int,
                     owner: str | None = None) -> tuple[list[Study], int]:
        """A page of studies, newest first (only `owner`'s when given)."""
        with self.session() as s:
            q = select(Study)
            if status:
                q = q.where(Study.status == status)
            if owner is not None:
                q = q.where(Study.owner == owner)
            total = s.scalar(select(func.count()).select_from(q.subquery()))
            rows = s.scalars(q.order_by(Study.created_at.desc()).limit(limit).offset(offset))
            return list(rows), total or 0

    def studies_with_status(self, *statuses: str) -> list[Study]:
        with self.session() as s:
            return list(s.scalars(select(Study).where(Study.status.in_(statuses))
                                  .order_by(Study.created_at)))

    def set_status(self, study_id: str, status: str, *, only_from: tuple[str, ...] = (),
                   error: str | None = None) -> bool:
        values: dict[str, Any] = {"status": status, "updated_at": now()}
        if status == "running":
            values["started_at"] = now()
        if status in TERMINAL:
            values["finished_at"] = now()
        if error is not None:
            values["error"] = error
        with self.session() as s:
            q = update(Study).where(Study.id == study_id)
            if only_from:
                q = q.where(Study.status.in_(only_from))
            n = s.execute(q.values(**values)).rowcount
            s.commit()
            return n > 0

    def save_stage_space(self, study_id: str, optimizer: str, stage: int, space: dict,
                         notes: list[str]) -> None:
        with self.session() as s:
            study = s.get(Study, study_id)
            spaces = copy.deepcopy(study.stage_spaces or {})  # a new value: JSON is not tracked
            spaces.setdefault(optimizer, {})[str(stage)] = space
            study.stage_spaces = spaces
            flag_modified(study, "stage_spaces")
            study.notes = list(study.notes or []) + [f"{optimizer} stage {stage}: {n}" for n in notes]
            s.commit()

    def delete_study(self, study_id: str) -> None:
        """The study, its trials and their reports: three bulk statements in one transaction (an
        ORM cascade would load every trial and report row first)."""
        trial_ids = select(Trial.id).where(Trial.study_id == study_id).scalar_subquery()
        with self.engine.begin() as conn:
            conn.execute(delete(Report).where(Report.trial_id.in_(trial_ids)))
            conn.execute(delete(Trial).where(Trial.study_id == study_id))
            conn.execute(delete(Study).where(Study.id == study_id))

    # ------------------------------------------------------------------ trials
    def ensure_trials(self, study_id: str, optimizer: str, stage: int,
                      configs: list[dict[str, Any]], seeds: list[int] | None = None) -> int:
        """Creates the stage's trials that do not exist yet (pending), trial i training with
        seeds[i]; returns how many it created."""
        created = 0
        with self.session() as s:
            have = set(s.scalars(select(Trial.index).where(
                Trial.study_id == study_id, Trial.optimizer == optimizer, Trial.stage == stage)))
            for i, cfg in enumerate(configs):
                if i not in have:
                    s.add(Trial(study_id=study_id, optimizer=optimizer, stage=stage, index=i,
                                config=cfg, status="pending", metrics={}, runs=0,
                                seed=seeds[i] if seeds else None))
                    created += 1
            s.commit()
        return created

    def claim_pending(self, study_id: str, optimizer: str, stage: int, claim: str | None = None) -> Trial | None:
        """Claims the lowest-index unclaimed pending trial of a group for the runner and returns it
        (None when the group has none left). The trial stays `pending` until its worker starts it
        (`mark_started`): the store says `running` only of what runs. The conditional update makes
        the claim exclusive; `claim` makes it idempotent: a retry of a claim whose commit landed
        but whose answer was lost (a failover) returns the trial that claim took, not a second."""
        claim = claim or uuid.uuid4().hex
        with self.session() as s:
            mine = s.scalar(select(Trial).where(Trial.claim == claim))
            if mine is not None:
                return mine
            for _ in range(3):
                t = s.scalar(select(Trial).where(
                    Trial.study_id == study_id, Trial.optimizer == optimizer, Trial.stage == stage,
                    Trial.status == "pending", Trial.claim.is_(None)).order_by(Trial.index).limit(1))
                if t is None:
                    return None
                n = s.execute(update(Trial).where(Trial.id == t.id, Trial.status == "pending",
                                                  Trial.claim.is_(None))
                              .values(claim=claim).execution_options(synchronize_session=False)).rowcount
                s.commit()
                if n:
                    s.refresh(t)
                    return t
            return None

    def release_trial(self, trial_id: int) -> None:
        """A claimed trial that did not finish goes back to pending, unclaimed (the runner stops)."""
        with self.session() as s:
            s.execute(update(Trial).where(Trial.id == trial_id, Trial.status.in_(("running", "pending")))
                      .values(status="pending", claim=None))
            s.commit()

    def reset_interrupted(self, study_id: str) -> int:
        """Trials that were running (or claimed) when the controller died run again; returns how
        many were running."""
        with self.session() as s:
            n = s.execute(update(Trial).where(Trial.study_id == study_id,
                                              Trial.status == "running")
                          .values(status="pending", claim=None)).rowcount
            s.execute(update(Trial).where(Trial.study_id == study_id, Trial.status == "pending",
                                          Trial.claim.is_not(None)).values(claim=None))
            s.commit()
            return n

    def trials(self, study_id: str, optimizer: str | None = None, stage: int | None = None,
               status: str | None = None, limit: int | None = None, offset: int = 0,
               after: Trial | None = None) -> list[Trial]:
        """Trials in (optimizer, stage, index) order; `after`: only those after that trial (keyset
        pagination: an index range, however deep the page)."""
        with self.session() as s:
            q = select(Trial).where(Trial.study_id == study_id)
            if after is not None:
                q = q.where(tuple_(Trial.optimizer, Trial.stage, Trial.index)
                            > tuple_(literal(after.optimizer), literal(after.stage), literal(after.index)))
            if optimizer:
                q = q.where(Trial.optimizer == optimizer)
            if stage is not None:
                q = q.where(Trial.stage == stage)
            if status:
                q = q.where(Trial.status == status)
            q = q.order_by(Trial.optimizer, Trial.stage, Trial.index)
            if offset:
                q = q.offset(offset)
            if limit is not None:
                q = q.limit(limit)
            return list(s.scalars(q))

    def best_trials(self, study_id: str, mode: str, k: int, max_stage: int | None = None) -> dict[str, list[Any]]:
        """The top-k completed trials of every optimizer, best first (ties: stage, then index),
        as rows with id, optimizer, stage, index, objective, config.

        One windowed query, without the per-epoch histories: `GET /studies/{id}` runs it on every
        poll, and a paper-sized study holds hundreds of trials (bench/api_latency.py)."""
        return self.best_trials_many({study_id: (mode, k, max_stage)}).get(study_id, {})

    def best_trials_many(self, wanted: dict[str, tuple[str, int, int | None]]) -> dict[str, dict[str, list[Any]]]:
        """`best_trials` of several studies in one query: study id -> (mode, k, max_stage) ->
        study id -> optimizer -> rows (a page of `GET /studies` costs one query, not one per study)."""
        if not wanted:
            return {}

        def per_study(values: dict[str, Any]):  # a constant for one study, else CASE on study_id
            if len(values) == 1:
                return literal(next(iter(values.values())))
            return case(values, value=Trial.study_id)

        sign = per_study({sid: -1.0 if mode == "max" else 1.0 for sid, (mode, _, _) in wanted.items()})
        top = per_study({sid: k for sid, (_, k, _) in wanted.items()})
        # Trials that went further first (a trial ASHA stopped early is compared with its peers at
        # the highest rung it reached), then the objective.
        rank = func.row_number().over(partition_by=(Trial.study_id, Trial.optimizer),
                                      order_by=(Trial.epochs.desc(), sign * Trial.objective, Trial.stage,
                                                Trial.index)).label("rank")
        stage_caps = {sid: ms for sid, (_, _, ms) in wanted.items() if ms is not None}
        where = [Trial.study_id.in_(list(wanted)), Trial.status.in_(RESULTS), Trial.objective.is_not(None)]
        if stage_caps:
            where.append(Trial.stage <= per_study({sid: stage_caps.get(sid, 2**30) for sid in wanted}))
        ranked = (select(Trial.study_id, Trial.id, Trial.optimizer, Trial.stage, Trial.index, Trial.objective,
                         top.label("top"), rank)
                  .where(*where).subquery())
        # The configs (JSON) of the top rows only, not of every row the window sorts.
        q = (select(ranked.c.study_id, ranked.c.id, ranked.c.optimizer, ranked.c.stage, ranked.c.index,
                    ranked.c.objective, Trial.config, ranked.c.rank)
             .join(Trial, Trial.id == ranked.c.id).where(ranked.c.rank <= ranked.c.top)
             .order_by(ranked.c.study_id, ranked.c.optimizer, ranked.c.rank))
        out: dict[str, dict[str, list[Any]]] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(q):
                out.setdefault(row.study_id, {}).setdefault(row.optimizer, []).append(row)
        return out

    def seed_trials_many(self, stages: dict[str, int]) -> list[Any]:
        """The trials of one stage per study (study id -> stage: the seed re-runs), as rows with
        study_id, optimizer, status, objective, seed, in one query."""
        if not stages:
            return []
        stage = (literal(next(iter(stages.values()))) if len(stages) == 1
                 else case(stages, value=Trial.study_id))
        q = (select(Trial.study_id, Trial.optimizer, Trial.status, Trial.objective, Trial.seed)
             .where(Trial.study_id.in_(list(stages)), Trial.stage == stage)
             .order_by(Trial.study_id, Trial.optimizer, Trial.index))
        with self.engine.connect() as conn:
            return list(conn.execute(q))

    def count_trials_many(self, study_ids: list[str]) -> list[tuple[str, str, int, str, int]]:
        """(study id, optimizer, stage, status, count) of several studies, in one query."""
        if not study_ids:
            return []
        with self.engine.connect() as conn:
            return list(conn.execute(
                select(Trial.study_id, Trial.optimizer, Trial.stage, Trial.status, func.count())
                .where(Trial.study_id.in_(study_ids))
                .group_by(Trial.study_id, Trial.optimizer, Trial.stage, Trial.status)).all())

    def trial(self, study_id: str, trial_id: int) -> Trial | None:
        with self.session() as s:
            t = s.get(Trial, trial_id)
            return t if t is not None and t.study_id == study_id else None

    def count_trials(self, study_id: str) -> list[tuple[str, int, str, int]]:
        with self.session() as s:
            return list(s.execute(
                select(Trial.optimizer, Trial.stage, Trial.status, func.count())
                .where(Trial.study_id == study_id)
                .group_by(Trial.optimizer, Trial.stage, Trial.status)).all())

    def mark_started(self, trial_id: int) -> None:
        """The trial's worker has started it: a claimed (pending) trial is `running` from now on
        (a restart after a worker failure only moves `started_at`)."""
        with self.session() as s:
            t = s.get(Trial, trial_id)
            if t.status == "pending":
                t.status, t.started_at, t.runs = "running", now(), t.runs + 1
                s.commit()
            elif t.status == "running":
                t.started_at = now()
                s.commit()

    def record_result(self, trial_id: int, row: dict[str, Any], metric: str) -> None:
        """Stores one per-epoch report (a row; a repeated epoch replaces the earlier row, so no
        epoch appears twice); a final report (status completed/diverged) finishes the trial."""
        with self.session() as s:
            t = s.get(Trial, trial_id)
            if t is None or t.status in FINISHED:
                return  # never overwrite a finished trial (a duplicate report after a restart)
            epoch = int(row.get("epoch") or 0)
            s.execute(delete(Report).where(Report.trial_id == trial_id, Report.epoch == epoch))
            s.add(Report(trial_id=trial_id, epoch=epoch, row=row))
            t.epochs = max(t.epochs or 0, epoch)
            value = row.get(metric)
            if isinstance(value, int | float) and math.isfinite(value):
                t.metrics = {k: row[k] for k in ("train_loss", metric, "epoch") if k in row}
                t.objective = float(value)
            status = row.get("status")
            if status in ("completed", "diverged"):
                t.status, t.finished_at = status, now()
                if status == "diverged":
                    t.objective = None  # a diverged trial never counts as best
            elif t.status == "pending":
                t.status, t.started_at = "running", now()
            s.commit()

    def set_checkpoint(self, trial_id: int, path: str | None) -> None:
        """Where the trial's last per-epoch checkpoint is (a resumed trial starts from it; a
        finished trial keeps it). Written for a finished trial too: Tune reports the final
        result (which finishes the trial) before the checkpoint that came with it."""
        with self.session() as s:
            s.execute(update(Trial).where(Trial.id == trial_id).values(checkpoint=path))
            s.commit()

    def histories(self, trial_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
        """The per-epoch reports of some trials, in epoch order: trial id -> rows."""
        out: dict[int, list[dict[str, Any]]] = {tid: [] for tid in trial_ids}
        if not trial_ids:
            return out
        with self.session() as s:
            for i in range(0, len(trial_ids), 500):  # bounded IN lists
                q = (select(Report.trial_id, Report.row).where(Report.trial_id.in_(trial_ids[i:i + 500]))
                     .order_by(Report.trial_id, Report.epoch))
                for tid, row in s.execute(q):
                    out[tid].append(row)
        return out

    def trial_dicts(self, study_id: str, history: bool = True) -> list[dict[str, Any]]:
        """Every trial of a study as a plain dict, with its per-epoch history (for the analysis);
        `history=False`: without (the API aggregates the histories in SQL: `history_costs`)."""
        cols = (Trial.id, Trial.optimizer, Trial.stage, Trial.index, Trial.status, Trial.objective, Trial.config,
                Trial.seed, Trial.runs)
        with self.engine.connect() as conn:
            rows = conn.execute(select(*cols).where(Trial.study_id == study_id)
                                .order_by(Trial.optimizer, Trial.stage, Trial.index)).all()
        out = [{"id": r.id, "optimizer": r.optimizer, "stage": r.stage, "index": r.index, "status": r.status,
                "objective": r.objective, "config": r.config, "seed": r.seed, "runs": r.runs} for r in rows]
        if history:
            histories = self.histories([t["id"] for t in out])
            for t in out:
                t["history"] = histories[t["id"]]
        return out

    def history_costs(self, study_id: str, metric: str, mode: str,
                      target: float | None = None) -> dict[str, dict[str, Any]]:
        """What the analysis reads from the per-epoch histories, aggregated in SQL (no report row
        reaches Python): per optimizer the mean time per epoch, the peak memory and, with
        `target`, AlgoPerf's time to target (service.analysis.time_to_target)."""
        epoch_time = func.nullif(Report.row["epoch_time_s"].as_float(), 0)
        memory = func.nullif(Report.row["peak_memory_mb"].as_float(), 0)
        mine = Trial.study_id == study_id
        out: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for opt, mean_time, peak, ran in conn.execute(
                    select(Trial.optimizer, func.avg(epoch_time), func.max(memory),
                           func.count(func.distinct(Report.trial_id)))
                    .join(Trial, Trial.id == Report.trial_id).where(mine).group_by(Trial.optimizer)):
                out[opt] = {"time_per_epoch_s": float(mean_time) if mean_time is not None else None,
                            "peak_memory_mb": float(peak) if peak is not None else None, "ran": ran}
            if target is None:
                return out
            value = Report.row[metric].as_float()
            reached = value <= target if mode == "min" else value >= target
            first = (select(Report.trial_id, func.min(Report.epoch).label("epoch"))
                     .join(Trial, Trial.id == Report.trial_id).where(mine, reached)
                     .group_by(Report.trial_id).subquery())
            rows = conn.execute(
                select(Trial.optimizer, Trial.id, first.c.epoch, Report.row["wall_time_s"].as_float())
                .join(first, first.c.trial_id == Trial.id)
                .join(Report, (Report.trial_id == first.c.trial_id) & (Report.epoch == first.c.epoch))
                .order_by(Trial.optimizer, Trial.stage, Trial.index)).all()
        for opt, entry in out.items():
            mine_rows = [r for r in rows if r[0] == opt]
            fastest = None
            for _, tid, epoch, wall in mine_rows:
                if fastest is None or _or_inf(wall) < _or_inf(fastest["wall_time_s"]):
                    fastest = {"trial_id": tid, "epoch": epoch, "wall_time_s": wall}
            entry["time_to_target"] = {"target": target, "fastest": fastest,
                                       "reached_share": len(mine_rows) / entry["ran"] if entry["ran"] else None}
        return out

    def fingerprint(self, study_id: str) -> tuple:
        """What changes whenever anything the analysis or the report reads of a study changes
        (its row, a trial's status or runs, a new report): a cache key, in three small queries."""
        with self.engine.connect() as conn:
            study = conn.execute(select(Study.status, Study.updated_at).where(Study.id == study_id)).one_or_none()
            trials = conn.execute(select(func.count(), func.sum(Trial.epochs), func.sum(Trial.runs),
                                         func.count(Trial.finished_at), func.max(Trial.finished_at),
                                         func.max(Trial.started_at)).where(Trial.study_id == study_id)).one()
            reports = conn.execute(select(func.count(), func.max(Report.id)).where(Report.trial_id.in_(
                select(Trial.id).where(Trial.study_id == study_id).scalar_subquery()))).one()
        return (study_id, tuple(study) if study else None, tuple(trials), tuple(reports))

    def history(self, trial_id: int) -> list[dict[str, Any]]:
        return self.histories([trial_id])[trial_id]

    def mark_stopped(self, trial_id: int, reason: str) -> None:
        """Early stopping ended the trial: a result (its history and last objective stay)."""
        with self.session() as s:
            t = s.get(Trial, trial_id)
            if t is not None and t.status not in FINISHED:
                t.status, t.error, t.finished_at = "stopped", reason, now()
                s.commit()

    def set_config(self, trial_id: int, config: dict[str, Any]) -> None:
        """The configuration a sampler chose when the trial was claimed (method tpe)."""
        with self.session() as s:
            s.execute(update(Trial).where(Trial.id == trial_id).values(config=config))
            s.commit()

    def rung_values(self, study_id: str, optimizer: str, stage: int, epoch: int, metric: str) -> list[float]:
        """The objectives the trials of one group reported at one epoch (ASHA's rung record)."""
        with self.session() as s:
            rows = s.execute(select(Report.row).join(Trial, Trial.id == Report.trial_id).where(
                Trial.study_id == study_id, Trial.optimizer == optimizer, Trial.stage == stage,
                Report.epoch == epoch))
            out = []
            for (row,) in rows:
                v = row.get(metric) if isinstance(row, dict) else None
                if isinstance(v, int | float) and math.isfinite(v):
                    out.append(float(v))
            return out

    def mark_failed(self, trial_id: int, error: str, refine: bool = False) -> None:
        """`refine`: this error (the trial's own) replaces the one a failed trial has: Tune tells
        the searcher of a failure (the runner marks it failed) before the callback that reads it."""
        with self.session() as s:
            t = s.get(Trial, trial_id)
            if t is not None and (t.status not in FINISHED or refine and t.status == "failed"):
                t.status, t.error, t.finished_at = "failed", error[-2000:], now()
                s.commit()

    def active_counts(self) -> dict[str, dict[str, int]]:
        """Trials per status of every queued or running study: study id -> status -> count."""
        out: dict[str, dict[str, int]] = {}
        with self.session() as s:
            rows = s.execute(
                select(Trial.study_id, Trial.status, func.count())
                .join(Study, Study.id == Trial.study_id)
                .where(Study.status.in_(ACTIVE))
                .group_by(Trial.study_id, Trial.status))
            for sid, status, n in rows:
                out.setdefault(sid, {})[status] = n
        return out

    def count_studies(self, *statuses: str, owner: str | None = None) -> int:
        with self.session() as s:
            q = select(func.count()).select_from(Study).where(Study.status.in_(statuses))
            if owner is not None:
                q = q.where(Study.owner == owner)
            return s.scalar(q) or 0

    # ------------------------------------------------------------------ external trials (claims)
    # A client claims a pending trial of an external study under a lease; every write of the
    # claimant is fenced by its claim token and the lease in the statement that makes it, so an
    # expired claimant can never write over the trial's next claimant (service/api/trials.py).
    def expire_claims(self, study_id: str) -> int:
        """Claims of the study whose lease has passed go back to pending; their reports go (the
        next claimant trains from the start). Returns how many."""
        at = now()
        with self.session() as s:
            ids = list(s.scalars(select(Trial.id).where(
                Trial.study_id == study_id, Trial.status == "running", Trial.claim_token.is_not(None),
                Trial.lease_expires_at < at)))
            n = 0
            for tid in ids:
                if s.execute(update(Trial).where(Trial.id == tid, Trial.status == "running",
                                                 Trial.lease_expires_at < at)
                             .values(status="pending", claim_token=None, lease_expires_at=None, epochs=0,
                                     metrics={}, objective=None, started_at=None)).rowcount:
                    s.execute(delete(Report).where(Report.trial_id == tid))
                    n += 1
            s.commit()
            return n

    def claim_external(self, study_id: str, optimizer: str, stage: int, token: str,
                       lease_s: float) -> Trial | None:
        """Claims the lowest-index pending trial of a group for a client (None: none left). One
        statement picks and claims the row (PostgreSQL: FOR UPDATE SKIP LOCKED, so concurrent
        claims take different rows instead of queueing on one; SQLite runs writers one at a time)."""
        with self.session() as s:
            for _ in range(10):
                pick = (select(Trial.id).where(Trial.study_id == study_id, Trial.optimizer == optimizer,
                                               Trial.stage == stage, Trial.status == "pending")
                        .order_by(Trial.index).limit(1).with_for_update(skip_locked=True).scalar_subquery())
                at = now()
                tid = s.scalar(update(Trial).where(Trial.id == pick, Trial.status == "pending")
                               .values(status="running", started_at=at, finished_at=None, runs=Trial.runs + 1,
                                       claim_token=token, lease_expires_at=at + timedelta(seconds=lease_s),
                                       error=None).returning(Trial.id))
                s.commit()
                if tid is not None:
                    return s.get(Trial, tid)
                if not s.scalar(select(func.count()).select_from(Trial).where(
                        Trial.study_id == study_id, Trial.optimizer == optimizer, Trial.stage == stage,
                        Trial.status == "pending")):
                    return None
            return None

    def claim_next_external(self, study_id: str, choose: Callable[[list[tuple[str, int, str, int]]],
                                                                  tuple[str, int] | None],
                            token: str, lease_s: float) -> Trial | None:
        """Claims the trial the scheduler picks for a client: `choose` gets the study's
        (optimizer, stage, status, count) rows and answers a group or None (nothing may start).
        Counting and claiming are one transaction under the study's claim lock, so claims that
        arrive together never exceed `max_concurrent_trials`."""
        with self.session() as s:
            lock_study_claims(s, study_id)
            counts = list(s.execute(
                select(Trial.optimizer, Trial.stage, Trial.status, func.count())
                .where(Trial.study_id == study_id)
                .group_by(Trial.optimizer, Trial.stage, Trial.status)).all())
            group = choose(counts)
            if group is None:
                s.rollback()
                return None
            pick = (select(Trial.id).where(Trial.study_id == study_id, Trial.optimizer == group[0],
                                           Trial.stage == group[1], Trial.status == "pending")
                    .order_by(Trial.index).limit(1).scalar_subquery())
            at = now()
            tid = s.scalar(update(Trial).where(Trial.id == pick, Trial.status == "pending")
                           .values(status="running", started_at=at, finished_at=None, runs=Trial.runs + 1,
                                   claim_token=token, lease_expires_at=at + timedelta(seconds=lease_s),
                                   error=None).returning(Trial.id))
            s.commit()
            return s.get(Trial, tid) if tid is not None else None

    def _fenced(self, s: Session, study_id: str, trial_id: int, token: str, values: dict[str, Any],
                *condition) -> tuple[str, Any]:
        """One UPDATE of a claimed trial, made only if `token` holds its claim and the lease has
        not passed (and `condition` holds): ("ok", the trial's optimizer/stage/objective row);
        else why not, with the trial: "missing" (not in this study), "lost" (another claim, or
        none), "finished" (ended under this claim: a retry), "expired", "condition"."""
        at = now()
        row = s.execute(update(Trial).where(
            Trial.id == trial_id, Trial.study_id == study_id, Trial.claim_token == token,
            Trial.status == "running", Trial.lease_expires_at > at, *condition)
            .values(**values).returning(Trial.optimizer, Trial.stage, Trial.objective)).first()
        if row is not None:
            return "ok", row
        t = s.get(Trial, trial_id)
        if t is None or t.study_id != study_id:
            return "missing", None
        if t.claim_token != token:
            return "lost", t
        if t.status in FINISHED:
            return "finished", t
        expires = t.lease_expires_at
        if expires is None or (expires if expires.tzinfo else expires.replace(tzinfo=UTC)) <= at:
            return "expired", t
        return "condition", t

    def renew_claim(self, study_id: str, trial_id: int, token: str, lease_s: float) -> tuple[str, Any]:
        """A heartbeat of a claimant that is alive but has nothing to report yet (a long epoch)."""
        with self.session() as s:
            out = self._fenced(s, study_id, trial_id, token,
                               {"lease_expires_at": now() + timedelta(seconds=lease_s)})
            s.commit()
            return out

    def report_external(self, study_id: str, trial_id: int, token: str, epoch: int, row: dict[str, Any],
                        metric: str, lease_s: float) -> tuple[str, Any]:
        """Stores one per-epoch report of a claimed trial (a repeated epoch replaces its row) and
        renews the lease. ("ok", optimizer/stage row); "epoch" (lower than one already reported:
        nothing stored) with the trial; or the fence's other answers (see `_fenced`)."""
        values: dict[str, Any] = {"lease_expires_at": now() + timedelta(seconds=lease_s), "epochs": epoch}
        value = row.get(metric)
        if isinstance(value, int | float) and math.isfinite(value):
            values["metrics"] = {k: row[k] for k in ("train_loss", metric, "epoch") if k in row}
            values["objective"] = float(value)
        with self.session() as s:
            outcome, got = self._fenced(s, study_id, trial_id, token, values, Trial.epochs <= epoch)
            if outcome != "ok":  # nothing was written (closing the session ends the transaction)
                return ("epoch" if outcome == "condition" else outcome), got
            s.execute(delete(Report).where(Report.trial_id == trial_id, Report.epoch == epoch))
            s.add(Report(trial_id=trial_id, epoch=epoch, row=row))
            s.commit()
            return outcome, got

    def finish_external(self, study_id: str, trial_id: int, token: str, status: str, *,
                        metrics: dict[str, Any] | None = None, metric: str | None = None,
                        error: str | None = None) -> tuple[str, str | None]:
        """Ends a claimed trial as completed/diverged/stopped/failed, fenced like a report:
        ("ok", status); ("finished", its status): it ended under this claim before (a retry,
        nothing changes); "metric": completed without the study's metric ever reported (nothing
        changes); or "missing", "lost", "expired"."""
        values: dict[str, Any] = {"status": status, "finished_at": now(), "lease_expires_at": None}
        if error is not None:
            values["error"] = error[-2000:]
        value = (metrics or {}).get(metric) if metric else None
        has_value = isinstance(value, int | float) and math.isfinite(value)
        if has_value:
            values["metrics"] = {k: metrics[k] for k in ("train_loss", metric) if k in metrics}
            values["objective"] = float(value)
        if status == "diverged":
            values["objective"] = None  # a diverged trial never counts as best
        # completed needs the study's metric: sent now, or reported for an epoch before
        needs = [Trial.objective.is_not(None)] if status == "completed" and metric and not has_value else []
        with self.session() as s:
            outcome, got = self._fenced(s, study_id, trial_id, token, values, *needs)
            if outcome != "ok":  # nothing was written
                return ("metric" if outcome == "condition" else outcome), getattr(got, "status", None)
            s.commit()
            return outcome, status

    def rung_values_of_others(self, study_id: str, optimizer: str, stage: int, epoch: int, metric: str,
                              trial_id: int) -> list[float]:
        """`rung_values` without one trial's own report (ASHA compares a trial with its peers).
        Only the metric leaves the database, not the peers' whole report rows."""
        with self.session() as s:
            values = s.scalars(select(Report.row[metric].as_float()).join(Trial, Trial.id == Report.trial_id).where(
                Trial.study_id == study_id, Trial.optimizer == optimizer, Trial.stage == stage,
                Report.epoch == epoch, Trial.id != trial_id))
            return [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]

    # ------------------------------------------------------------------ the cluster
    def record_cluster(self, **values: Any) -> None:
        """Stores what the runner sees of the Ray cluster (keys: nodes, total, available)."""
        with self.session() as s:
            for key, value in values.items():
                s.merge(ClusterRecord(key=key, value=value, updated_at=now()))
            s.commit()

    def cluster(self) -> dict[str, Any]:
        """The runner's last record of the cluster: {key: value, "updated_at": newest time}."""
        with self.session() as s:
            rows = list(s.scalars(select(ClusterRecord)))
        out: dict[str, Any] = {r.key: r.value for r in rows}
        if rows:
            out["updated_at"] = max(r.updated_at for r in rows)
        return out

    # ------------------------------------------------------------------ Optuna view
    def delete_optuna_studies(self, study_id: str) -> int:
        """Removes the study's Optuna views (service/followers/optuna_view.py, and the per-stage ones of before)."""
        from service.followers.optuna_view import OptunaView

        view = OptunaView(self)
        try:
            return view.delete(study_id)
        except Exception:  # noqa: BLE001 - no Optuna tables yet: nothing to remove
            return 0
        finally:
            view.close()


class RunnerStore:
    """The runner's view of the store: every transaction is fenced by the runner lease (its
    first statement checks the lease, see service/store/lease.py) and every call is retried with
    backoff through a database outage of up to `retry_s` (a report that arrives while the
    database is down waits and is written when it is back; it is never dropped). A lost lease
    is not retried: `LeaseLost` reaches the runner, which stops."""

    def __init__(self, store: StudyStore, lease=None, retry_s: float = 600.0, stop=None):
        self._store = copy.copy(store)
        engine = store.engine
        if engine.dialect.name == "sqlite":  # PostgreSQL: the check's FOR SHARE does it
            engine = make_engine(store.url, immediate=True)
        self._store.sessions = sessionmaker(engine, expire_on_commit=False)
        if lease is not None:
            event.listen(self._store.sessions, "after_begin",
                         lambda session, transaction, connection: lease.check(connection))
        self.retry_s, self._stop = retry_s, stop
        self.retries = 0  # transient failures seen (exposed for tests and health)

    def __getattr__(self, name: str):
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            deadline, delay = time.monotonic() + self.retry_s, 0.2
            while True:
                try:
                    return attr(*args, **kwargs)
                except Exception as e:
                    if not transient(e) or time.monotonic() >= deadline:
                        raise
                    self.retries += 1
                    log.warning("store.%s: the database is unavailable (%s); retrying in %.1f s",
                                name, type(e).__name__, delay)
                    if self._stop is not None and self._stop.wait(delay):
                        raise
                    if self._stop is None:
                        time.sleep(delay)
                    delay = min(delay * 2, 5.0)

        return call
