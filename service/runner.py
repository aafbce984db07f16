"""The study runner: turns queued studies into Ray Tune runs, one (optimizer, stage) at a time.

Per optimizer: stage 1 samples the study's space, stage k>1 samples ``narrow(stage k-1)``; the
trials of a stage are created in the store first (deterministic per index), then the pending ones
run as Ray Tune trials; every report is written to the store as it arrives (a Tune callback in
this process). After a controller crash, ``resume`` turns the running trials back to pending and
carries on: completed trials are never re-run, the final counts are exactly the protocol's.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from pathlib import Path

import ray
from ray import tune
from ray.job_config import JobConfig

from search_spaces import NarrowingError, SearchSpace, TwoStageProtocol, narrow, sample

from .settings import Settings
from .store import StudyStore
from .study_log import StudyLog, ray_logs_dir

log = logging.getLogger("rootfree.runner")
os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


class StudyCancelled(Exception):
    pass


class _LiveOnly:
    """Tune pickles its run config into the experiment directory; these objects hold live
    handles (the store, the runner) that only mean something in this process."""

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self.__dict__.update(state)


def trial_label(meta: dict) -> str:
    """The name a trial carries in Ray Tune, the Ray dashboard and the study log."""
    return f"{meta['study_id'][:8]}-{meta['optimizer']}-s{meta['stage']}-i{meta['index']}"


class _StoreCallback(_LiveOnly, tune.Callback):
    """Writes every Tune event of a stage into the study store (and the study log), as it happens."""

    def __init__(self, store: StudyStore, metric: str, slog: StudyLog | None = None):
        self.store, self.metric, self.slog = store, metric, slog

    @staticmethod
    def _tid(trial) -> int:
        return trial.config["trial"]["meta"]["trial_id"]

    def _say(self, trial, message: str, *args, level: int = logging.INFO) -> None:
        if self.slog is not None:
            self.slog.event("trial %s " + message, trial_label(trial.config["trial"]["meta"]),
                            *args, level=level, echo=False)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.store.mark_started(self._tid(trial))
        hp = trial.config["trial"]["hyperparameters"]
        self._say(trial, "started: %s", " ".join(f"{k}={_fmt(v)}" for k, v in sorted(hp.items())))

    def on_trial_restore(self, iteration, trials, trial, **info):
        self._say(trial, "restored from its checkpoint after a failure", level=logging.WARNING)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        keep = ("epoch", "train_loss", self.metric, "lr", "examples_per_s", "epoch_time_s",
                "wall_time_s", "peak_memory_mb", "status", "resumed_from_epoch", "node_ip", "node_id")
        row = {k: result.get(k) for k in keep if k in result}
        self.store.record_result(self._tid(trial), row, self.metric)
        fields = " ".join(f"{k}={_fmt(row[k])}" for k in
                          ("train_loss", self.metric, "lr", "examples_per_s", "node_ip") if k in row)
        self._say(trial, "epoch %s: %s%s", row.get("epoch"), fields,
                  " (diverged)" if row.get("status") == "diverged" else "")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._say(trial, "finished")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.store.mark_failed(self._tid(trial), str(getattr(trial, "error_file", "") or "error"))
        self._say(trial, "failed (error file: %s)", getattr(trial, "error_file", None),
                  level=logging.ERROR)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class _CancelStopper(_LiveOnly, tune.Stopper):
    def __init__(self, runner: StudyRunner, study_id: str):
        self.runner, self.study_id, self._checked, self._cancelled = runner, study_id, 0.0, False

    def __call__(self, trial_id, result):
        return self.stop_all()

    def stop_all(self):
        if not self._cancelled and time.monotonic() - self._checked > 0.5:
            self._checked = time.monotonic()
            self._cancelled = self.runner.is_cancelled(self.study_id)
        return self._cancelled


class StudyRunner:
    """Runs studies in a thread of this process (embedding, tests); `RunnerProcess` runs one in
    a child process, which is what `rootfree serve` does."""

    def __init__(self, store: StudyStore, settings: Settings, stop_event=None):
        self.store, self.settings = store, settings
        self.dashboard_url: str | None = None
        self.node_id: str | None = None  # the Ray node this runner drives from (its logs dir)
        self._stop = stop_event if stop_event is not None else threading.Event()
        self._thread: threading.Thread | None = None
        self.current: str | None = None
        self._interrupted: dict[str, int] = {}  # study id -> trials a dead controller left running

    # ------------------------------------------------------------------ lifecycle
    def connect_ray(self) -> None:
        if ray.is_initialized():
            return
        self._owns_ray = True
        s = self.settings
        from sqlalchemy.engine import make_url

        # The Ray dashboard's Jobs view lists this driver; its metadata says what it is.
        job = JobConfig(metadata={
            "rootfree": "study runner",
            "database": make_url(s.database_url).render_as_string(hide_password=True)})
        kwargs = dict(namespace="rootfree", log_to_driver=False, ignore_reinit_error=True,
                      job_config=job)
        if s.ray_address:
            ctx = ray.init(address=s.ray_address, **kwargs)
        else:
            ctx = ray.init(num_cpus=s.num_cpus, object_store_memory=s.object_store_mb * 2**20,
                           include_dashboard=s.dashboard, dashboard_host="127.0.0.1",
                           dashboard_port=s.dashboard_port, **kwargs)
        url = getattr(ctx, "dashboard_url", None)
        self.dashboard_url = f"http://{url}" if url and not url.startswith("http") else url
        self.node_id = ray.get_runtime_context().get_node_id()

    def start(self) -> None:
        self.connect_ray()
        self._thread = threading.Thread(target=self._loop, name="rootfree-runner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)
        self.shutdown_ray()

    def shutdown_ray(self) -> None:
        if getattr(self, "_owns_ray", False):
            ray.shutdown()

    def is_cancelled(self, study_id: str) -> bool:
        study = self.store.get_study(study_id)
        return study is None or study.status == "cancelled"

    def _loop(self) -> None:
        for study in self.store.studies_with_status("running"):  # a previous controller died
            self._interrupted[study.id] = self.store.reset_interrupted(study.id)
            log.info("resuming study %s (%d interrupted trials rerun)", study.id,
                     self._interrupted[study.id])
        while not self._stop.is_set():
            todo = self.store.studies_with_status("running", "queued")
            if not todo:
                self._stop.wait(self.settings.poll_interval_s)
                continue
            self.run_study(todo[0].id)

    # ------------------------------------------------------------------ one study
    def run_study(self, study_id: str) -> None:
        self.current = study_id
        slog = StudyLog(self.settings.storage_path, study_id, ray_logs_dir())
        try:
            before = self.store.get_study(study_id)
            if not self.store.set_status(study_id, "running", only_from=("queued", "running")):
                return
            how = "started"
            if before.status == "running":
                how = f"resumed ({self._interrupted.pop(study_id, 0)} interrupted trials rerun)"
            slog.event("study %r %s on %s (Ray node %s)", before.name, how,
                       self.settings.ray_address or "a local Ray", self.node_id)
            self._run(study_id, slog)
            slog.event("study completed")
            self.store.set_status(study_id, "completed", only_from=("running",))
        except StudyCancelled:
            slog.event("study cancelled" if self.is_cancelled(study_id)
                       else "study interrupted: the controller is stopping; it resumes on restart")
        except NarrowingError as e:
            self.store.set_status(study_id, "failed", only_from=("running",), error=str(e))
            slog.event("study failed: %s", e, level=logging.ERROR)
        except Exception as e:  # noqa: BLE001 - the study fails, the controller lives on
            slog.event("study failed: %s", traceback.format_exc(), level=logging.ERROR)
            self.store.set_status(study_id, "failed", only_from=("running",),
                                  error=f"{type(e).__name__}: {e}")
        finally:
            slog.close()
            self.current = None

    def _run(self, study_id: str, slog: StudyLog) -> None:
        study = self.store.get_study(study_id)
        spec = study.spec
        p = spec["protocol"]
        protocol = TwoStageProtocol(stages=tuple(p["stages"]), top_k=p["top_k"],
                                    margin=p["margin"], seed=p["seed"], method=p["method"],
                                    metric=spec["metric"], mode=spec["mode"])
        for optimizer in spec["optimizers"]:
            space = SearchSpace.from_dict(spec["search_spaces"][optimizer])
            for stage, n in enumerate(protocol.stages, start=1):
                if self.is_cancelled(study_id) or self._stop.is_set():
                    raise StudyCancelled
                saved = (self.store.get_study(study_id).stage_spaces or {}).get(optimizer, {})
                if str(stage) in saved:
                    space = SearchSpace.from_dict(saved[str(stage)])
                else:
                    notes: list[str] = []
                    if stage > 1:
                        prev = self.store.trials(study_id, optimizer=optimizer, stage=stage - 1)
                        space = narrow(space, [(t.config, t.objective) for t in prev],
                                       mode=protocol.mode, top_k=protocol.top_k,
                                       margin=protocol.margin)
                        notes = space.notes
                    self.store.save_stage_space(study_id, optimizer, stage, space.to_dict(), notes)
                    for note in notes:
                        slog.event("%s stage %d: %s", optimizer, stage, note)
                configs = sample(space, n, protocol.seed, stage=stage, method=protocol.method)
                self.store.ensure_trials(study_id, optimizer, stage, configs)
                slog.event("%s stage %d: %d trials over %s", optimizer, stage, n,
                           _describe(space.to_dict()))
                self._run_pending(study_id, spec, optimizer, stage, slog)
                if self.is_cancelled(study_id):
                    raise StudyCancelled
                try:
                    self.store.export_to_optuna(study_id, optimizer, stage, space.to_dict(),
                                                protocol.mode)
                except Exception:  # noqa: BLE001 - the Optuna view is a convenience
                    log.warning("optuna export failed: %s", traceback.format_exc())

    def _run_pending(self, study_id: str, spec: dict, optimizer: str, stage: int,
                     slog: StudyLog | None = None) -> None:
        pending = self.store.trials(study_id, optimizer=optimizer, stage=stage, status="pending")
        if not pending:
            return
        configs = [
            {"workload": spec["workload"], "optimizer": optimizer, "hyperparameters": t.config,
             "budget": spec["budget"], "seed": spec["protocol"]["seed"],
             "meta": {"trial_id": t.id, "study_id": study_id, "optimizer": optimizer,
                      "stage": stage, "index": t.index}}
            for t in pending
        ]

        def trial_name(trial) -> str:
            return trial_label(trial.config["trial"]["meta"])

        from workers.tune import run_configs

        sp = self.settings.storage_path  # a shared path or a URI (s3://, gs://) on a multi-node cluster
        storage = sp if "://" in sp else str(Path(sp).resolve())
        grid = run_configs(
            configs, name=f"{study_id}-{optimizer}-s{stage}-{int(time.time() * 1000)}",
            storage_path=storage, cpu=spec["resources"]["cpu"], gpu=spec["resources"]["gpu"],
            max_concurrent_trials=spec["max_concurrent_trials"], max_failures=2,
            callbacks=[_StoreCallback(self.store, spec["metric"], slog)],
            trial_name_creator=trial_name, stop=_CancelStopper(self, study_id),
        )
        cancelled = self.is_cancelled(study_id)
        for result in grid:
            tid = result.config["trial"]["meta"]["trial_id"] if result.config else None
            if tid is None:
                continue
            if result.error is not None:
                self.store.mark_failed(tid, f"{type(result.error).__name__}: {result.error}")
            else:
                t = self.store.trial(study_id, tid)
                if t and t.status not in ("completed", "diverged", "failed", "pending"):
                    self.store.mark_failed(tid, "stopped: the study was cancelled" if cancelled
                                           else "the trial ended without a final report")


def _describe(space: dict) -> str:
    """A one-line summary of a search space's dimensions for the study log."""
    try:
        parts = []
        for name, d in space.items():
            if "low" in d:
                parts.append(f"{name}~{d['kind']}[{_fmt(d['low'])}, {_fmt(d['high'])}]")
            elif "values" in d:
                parts.append(f"{name} in {d['values']}")
            else:
                parts.append(f"{name}={d.get('value')}")
        return ", ".join(parts)
    except (AttributeError, KeyError, TypeError):
        return str(space)


class RunnerStartError(RuntimeError):
    """The study runner could not start (most often: the Ray address does not answer)."""


def _kill_me_with_parent() -> None:
    """Linux: SIGKILL this process when the controller that started it dies, so a killed
    controller never leaves a second runner working on its studies (Ray's own processes
    fate-share with this driver)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _runner_main(settings_dict: dict, conn, stop_event, parent_pid: int) -> None:
    import signal

    _kill_me_with_parent()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C reaches the API; it stops us in order
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings(**settings_dict)
    if settings.runner_nice > 0:
        # Before any thread or Ray process exists: Linux keeps niceness per thread, and new
        # threads and processes inherit it from their creator.
        try:
            os.setpriority(os.PRIO_PROCESS, 0, max(os.getpriority(os.PRIO_PROCESS, 0),
                                                   settings.runner_nice))
        except OSError:
            pass
    try:
        store = StudyStore(settings.database_url)
        runner = StudyRunner(store, settings, stop_event=stop_event)
        runner.connect_ray()
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which fails fast
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", {"dashboard_url": runner.dashboard_url, "node_id": runner.node_id}))
    try:
        runner._loop()
    finally:
        runner.shutdown_ray()


class RunnerProcess:
    """The study runner in a child process of the API.

    The Tune driver loop, its callbacks' database writes and Ray's driver threads then never
    compete with the API for one interpreter lock: `bench/api_latency.py` measured GET
    /studies/{id} p99 at hundreds of ms with the runner as a thread of the API process while
    trials ran. Coordination goes through the study store only (status, cancel), as before."""

    def __init__(self, settings: Settings, start_timeout_s: float = 180.0):
        import multiprocessing as mp

        self.settings, self.start_timeout_s = settings, start_timeout_s
        self._ctx = mp.get_context("spawn")  # no fork of a process holding threads and sockets
        self._stop = self._ctx.Event()
        self.process = None
        self.dashboard_url: str | None = None
        self.node_id: str | None = None

    def start(self) -> None:
        parent, child = self._ctx.Pipe(duplex=False)
        self.process = self._ctx.Process(
            target=_runner_main, name="rootfree-runner",
            args=(self.settings.model_dump(), child, self._stop, os.getpid()))
        self.process.start()
        child.close()
        if not parent.poll(self.start_timeout_s):
            self.stop()
            raise RunnerStartError(f"the study runner did not start within {self.start_timeout_s:.0f} s "
                                   f"(Ray address: {self.settings.ray_address or 'local'})")
        try:
            kind, value = parent.recv()
        except EOFError:
            kind, value = "error", f"the runner process exited with code {self.process.exitcode}"
        if kind == "error":
            self.process.join(timeout=10)
            where = self.settings.ray_address or "a local Ray instance"
            raise RunnerStartError(f"the study runner could not start ({where}): {value}")
        self.dashboard_url, self.node_id = value["dashboard_url"], value["node_id"]

    def is_alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        if self.process is None:
            return
        self.process.join(timeout=timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=10)
