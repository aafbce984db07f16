"""The live Optuna view of the study store: one Optuna study per (rootfree study, optimizer) in the
same database (Optuna's RDBStorage), so ``optuna-dashboard <database url>`` or plain
``optuna.load_study`` show a study while it runs.

`OptunaView` maps the store onto Optuna: a trial appears when it starts (RUNNING), gets one
intermediate value per reported epoch, and ends COMPLETE, PRUNED (stopped by early stopping, with
its last value) or FAIL (failed or diverged, the reason in the ``reason`` user attribute), with
the store's own start and end times. It only reads the store and is idempotent (every Optuna trial
carries its ``rootfree_trial_id``), so `sync_study` rebuilds a view from scratch or completes a
half-written one, and a restarted controller picks up where the last one stopped.

`OptunaFollower` runs the view as one background thread of the runner process: it polls the store
for what changed (report row ids only grow; trial statuses) and writes it to Optuna. The runner
never waits for it, and a failing write is logged and retried at the next poll.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from service.statuses import ACTIVE as WATCHED
from service.store.models import Report, Study, Trial
from service.store.study_store import StudyStore

log = logging.getLogger("rootfree.optuna_view")

STUDY_ATTR = "rootfree_study_id"
TRIAL_ATTR = "rootfree_trial_id"


def view_name(study_name: str, optimizer: str) -> str:
    return f"{study_name}/{optimizer}"


def _local_naive(dt: datetime | None) -> datetime | None:
    """Optuna keeps naive local times (``datetime.now()``); the store keeps UTC (naive on SQLite)."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone().replace(tzinfo=None)


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def optuna_params(space_dict: dict, config: dict) -> tuple[dict, dict]:
    """(params, distributions) of one trial for Optuna. Log-uniform parameters get log
    distributions; a 1-minus-log-uniform parameter ``x`` (Optuna has no such scale) becomes
    ``one_minus_x`` on a log distribution, so plots read like the search space. A range is widened
    to hold the trial's value (Optuna accepts differing ranges for one parameter name)."""
    import optuna.distributions as od

    params: dict[str, Any] = {}
    dists: dict[str, Any] = {}
    for name, d in space_dict.items():
        if name not in config:
            continue
        v, kind = config[name], d.get("kind")
        if kind in ("fixed", "choice"):
            choices = [d["value"]] if kind == "fixed" else list(d["values"])
            if v not in choices or not all(c is None or isinstance(c, bool | int | float | str) for c in choices):
                continue
            params[name], dists[name] = v, od.CategoricalDistribution(choices)
            continue
        if _number(v) is None:
            continue
        low, high = float(d["low"]), float(d["high"])
        if kind == "one_minus_log_uniform":
            name, v, low, high, log_scale = f"one_minus_{name}", 1.0 - v, 1.0 - high, 1.0 - low, True
        else:
            log_scale = kind == "log_uniform"
        if log_scale and (v <= 0 or low <= 0):
            continue  # not on a log scale: left to the `config` user attribute
        low, high = min(low, v), max(high, v)
        if d.get("int") and kind != "one_minus_log_uniform":
            params[name], dists[name] = int(v), od.IntDistribution(int(math.floor(low)), int(math.ceil(high)),
                                                                  log=log_scale)
        else:
            params[name], dists[name] = float(v), od.FloatDistribution(low, high, log=log_scale)
    return params, dists


class OptunaView:
    """Writes the store's studies to Optuna studies in `url` (default: the store's database)."""

    def __init__(self, store: StudyStore, url: str | None = None):
        self.store = store
        self.url = url or store.engine.url.render_as_string(hide_password=False)
        self._storage = None
        self._views: dict[tuple[str, str], int] = {}  # (study, optimizer) -> Optuna study id
        self._space_attrs: dict[int, Any] = {}  # Optuna study id -> the stage spaces written
        # rootfree trial id -> [Optuna trial id, Optuna state name, epochs written]
        self._trials: dict[int, list] = {}
        self._loaded: set[str] = set()

    @property
    def storage(self):
        if self._storage is None:
            import optuna
            from sqlalchemy.exc import OperationalError

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            try:
                self._storage = optuna.storages.RDBStorage(self.url)
            except OperationalError:  # another process created Optuna's tables at the same moment
                self._storage = optuna.storages.RDBStorage(self.url)
        return self._storage

    def close(self) -> None:
        if self._storage is not None:
            self._storage.remove_session()
            self._storage.engine.dispose()
            self._storage = None

    def forget(self) -> None:
        """Drops what this object remembers (after a failed write: the next sync re-reads Optuna)."""
        self._views.clear()
        self._space_attrs.clear()
        self._trials.clear()
        self._loaded.clear()

    # ------------------------------------------------------------------ studies
    def _load(self, study_id: str) -> None:
        """Reads the study's existing views (a restart, or a rebuild) once."""
        if study_id in self._loaded:
            return
        for fs in self.storage.get_all_studies():
            if fs.user_attrs.get(STUDY_ATTR) != study_id:
                continue
            opt = fs.user_attrs.get("optimizer")
            self._views[(study_id, opt)] = fs._study_id
            self._space_attrs[fs._study_id] = fs.user_attrs.get("stage_spaces")
            for t in self.storage.get_all_trials(fs._study_id, deepcopy=False):
                rid = t.user_attrs.get(TRIAL_ATTR)
                if rid is not None:
                    self._trials[int(rid)] = [t._trial_id, t.state.name, set(t.intermediate_values)]
        self._loaded.add(study_id)

    def _view(self, study: Study, optimizer: str) -> int:
        """The Optuna study of (study, optimizer), created with its attributes when missing."""
        import optuna

        self._load(study.id)
        key = (study.id, optimizer)
        spaces = (study.stage_spaces or {}).get(optimizer, {})
        if key not in self._views:
            taken = set(optuna.get_all_study_names(self.storage))
            name = view_name(study.name, optimizer)
            if name in taken:  # another study of that name: a short id tells them apart
                name = f"{name} ({study.id[:8]})"
            spec = study.spec
            created = optuna.create_study(storage=self.storage, study_name=name, load_if_exists=True,
                                          direction="minimize" if spec.get("mode") == "min" else "maximize")
            with warnings.catch_warnings():  # experimental since Optuna 3.2, still there in 5.0
                warnings.simplefilter("ignore")
                created.set_metric_names([spec.get("metric") or "objective"])
            attrs = {STUDY_ATTR: study.id, "study_name": study.name, "optimizer": optimizer,
                     "workload": spec.get("workload"), "metric": spec.get("metric"), "mode": spec.get("mode"),
                     "scheme": spec.get("protocol", {}).get("scheme"),
                     "protocol": spec.get("protocol"), "budget": spec.get("budget")}
            for k, v in attrs.items():
                created.set_user_attr(k, v)
            self._views[key] = created._study_id
        sid = self._views[key]
        if self._space_attrs.get(sid) != spaces:  # a stage opened since
            self.storage.set_study_user_attr(sid, "stage_spaces", spaces)
            self._space_attrs[sid] = spaces
        return sid

    def delete(self, study_id: str) -> int:
        """Removes every Optuna view of the study (this view's and the per-stage ones of before)."""
        n = 0
        for fs in self.storage.get_all_studies():
            if fs.user_attrs.get(STUDY_ATTR) == study_id or fs.study_name.startswith(f"{study_id}/"):
                self.storage.delete_study(fs._study_id)
                n += 1
        for key in [k for k in self._views if k[0] == study_id]:
            del self._views[key]
        self._loaded.discard(study_id)
        return n

    # ------------------------------------------------------------------ trials
    @staticmethod
    def _target(t: Trial) -> tuple[str, float | None]:
        """The Optuna state and value of a store trial."""
        if t.status == "running":
            return "RUNNING", None
        if t.status == "completed" and _number(t.objective) is not None:
            return "COMPLETE", t.objective
        if t.status == "stopped":
            return "PRUNED", _number(t.objective)
        return "FAIL", None

    def _sync_trial(self, study: Study, t: Trial, history: list[dict] | None) -> None:
        import optuna
        from optuna.trial import TrialState

        state, value = self._target(t)
        mirror = self._trials.get(t.id)
        metric = study.spec.get("metric")
        if mirror is not None and mirror[1] != "RUNNING":
            return  # finished in Optuna: final (a trial that restarts runs as the same RUNNING one)
        if mirror is not None and state == "RUNNING":
            return  # its reports arrive through `report`
        if history is None:
            history = self.store.history(t.id)
        steps = {int(r.get("epoch") or 0): _number(r.get(metric)) for r in history}
        steps = {k: v for k, v in steps.items() if v is not None}
        start = _local_naive(t.started_at) or _local_naive(t.finished_at) or datetime.now()
        end = _local_naive(t.finished_at) or start
        if mirror is None:
            spaces = (study.stage_spaces or {}).get(t.optimizer, {})
            space = spaces.get("1") or study.spec.get("search_spaces", {}).get(t.optimizer, {})
            params, dists = optuna_params(space, t.config or {})
            attrs: dict[str, Any] = {TRIAL_ATTR: t.id, "stage": t.stage, "index": t.index, "seed": t.seed,
                                     "status": t.status, "config": t.config}
            if state in ("FAIL", "PRUNED"):
                attrs["reason"] = t.error or t.status
            frozen = optuna.trial.create_trial(
                state=TrialState[state], value=value if state in ("COMPLETE", "PRUNED") else None,
                params=params, distributions=dists, user_attrs=attrs, intermediate_values=steps)
            frozen.datetime_start = start
            frozen.datetime_complete = end if state != "RUNNING" else None
            oid = self.storage.create_new_trial(self._view(study, t.optimizer), template_trial=frozen)
            self._trials[t.id] = [oid, state, set(steps)]
            return
        oid, _, written = mirror
        for step, v in steps.items():
            if step not in written:
                self.storage.set_trial_intermediate_value(oid, step, v)
                written.add(step)
        self.storage.set_trial_user_attr(oid, "status", t.status)
        if state in ("FAIL", "PRUNED"):
            self.storage.set_trial_user_attr(oid, "reason", t.error or t.status)
        self.storage.set_trial_state_values(oid, TrialState[state],
                                            [value] if value is not None and state != "FAIL" else None)
        self._set_times(oid, start, end)
        mirror[1] = state

    def _set_times(self, optuna_trial_id: int, start: datetime, end: datetime) -> None:
        """The store's start and end (Optuna stamps the moment of the write)."""
        from optuna.storages._rdb.models import TrialModel

        with self.storage.engine.begin() as conn:
            conn.execute(update(TrialModel.__table__).where(TrialModel.__table__.c.trial_id == optuna_trial_id)
                         .values(datetime_start=start, datetime_complete=end))

    def report(self, trial_id: int, epoch: int, row: dict, metric: str | None) -> None:
        """One per-epoch report of a RUNNING trial as an intermediate value."""
        mirror = self._trials.get(trial_id)
        v = _number(row.get(metric)) if metric else None
        if mirror is None or mirror[1] != "RUNNING" or v is None or epoch in mirror[2]:
            return
        self.storage.set_trial_intermediate_value(mirror[0], epoch, v)
        mirror[2].add(epoch)

    def sync_trials(self, study: Study, full: bool = False) -> int:
        """Mirrors the study's started trials whose state Optuna does not have yet; returns how many
        it wrote. `full`: also each optimizer's view (a study whose trials have not started)."""
        self._load(study.id)
        if full:
            for opt in study.spec.get("optimizers", []):
                self._view(study, opt)
        with self.store.session() as s:
            rows = s.execute(select(Trial.id, Trial.status).where(
                Trial.study_id == study.id, Trial.status != "pending")).all()
            stale = [tid for tid, status in rows
                     if tid not in self._trials or (self._trials[tid][1] == "RUNNING" and status != "running")]
            trials = (s.scalars(select(Trial).where(Trial.id.in_(stale)).order_by(Trial.id)).all()
                      if stale else [])
        if not trials:
            return 0
        histories = self.store.histories([t.id for t in trials])
        for t in trials:
            self._sync_trial(study, t, histories[t.id])
        return len(trials)

    def sync_study(self, study_id: str) -> int:
        """Builds or completes the study's view (idempotent); returns the trials written."""
        study = self.store.get_study(study_id)
        if study is None:
            raise KeyError(study_id)
        for fs in self.storage.get_all_studies():  # the per-stage views of before this one
            if fs.study_name.startswith(f"{study_id}/") and STUDY_ATTR not in fs.user_attrs:
                self.storage.delete_study(fs._study_id)
        return self.sync_trials(study, full=True)


class OptunaFollower:
    """Follows the store into an `OptunaView` from one daemon thread (see the module docstring)."""

    def __init__(self, store: StudyStore, interval_s: float = 1.0, url: str | None = None,
                 view: bool = True, metrics: bool = True):
        self.view = OptunaView(store, url)
        self.write_view, self.write_metrics = view, metrics
        self.store = store
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cursor: int | None = None  # the last report row written
        self._watch: set[str] = set()
        self.errors = 0
        self.polls = 0
        self.busy_s = 0.0  # time spent in passes (bench/optuna_view.py)
        self.metrics = None  # per-study Ray metrics (service/followers/ray_metrics.py), once Ray is connected

    def start(self) -> OptunaFollower:
        self._thread = threading.Thread(target=self._run, name="rootfree-optuna-view", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.view.close()

    def _run(self, alive=lambda: True) -> None:
        delay = self.interval_s
        while not self._stop.is_set() and alive():
            t0 = time.monotonic()
            try:
                self.poll()
                delay = self.interval_s
            except Exception:  # noqa: BLE001 - the view never stops the runner: retry, say why
                self.errors += 1
                log.warning("optuna view: write failed (retrying in %.0f s)", delay, exc_info=True)
                self.view.forget()  # re-read Optuna's state: a half-done write is completed next time
                self._cursor = None
                delay = min(delay * 2, 30.0)
            self.busy_s += time.monotonic() - t0
            self._stop.wait(delay)

    def poll(self) -> None:
        """One pass: new and changed trials of the watched studies, then new reports."""
        if self._cursor is None:  # start: everything before the cursor is written by a full sync
            with self.store.session() as s:
                self._cursor = s.scalar(select(Report.id).order_by(Report.id.desc()).limit(1)) or 0
                recent = datetime.now(UTC) - timedelta(hours=1)
                self._watch |= set(s.scalars(select(Study.id).where(
                    (Study.status.in_(WATCHED)) | (Study.finished_at >= recent))).all())
            full = True
        else:
            full = False
        studies = {st.id: st for st in self.store.studies_with_status(*WATCHED)}
        metrics: dict[str, str | None] = {}
        for sid in self._watch | set(studies):
            study = studies.get(sid) or self.store.get_study(sid)
            if study is None:
                self._watch.discard(sid)
                continue
            if self.write_view:
                self.view.sync_trials(study, full=full or sid not in self._watch)
            metrics[sid] = study.spec.get("metric")
            if self.write_metrics:
                self._export_metrics(study)
            if study.status not in WATCHED:
                self._watch.discard(sid)  # its last changes are written
            else:
                self._watch.add(sid)
        if not self.write_view:
            self.polls += 1
            return
        with self.store.session() as s:
            rows = s.execute(select(Report.id, Report.trial_id, Report.epoch, Report.row, Trial.study_id)
                             .join(Trial, Trial.id == Report.trial_id)
                             .where(Report.id > self._cursor).order_by(Report.id).limit(5000)).all()
        for rid, tid, epoch, row, sid in rows:
            if sid in metrics:
                self.view.report(tid, epoch, row if isinstance(row, dict) else {}, metrics[sid])
            self._cursor = rid
        self.polls += 1

    def _export_metrics(self, study: Study) -> None:
        try:
            if self.metrics is None:
                from service.followers.ray_metrics import ray_study_metrics

                self.metrics = ray_study_metrics(self.store)
            if self.metrics is not None:
                self.metrics.update(study)
        except Exception:  # noqa: BLE001 - a metrics hiccup never holds up the Optuna view
            log.warning("ray metrics of study %s: %s", study.id, "not exported", exc_info=True)

    def status(self) -> dict:
        return {"polls": self.polls, "errors": self.errors, "busy_s": self.busy_s}

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Until one more full pass has run (tests)."""
        target = self.polls + 2
        t0 = time.monotonic()
        while self.polls < target and time.monotonic() - t0 < timeout:
            time.sleep(0.05)


class OptunaViewProcess:
    """The Optuna view's follower in a child process: Optuna's ORM writes (some 30 statements per
    trial) then never hold the runner's GIL while the Tune driver loop works. It ends with the
    runner (stop, or the runner's death)."""

    def __init__(self, database_url: str, interval_s: float = 1.0, url: str | None = None):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # no fork of a process holding threads and sockets
        self._stop = ctx.Event()
        self._busy = ctx.Value("d", 0.0)
        self._proc = ctx.Process(target=_view_main, name="rootfree-optuna-view", daemon=True,
                                 args=(database_url, interval_s, url, os.getpid(), self._stop, self._busy))

    def start(self) -> OptunaViewProcess:
        self._proc.start()
        return self

    @property
    def busy_s(self) -> float:
        return self._busy.value

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.kill()


def _view_main(database_url: str, interval_s: float, url: str | None, parent_pid: int, stop, busy) -> None:
    import signal

    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    logging.basicConfig(level=logging.WARNING)
    follower = OptunaFollower(StudyStore(database_url), interval_s, url, view=True, metrics=False)
    follower._stop = stop
    poll = follower.poll

    def timed_poll() -> None:
        t0 = time.monotonic()
        try:
            poll()
        finally:
            busy.value += time.monotonic() - t0

    follower.poll = timed_poll
    follower._run(alive=lambda: os.getppid() == parent_pid)
    follower.view.close()


# ---------------------------------------------------------------------- CLI
def cmd_optuna_sync(args) -> int:
    """rootfree optuna-sync STUDY_ID: builds or completes a study's Optuna view (idempotent)."""
    import sys

    from service.settings import Settings

    store = StudyStore(args.db or Settings().database_url)
    view = OptunaView(store)
    try:
        n = view.sync_study(args.study_id)
    except KeyError:
        print(f"rootfree optuna-sync: no study {args.study_id!r} in {store.engine.url!r}", file=sys.stderr)
        return 1
    finally:
        view.close()
    print(f"optuna view of study {args.study_id}: {n} trial(s) written")
    return 0


def cmd_dashboard(args) -> int:
    """rootfree dashboard: optuna-dashboard on the study store (`pip install rootfree[dashboard]`)."""
    import sys

    from service.settings import Settings

    url = args.db or Settings().database_url
    try:
        from optuna_dashboard import run_server
    except ImportError:
        print("rootfree dashboard: optuna-dashboard is not installed; pip install 'rootfree[dashboard]'",
              file=sys.stderr)
        return 2
    StudyStore(url).engine.dispose()  # the store's schema first (a fresh database)
    print(f"optuna-dashboard on {url}: http://{args.host}:{args.port}/", flush=True)
    run_server(url, host=args.host, port=args.port)
    return 0


def add_commands(sub) -> None:
    """The `optuna-sync` and `dashboard` subcommands of the `rootfree` CLI."""
    p = sub.add_parser("optuna-sync", help="build or complete a study's Optuna view (idempotent)")
    p.add_argument("study_id")
    p.add_argument("--db", help="SQLAlchemy URL of the study store (default: ROOTFREE_DATABASE_URL)")
    p.set_defaults(func=cmd_optuna_sync)
    d = sub.add_parser("dashboard", help="optuna-dashboard on the study store (pip install 'rootfree[dashboard]')")
    d.add_argument("--db", help="SQLAlchemy URL of the study store (default: ROOTFREE_DATABASE_URL)")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=int, default=8080)
    d.set_defaults(func=cmd_dashboard)
