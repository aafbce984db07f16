"""The Tune driver: one long-lived Ray Tune run whose searcher, stopper and callback are thin
adapters over the runner's dispatcher (service/control/dispatch.py). Nothing else.

- `QueueSearcher.suggest` hands out the trial the scheduler's policy picks, when it fits what the
  live trials leave free (so a newly submitted or higher-priority study gets the next free slot);
- `CancelStopper` ends a cancelled study's trials at their next report, and asks the study's
  pruner (ASHA) at every report: its decision travels in the report itself (`PRUNED`), which Tune
  hands to the callbacks after the stopper;
- `StoreCallback` writes every report to the store and the study's log as it arrives.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from ray import tune
from ray.tune.search import Searcher

from service.control.stages import fmt
from service.control.tune_actors import LiveFIFO, installed
from service.domain.statuses import FINISHED
from service.store.files import trial_dirname
from service.store.lease import LeaseLost

os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# Tune's experiment snapshot (every trial of the run as JSON) on a clock, not at every trial
# checkpoint: it grew with every trial the run had seen (issue 25). The store is the record.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "60")
# Tune's per-trial result files are off for this run only (`_no_result_files`): the store and the
# study log hold every report. Tune's read-back of them at the end then warns once per trial.
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# The searcher bounds what is handed out by the free resources: Tune may start a whole round at once.
os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", "10000")
# A Tune run with nothing to do for this long ends (the runner polls again and starts a new one);
# until then its idle actors stay warm for the next study (service/control/tune_actors.py).
IDLE_END_S = 120.0
PRUNED = "rootfree_pruned"  # the report key that carries the pruner's reason from stopper to callback
# what of a report the store keeps
KEEP = ("epoch", "train_loss", "lr", "examples_per_s", "epoch_time_s", "wall_time_s", "peak_memory_mb",
        "status", "resumed_from_epoch", "node_ip", "node_id", "pid",
        # evaluation-level time (budget eval_every; service/results/algoperf.py)
        "global_step", "train_time_s", "eval_time_s", "evals", "max_runtime_reached")


@contextlib.contextmanager
def _no_result_files():
    """Tune reads TUNE_DISABLE_AUTO_CALLBACK_LOGGERS when a run starts: set for the runner's run,
    restored after it (other Tune runs of the process, workers.tune, read their result files)."""
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


def _first_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else text[:300]


def _meta(trial) -> dict:
    return trial.config["trial"]["meta"]


class StoreCallback(_LiveOnly, tune.Callback):
    """Writes every Tune event into the study store (and the study's log), as it happens."""

    def __init__(self, runner):
        self.runner = runner

    def _say(self, trial, message: str, *args, level: int = logging.INFO) -> None:
        meta = _meta(trial)
        slog = self.runner.dispatcher.study_log(meta["study_id"])
        if slog is not None:
            slog.event("trial %s " + message, trial_label(meta), *args, level=level, echo=False)

    def _fenced(self, write, *args, **kwargs) -> None:
        try:
            write(*args, **kwargs)
        except LeaseLost as e:
            self.runner.lost(e)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.runner.dispatcher.started(trial.trial_id)
        self._fenced(self.runner.store.mark_started, _meta(trial)["trial_id"])
        hp = trial.config["trial"]["hyperparameters"]
        self._say(trial, "started: %s", " ".join(f"{k}={fmt(v)}" for k, v in sorted(hp.items())))

    def on_trial_restore(self, iteration, trials, trial, **info):
        self._say(trial, "restored from its checkpoint after a failure", level=logging.WARNING)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._fenced(self._on_result, trial, result)

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if self.runner.dispatcher.defer_checkpoint(trial.trial_id, checkpoint.path):
            return  # stored and its predecessors pruned at the release, in that order
        self._fenced(self.runner.store.set_checkpoint, _meta(trial)["trial_id"], checkpoint.path)
        self.runner.dispatcher.prune_older_checkpoints(checkpoint.path)

    def _on_result(self, trial, result) -> None:
        meta = _meta(trial)
        if result.get("status") == "failed":  # its own code raised (workers.tune): a result, no retry
            self.runner.store.mark_failed(meta["trial_id"], str(result.get("error") or "the trial failed"))
            self.runner.dispatcher.recorded(trial.trial_id, "failed")
            self._say(trial, "failed in its own code: %s", result.get("error"), level=logging.ERROR)
            return
        try:
            metric = self.runner.dispatcher.metric_of(meta["study_id"])
            row = {k: result[k] for k in (*KEEP, metric) if k in result}
            status = self.runner.store.record_result(meta["trial_id"], row, metric)
            if status in FINISHED:
                self.runner.dispatcher.recorded(trial.trial_id, status)
            fields = " ".join(f"{k}={fmt(row[k])}" for k in
                              ("train_loss", metric, "lr", "examples_per_s", "node_ip") if k in row)
            self._say(trial, "epoch %s: %s%s", row.get("epoch"), fields,
                      " (diverged)" if row.get("status") == "diverged" else "")
        finally:
            reason = result.get(PRUNED)
            if reason:  # the stopper's pruner decided at this very report
                if self.runner.store.mark_stopped(meta["trial_id"], reason):
                    self.runner.dispatcher.recorded(trial.trial_id, "stopped")
                self._say(trial, "stopped early: %s", reason)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._say(trial, "finished")

    def on_trial_recover(self, iteration, trials, trial, **info):
        """Its worker died for a reason outside its own code (the trainable turns the code's own
        exceptions into a failed report): it runs again from its last checkpoint, counted."""
        self._fenced(self.runner.store.count_attempt, _meta(trial)["trial_id"])
        self._say(trial, "lost its worker (%s); retrying from its last checkpoint (retry %s of %s, "
                  "ROOTFREE_TRIAL_RETRIES)", _first_line(self.runner.failure_reason(trial)),
                  getattr(trial, "num_failures", "?"), self.runner.settings.trial_retries, level=logging.WARNING)

    def on_trial_error(self, iteration, trials, trial, **info):
        retries = self.runner.settings.trial_retries
        reason = self.runner.failure_reason(trial)
        if retries:
            reason = f"{reason}\n(its worker failed {retries + 1} times; ROOTFREE_TRIAL_RETRIES is {retries})"
        self._fenced(self.runner.store.mark_failed, _meta(trial)["trial_id"], reason, refine=True)
        self._say(trial, "failed (error file: %s)", getattr(trial, "error_file", None), level=logging.ERROR)


class CancelStopper(_LiveOnly, tune.Stopper):
    """Stops a cancelled (or deleted) study's trials and the trials its pruner prunes, at their
    report; every trial when the runner stops."""

    def __init__(self, runner):
        self.runner = runner

    def __call__(self, trial_id, result):
        meta = result.get("meta") or {}
        if "study_id" not in meta:
            return False
        if self.runner.is_cancelled(meta["study_id"]):
            return True
        try:
            decision = self.runner.dispatcher.prune(meta, result)
        except LeaseLost as e:
            self.runner.lost(e)
            return True
        if decision.stop:
            result[PRUNED] = decision.reason  # the callback records it with this report
        return decision.stop

    def stop_all(self):
        return self.runner.stopping


class QueueSearcher(_LiveOnly, Searcher):
    """Tune's side of the queue: `suggest` hands out the next trial the policy picks."""

    def __init__(self, runner):
        super().__init__()
        self.runner = runner

    def suggest(self, trial_id: str):
        if self.runner.stopping:
            return Searcher.FINISHED
        try:
            config = self.runner.dispatcher.dispatch(trial_id)
        except LeaseLost as e:
            self.runner.lost(e)
            return Searcher.FINISHED
        if config is not None:
            return {"trial": config}
        if self.runner.dispatcher.idle_for() > IDLE_END_S:
            return Searcher.FINISHED
        return None

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False):
        self.runner.dispatcher.release(trial_id, error)


def run_tune(runner) -> None:
    """One Tune run: until nothing was runnable for IDLE_END_S, or the runner stops."""
    from ray.tune import FailureConfig, RunConfig, TuneConfig, Tuner
    from ray.tune.execution.placement_groups import PlacementGroupFactory

    from workers.tune import named_trainable, trainable

    def resources(config: dict) -> PlacementGroupFactory:  # per trial, from its study
        request = config["trial"]["meta"]["request"]
        return PlacementGroupFactory([{k: v for k, v in request.items() if v > 0}])

    def trial_dir(trial) -> str:
        m = _meta(trial)
        return trial_dirname(m["study_id"], m["optimizer"], m["stage"], m["index"])

    sp = runner.settings.storage_path  # a shared path or a URI (s3://, gs://) on a multi-node cluster
    storage = sp if "://" in sp else str(Path(sp).resolve())
    named = runner.settings.trial_actor_names  # a fresh, named actor per trial (see named_trainable)
    tuner = Tuner(
        tune.with_resources(named_trainable() if named else trainable, resources),
        tune_config=TuneConfig(
            search_alg=QueueSearcher(runner), scheduler=LiveFIFO(), num_samples=-1, reuse_actors=not named,
            trial_name_creator=lambda trial: trial_label(_meta(trial)), trial_dirname_creator=trial_dir),
        run_config=RunConfig(
            name=f"rootfree-{int(time.time() * 1000)}", storage_path=storage,
            callbacks=[StoreCallback(runner)], stop=CancelStopper(runner),
            failure_config=FailureConfig(max_failures=runner.settings.trial_retries), verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None)),  # the dispatcher prunes
    )
    runner.dispatcher.busy()
    try:
        with installed(warm_s=IDLE_END_S), _no_result_files():
            tuner.fit()
    finally:
        runner.dispatcher.release_all()  # anything Tune did not report back is not running any more
