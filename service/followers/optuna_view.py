"""The live Optuna view of the study store, kept current while studies run: the view itself (the
store's studies as Optuna studies, one per rootfree study and optimizer, in the same database) is
`OptunaView` of service/store/optuna_mirror.py; this module follows the store into it.

`OptunaFollower` runs the view as one background thread of the runner process: it polls the store
for what changed (report row ids only grow; trial statuses) and writes it to Optuna. The runner
never waits for it, and a failing write is logged and retried at the next poll. `OptunaViewProcess`
runs the same follower in a child process; `add_commands` gives the CLI `optuna-sync` and `dashboard`.
"""

from __future__ import annotations

import logging
import os
import time

from service.domain.statuses import ACTIVE as WATCHED
from service.followers.base import Follower
from service.store.models import Study
from service.store.optuna_mirror import OptunaView
from service.store.study_store import StudyStore

log = logging.getLogger("rootfree.optuna_view")


class OptunaFollower(Follower):
    """Follows the store into an `OptunaView` from one daemon thread (see the module docstring)."""

    thread_name = "rootfree-optuna-view"
    what = "optuna view"
    log = log

    def __init__(self, store: StudyStore, interval_s: float = 1.0, url: str | None = None,
                 view: bool = True, metrics: bool = True):
        super().__init__(interval_s)
        self.view = OptunaView(store, url)
        self.write_view, self.write_metrics = view, metrics
        self.store = store
        self._cursor: int | None = None  # the last report row written
        self._watch: set[str] = set()
        self.polls = 0
        self.metrics = None  # per-study Ray metrics (service/followers/ray_metrics.py), once Ray is connected

    def recover(self) -> None:
        self.view.forget()  # re-read Optuna's state: a half-done write is completed next time
        self._cursor = None

    def close(self) -> None:
        self.view.close()

    def poll(self) -> None:
        """One pass: new and changed trials of the watched studies, then new reports."""
        if self._cursor is None:  # start: everything before the cursor is written by a full sync
            self._cursor = self.store.last_report_id()
            self._watch |= self.store.watched_study_ids()
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
            metrics[sid] = study.resolved.metric
            if self.write_metrics:
                self._export_metrics(study)
            if study.status not in WATCHED:
                self._watch.discard(sid)  # its last changes are written
            else:
                self._watch.add(sid)
        if not self.write_view:
            self.polls += 1
            return
        rows = self.store.reports_after(self._cursor)
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


VIEW_NICE = 19  # the view's process: the lowest priority there is


def _view_main(database_url: str, interval_s: float, url: str | None, parent_pid: int, stop, busy) -> None:
    import signal

    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if VIEW_NICE > 0 and hasattr(os, "nice"):
        # A view, not the record: its Optuna writes (some 30 statements a trial) take the CPU
        # the driver and the trials leave, and catch up when they leave some (issue 25: at
        # the runner's own priority it cost a third of the trial throughput on 2 cores).
        os.nice(max(0, VIEW_NICE - os.nice(0)))
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
