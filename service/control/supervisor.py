"""`serve` keeps its study runner alive: a dead runner process is restarted (and counted); when
restarts keep failing, the controller exits non-zero so its own supervisor (compose `restart:`,
systemd, Kubernetes) takes over, rather than serving an API whose studies never run."""

from __future__ import annotations

import logging
import os
import threading
import time

from service.control.process import RunnerProcess, RunnerStartError
from service.store.lease import release_dead_holder

log = logging.getLogger("rootfree.supervisor")
EXIT_RUNNER_FAILED = 3


class RunnerSupervisor:
    def __init__(self, settings, store, check_s: float = 1.0, exit=os._exit):
        self.settings, self.store, self.check_s, self._exit = settings, store, check_s, exit
        # The lease's database: `serve`'s own use, not a runner part's (those reach the store
        # through `RunnerCalls` only).
        self._lease_engine = store.engine
        self.runner = None  # a RunnerProcess, or a StudyRunner thread (runner_process off)
        self.restarts = 0
        self.failures = 0  # consecutive failed starts
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Starts the runner (raises RunnerStartError when it cannot start at all) and watches it."""
        self.runner = self._new()
        self.runner.start()
        if isinstance(self.runner, RunnerProcess):
            self._thread = threading.Thread(target=self._watch, name="rootfree-supervisor", daemon=True)
            self._thread.start()

    def _new(self):
        if self.settings.runner_process:
            return RunnerProcess(self.settings)
        from service.control.runner import StudyRunner  # Ray and Tune: imported only to run here

        return StudyRunner(self.store, self.settings)

    def _watch(self) -> None:
        while not self._stop.wait(self.check_s):
            if self.runner.is_alive():
                self.failures = 0
                continue
            code = self.runner.process.exitcode if self.runner.process else None
            log.error("the study runner process died (exit code %s); restarting it", code)
            self._release_dead_lease(self.runner.holder)
            self.restarts += 1
            try:
                self.runner = self._new()
                self.runner.start()
                self.failures = 0
                self.last_error = None
            except RunnerStartError as e:
                self.failures += 1
                self.last_error = str(e)
                log.error("runner restart %d failed: %s", self.failures, e)
                if self.failures >= self.settings.max_runner_restarts:
                    log.critical("the study runner cannot be restarted (%d tries); exiting with code %d",
                                 self.failures, EXIT_RUNNER_FAILED)
                    self._exit(EXIT_RUNNER_FAILED)
                    return
                time.sleep(min(30.0, 2.0 ** self.failures))

    def _release_dead_lease(self, holder: str | None, timeout_s: float = 5.0) -> None:
        """The dead runner's lease is released now, not at its expiry (lease_ttl_s, 30 s by
        default): this process reaped it, so it is not merely paused, and a local or `host:port`
        Ray ends its workers with their driver within seconds, before a new runner has even
        started. Not with a `ray://` address: Ray Client keeps a lost client's actors for its
        reconnect grace period (30 s), so the lease runs out as before. Bounded by `timeout_s`:
        a database that hangs must not hold up the restart (the expiry frees the lease then)."""
        if not holder or (self.settings.ray_address or "").startswith("ray://"):
            return

        def release() -> None:
            try:
                if release_dead_holder(self._lease_engine, holder):
                    log.info("released the runner lease of the dead runner %s", holder)
            except Exception as e:  # noqa: BLE001 - the database may be down: the expiry frees it
                log.warning("could not release the dead runner's lease (it expires on its own): %s", e)

        t = threading.Thread(target=release, name="rootfree-lease-release", daemon=True)
        t.start()
        t.join(timeout_s)

    def alive(self) -> bool:
        if self.runner is None:
            return False
        if not isinstance(self.runner, RunnerProcess):
            return self.runner._thread is not None and self.runner._thread.is_alive()
        return self.runner.is_alive()

    @property
    def pid(self) -> int | None:
        if isinstance(self.runner, RunnerProcess):
            return self.runner.pid
        return os.getpid() if self.runner is not None else None

    @property
    def holder(self) -> str | None:
        return getattr(self.runner, "holder", None)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        if self.runner is not None:
            self.runner.stop()
