"""The study runner: one long-lived Ray Tune run multiplexes every runnable trial of every study.

Mechanism only. Which trial goes next is the scheduler's policy (`service/control/scheduler.py`); which
(optimizer, stage) groups are runnable is the study's state machine (`service/control/stages.py`). Here:
a Tune `Searcher` whose `suggest` asks the policy for the next trial that fits the free
resources and claims it in the store; per-trial resources from the trial's study
(`tune.with_resources` with a function of the config); a callback that writes every report to the
store and the study log as it arrives; a stopper that ends a cancelled study's trials at once.

Nothing is bound ahead of free capacity (the searcher hands out a trial only when it fits what
the live trials leave free; idle actors Tune keeps warm are capacity to reuse, not load), so a
newly submitted or higher-priority study gets the next slot that frees up. A claimed trial stays
`pending` in the store until its worker has started it; how Tune hands actors to trials is
adjusted in `service/control/tune_actors.py` so that no slot idles while a runnable trial fits.
After a controller crash, the trials it left running go back to pending and run again; completed
trials are never re-run, so the final counts are exactly the protocol's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import ray
from ray import tune
from ray.job_config import JobConfig
from ray.tune.search import Searcher

from search_spaces import NarrowingError
from service.auth import audit
from service.control.external import is_external
from service.control.node_catalog import NodeCatalogs
from service.control.pruners.asha import Asha
from service.control.samplers.tpe import TpeGroups
from service.control.scheduler import Group, StudyState, free_resources, infeasible, policy, trial_request
from service.control.stages import StageMachine, fmt
from service.control.tune_actors import LiveFIFO, installed
from service.settings import Settings
from service.statuses import ACTIVE
from service.store.files import remove_study_files, trial_dirname, trial_dirs
from service.store.lease import Lease, LeaseLost, holder_id
from service.store.study_log import StudyLog, ray_logs_dir
from service.store.study_store import FINISHED, RunnerStore, StudyStore

log = logging.getLogger("rootfree.runner")
os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# Tune's experiment snapshot (every trial of the run as JSON) on a clock, not at every trial
# checkpoint: with `num_to_keep` set Tune snapshots at each one, a cost that grew with every trial
# the run had seen (issue 25). The runner never restores a Tune run from it: the store is the record.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "60")
# Tune's default per-trial result files (JSON, CSV, TensorBoard), written by the driver at every
# report: the store and the study log already hold every report (a py-spy sample put them at a
# tenth of the Tune loop). Switched off for the runner's own run only (`_no_result_files`): other
# Tune runs of the process (workers.tune.run_configs) read their results back from those files.
# The results Tune reads back when the runner's run ends are so not there: the runner never uses
# them (one warning line per trial of the run otherwise).
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Tune asks a custom searcher for one pending trial at a time unless told otherwise; the searcher
# itself bounds what is handed out by the free resources, so Tune may start a whole round at once.
os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", "10000")
# A Tune run with nothing to do for this long ends (the runner polls again and starts a new one);
# until then its idle actors stay warm for the next study (service/control/tune_actors.py).
IDLE_END_S = 120.0


@contextlib.contextmanager
def _no_result_files():
    """Tune reads TUNE_DISABLE_AUTO_CALLBACK_LOGGERS when a run starts: set for the runner's run,
    restored after it (it must not leak into other Tune runs of the same process)."""
    before = os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS")
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)
        else:
            os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = before


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


def trial_error(trial) -> str:
    """What a failed trial's error was: the last lines of Tune's error file (they hold the
    exception, e.g. "No space left on device: '<path>'"), or the file's name."""
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text(errors="replace").strip() if path else ""
    except OSError:
        text = ""
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-3:])[-2000:] if lines else str(path or "error")


def _meta(trial) -> dict:
    return trial.config["trial"]["meta"]


class _StoreCallback(_LiveOnly, tune.Callback):
    """Writes every Tune event into the study store (and the study's log), as it happens."""

    def __init__(self, runner: StudyRunner):
        self.runner = runner

    def _say(self, trial, message: str, *args, level: int = logging.INFO) -> None:
        meta = _meta(trial)
        slog = self.runner.study_log(meta["study_id"])
        if slog is not None:
            slog.event("trial %s " + message, trial_label(meta), *args, level=level, echo=False)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.runner.started(trial.trial_id)
        try:
            self.runner.store.mark_started(_meta(trial)["trial_id"])
        except LeaseLost as e:
            self.runner.lost(e)
        hp = trial.config["trial"]["hyperparameters"]
        self._say(trial, "started: %s", " ".join(f"{k}={fmt(v)}" for k, v in sorted(hp.items())))

    def on_trial_restore(self, iteration, trials, trial, **info):
        self._say(trial, "restored from its checkpoint after a failure", level=logging.WARNING)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        try:
            self._on_result(trial, result)
        except LeaseLost as e:
            self.runner.lost(e)

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        try:
            self.runner.store.set_checkpoint(_meta(trial)["trial_id"], checkpoint.path)
        except LeaseLost as e:
            self.runner.lost(e)
        self.runner.prune_older_checkpoints(checkpoint.path)

    def _on_result(self, trial, result) -> None:
        meta = _meta(trial)
        try:
            self._record(trial, meta, result)
        finally:
            reason = self.runner.asha_stopped.pop(meta["trial_id"], None)
            if reason:  # the stopper decided at this report (it runs before the callbacks)
                self.runner.store.mark_stopped(meta["trial_id"], reason)
                self._say(trial, "stopped early: %s", reason)

    def _record(self, trial, meta: dict, result: dict) -> None:
        metric = self.runner.metric_of(meta["study_id"])
        keep = ("epoch", "train_loss", metric, "lr", "examples_per_s", "epoch_time_s",
                "wall_time_s", "peak_memory_mb", "status", "resumed_from_epoch", "node_ip", "node_id")
        row = {k: result.get(k) for k in keep if k in result}
        self.runner.store.record_result(meta["trial_id"], row, metric)
        fields = " ".join(f"{k}={fmt(row[k])}" for k in
                          ("train_loss", metric, "lr", "examples_per_s", "node_ip") if k in row)
        self._say(trial, "epoch %s: %s%s", row.get("epoch"), fields,
                  " (diverged)" if row.get("status") == "diverged" else "")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._say(trial, "finished")

    def on_trial_error(self, iteration, trials, trial, **info):
        try:
            self.runner.store.mark_failed(_meta(trial)["trial_id"], self.runner.failure_reason(trial), refine=True)
        except LeaseLost as e:
            self.runner.lost(e)
        self._say(trial, "failed (error file: %s)", getattr(trial, "error_file", None),
                  level=logging.ERROR)


class _CancelStopper(_LiveOnly, tune.Stopper):
    """Stops a cancelled (or deleted) study's trials at their next report, and every trial when
    the runner stops."""

    def __init__(self, runner: StudyRunner):
        self.runner = runner

    def __call__(self, trial_id, result):
        meta = result.get("meta") or {}
        if "study_id" not in meta:
            return False
        if self.runner.is_cancelled(meta["study_id"]):
            return True
        try:
            return self.runner.early_stop(meta, result)
        except LeaseLost as e:
            self.runner.lost(e)
            return True

    def stop_all(self):
        return self.runner.stopping


class _QueueSearcher(_LiveOnly, Searcher):
    """Tune's side of the queue: `suggest` hands out the next trial the policy picks."""

    def __init__(self, runner: StudyRunner):
        super().__init__()
        self.runner = runner

    def suggest(self, trial_id: str):
        if self.runner.stopping:
            return Searcher.FINISHED
        try:
            config = self.runner.dispatch(trial_id)
        except LeaseLost as e:
            self.runner.lost(e)
            return Searcher.FINISHED
        if config is not None:
            return {"trial": config}
        if self.runner.idle_for() > IDLE_END_S:
            return Searcher.FINISHED
        return None

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False):
        self.runner.release(trial_id, error)


@dataclass
class _Active:
    """What the runner keeps in memory about a study it is running."""

    spec: dict
    request: dict[str, float]
    priority: int
    created: float
    slog: StudyLog
    groups: tuple[Group, ...] = ()
    done: bool = False
    asha: Asha | None = None


@dataclass(frozen=True)
class _Live:
    study_id: str
    trial_id: int  # the store's row id
    request: dict
    optimizer: str = ""
    stage: int = 0
    index: int = 0


class StudyRunner:
    """Runs studies in a thread of this process (embedding, tests); `RunnerProcess` runs one in
    a child process, which is what `rootfree serve` does."""

    def __init__(self, store: StudyStore, settings: Settings, stop_event=None):
        self.settings = settings
        self.base_store = store
        self.holder = settings.runner_id or holder_id()
        self.lease = Lease(store.engine, self.holder, ttl_s=settings.lease_ttl_s)
        self._stop = stop_event if stop_event is not None else threading.Event()
        # Every runner transaction is fenced by the lease and retried through database outages.
        self.store = RunnerStore(store, self.lease, retry_s=settings.db_retry_s, stop=self._stop)
        self.policy = policy(settings.scheduler)
        self.stages = StageMachine(self.store)
        self.dashboard_url: str | None = None
        self.node_id: str | None = None  # the Ray node this runner drives from (its logs dir)
        self.role = "standby"
        self._thread: threading.Thread | None = None
        self._lock = threading.RLock()  # Tune's driver thread and stop() share the state below
        self._reset_state()

    def _reset_state(self) -> None:
        self.tpe = TpeGroups(self.store)  # rebuilt from the store's finished trials on demand
        self.active: dict[str, _Active] = {}
        self.live: dict[str, _Live] = {}  # Tune trial id -> claimed store trial
        self._started: set[str] = set()  # Tune trial ids of `live` whose worker has started them
        self._interrupted: dict[str, int] = {}  # study id -> trials a dead controller left running
        self._cancelled: dict[str, tuple[float, bool]] = {}
        self._refreshed = 0.0
        self._dirty = True
        self._cluster_at = 0.0
        self._total: dict[str, float] = {}
        self._nodes: list[dict[str, float]] = []
        self._catalogs = NodeCatalogs()  # each live node's workloads and optimizers (plugins)
        self._busy_at = time.monotonic()
        self._lost = False  # a fenced write found the lease gone: stop everything
        self._disk_message: str | None = None
        self._disk_checked = 0.0
        self.asha_stopped: dict[int, str] = {}  # trial row id -> why ASHA stopped it (until recorded)
        self._rungs: dict[tuple, list[float]] = {}  # (study, optimizer, stage, epoch) -> values there

    # ------------------------------------------------------------------ lifecycle
    def connect_ray(self) -> None:
        if ray.is_initialized():
            if self.node_id is None:
                self.node_id = ray.get_runtime_context().get_node_id()
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
            ctx = ray.init(num_cpus=s.num_cpus, num_gpus=s.num_gpus,
                           object_store_memory=s.object_store_mb * 2**20,
                           include_dashboard=s.dashboard, dashboard_host="127.0.0.1",
                           dashboard_port=s.dashboard_port, **kwargs)
        url = getattr(ctx, "dashboard_url", None)
        self.dashboard_url = f"http://{url}" if url and not url.startswith("http") else url
        self.node_id = ray.get_runtime_context().get_node_id()
        self.store.record_cluster(runner={"holder": self.holder, "pid": os.getpid(), "since": time.time(),
                                          "dashboard_url": self.dashboard_url, "node_id": self.node_id})

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="rootfree-runner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=60)
        self.shutdown_ray()

    def shutdown_ray(self) -> None:
        if getattr(self, "_owns_ray", False) and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False

    @property
    def stopping(self) -> bool:
        """The runner stops (shutdown), or its lease is about to lapse: trials must stop."""
        return self._stop.is_set() or self._lost or self.lease.expiring()

    def is_cancelled(self, study_id: str) -> bool:
        """Whether the study was cancelled or deleted (cached for half a second: the stopper
        asks at every report)."""
        at, value = self._cancelled.get(study_id, (0.0, False))
        if time.monotonic() - at > 0.5:
            study = self.store.get_study(study_id)
            value = study is None or study.status == "cancelled"
            self._cancelled[study_id] = (time.monotonic(), value)
        return value

    def _loop(self) -> None:
        """Standby until this controller holds the lease, then leader until it stops or loses it."""
        while not self._stop.is_set():
            try:
                if not self.lease.acquire():
                    self.role = "standby"
                    self._stop.wait(self.settings.lease_poll_s)
                    continue
            except Exception:  # noqa: BLE001 - the database may be down: try again
                log.warning("runner lease: %s", traceback.format_exc(limit=1))
                self._stop.wait(self.settings.lease_poll_s)
                continue
            self.role = "leader"
            renewer = threading.Thread(target=self._renew_loop, name="rootfree-lease", daemon=True)
            renewer.start()
            followers = self._start_followers()
            try:
                self._lead()
            finally:
                for follower in followers:
                    follower.stop()
                self.role = "standby"
                if self._stop.is_set():
                    try:
                        self.lease.release()  # a clean stop: a standby takes over at once
                    except Exception:  # noqa: BLE001
                        pass
                renewer.join(timeout=10)

    def _start_followers(self) -> list:
        """The live Optuna view and MLflow tracking, while this runner leads (one writer): each on
        its own thread, following the store; the runner never waits for them."""
        started = []
        s = self.settings
        try:
            from service.followers.optuna_view import OptunaFollower, OptunaViewProcess

            # Ray metrics need this process's Ray connection: a thread (two grouped queries a pass)
            in_thread = s.optuna_view and not s.optuna_view_process
            started.append(OptunaFollower(self.base_store, s.optuna_view_interval_s, s.optuna_view_url,
                                          view=in_thread, metrics=True).start())
            if s.optuna_view and s.optuna_view_process:
                started.append(OptunaViewProcess(s.database_url, s.optuna_view_interval_s, s.optuna_view_url).start())
            self.optuna_follower = started[-1]
            if s.mlflow_tracking_uri:
                from service.followers.mlflow_tracker import MlflowFollower

                started.append(MlflowFollower(self.base_store, s.mlflow_tracking_uri,
                                              experiment=s.mlflow_experiment).start())
        except Exception:  # noqa: BLE001 - conveniences; the runner runs without them
            log.warning("store followers not started: %s", traceback.format_exc(limit=1))
        return started

    def _renew_loop(self) -> None:
        while self.lease.held and not self._stop.is_set():
            if self._stop.wait(self.settings.lease_renew_s):
                return
            try:
                if not self.lease.renew():
                    log.error("runner lease lost (another controller holds it, or it expired before a renewal); "
                              "stopping this runner's trials")
                    return
            except Exception:  # noqa: BLE001 - keep trying until the lease would lapse
                log.warning("runner lease renewal failed: %s", traceback.format_exc(limit=1))

    def _lead(self) -> None:
        """The leader's work: resume what a dead leader left running, then run every study."""
        self._reset_state()
        log.info("runner %s leads (lease token %s)", self.holder, self.lease.token)
        if self.lease.took_over_from and self.lease.took_over_from != self.holder:
            try:
                audit(self.base_store.engine, self.holder, "runner.takeover", "runner lease",
                      detail={"from": self.lease.took_over_from, "token": self.lease.token})
            except Exception:  # noqa: BLE001 - the audit line is not worth the leadership
                log.warning("could not write the takeover to the audit trail")
            self.lease.took_over_from = None
        try:
            for study in self.store.studies_with_status("running"):  # a previous leader died
                if is_external(study.spec):
                    continue  # its running trials are claimed by clients, under their own leases
                self._interrupted[study.id] = self.store.reset_interrupted(study.id)
                # trials that finished just before it died may not have been pruned yet
                for t in self.store.trials(study.id):
                    if t.status in FINISHED:
                        self._prune_checkpoints(t)
                log.info("resuming study %s (%d interrupted trials rerun)", study.id,
                         self._interrupted[study.id])
        except LeaseLost as e:
            log.error("runner: %s", e)
            return
        while not self.stopping:
            try:
                self.connect_ray()
                self._record_cluster(force=True)
                if self.store.studies_with_status("running", "queued"):
                    self._run_tune()
                else:
                    self._stop.wait(self.settings.poll_interval_s)
            except LeaseLost as e:
                log.error("runner: %s; back to standby", e)
                break
            except Exception:  # noqa: BLE001 - the runner lives on; the next poll tries again
                log.error("runner loop: %s", traceback.format_exc())
                self._reconnect_ray_if_lost()
                self._stop.wait(self.settings.poll_interval_s)
        with self._lock:
            message = ("study interrupted: the controller is stopping; it resumes on restart"
                       if self._stop.is_set() else
                       "study interrupted: this controller lost the runner lease; another resumes it")
            for sid in list(self.active):
                self._drop(sid, message)

    def early_stop(self, meta: dict, result: dict) -> bool:
        """ASHA's decision at this report (service/control/pruners/asha.py): True stops the trial. Only
        search stages are ever stopped (seed re-runs train their whole budget)."""
        a = self.active.get(meta["study_id"])
        if a is None or a.asha is None or result.get("status") in ("completed", "diverged"):
            return False
        epoch = result.get("epoch")
        if meta["stage"] > len(a.spec["protocol"]["stages"]) or epoch not in a.asha.rungs:
            return False
        metric = a.spec["metric"]
        key = (meta["study_id"], meta["optimizer"], meta["stage"], epoch)
        if key not in self._rungs:  # rebuilt from the stored reports after a restart
            self._rungs[key] = [v for v in self.store.rung_values(*key, metric)]
        value = result.get(metric)
        go_on = a.asha.keep_going(value, self._rungs[key], a.spec["mode"])
        if isinstance(value, int | float):
            self._rungs[key].append(float(value))
        if not go_on:
            self.asha_stopped[meta["trial_id"]] = (f"ASHA: {metric} {value:.4g} at epoch {epoch} is not in the "
                                                   f"best 1/{a.asha.reduction_factor} of its group's rung")
        return not go_on

    def failure_reason(self, trial) -> str:
        """Why a trial failed: its error, and the full disk when that is what it hit (Tune cannot
        even write its error file there)."""
        reason = trial_error(trial)
        if "no space left" not in reason.lower() and self._disk_full(fresh=True):
            reason = f"{self._disk_message} ({reason})"
        return reason

    def lost(self, error: Exception) -> None:
        """A fenced write found the lease gone: stop every trial, write nothing more."""
        if not self._lost:
            log.error("runner: %s; stopping this runner's trials", error)
        self._lost = True

    def _reconnect_ray_if_lost(self) -> None:
        """A lost Ray connection (the head restarted, the network broke) is re-established on the
        next loop: the old connection is shut down here."""
        if not ray.is_initialized():
            return
        try:
            ray.nodes()
        except Exception:  # noqa: BLE001
            log.warning("the Ray connection is lost; reconnecting")
            try:
                ray.shutdown()
            except Exception:  # noqa: BLE001
                pass
            self.node_id = None

    # ------------------------------------------------------------------ the Tune run
    def _run_tune(self) -> None:
        from ray.tune import FailureConfig, RunConfig, TuneConfig, Tuner
        from ray.tune.execution.placement_groups import PlacementGroupFactory

        from workers.tune import named_trainable, trainable

        def resources(config: dict) -> PlacementGroupFactory:  # per trial, from its study
            request = config["trial"]["meta"]["request"]
            return PlacementGroupFactory([{k: v for k, v in request.items() if v > 0}])

        def trial_name(trial) -> str:
            return trial_label(_meta(trial))

        def trial_dir(trial) -> str:
            m = _meta(trial)
            return trial_dirname(m["study_id"], m["optimizer"], m["stage"], m["index"])

        sp = self.settings.storage_path  # a shared path or a URI (s3://, gs://) on a multi-node cluster
        storage = sp if "://" in sp else str(Path(sp).resolve())
        self._busy_at = time.monotonic()
        named = self.settings.trial_actor_names  # a fresh, named actor per trial (see named_trainable)
        tuner = Tuner(
            tune.with_resources(named_trainable() if named else trainable, resources),
            tune_config=TuneConfig(
                search_alg=_QueueSearcher(self), scheduler=LiveFIFO(), num_samples=-1, reuse_actors=not named,
                trial_name_creator=trial_name, trial_dirname_creator=trial_dir),
            run_config=RunConfig(
                name=f"rootfree-{int(time.time() * 1000)}", storage_path=storage,
                callbacks=[_StoreCallback(self)], stop=_CancelStopper(self),
                failure_config=FailureConfig(max_failures=2), verbose=0,
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=None)),  # the runner prunes (prune_older_checkpoints, release)
        )
        try:
            with installed(warm_s=IDLE_END_S), _no_result_files():
                tuner.fit()
        finally:
            with self._lock:  # anything Tune did not report back is not running any more
                for tune_id in list(self.live):
                    self.release(tune_id, error=True)

    def idle_for(self) -> float:
        with self._lock:
            if self.live or any(not a.done for a in self.active.values()):
                self._busy_at = time.monotonic()
        return time.monotonic() - self._busy_at

    # ------------------------------------------------------------------ the queue
    def dispatch(self, tune_trial_id: str) -> dict | None:
        """The next trial to start (a trial configuration for `workers.run_trial`), or None."""
        with self._lock:
            self._refresh()
            if self._disk_full():
                return None
            running: dict[str, int] = {}
            for t in self.live.values():
                running[t.study_id] = running.get(t.study_id, 0) + 1
            free = free_resources(self._total, [t.request for t in self.live.values()])
            states = [StudyState(sid, a.priority, a.created, running.get(sid, 0),
                                 a.spec["max_concurrent_trials"], a.request, a.groups)
                      for sid, a in self.active.items()
                      if not a.done and not is_external(a.spec)]  # external: clients claim them
            for _ in range(len(states) + 1):
                choice = self.policy.choose(states, free)
                if choice is None:
                    return None
                a = self.active[choice.study_id]
                # One claim id per attempt: a retry of this call (the store retries through a
                # failover) finds the trial this claim took instead of claiming a second one.
                trial = self.store.claim_pending(choice.study_id, choice.optimizer, choice.stage,
                                                 uuid.uuid4().hex)
                a.groups = tuple(
                    replace(g, runnable=g.runnable - 1 if trial else 0, running=g.running + (trial is not None))
                    if (g.optimizer, g.stage) == (choice.optimizer, choice.stage) else g
                    for g in a.groups)
                states = [replace(s, groups=a.groups) if s.study_id == choice.study_id else s
                          for s in states]
                if trial is None:  # our counts were stale: look again soon
                    self._dirty = True
                    continue
                if a.spec["protocol"]["method"] == "tpe" and not trial.config:
                    trial.config = self.tpe.ask(self.store.get_study(choice.study_id), trial.optimizer,
                                                trial.stage, trial.id)
                    self.store.set_config(trial.id, trial.config)
                self.live[tune_trial_id] = _Live(choice.study_id, trial.id, a.request,
                                                 trial.optimizer, trial.stage, trial.index)
                self._busy_at = time.monotonic()
                config = {"workload": a.spec["workload"], "optimizer": trial.optimizer,
                          "hyperparameters": trial.config, "budget": a.spec["budget"],
                          "seed": trial.seed if trial.seed is not None else a.spec["protocol"]["seed"],
                          "meta": {"trial_id": trial.id, "study_id": choice.study_id, "study_name": a.spec["name"],
                                   "optimizer": trial.optimizer, "stage": trial.stage,
                                   "index": trial.index, "request": a.request}}
                if a.spec["protocol"].get("scheme") == "original":
                    config["schedule"] = "constant"  # the setup the root was introduced in
                if trial.checkpoint:  # interrupted by a controller death: go on from its last epoch
                    config["resume_from"] = trial.checkpoint
                    a.slog.event("trial %s resumes from its checkpoint %s", trial_label(config["meta"]),
                                 trial.checkpoint, echo=False)
                return config
            return None

    def release(self, tune_trial_id: str, error: bool) -> None:
        """Tune is done with a trial: it finished, failed, or was stopped."""
        with self._lock:
            live = self.live.pop(tune_trial_id, None)
            self._started.discard(tune_trial_id)
            self._dirty = True
            if live is None:
                return
            try:
                t = self.store.trial(live.study_id, live.trial_id)
                if t is not None and t.status in FINISHED:
                    self._prune_checkpoints(t)
                    self.tpe.tell(t.study_id, t.optimizer, t.stage, t.id, t.objective,
                                  t.status in ("completed", "stopped"))
                if t is None:
                    self._sweep_if_deleted(live)
                    return
                if t.status in FINISHED:
                    return
                if self.is_cancelled(live.study_id):
                    self.store.mark_failed(live.trial_id, "stopped: the study was cancelled")
                elif self.stopping:
                    self.store.release_trial(live.trial_id)  # runs again after the restart
                elif self._disk_full(fresh=True):  # what failed it, most likely: say so, and where
                    self.store.mark_failed(live.trial_id, f"the trial failed: {self._disk_message}")
                else:
                    self.store.mark_failed(live.trial_id, "the trial failed" if error
                                           else "the trial ended without a final report")
            except LeaseLost:
                pass  # the new leader resets it to pending

    def prune_older_checkpoints(self, path: str) -> None:
        """A trial's new checkpoint makes its older ones in this Tune run useless (unless
        ROOTFREE_KEEP_CHECKPOINTS=all): removed here, one directory listing, instead of Tune's
        `num_to_keep` (service/control/tune_actors.py says why)."""
        import shutil

        if self.settings.keep_checkpoints == "all" or "://" in path:
            return
        new = Path(path)
        for old in new.parent.glob("checkpoint_*"):
            if old.name != new.name:
                shutil.rmtree(old, ignore_errors=True)

    def _sweep_if_deleted(self, live: _Live) -> None:
        """A study deleted while its trials still ran (DELETE right after cancel): a trial that
        went on until the stopper ended it may have written its directory again after DELETE
        removed the files, so they are removed once more when its last trial has ended."""
        if self.store.get_study(live.study_id) is not None:
            return
        if not any(t.study_id == live.study_id for t in self.live.values()):
            self._drop(live.study_id, None)
            n = remove_study_files(self.settings.storage_path, live.study_id)
            if n:
                log.info("removed %d trial directories of deleted study %s written after its deletion",
                         n, live.study_id)

    def _prune_checkpoints(self, t) -> None:
        """A finished trial keeps its final checkpoint only (ROOTFREE_KEEP_CHECKPOINTS=final), all
        of them (all) or none (none); checkpoints of earlier, interrupted runs of it go."""
        import shutil

        keep = self.settings.keep_checkpoints
        if keep == "all":
            return
        final = Path(t.checkpoint).resolve() if t.checkpoint and "://" not in t.checkpoint else None
        for d in trial_dirs(self.settings.storage_path, t.study_id, t.optimizer, t.stage, t.index):
            for ckpt in d.glob("checkpoint_*"):
                if keep == "none" or ckpt.resolve() != final:
                    shutil.rmtree(ckpt, ignore_errors=True)

    def _disk_full(self, fresh: bool = False) -> bool:
        """Whether the storage path has less than ROOTFREE_MIN_FREE_MB free (checked at most
        once a second). While it does, no trial starts; a study with nothing running ends."""
        import shutil

        now = time.monotonic()
        if not fresh and now - self._disk_checked < 1.0:
            return self._disk_message is not None
        self._disk_checked = now
        sp = self.settings.storage_path
        message = None
        if "://" not in sp:
            path = Path(sp).resolve()
            probe = path if path.exists() else path.parent
            try:
                free = shutil.disk_usage(probe).free / 2**20
            except OSError:
                free = float("inf")
            if free < self.settings.min_free_mb:
                message = (f"no space left on device under {path}: {free:.0f} MB free, trials need "
                           f"{self.settings.min_free_mb} MB (ROOTFREE_MIN_FREE_MB)")
        if message and not self._disk_message:
            log.error("%s; no trial starts until there is space", message)
        self._disk_message = message
        return message is not None

    def _refresh(self) -> None:
        """Brings the in-memory view of the active studies up to date (rate-limited)."""
        now = time.monotonic()
        if not self._dirty and now - self._refreshed < self.settings.poll_interval_s:
            return
        self._refreshed, self._dirty = now, False
        self._record_cluster()
        studies = {s.id: s for s in self.store.studies_with_status("running", "queued")}
        for sid in list(self.active):
            if sid not in studies:
                self._drop(sid, "study cancelled" if self.is_cancelled(sid) else None)
        for sid, study in studies.items():
            a = self.active.get(sid) or self._admit(study)
            if a is None:
                continue
            try:
                progress = self.stages.advance(study, a.slog)
            except NarrowingError as e:
                self._finish(sid, "failed", str(e))
                continue
            except LeaseLost as e:  # not the study's failure: another controller leads now
                a.slog.event("stage transition interrupted: this controller lost the runner lease (%s); "
                             "the new leader resumes the study", e, level=logging.WARNING)
                raise
            except Exception as e:  # noqa: BLE001 - the study fails, the runner lives on
                a.slog.event("study failed: %s", traceback.format_exc(), level=logging.ERROR)
                self._finish(sid, "failed", f"{type(e).__name__}: {e}", logged=True)
                continue
            a.groups, a.done = self._claimed_as_running(sid, progress.groups), progress.done
            busy = any(t.study_id == sid for t in self.live.values())
            if a.done and not busy:
                self._finish(sid, "completed")
            # a study ends for a full disk only on a fresh look (the cached one may be a second
            # old: space freed since, a study just submitted would fail at once)
            elif not busy and not is_external(a.spec) and self._disk_full() and self._disk_full(fresh=True):
                self._finish(sid, "failed", self._disk_message)

    def started(self, tune_trial_id: str) -> None:
        """Tune started the trial on a worker (the store's `running` follows)."""
        with self._lock:
            if tune_trial_id in self.live:
                self._started.add(tune_trial_id)

    def _claimed_as_running(self, study_id: str, groups: tuple[Group, ...]) -> tuple[Group, ...]:
        """The store counts a claimed trial as pending until its worker starts it; the policy
        must count it as taken (not runnable again, running for the group's fair share)."""
        waiting = Counter((t.optimizer, t.stage) for tid, t in self.live.items()
                          if t.study_id == study_id and tid not in self._started)
        if not waiting:
            return groups
        return tuple(replace(g, runnable=max(0, g.runnable - waiting[(g.optimizer, g.stage)]),
                             running=g.running + waiting[(g.optimizer, g.stage)]) for g in groups)

    def _admit(self, study) -> _Active | None:
        """A study this runner has not run yet (new, or resumed after a restart)."""
        spec = study.spec
        request = trial_request(spec["resources"])
        short = None if is_external(spec) else infeasible(request, self._nodes)
        if short is not None:
            self.store.set_status(study.id, "failed", only_from=ACTIVE,
                                  error=f"resources: no node of the cluster has enough {short} "
                                        f"for one trial ({spec['resources']})")
            return None
        before = study.status
        if not self.store.set_status(study.id, "running", only_from=ACTIVE):
            return None
        slog = StudyLog(self.settings.storage_path, study.id, ray_logs_dir())
        how = "started"
        if before == "running":
            how = f"resumed ({self._interrupted.pop(study.id, 0)} interrupted trials rerun)"
        slog.event("study %r %s on %s (Ray node %s)", study.name, how,
                   self.settings.ray_address or "a local Ray", self.node_id)
        a = _Active(spec=spec, request=request, priority=int(spec.get("priority", 0)),
                    created=study.created_at.timestamp(), slog=slog, asha=Asha.from_spec(spec))
        self.active[study.id] = a
        return a

    def _finish(self, study_id: str, status: str, error: str | None = None, logged: bool = False) -> None:
        a = self.active.get(study_id)
        if status == "completed":
            self.store.set_status(study_id, "completed", only_from=("running",))
            if a:
                a.slog.event("study completed")
        else:
            self.store.set_status(study_id, status, only_from=("running",), error=error)
            if a and not logged:
                a.slog.event("study %s: %s", status, error, level=logging.ERROR)
        self._drop(study_id, None)

    def _drop(self, study_id: str, message: str | None) -> None:
        a = self.active.pop(study_id, None)
        if a is not None:
            if message:
                a.slog.event(message)
            a.slog.close()

    def study_log(self, study_id: str) -> StudyLog | None:
        a = self.active.get(study_id)
        return a.slog if a else None

    def metric_of(self, study_id: str) -> str:
        a = self.active.get(study_id)
        if a is not None:
            return a.spec["metric"]
        study = self.store.get_study(study_id)
        return study.spec["metric"] if study else "objective"

    # ------------------------------------------------------------------ the cluster
    def _record_cluster(self, force: bool = False) -> None:
        """Reads the cluster's nodes and resources from Ray and records them in the store (the
        API answers `GET /cluster` and checks feasibility from that record)."""
        now = time.monotonic()
        if not force and now - self._cluster_at < self.settings.cluster_refresh_s:
            return
        self._cluster_at = now
        try:
            nodes = [{"node_id": n["NodeID"], "alive": bool(n["Alive"]),
                      "address": n.get("NodeManagerAddress"),
                      "resources": {k: float(v) for k, v in (n.get("Resources") or {}).items()
                                    if not k.startswith("node:") and k != "object_store_memory"}}
                     for n in ray.nodes()]
            total = {k: float(v) for k, v in ray.cluster_resources().items() if not k.startswith("node:")}
            available = {k: float(v) for k, v in ray.available_resources().items()
                         if not k.startswith("node:")}
            catalogs = self._catalogs.update([n["node_id"] for n in nodes if n["alive"]])
            for n in nodes:
                n["catalog"] = catalogs.get(n["node_id"])  # None until the node has answered
        except Exception:  # noqa: BLE001 - keep the last record; Ray may be reconnecting
            log.warning("could not read the cluster's resources: %s", traceback.format_exc())
            return
        self._total = total
        self._nodes = [n["resources"] for n in nodes if n["alive"]]
        self.store.record_cluster(nodes=nodes, total=total, available=available)


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
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which fails fast
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    # Ray is connected when this runner becomes the leader: a standby holds no Ray resources.
    conn.send(("ready", {"holder": runner.holder}))
    try:
        runner._loop()
    finally:
        runner.shutdown_ray()


class RunnerProcess:
    """The study runner in a child process of the API.

    The Tune driver loop, its callbacks' database writes and Ray's driver threads then never
    compete with the API for one interpreter lock: `bench/api_latency.py` measured GET
    /studies/{id} p99 at hundreds of ms with the runner as a thread of the API process while
    trials ran. Coordination goes through the study store only (status, cancel, the lease)."""

    def __init__(self, settings: Settings, start_timeout_s: float = 180.0):
        import multiprocessing as mp

        self.settings, self.start_timeout_s = settings, start_timeout_s
        self._ctx = mp.get_context("spawn")  # no fork of a process holding threads and sockets
        self._stop = self._ctx.Event()
        self.process = None
        self.holder: str | None = None

    def start(self) -> None:
        self._stop = self._ctx.Event()
        self.holder = holder_id()  # a new holder id per process: a restart never inherits a lease
        settings = self.settings.model_copy(update={"runner_id": self.holder})
        parent, child = self._ctx.Pipe(duplex=False)
        self.process = self._ctx.Process(
            target=_runner_main, name="rootfree-runner",
            args=(settings.model_dump(), child, self._stop, os.getpid()))
        self.process.start()
        child.close()
        if not parent.poll(self.start_timeout_s):
            self.stop()
            raise RunnerStartError(f"the study runner did not start within {self.start_timeout_s:.0f} s")
        try:
            kind, value = parent.recv()
        except EOFError:
            kind, value = "error", f"the runner process exited with code {self.process.exitcode}"
        if kind == "error":
            self.process.join(timeout=10)
            raise RunnerStartError(f"the study runner could not start: {value}")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

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
