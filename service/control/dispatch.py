"""Dispatch: which trial a free slot gets, and what happens when Tune is done with it.

The dispatcher keeps the runner's in-memory view: the active studies (their spec, resource
request, runnable groups, pruner, log) and the live trials (Tune trial id -> the store's trial).
It asks the stage machine which groups are runnable (service/control/stages.py), the scheduler's
policy who goes next (service/control/scheduler.py), claims the trial in the store, asks TPE for
its configuration when the study samples that way, and builds the trial's configuration for
`workers.run_trial`. A claimed trial stays `pending` in the store until its worker starts it.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, replace

from search_spaces import NarrowingError
from service.control import checkpoints
from service.control.cluster import ClusterRecorder
from service.control.disk import DiskGuard
from service.control.driver import trial_label
from service.control.pruners import GO_ON, Decision, Pruner, Report, pruner_for
from service.control.samplers import Samplers
from service.control.scheduler import Group, StudyState, free_resources, infeasible, policy
from service.control.stages import StageMachine
from service.domain.spec import ResolvedSpec
from service.domain.statuses import ACTIVE, FINISHED
from service.store.files import remove_study_files
from service.store.lease import LeaseLost
from service.store.study_log import StudyLog, ray_logs_dir

log = logging.getLogger("rootfree.runner")


@dataclass
class Active:
    """What the runner keeps in memory about a study it is running."""

    spec: ResolvedSpec
    request: dict[str, float]
    priority: int
    created: float
    slog: StudyLog
    groups: tuple[Group, ...] = ()
    done: bool = False
    pruner: Pruner | None = None


@dataclass(frozen=True)
class Ended:
    """What pruning a finished trial's checkpoints needs of it (the store's row has the same)."""

    study_id: str
    optimizer: str
    stage: int
    index: int
    checkpoint: str | None


@dataclass(frozen=True)
class Live:
    study_id: str
    trial_id: int  # the store's row id
    request: dict
    optimizer: str = ""
    stage: int = 0
    index: int = 0


class Dispatcher:
    def __init__(self, runner):
        self.runner = runner  # for its store (fenced), settings, stopping and cancel checks
        self.store, self.settings = runner.store, runner.settings
        self.policy = policy(self.settings.scheduler)
        self.samplers = Samplers(self.store)  # TPE's state: rebuilt from the store's finished trials on demand
        self.stages = StageMachine(self.store, self.samplers)
        self.cluster = ClusterRecorder(self.store, self.settings.cluster_refresh_s)
        self.disk = DiskGuard(self.settings.storage_path, self.settings.min_free_mb)
        self.lock = threading.RLock()  # Tune's driver thread and the runner's stop share the state
        self.active: dict[str, Active] = {}
        self.live: dict[str, Live] = {}  # Tune trial id -> claimed store trial
        self.interrupted: dict[str, int] = {}  # study id -> trials a dead controller left running
        self._started: set[str] = set()  # Tune trial ids of `live` whose worker has started them
        # What the callback already wrote of a live trial's end (its final status, the final
        # checkpoint it deferred): `release` then needs no read of the row back.
        self._final: dict[str, str] = {}
        self._final_checkpoint: dict[str, str] = {}
        self._refreshed = 0.0
        self._dirty = True
        self._busy_at = time.monotonic()

    # ------------------------------------------------------------------ handing out trials
    def dispatch(self, tune_trial_id: str) -> dict | None:
        """The next trial to start (a trial configuration for `workers.run_trial`), or None."""
        with self.lock:
            self.refresh()
            if self.disk.full():
                return None
            running = Counter(t.study_id for t in self.live.values())
            free = free_resources(self.cluster.total, [t.request for t in self.live.values()])
            states = [StudyState(sid, a.priority, a.created, running.get(sid, 0),
                                 a.spec.max_concurrent_trials, a.request, a.groups)
                      for sid, a in self.active.items()
                      if not a.done and not a.spec.external]  # external: clients claim them
            for _ in range(len(states) + 1):
                choice = self.policy.choose(states, free)
                if choice is None:
                    return None
                a = self.active[choice.study_id]
                # One claim id per attempt: a retry of this call (the store retries through a
                # failover) finds the trial this claim took instead of claiming a second one.
                trial = self.store.claim_pending(choice.study_id, choice.optimizer, choice.stage, uuid.uuid4().hex)
                a.groups = tuple(
                    replace(g, runnable=g.runnable - 1 if trial else 0, running=g.running + (trial is not None))
                    if (g.optimizer, g.stage) == (choice.optimizer, choice.stage) else g
                    for g in a.groups)
                states = [replace(s, groups=a.groups) if s.study_id == choice.study_id else s for s in states]
                if trial is None:  # our counts were stale: look again soon
                    self._dirty = True
                    continue
                sampler = self.samplers[a.spec.protocol.method]
                if sampler.asks and not trial.config:  # asked as slots free up (TPE)
                    trial.config = sampler.ask(self.store.get_study(choice.study_id), trial.optimizer,
                                               trial.stage, trial.id)
                    self.store.set_config(trial.id, trial.config)
                self.live[tune_trial_id] = Live(choice.study_id, trial.id, a.request,
                                                trial.optimizer, trial.stage, trial.index)
                self.busy()
                return self._trial_config(a, choice.study_id, trial)
            return None

    def _trial_config(self, a: Active, study_id: str, trial) -> dict:
        config = {"workload": a.spec.workload, "optimizer": trial.optimizer,
                  "hyperparameters": trial.config, "budget": dict(a.spec.budget),
                  "seed": trial.seed if trial.seed is not None else a.spec.protocol.seed,
                  "meta": {"trial_id": trial.id, "study_id": study_id, "study_name": a.spec.name,
                           "optimizer": trial.optimizer, "stage": trial.stage,
                           "index": trial.index, "request": a.request}}
        if a.spec.protocol.scheme == "original":
            config["schedule"] = "constant"  # the setup the root was introduced in
        if trial.checkpoint:  # interrupted by a controller death: go on from its last epoch
            config["resume_from"] = trial.checkpoint
            a.slog.event("trial %s resumes from its checkpoint %s", trial_label(config["meta"]),
                         trial.checkpoint, echo=False)
        return config

    def started(self, tune_trial_id: str) -> None:
        """Tune started the trial on a worker (the store's `running` follows)."""
        with self.lock:
            if tune_trial_id in self.live:
                self._started.add(tune_trial_id)

    def prune(self, meta: dict, result: dict) -> Decision:
        """The study's pruner on this report (seed re-runs and final reports are never pruned)."""
        a = self.active.get(meta["study_id"])
        if a is None or a.pruner is None or result.get("status") in ("completed", "diverged", "failed"):
            return GO_ON
        epoch, metric = result.get("epoch"), a.spec.metric
        report = Report(meta["study_id"], meta["optimizer"], meta["stage"], meta["trial_id"], epoch,
                        result.get(metric), result.get("train_time_s"))
        return a.pruner.decide(report, lambda: self.store.rung_values(
            meta["study_id"], meta["optimizer"], meta["stage"], epoch, metric))

    # ------------------------------------------------------------------ Tune is done with a trial
    def recorded(self, tune_trial_id: str, status: str) -> None:
        """The callback stored the trial's end (a final report, or the pruner's stop)."""
        with self.lock:
            if tune_trial_id in self.live:
                self._final[tune_trial_id] = status

    def defer_checkpoint(self, tune_trial_id: str, path: str) -> bool:
        """The checkpoint of a trial whose end is already stored is written with its release
        (Tune hands it over between the final report and the release): True when deferred."""
        with self.lock:
            if tune_trial_id not in self._final:
                return False
            self._final_checkpoint[tune_trial_id] = path
            return True

    def release(self, tune_trial_id: str, error: bool) -> None:
        """Tune is done with a trial: it finished, failed, or was stopped."""
        with self.lock:
            live = self.live.pop(tune_trial_id, None)
            self._started.discard(tune_trial_id)
            final = self._final.pop(tune_trial_id, None)
            checkpoint = self._final_checkpoint.pop(tune_trial_id, None)
            if live is None:
                self._dirty = True
                return
            self._settle(live, final if not error else None)
            try:
                self._release(live, error, final, checkpoint)
            except LeaseLost:
                pass  # the new leader resets it to pending

    def _settle(self, live: Live, final: str | None) -> None:
        """The in-memory view after a trial's end. Only an end that may change what is runnable
        (its group has nothing left to hand out: the stage may end and the next open, the study
        complete; or it did not finish: it may run again) makes the next dispatch read the
        store again; otherwise the view stays exact (claims already took their trials off it)."""
        a = self.active.get(live.study_id)
        key = (live.optimizer, live.stage)
        group = next((g for g in a.groups if (g.optimizer, g.stage) == key), None) if a else None
        if group is None or final is None or group.runnable <= 0:
            self._dirty = True
            return
        a.groups = tuple(replace(g, running=max(0, g.running - 1)) if g is group else g for g in a.groups)

    def _release(self, live: Live, error: bool, final: str | None = None, checkpoint: str | None = None) -> None:
        if checkpoint is not None:  # the row names the final checkpoint before older ones go
            self.store.set_checkpoint(live.trial_id, checkpoint)
            self.prune_older_checkpoints(checkpoint)
        a = self.active.get(live.study_id)
        # the row is read back for a learning sampler (TPE is told it), a study no longer active
        # (deleted meanwhile: its files are swept), or an end the callback did not see whole
        told = a is not None and not self.samplers[a.spec.protocol.method].asks
        known = checkpoint is not None or self.settings.keep_checkpoints == "all"
        if final is not None and not error and told and known:
            self.prune_finished_checkpoints(Ended(live.study_id, live.optimizer, live.stage, live.index, checkpoint))
            return
        t = self.store.trial(live.study_id, live.trial_id)
        if t is None:
            self._sweep_if_deleted(live)
            return
        if t.status in FINISHED:
            self.prune_finished_checkpoints(t)
            if a is not None:
                self.samplers[a.spec.protocol.method].tell(t)
            return
        if self.runner.is_cancelled(live.study_id):
            self.store.mark_failed(live.trial_id, "stopped: the study was cancelled")
        elif self.runner.stopping:
            self.store.release_trial(live.trial_id)  # runs again after the restart
        elif self.disk.full(fresh=True):  # what failed it, most likely: say so, and where
            self.store.mark_failed(live.trial_id, f"the trial failed: {self.disk.message}")
        else:
            self.store.mark_failed(live.trial_id, "the trial failed" if error
                                   else "the trial ended without a final report")

    def release_all(self) -> None:
        with self.lock:
            for tune_id in list(self.live):
                self.release(tune_id, error=True)

    def prune_older_checkpoints(self, path: str) -> None:
        checkpoints.prune_older(self.settings.keep_checkpoints, path)

    def prune_finished_checkpoints(self, t) -> None:
        checkpoints.prune_finished(self.settings.keep_checkpoints, self.settings.storage_path, t)

    def _sweep_if_deleted(self, live: Live) -> None:
        """A study deleted while its trials still ran (DELETE right after cancel): a trial that
        went on until the stopper ended it may have written its directory again after DELETE
        removed the files, so they are removed once more when its last trial has ended."""
        if self.store.get_study(live.study_id) is not None:
            return
        if not any(t.study_id == live.study_id for t in self.live.values()):
            self.drop(live.study_id, None)
            n = remove_study_files(self.settings.storage_path, live.study_id)
            if n:
                log.info("removed %d trial directories of deleted study %s written after its deletion",
                         n, live.study_id)

    # ------------------------------------------------------------------ the active studies
    def busy(self) -> None:
        self._busy_at = time.monotonic()

    def idle_for(self) -> float:
        with self.lock:
            if self.live or any(not a.done for a in self.active.values()):
                self.busy()
        return time.monotonic() - self._busy_at

    def refresh(self) -> None:
        """Brings the in-memory view of the active studies up to date (rate-limited)."""
        now = time.monotonic()
        if not self._dirty and now - self._refreshed < self.settings.poll_interval_s:
            return
        self._refreshed, self._dirty = now, False
        self.cluster.record()
        studies = {s.id: s for s in self.store.studies_with_status(*ACTIVE)}
        for sid in list(self.active):
            if sid not in studies:
                self.drop(sid, "study cancelled" if self.runner.is_cancelled(sid) else None)
        for sid, study in studies.items():
            a = self.active.get(sid) or self._admit(study)
            if a is not None:
                self._advance(sid, study, a)

    def _advance(self, sid: str, study, a: Active) -> None:
        try:
            progress = self.stages.advance(study, a.slog)
        except NarrowingError as e:
            self.finish(sid, "failed", str(e))
            return
        except LeaseLost as e:  # not the study's failure: another controller leads now
            a.slog.event("stage transition interrupted: this controller lost the runner lease (%s); "
                         "the new leader resumes the study", e, level=logging.WARNING)
            raise
        except Exception as e:  # noqa: BLE001 - the study fails, the runner lives on
            a.slog.event("study failed: %s", traceback.format_exc(), level=logging.ERROR)
            self.finish(sid, "failed", f"{type(e).__name__}: {e}", logged=True)
            return
        a.groups, a.done = self._claimed_as_running(sid, progress.groups), progress.done
        busy = any(t.study_id == sid for t in self.live.values())
        if a.done and not busy:
            self.finish(sid, "completed")
        # a study ends for a full disk only on a fresh look (the cached one may be a second
        # old: space freed since, a study just submitted would fail at once)
        elif not busy and not a.spec.external and self.disk.full() and self.disk.full(fresh=True):
            self.finish(sid, "failed", self.disk.message)

    def _claimed_as_running(self, study_id: str, groups: tuple[Group, ...]) -> tuple[Group, ...]:
        """The store counts a claimed trial as pending until its worker starts it; the policy
        must count it as taken (not runnable again, running for the group's fair share)."""
        waiting = Counter((t.optimizer, t.stage) for tid, t in self.live.items()
                          if t.study_id == study_id and tid not in self._started)
        if not waiting:
            return groups
        return tuple(replace(g, runnable=max(0, g.runnable - waiting[(g.optimizer, g.stage)]),
                             running=g.running + waiting[(g.optimizer, g.stage)]) for g in groups)

    def _admit(self, study) -> Active | None:
        """A study this runner has not run yet (new, or resumed after a restart)."""
        spec = study.resolved
        request = spec.resources.ray_request()
        short = None if spec.external else infeasible(request, self.cluster.nodes)
        if short is not None:
            self.store.set_status(study.id, "failed", only_from=ACTIVE,
                                  error=f"resources: no node of the cluster has enough {short} "
                                        f"for one trial ({spec.resources.model_dump()})")
            return None
        before = study.status
        if not self.store.set_status(study.id, "running", only_from=ACTIVE):
            return None
        slog = StudyLog(self.settings.storage_path, study.id, ray_logs_dir())
        how = "started"
        if before == "running":
            how = f"resumed ({self.interrupted.pop(study.id, 0)} interrupted trials rerun)"
        slog.event("study %r %s on %s (Ray node %s)", study.name, how,
                   self.settings.ray_address or "a local Ray", self.runner.node_id)
        a = Active(spec=spec, request=request, priority=spec.priority,
                   created=study.created_at.timestamp(), slog=slog,
                   pruner=pruner_for(spec, self.store.trial_dicts))
        self.active[study.id] = a
        return a

    def finish(self, study_id: str, status: str, error: str | None = None, logged: bool = False) -> None:
        a = self.active.get(study_id)
        if status == "completed":
            self.store.set_status(study_id, "completed", only_from=("running",))
            if a:
                a.slog.event("study completed")
        else:
            self.store.set_status(study_id, status, only_from=("running",), error=error)
            if a and not logged:
                a.slog.event("study %s: %s", status, error, level=logging.ERROR)
        self.drop(study_id, None)

    def drop(self, study_id: str, message: str | None) -> None:
        a = self.active.pop(study_id, None)
        self.samplers.forget(study_id)  # the long-lived runner keeps no sampler state of a study it no longer runs
        if a is not None:
            if message:
                a.slog.event(message)
            a.slog.close()

    def drop_all(self, message: str) -> None:
        with self.lock:
            for sid in list(self.active):
                self.drop(sid, message)

    def study_log(self, study_id: str) -> StudyLog | None:
        a = self.active.get(study_id)
        return a.slog if a else None

    def metric_of(self, study_id: str) -> str:
        a = self.active.get(study_id)
        if a is not None:
            return a.spec.metric
        study = self.store.get_study(study_id)
        return study.resolved.metric if study else "objective"
