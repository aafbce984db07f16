"""The study runner in a child process of the API, seen from the API's side.

This module imports neither Ray nor torch, and the runner module (which imports Ray and Tune at
its top, and torch through the workers) is imported only in the child: the API process keeps its
memory to what it serves (issue 19: 555 MB of RSS, most of it Ray and torch it never used).
Coordination goes through the study store only (status, cancel, the lease)."""

from __future__ import annotations

import os

from service.settings import Settings
from service.store.lease import holder_id


class RunnerStartError(RuntimeError):
    """The study runner could not start (most often: the Ray address does not answer)."""


def _child_main(settings_dict: dict, conn, stop_event, parent_pid: int) -> None:
    from service.control.runner import _runner_main  # Ray and Tune: in the child only

    _runner_main(settings_dict, conn, stop_event, parent_pid)


class RunnerProcess:
    """The study runner in a child process of the API.

    The Tune driver loop, its callbacks' database writes and Ray's driver threads then never
    compete with the API for one interpreter lock: `bench/api_latency.py` measured GET
    /studies/{id} p99 at hundreds of ms with the runner as a thread of the API process while
    trials ran."""

    def __init__(self, settings: Settings, start_timeout_s: float = 180.0):
        import multiprocessing as mp

        self.settings, self.start_timeout_s = settings, start_timeout_s
        self._ctx = mp.get_context("spawn")  # no fork of a process holding threads and sockets
        self._stop = self._ctx.Event()
        self.process = None
        self.holder: str | None = None

    def start(self) -> None:
        self._stop = self._ctx.Event()
        self.holder = holder_id()  # a new holder id per process: a restart never inherits a lease
        settings = self.settings.model_copy(update={"runner_id": self.holder})
        parent, child = self._ctx.Pipe(duplex=False)
        self.process = self._ctx.Process(
            target=_child_main, name="rootfree-runner",
            args=(settings.model_dump(), child, self._stop, os.getpid()))
        self.process.start()
        child.close()
        if not parent.poll(self.start_timeout_s):
            self.stop()
            raise RunnerStartError(f"the study runner did not start within {self.start_timeout_s:.0f} s")
        try:
            kind, value = parent.recv()
        except EOFError:
            kind, value = "error", f"the runner process exited with code {self.process.exitcode}"
        if kind == "error":
            self.process.join(timeout=10)
            raise RunnerStartError(f"the study runner could not start: {value}")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def is_alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        if self.process is None:
            return
        self.process.join(timeout=timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=10)
