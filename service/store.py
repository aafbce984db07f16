"""The SQL study store: engine setup, Alembic migrations, and the repository the API and the
runner use. SQLite (WAL mode) by default, any SQLAlchemy URL (PostgreSQL) through one setting.

Every reported trial result is committed as it arrives, so nothing a worker reported is lost when
a process dies. Finished stages are also written as Optuna studies in the same database
(Optuna's RDBStorage), named ``<study id>/<optimizer>/stage<k>``, so ``optuna-dashboard <url>``
opens them with Optuna's plots and parameter importances (see ``export_to_optuna``).
"""

from __future__ import annotations

import copy
import logging
import math
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, delete, event, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import flag_modified

from .models import AuditEntry, ClusterRecord, Report, Study, Trial

log = logging.getLogger("rootfree.store")
MIGRATIONS = Path(__file__).parent / "migrations"
FINISHED = ("completed", "diverged", "failed", "stopped")
RESULTS = ("completed", "stopped")  # trials whose objective counts (stopped: by early stopping, ASHA)


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
    def create_study(self, spec: dict[str, Any], idempotency_key: str | None, owner: str | None = None,
                     audit: dict[str, Any] | None = None) -> tuple[Study, bool]:
        """Returns (study, created). A repeated idempotency key (per owner: one user's key never
        returns another user's study) returns the first study. `audit` (actor, client) writes the
        study.create entry in the same transaction."""
        key = f"{owner or ''}:{idempotency_key}" if idempotency_key else None
        with self.session() as s:
            if key:
                existing = s.scalar(select(Study).where(Study.idempotency_key == key))
                if existing:
                    return existing, False
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
                return s.scalar(select(Study).where(Study.idempotency_key == key)), False
            return study, True

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
        if status in ("completed", "failed", "cancelled"):
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
        with self.session() as s:
            study = s.get(Study, study_id)
            if study:
                s.delete(study)
                s.commit()

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
               status: str | None = None, limit: int | None = None, offset: int = 0) -> list[Trial]:
        with self.session() as s:
            q = select(Trial).where(Trial.study_id == study_id)
            if optimizer:
                q = q.where(Trial.optimizer == optimizer)
            if stage is not None:
                q = q.where(Trial.stage == stage)
            if status:
                q = q.where(Trial.status == status)
            q = q.order_by(Trial.optimizer, Trial.stage, Trial.index).offset(offset)
            if limit is not None:
                q = q.limit(limit)
            return list(s.scalars(q))

    def best_trials(self, study_id: str, mode: str, k: int, max_stage: int | None = None) -> dict[str, list[Any]]:
        """The top-k completed trials of every optimizer, best first (ties: stage, then index),
        as rows with id, optimizer, stage, index, objective, config.

        One windowed query, without the per-epoch histories: `GET /studies/{id}` runs it on every
        poll, and a paper-sized study holds hundreds of trials (bench/api_latency.py)."""
        order = Trial.objective.desc() if mode == "max" else Trial.objective.asc()
        # Trials that went further first (a trial ASHA stopped early is compared with its peers at
        # the highest rung it reached), then the objective.
        rank = func.row_number().over(partition_by=Trial.optimizer,
                                      order_by=(Trial.epochs.desc(), order, Trial.stage, Trial.index)).label("rank")
        ranked = (select(Trial.id, Trial.optimizer, Trial.stage, Trial.index, Trial.objective,
                         Trial.config, rank)
                  .where(Trial.study_id == study_id, Trial.status.in_(RESULTS),
                         Trial.objective.is_not(None),
                         *([Trial.stage <= max_stage] if max_stage is not None else []))
                  .subquery())
        q = select(ranked).where(ranked.c.rank <= k).order_by(ranked.c.optimizer, ranked.c.rank)
        out: dict[str, list[Any]] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(q):
                out.setdefault(row.optimizer, []).append(row)
        return out

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

    def trial_dicts(self, study_id: str) -> list[dict[str, Any]]:
        """Every trial of a study as a plain dict, with its per-epoch history (for the analysis)."""
        trials = self.trials(study_id)
        histories = self.histories([t.id for t in trials])
        return [{"id": t.id, "optimizer": t.optimizer, "stage": t.stage, "index": t.index, "status": t.status,
                 "objective": t.objective, "config": t.config, "seed": t.seed, "runs": t.runs,
                 "history": histories[t.id]} for t in trials]

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

    def mark_failed(self, trial_id: int, error: str) -> None:
        with self.session() as s:
            t = s.get(Trial, trial_id)
            if t is not None and t.status not in FINISHED:
                t.status, t.error, t.finished_at = "failed", error[-2000:], now()
                s.commit()

    def active_counts(self) -> dict[str, dict[str, int]]:
        """Trials per status of every queued or running study: study id -> status -> count."""
        out: dict[str, dict[str, int]] = {}
        with self.session() as s:
            rows = s.execute(
                select(Trial.study_id, Trial.status, func.count())
                .join(Study, Study.id == Trial.study_id)
                .where(Study.status.in_(("queued", "running")))
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
        """Removes the study's Optuna views (one per optimizer and stage), each in one call."""
        import optuna

        try:
            storage = optuna.storages.RDBStorage(str(self.engine.url.render_as_string(False)))
        except Exception:  # noqa: BLE001 - no Optuna tables yet: nothing to remove
            return 0
        n = 0
        for name in optuna.get_all_study_names(storage):
            if name.startswith(f"{study_id}/"):
                storage.delete_study(storage.get_study_id_from_name(name))
                n += 1
        storage.remove_session()
        return n

    def export_to_optuna(self, study_id: str, optimizer: str, stage: int, space_dict: dict,
                         mode: str) -> None:
        import optuna

        from search_spaces import SearchSpace

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        space = SearchSpace.from_dict(space_dict)
        dists = space.to_optuna()
        storage = optuna.storages.RDBStorage(str(self.engine.url.render_as_string(False)))
        study = optuna.create_study(storage=storage, study_name=f"{study_id}/{optimizer}/stage{stage}",
                                    direction="minimize" if mode == "min" else "maximize",
                                    load_if_exists=True)
        if study.trials:
            return
        frozen = []
        for t in self.trials(study_id, optimizer=optimizer, stage=stage):
            params = {k: v for k, v in t.config.items() if k in dists}
            ok = t.status == "completed" and t.objective is not None
            try:
                frozen.append(optuna.trial.create_trial(
                    params=params, distributions={k: dists[k] for k in params},
                    value=t.objective if ok else None,
                    state=optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL,
                    user_attrs={"rootfree_trial_id": t.id, "status": t.status}))
            except ValueError:
                continue  # a value outside a narrowed distribution: skip rather than fail
        try:
            _add_optuna_trials(storage, study._study_id, frozen)
        except Exception:  # noqa: BLE001 - Optuna's tables changed: its own (slower) way
            log.warning("bulk Optuna export failed; adding trial by trial", exc_info=True)
            study.add_trials(frozen)


def _add_optuna_trials(storage, optuna_study_id: int, trials: list) -> None:
    """Writes finished Optuna trials (validated `FrozenTrial`s) in one transaction. Optuna's own
    `add_trial` runs a transaction of about ten queries per trial; a 400-trial stage exported so
    took seconds of a core beside the next stage's trials (bench/throughput.py)."""
    import json

    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models as om

    session = storage.scoped_session()
    try:
        base = session.query(om.TrialModel).filter(om.TrialModel.study_id == optuna_study_id).count()
        rows: list = []
        for i, ft in enumerate(trials):
            tm = om.TrialModel(study_id=optuna_study_id, number=base + i, state=ft.state)
            tm.datetime_start, tm.datetime_complete = ft.datetime_start, ft.datetime_complete
            rows.append(tm)
            for name, value in ft.params.items():
                dist = ft.distributions[name]
                rows.append(om.TrialParamModel(trial=tm, param_name=name, param_value=dist.to_internal_repr(value),
                                               distribution_json=distribution_to_json(dist)))
            if ft.values:
                stored, kind = om.TrialValueModel.value_to_stored_repr(ft.values[0])
                rows.append(om.TrialValueModel(trial=tm, objective=0, value=stored, value_type=kind))
            for key, value in ft.user_attrs.items():
                rows.append(om.TrialUserAttributeModel(trial=tm, key=key, value_json=json.dumps(value)))
        session.add_all(rows)
        session.commit()
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()


class RunnerStore:
    """The runner's view of the store: every transaction is fenced by the runner lease (its
    first statement checks the lease, see service/lease.py) and every call is retried with
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
