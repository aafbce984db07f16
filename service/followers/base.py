"""The one follower thread: a daemon thread that polls the store every `interval_s` and writes
what changed somewhere else (the Optuna view, MLflow). The runner never waits for it: a failed
pass is logged, counted and retried at the next one, with the wait doubled up to `max_delay_s`."""

from __future__ import annotations

import logging
import threading
import time
from typing import ClassVar


class Follower:
    """Subclasses give `poll` (one pass), and may give `recover` (after a failed pass) and
    `close` (after the thread ended); `thread_name`, `what` and `log` name them in the logs."""

    thread_name: ClassVar[str] = "rootfree-follower"
    what: ClassVar[str] = "follower"  # the log line's prefix
    max_delay_s: ClassVar[float] = 30.0
    log: ClassVar[logging.Logger] = logging.getLogger("rootfree.follower")

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0
        self.busy_s = 0.0  # time spent in passes

    def poll(self) -> None:
        raise NotImplementedError

    def recover(self) -> None:
        """After a failed pass: forget what may be half-written (the next pass re-reads it)."""

    def close(self) -> None:
        """After the thread ended (stop)."""

    def start(self):
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.close()

    def _run(self, alive=lambda: True) -> None:
        delay = self.interval_s
        while not self._stop.is_set() and alive():
            t0 = time.monotonic()
            try:
                self.poll()
                delay = self.interval_s
            except Exception:  # noqa: BLE001 - a follower never stops the runner: retry, say why
                self.errors += 1
                self.log.warning("%s: write failed (retrying in %.0f s)", self.what, delay, exc_info=True)
                self.recover()
                delay = min(delay * 2, self.max_delay_s)
            self.busy_s += time.monotonic() - t0
            self._stop.wait(delay)
