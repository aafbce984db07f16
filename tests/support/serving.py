"""Real `rootfree serve` processes for the end-to-end and fault tests: started in their own
process group (a kill takes the controller, its runner and its local Ray), polled over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from tests.support import wait_healthy

AUTH: dict[str, str] = {}  # the admin token of the database the last `serve` uses
AUTH_DB = [None]


class _Api:
    """httpx's get/post/delete with the current admin token (every endpoint needs one)."""

    def __getattr__(self, method):
        call = getattr(httpx, method)
        return lambda url, **kw: call(url, **{**kw, "headers": {**AUTH, **(kw.get("headers") or {})}})


api = _Api()


def admin_token(db_url: str) -> str:
    """Creates an admin token in the database (as `rootfree token create --admin` would)."""
    from service.api.auth import create_token
    from service.store.study_store import StudyStore

    store = StudyStore(db_url)
    token, _ = create_token(store.engine, "tester", admin=True, actor="test")
    store.engine.dispose()
    return token


def serve(db_url: str, port: int, tmp_path, *, storage=None, dashboard_port: int | None = None,
          wait: bool = True, **settings) -> subprocess.Popen:
    if AUTH_DB[0] != db_url:
        AUTH.clear()
        AUTH["Authorization"] = f"Bearer {admin_token(db_url)}"
    AUTH_DB[0] = db_url
    env = {**os.environ, "ROOTFREE_DATABASE_URL": db_url, "ROOTFREE_NUM_CPUS": "2",
           "ROOTFREE_DASHBOARD": "true" if dashboard_port else "false",
           "ROOTFREE_DASHBOARD_PORT": str(dashboard_port or 8265),
           "ROOTFREE_STORAGE_PATH": str(storage or tmp_path / "runs"),
           "ROOTFREE_POLL_INTERVAL_S": "0.5", "RAY_USAGE_STATS_ENABLED": "0",
           **{f"ROOTFREE_{k.upper()}": str(v) for k, v in settings.items()}}
    log = tmp_path / f"serve-{port}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)], env=env,
        stdout=open(log, "w"), stderr=subprocess.STDOUT,
        start_new_session=True)  # its own process group: we kill the controller and its Ray
    if wait:
        assert wait_healthy(f"http://127.0.0.1:{port}", alive=lambda: proc.poll() is None), \
            log.read_text()[-3000:]
    return proc


def kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def wait_for(url: str, sid: str, cond, timeout: float = 600) -> dict:
    t0, s = time.time(), None
    while time.time() - t0 < timeout:
        try:
            s = api.get(f"{url}/studies/{sid}", timeout=10).json()
            if cond(s):
                return s
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out: {s and s['status']} {s and s['optimizers']}")


def health(url: str) -> tuple[int, dict]:
    r = api.get(f"{url}/healthz", timeout=10)  # with the admin token: the details
    return r.status_code, r.json()


def run_to_end(tmp_path, specs: list[dict], owner: str = "alice", timeout: float = 400, create=None):
    """Runs resolved study specs to their end with a real `StudyRunner` (a thread) on a fresh
    local Ray with 2 CPUs; returns (store, study ids). The in-process twin of `serve`.
    `create(store) -> study ids`: creates the studies instead (a suite's)."""
    import ray

    from service.control.runner import StudyRunner
    from service.settings import Settings
    from service.store.study_store import StudyStore

    ray.init(num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False, log_to_driver=False)
    try:
        store = StudyStore(f"sqlite:///{tmp_path / 'studies.db'}")
        runner = StudyRunner(store, Settings(database_url=store.url, storage_path=str(tmp_path / "runs"),
                                             poll_interval_s=0.2))
        ids = create(store) if create else [store.create_study(spec, None, owner=owner)[0].id for spec in specs]
        runner.start()
        t0 = time.time()
        while any(store.get_study(s).status not in ("completed", "failed", "cancelled") for s in ids):
            assert time.time() - t0 < timeout, "studies did not finish"
            time.sleep(0.3)
        runner.stop()
    finally:
        ray.shutdown()
    return store, ids
