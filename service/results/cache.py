"""Results computed from a study (its analysis, its report), kept until the study changes, and
computed once: a second request for a result being computed waits for that computation instead of
starting another (a client that gave up and retried never ties up a second core)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class _Flight:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class ResultCache:
    """A small LRU of finished results plus the computations in flight, by key. A key names
    what the result was computed from (e.g. the study's `StudyStore.fingerprint`), so a changed
    study asks for a new key and never gets a stale result; `tag` names what a key supersedes
    (the same result of the same study before it changed), so an outdated entry is dropped at
    once rather than when it ages out."""

    def __init__(self, max_entries: int = 32):
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._done: OrderedDict[Hashable, tuple[Hashable, Any]] = OrderedDict()
        self._flights: dict[Hashable, _Flight] = {}
        self.computed = 0  # computations started (for tests and the bench)
        self.waiting = 0  # requests now waiting for a computation in flight

    def get(self, key: Hashable, compute: Callable[[], Any], tag: Hashable = None) -> Any:
        with self._lock:
            if key in self._done:
                self._done.move_to_end(key)
                return self._done[key][1]
            flight = self._flights.get(key)
            owner = flight is None
            if owner:
                flight = self._flights[key] = _Flight()
                self.computed += 1
        if not owner:
            with self._lock:
                self.waiting += 1
            try:
                flight.done.wait()
            finally:
                with self._lock:
                    self.waiting -= 1
            if flight.error is not None:
                raise flight.error
            return flight.value
        try:
            flight.value = compute()
        except BaseException as e:
            flight.error = e
            raise
        else:
            with self._lock:
                if tag is not None:
                    for old in [k for k, (t, _) in self._done.items() if t == tag]:
                        del self._done[old]
                self._done[key] = (tag, flight.value)
                while len(self._done) > self.max_entries:
                    self._done.popitem(last=False)
        finally:
            with self._lock:
                self._flights.pop(key, None)
            flight.done.set()
        return flight.value
