"""`serve`'s runner supervisor: a dead runner process is restarted at once with its lease released
(the standby's wait for the expiry is for a leader that may only be paused), and a failing
restart ends the controller with its exit code. Stand-in runner processes, a real SQLite store."""

import threading
import time

from service.control.process import RunnerProcess, RunnerStartError
from service.control.supervisor import EXIT_RUNNER_FAILED, RunnerSupervisor
from service.settings import Settings
from service.store.lease import Lease, current
from service.store.study_store import StudyStore


class _Process:
    def __init__(self):
        self.exitcode = None


class _Runner(RunnerProcess):
    """A runner process that takes the lease on start, as the real one does when it leads (a
    `RunnerProcess`: the supervisor watches only those)."""

    def __init__(self, engine, holder, fail=False):
        self.engine, self.holder, self.fail, self.process = engine, holder, fail, _Process()
        self.lease = Lease(engine, holder)
        self.acquired = None  # until start()

    def start(self):
        if self.fail:
            raise RunnerStartError("cannot start")
        self.acquired = self.lease.acquire()

    def is_alive(self):
        return self.process.exitcode is None

    def die(self):
        self.process.exitcode = -9  # SIGKILL: its lease is still held, nobody renews it

    def stop(self, timeout=60.0):
        pass


def _wait(cond, timeout=10.0):
    t0 = time.time()
    while not cond():
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.02)


def test_a_dead_runner_is_restarted_and_leads_at_once(tmp_path):
    store = StudyStore(f"sqlite:///{tmp_path / 's.db'}")
    runners = iter([_Runner(store.engine, "first"), _Runner(store.engine, "second")])
    sup = RunnerSupervisor(Settings(database_url=store.url, runner_process=True), store, check_s=0.05)
    sup._new = lambda: next(runners)
    sup.start()
    try:
        first = sup.runner
        assert first.acquired and current(store.engine)["holder"] == "first"
        first.die()
        _wait(lambda: sup.restarts == 1 and sup.runner is not first and sup.runner.acquired is not None)
        # the new runner took the lease at its start, 30 s before the dead one's would lapse
        assert sup.runner.acquired and current(store.engine) | {"expires_at": None, "acquired_at": None} == \
            {"holder": "second", "token": 2, "expires_at": None, "acquired_at": None}
    finally:
        sup.stop()


def test_a_restart_that_keeps_failing_exits_with_its_code(tmp_path):
    store = StudyStore(f"sqlite:///{tmp_path / 's.db'}")
    exited = threading.Event()
    codes = []
    sup = RunnerSupervisor(Settings(database_url=store.url, runner_process=True, max_runner_restarts=1),
                           store, check_s=0.05, exit=lambda code: (codes.append(code), exited.set()))
    first = _Runner(store.engine, "first")
    sup._new = lambda: first
    sup.start()
    try:
        sup._new = lambda: _Runner(store.engine, "next", fail=True)
        first.die()
        assert exited.wait(10)
        assert codes == [EXIT_RUNNER_FAILED] and sup.last_error == "cannot start"
        # the dead runner's lease was released all the same: another controller may lead now
        assert Lease(store.engine, "other").acquire()
    finally:
        sup.stop()


def test_a_ray_client_runners_lease_runs_out_as_before(tmp_path):
    """Ray Client keeps a lost client's actors for its reconnect grace period: the restarted
    runner must not run the same trials beside them, so the lease is left to expire."""
    store = StudyStore(f"sqlite:///{tmp_path / 's.db'}")
    runners = iter([_Runner(store.engine, "first"), _Runner(store.engine, "second")])
    sup = RunnerSupervisor(Settings(database_url=store.url, runner_process=True, ray_address="ray://head:10001"),
                           store, check_s=0.05)
    sup._new = lambda: next(runners)
    sup.start()
    try:
        first = sup.runner
        first.die()
        _wait(lambda: sup.restarts == 1 and sup.runner is not first and sup.runner.acquired is not None)
        assert sup.runner.acquired is False and current(store.engine)["holder"] == "first"
    finally:
        sup.stop()
