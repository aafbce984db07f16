"""The runner's store: lease-fenced transactions, retried through a database outage.

`RunnerStore` has exactly the calls of `RunnerCalls` (service/store/interface.py), each declared
below as fenced or only retried, with the signature and docstring of the interface:

- fenced: the call opens its transactions through the store's sessions, and every transaction of
  those begins with the lease check (service/store/lease.py `Lease.check`), so a controller that
  lost the lease cannot write over the one that took it over. `LeaseLost` is never retried: it
  reaches the runner, which stops.
- retried: every call is retried with backoff through a database outage of up to `retry_s` (a
  report that arrives while the database is down waits and is written when it is back; it is
  never dropped).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import sessionmaker

from service.store.engine import StoreBase, make_engine, transient
from service.store.interface import RunnerCalls

log = logging.getLogger("rootfree.store")


def _fenced(call: Callable) -> Callable:
    """A call of the store made through the fenced sessions, retried through an outage."""
    name = call.__name__

    @functools.wraps(call)
    def method(self: RunnerStore, *args, **kwargs):
        return self._retry(name, *args, **kwargs)

    method.fenced = True  # type: ignore[attr-defined]
    return method


def _retried(call: Callable) -> Callable:
    """A read on its own connection, not a session: retried through an outage but not fenced (a
    read cannot write over another leader; what it decides is written by a fenced call)."""
    method = _fenced(call)
    method.fenced = False  # type: ignore[attr-defined]
    return method


class RunnerStore:
    """The runner's view of the store (see the module docstring). `store` is the SQL store
    (`StudyStore`, or anything built on `StoreBase`); this object works on the same store with
    sessions fenced by `lease` (`with_sessions`; None: not fenced, only retried)."""

    def __init__(self, store: StoreBase, lease=None, retry_s: float = 600.0, stop=None):
        engine = store.engine
        if engine.dialect.name == "sqlite":  # PostgreSQL: the check's FOR SHARE does it
            engine = make_engine(store.url, immediate=True)
        sessions = sessionmaker(engine, expire_on_commit=False)
        if lease is not None:
            event.listen(sessions, "after_begin",
                         lambda session, transaction, connection: lease.check(connection))
        self._store = store.with_sessions(sessions)
        self.retry_s, self._stop = retry_s, stop
        self.retries = 0  # transient failures seen (exposed for tests and health)

    def _retry(self, name: str, *args, **kwargs):
        call = getattr(self._store, name)
        deadline, delay = time.monotonic() + self.retry_s, 0.2
        while True:
            try:
                return call(*args, **kwargs)
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

    # ------------------------------------------------------------------ studies: fenced
    get_study = _fenced(RunnerCalls.get_study)
    studies_with_status = _fenced(RunnerCalls.studies_with_status)
    set_status = _fenced(RunnerCalls.set_status)
    save_stage_space = _fenced(RunnerCalls.save_stage_space)
    # ------------------------------------------------------------------ trials: fenced
    ensure_trials = _fenced(RunnerCalls.ensure_trials)
    claim_pending = _fenced(RunnerCalls.claim_pending)
    release_trial = _fenced(RunnerCalls.release_trial)
    reset_interrupted = _fenced(RunnerCalls.reset_interrupted)
    mark_started = _fenced(RunnerCalls.mark_started)
    record_result = _fenced(RunnerCalls.record_result)
    set_checkpoint = _fenced(RunnerCalls.set_checkpoint)
    mark_stopped = _fenced(RunnerCalls.mark_stopped)
    set_config = _fenced(RunnerCalls.set_config)
    mark_failed = _fenced(RunnerCalls.mark_failed)
    count_attempt = _fenced(RunnerCalls.count_attempt)
    trial_dicts = _fenced(RunnerCalls.trial_dicts)  # the late-stop pruner's read of a suite's trials
    trials = _fenced(RunnerCalls.trials)
    trial = _fenced(RunnerCalls.trial)
    count_trials = _fenced(RunnerCalls.count_trials)
    # ------------------------------------------------------------------ reports, ranking, cluster
    rung_values = _fenced(RunnerCalls.rung_values)
    best_trials = _retried(RunnerCalls.best_trials)  # one windowed read on engine.connect()
    record_cluster = _fenced(RunnerCalls.record_cluster)
