"""The Ray Tune side: the function trainable and helpers to run a list of configurations.

``trainable(config)`` runs :func:`workers.run_trial` inside a Ray Tune trial: it reports after
every epoch with a checkpoint (model, optimizer, scheduler, RNG, history), and when Ray restarts
a trial after a failure (``FailureConfig(max_failures=...)``) it resumes from the last
checkpoint. Trials reuse their actors (``reuse_actors=True``): on a 2-core machine a fresh
process per trial costs seconds; datasets are cached once per worker process.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from ray import tune
from ray.tune import Checkpoint

from .trial import run_trial

CHECKPOINT_FILE = "trial.pt"
NICE_ENV = "ROOTFREE_WORKER_NICE"


def lower_priority(nice: int | None = None) -> int:
    """Raises the niceness of every thread of this worker process to `nice` (default: the
    ROOTFREE_WORKER_NICE environment variable, else 10; 0 leaves it alone) and returns it.

    Trials are batch work; on a single machine they share cores with the controller, whose API
    must stay responsive (bench/api_latency.py). Linux keeps niceness per thread, and Tune runs
    each trial in a fresh thread, so every thread of the process is set, each trial."""
    if nice is None:
        nice = int(os.environ.get(NICE_ENV, "10"))
    if nice <= 0 or not hasattr(os, "setpriority"):
        return 0
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError:  # a thread that ended meanwhile, or no permission: not worth failing a trial
            pass
    return nice


def load_checkpoint(checkpoint: Checkpoint) -> dict[str, Any]:
    """A trial's state from one of its checkpoints: plain tensors and numbers only
    (``weights_only=True``: loading a checkpoint never runs code from it)."""
    with checkpoint.as_directory() as d:
        return torch.load(Path(d) / CHECKPOINT_FILE, weights_only=True)


def trainable(config: dict[str, Any]) -> None:
    trial_config = dict(config["trial"])
    # A trial that a controller death interrupted resumes from the checkpoint its last run left
    # (the runner passes its location); Tune's own checkpoint (a retry in this run) comes first.
    resume_from = trial_config.pop("resume_from", None)
    lower_priority()
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        resume = load_checkpoint(checkpoint)
    elif resume_from:
        try:
            resume = load_checkpoint(Checkpoint(resume_from))
        except (FileNotFoundError, OSError, RuntimeError):  # gone (deleted, another disk): start over
            resume = None

    import ray

    node_id = ray.get_runtime_context().get_node_id()  # which cluster node trained it

    def report(metrics: dict, state: dict, final: bool) -> None:
        metrics = {**metrics, "meta": trial_config.get("meta", {}), "node_id": node_id}
        if not state:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            torch.save(state, os.path.join(d, CHECKPOINT_FILE))
            tune.report(metrics, checkpoint=Checkpoint.from_directory(d))

    run_reporting_failures(trial_config, report, resume)


def outside_the_trial(e: BaseException) -> bool:
    """Whether an exception is the machine's trouble rather than the trial's own code: memory
    (the process's, the GPU's), a full disk, Ray itself. Those end the worker as an error, which
    Tune retries from the last checkpoint (ROOTFREE_TRIAL_RETRIES); anything else is a result."""
    import errno

    if isinstance(e, MemoryError | torch.cuda.OutOfMemoryError):
        return True
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return type(e).__module__.startswith("ray")


def run_reporting_failures(trial_config: dict[str, Any], report, resume) -> None:
    """`run_trial`, but an exception of the trial's own code (its workload, model, optimizer,
    hyperparameters) ends it with a final report {"status": "failed", "error": ...} instead of
    failing the worker: Tune would retry it as if the machine had failed (issue 30). Exceptions
    from inside a report (Tune's own) and from outside the trial still fail the worker."""
    import traceback

    reporting = False

    def watched(metrics: dict, state: dict, final: bool) -> None:
        nonlocal reporting
        reporting = True
        try:
            report(metrics, state, final)
        finally:
            reporting = False

    try:
        run_trial(trial_config, report=watched, resume=resume)
    except Exception as e:
        if reporting or outside_the_trial(e):
            raise
        lines = [line for line in traceback.format_exception(e) if line.strip()]
        error = f"{type(e).__name__}: {e}\n" + "".join(lines[-3:-1])
        report({"status": "failed", "error": error[-2000:]}, {}, True)


def resources_for(cpu: float = 1, gpu: float = 0) -> dict[str, float]:
    return {"cpu": cpu, "gpu": gpu}


def run_configs(configs: list[dict[str, Any]], *, name: str, storage_path: str,
                cpu: float = 1, gpu: float = 0, max_concurrent_trials: int = 2,
                max_failures: int = 2, callbacks: list | None = None,
                trial_name_creator=None, stop=None, reuse_actors: bool = True):
    """Runs one Ray Tune trial per configuration (in order) and returns the ResultGrid.

    Each entry of `configs` is a trial configuration for :func:`workers.run_trial`; its ``meta``
    (e.g. study/optimizer/stage/index) travels with every report. ``reuse_actors=False`` is only
    for measuring what reuse saves (bench/trial_overhead.py).
    """
    from ray.tune import FailureConfig, RunConfig, TuneConfig, Tuner

    tuner = Tuner(
        tune.with_resources(trainable, resources_for(cpu, gpu)),
        param_space={"trial": tune.grid_search(configs)},
        tune_config=TuneConfig(
            max_concurrent_trials=max_concurrent_trials, reuse_actors=reuse_actors,
            trial_name_creator=trial_name_creator, trial_dirname_creator=trial_name_creator,
        ),
        run_config=RunConfig(
            name=name, storage_path=storage_path, callbacks=callbacks or [], stop=stop,
            failure_config=FailureConfig(max_failures=max_failures), verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )
    return tuner.fit()


def actor_label(config: dict[str, Any]) -> str:
    """What the Ray dashboard's Actors view shows for a trial's actor (its `repr`)."""
    m = (config.get("trial") or {}).get("meta") or {}
    study = m.get("study_name") or str(m.get("study_id", "?"))[:8]
    return f"rootfree {study} {m.get('optimizer', '?')} s{m.get('stage', '?')} #{m.get('trial_id', '?')}"


def named_trainable():
    """`trainable` as a Tune function-trainable class whose actor has a readable `repr` in the Ray
    dashboard. Ray reads an actor's `repr` once, right after its constructor: an actor Tune reuses
    for a later trial keeps the first trial's name, so the runner turns actor reuse off with it."""
    from ray.tune.trainable.function_trainable import wrap_function

    base = wrap_function(trainable)

    class RootfreeTrial(base):
        def __repr__(self) -> str:
            return actor_label(getattr(self, "config", None) or {})

    return RootfreeTrial
