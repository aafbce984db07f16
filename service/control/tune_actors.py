"""Ray Tune's trial controller and scheduler, adjusted for the runner's one long-lived Tune run
that serves every study (the controller installed for that run only, by `installed()`).

Tune's `CheckpointConfig(num_to_keep=...)` makes the controller snapshot the whole experiment
(every trial of the run, as JSON) at each trial checkpoint: the runner sets no `num_to_keep`,
prunes checkpoints itself, and snapshots on a clock (TUNE_GLOBAL_CHECKPOINT_S).

Two changes to how Tune reuses actors (`reuse_actors=True`), both about idle slots:

- A trial whose new actor is still starting (a worker process importing torch: seconds on a
  busy machine) is not moved onto an actor another trial just left while a trial without any
  actor waits for one. Tune's own rule moves it and removes the starting actor: with trials
  shorter than an actor's start-up, no second actor ever finished starting, and a 2-slot cluster
  ran one trial at a time after the first study (issue 25).
- Actors a study's trials leave idle stay warm (up to `warm_s`) instead of all but one being
  stopped, so the next study does not pay the start-up again. They are capacity to reuse, as the
  runner's searcher counts them: they go at once when a trial that needs other resources waits.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from ray.tune.execution.tune_controller import TuneController
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler
from ray.tune.utils.object_cache import _ObjectCache


class WarmActorCache(_ObjectCache):
    """Tune's cache of idle actors (keyed by resource shape) that keeps every idle actor up to
    `warm_s`, unless trials of another shape wait for resources."""

    def __init__(self, warm_s: float):
        super().__init__(may_keep_one=True)
        self.warm_s = warm_s
        self._since: dict = {}  # actor -> when it became idle

    def _others_wait(self, key) -> bool:
        """Trials of another resource shape are staged with no cached actor for them."""
        return any(n > len(self._cached_objects.get(k, ())) for k, n in self._max_num_objects.items()
                   if k != key and n > 0)

    def cache_object(self, key, obj) -> bool:
        if not super().cache_object(key, obj):
            if self._others_wait(key):
                return False
            self._cached_objects[key].append(obj)
            self._num_cached_objects += 1
        self._since[obj] = time.monotonic()
        return True

    def pop_cached_object(self, key):
        obj = super().pop_cached_object(key)
        self._since.pop(obj, None)
        return obj

    def flush_cached_objects(self, force_all: bool = False) -> Iterator:
        if force_all:
            for obj in super().flush_cached_objects(force_all=True):
                self._since.pop(obj, None)
                yield obj
            return
        now = time.monotonic()
        for key, objs in list(self._cached_objects.items()):
            wanted = self._max_num_objects[key]
            others = self._others_wait(key)
            while len(objs) > wanted and (others or now - self._since.get(objs[0], now) > self.warm_s):
                obj = objs.pop(0)
                self._num_cached_objects -= 1
                self._since.pop(obj, None)
                yield obj


class WarmController(TuneController):
    warm_s = 120.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._actor_cache = WarmActorCache(self.warm_s)

    def _maybe_reuse_cached_actor(self, trial) -> bool:
        actor = self._trial_to_actor.get(trial)
        if (actor is not None and trial not in self._resetting_trials
                and not self._actor_manager.is_actor_started(actor) and self._actorless_waits(trial)):
            return False  # its own actor is on the way; the idle one goes to a trial without one
        return super()._maybe_reuse_cached_actor(trial)

    def _actorless_waits(self, trial) -> bool:
        shape = trial.placement_group_factory
        return any(t is not trial and t not in self._trial_to_actor and t.placement_group_factory == shape
                   for t in self._pending_trials)

    def _update_trial_queue(self, blocking: bool = False, timeout: int = 600) -> bool:
        # Tune's blocking wait for the searcher polls once a second and steps nothing meanwhile:
        # a study submitted to an idle run waited up to a second for its first trial.
        if not blocking:
            return super()._update_trial_queue(blocking=False)
        deadline = time.monotonic() + 1.0
        while not super()._update_trial_queue(blocking=False):
            if self.is_finished() or time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


class LiveFIFO(FIFOScheduler):
    """Tune's FIFO scheduler looks for the next trial to start among every trial the run has
    ever had, at every step: a cost that grew with each trial of the long-lived run. The pending
    ones are among the live trials."""

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        live = tune_controller.get_live_trials()
        for status in (Trial.PENDING, Trial.PAUSED):
            for trial in live:
                if trial.status == status:
                    return trial
        return None


@contextmanager
def installed(warm_s: float = 120.0) -> Iterator[None]:
    """Tune runs started inside use `WarmController` (Tune builds its controller itself)."""
    import ray.tune.tune as tune_module

    original = tune_module.TuneController
    controller = type("WarmController", (WarmController,), {"warm_s": warm_s})
    tune_module.TuneController = controller
    try:
        yield
    finally:
        tune_module.TuneController = original
