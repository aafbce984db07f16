"""The study runner: one long-lived Ray Tune run multiplexes every runnable trial of every study.

This module is the leader: it waits for the runner lease (one controller runs trials, any number
stand by), renews it, resumes what a dead leader left running, connects to Ray and keeps a Tune
run going while there is work. The rest has its own home:

- service/control/driver.py: the Tune run and its searcher, stopper and callback;
- service/control/dispatch.py: which trial a free slot gets and what happens when it ends;
- service/control/scheduler.py (policy), stages.py (a study's state machine), pruners/, samplers/;
- service/control/process.py: the runner in a child process of the API.

After a controller crash, the trials it left running go back to pending and run again; completed
trials are never re-run, so the final counts are exactly the protocol's.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback

import ray
from ray.job_config import JobConfig

from service.control.dispatch import Dispatcher
from service.control.driver import run_tune, trial_error
from service.domain.statuses import ACTIVE, FINISHED
from service.settings import Settings
from service.store.audit import append as audit
from service.store.lease import Lease, LeaseLost, holder_id
from service.store.study_store import RunnerStore, StudyStore

log = logging.getLogger("rootfree.runner")


class StudyRunner:
    """Runs studies in a thread of this process (embedding, tests); `RunnerProcess`
    (service/control/process.py) runs one in a child process, which is what `rootfree serve` does."""

    def __init__(self, store: StudyStore, settings: Settings, stop_event=None):
        self.settings = settings
        self.base_store = store
        self.holder = settings.runner_id or holder_id()
        self.lease = Lease(store.engine, self.holder, ttl_s=settings.lease_ttl_s)
        self._stop = stop_event if stop_event is not None else threading.Event()
        # Every runner transaction is fenced by the lease and retried through database outages.
        self.store = RunnerStore(store, self.lease, retry_s=settings.db_retry_s, stop=self._stop)
        self.dashboard_url: str | None = None
        self.node_id: str | None = None  # the Ray node this runner drives from (its logs dir)
        self.role = "standby"
        self._thread: threading.Thread | None = None
        self._reset_state()

    def _reset_state(self) -> None:
        self.dispatcher = Dispatcher(self)
        self._cancelled: dict[str, tuple[float, bool]] = {}
        self._lost = False  # a fenced write found the lease gone: stop everything

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
        kwargs = dict(namespace="rootfree", log_to_driver=False, ignore_reinit_error=True, job_config=job)
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

    def failure_reason(self, trial) -> str:
        """Why a trial failed: its error, and the full disk when that is what it hit (Tune cannot
        even write its error file there)."""
        reason = trial_error(trial)
        disk = self.dispatcher.disk
        if "no space left" not in reason.lower() and disk.full(fresh=True):
            reason = f"{disk.message} ({reason})"
        return reason

    def lost(self, error: Exception) -> None:
        """A fenced write found the lease gone: stop every trial, write nothing more."""
        if not self._lost:
            log.error("runner: %s; stopping this runner's trials", error)
        self._lost = True

    # ------------------------------------------------------------------ the leader loop
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
            self._resume_interrupted()
        except LeaseLost as e:
            log.error("runner: %s", e)
            return
        while not self.stopping:
            try:
                self.connect_ray()
                self.dispatcher.cluster.record(force=True)
                if self.store.studies_with_status(*ACTIVE):
                    run_tune(self)
                else:
                    self._stop.wait(self.settings.poll_interval_s)
            except LeaseLost as e:
                log.error("runner: %s; back to standby", e)
                break
            except Exception:  # noqa: BLE001 - the runner lives on; the next poll tries again
                log.error("runner loop: %s", traceback.format_exc())
                self._reconnect_ray_if_lost()
                self._stop.wait(self.settings.poll_interval_s)
        self.dispatcher.drop_all("study interrupted: the controller is stopping; it resumes on restart"
                                 if self._stop.is_set() else
                                 "study interrupted: this controller lost the runner lease; another resumes it")

    def _resume_interrupted(self) -> None:
        """A previous leader died: the trials it left running go back to pending."""
        d = self.dispatcher
        for study in self.store.studies_with_status("running"):
            if study.resolved.external:
                continue  # its running trials are claimed by clients, under their own leases
            d.interrupted[study.id] = self.store.reset_interrupted(study.id)
            # trials that finished just before it died may not have been pruned yet
            for t in self.store.trials(study.id):
                if t.status in FINISHED:
                    d.prune_finished_checkpoints(t)
            log.info("resuming study %s (%d interrupted trials rerun)", study.id, d.interrupted[study.id])

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
