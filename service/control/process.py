"""The study runner in a child process of the API (`rootfree serve`), started and stopped by the
supervisor; it dies with the controller that started it."""

from __future__ import annotations

import logging
import os

from service.settings import Settings
from service.store.lease import holder_id
from service.store.study_store import StudyStore


class RunnerStartError(RuntimeError):
    """The study runner could not start (most often: the Ray address does not answer)."""


def _kill_me_with_parent() -> None:
    """Linux: SIGKILL this process when the controller that started it dies, so a killed
    controller never leaves a second runner working on its studies (Ray's own processes
    fate-share with this driver)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _runner_main(settings_dict: dict, conn, stop_event, parent_pid: int) -> None:
    import signal

    _kill_me_with_parent()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C reaches the API; it stops us in order
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings(**settings_dict)
    if settings.runner_nice > 0:
        # Before any thread or Ray process exists: Linux keeps niceness per thread, and new
        # threads and processes inherit it from their creator.
        try:
            os.setpriority(os.PRIO_PROCESS, 0, max(os.getpriority(os.PRIO_PROCESS, 0),
                                                   settings.runner_nice))
        except OSError:
            pass
    try:
        from service.control.runner import StudyRunner  # the child imports Ray, the API does not

        store = StudyStore(settings.database_url)
        runner = StudyRunner(store, settings, stop_event=stop_event)
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which fails fast
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    # Ray is connected when this runner becomes the leader: a standby holds no Ray resources.
    conn.send(("ready", {"holder": runner.holder}))
    try:
        runner._loop()
    finally:
        runner.shutdown_ray()


class RunnerProcess:
    """The study runner in a child process of the API.

    The Tune driver loop, its callbacks' database writes and Ray's driver threads then never
    compete with the API for one interpreter lock: `bench/api_latency.py` measured GET
    /studies/{id} p99 at hundreds of ms with the runner as a thread of the API process while
    trials ran. Coordination goes through the study store only (status, cancel, the lease)."""

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
            target=_runner_main, name="rootfree-runner",
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
