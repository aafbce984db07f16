"""The runner's store: lease-fenced transactions, retried through a database outage."""

from __future__ import annotations

import copy
import logging
import time
from typing import TYPE_CHECKING

from sqlalchemy import event
from sqlalchemy.orm import sessionmaker

from service.store.engine import make_engine, transient

if TYPE_CHECKING:  # only for the annotations: study_store imports this module
    from service.store.study_store import StudyStore

log = logging.getLogger("rootfree.store")


class RunnerStore:
    """The runner's view of the store: every transaction is fenced by the runner lease (its
    first statement checks the lease, see service/store/lease.py) and every call is retried with
    backoff through a database outage of up to `retry_s` (a report that arrives while the
    database is down waits and is written when it is back; it is never dropped). A lost lease
    is not retried: `LeaseLost` reaches the runner, which stops."""

    def __init__(self, store: StudyStore, lease=None, retry_s: float = 600.0, stop=None):
        self._store = copy.copy(store)
        engine = store.engine
        if engine.dialect.name == "sqlite":  # PostgreSQL: the check's FOR SHARE does it
            engine = make_engine(store.url, immediate=True)
        self._store.sessions = sessionmaker(engine, expire_on_commit=False)
        if lease is not None:
            event.listen(self._store.sessions, "after_begin",
                         lambda session, transaction, connection: lease.check(connection))
        self.retry_s, self._stop = retry_s, stop
        self.retries = 0  # transient failures seen (exposed for tests and health)

    def __getattr__(self, name: str):
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            deadline, delay = time.monotonic() + self.retry_s, 0.2
            while True:
                try:
                    return attr(*args, **kwargs)
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

        return call
