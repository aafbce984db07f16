"""Faults injected for real, locally, against real `rootfree serve` processes on a real local Ray
with the noisy-quadratic workload: a database outage through a TCP proxy the test owns, a
SIGKILLed Ray worker and then a SIGKILLed runner process, a full tmpfs as the storage path. Each
ends with exact trial counts and nothing lost. (Two controllers on one database with the leader
SIGKILLed mid-trial: in `test_studies_on_ray.py`, beside the restart it repeated.)"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support import finished_trials, free_port
from tests.support.serving import api, health, kill, serve, wait_for
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow
ENDED = ("completed", "failed", "cancelled")


def nqm(name: str, stages=(4, 3), epochs=3, pace_ms=400, cap=2, optimizers=("sgd", "adamw")) -> dict:
    return {"name": name, "workload": "noisy_quadratic", "optimizers": list(optimizers),
            "protocol": {"stages": list(stages), "top_k": 2, "seed": 3},
            "budget": {"epochs": epochs, "pace_ms": pace_ms}, "max_concurrent_trials": cap}


def trials(url: str, sid: str) -> list[dict]:
    return api.get(f"{url}/studies/{sid}/trials", params={"limit": 1000, "include": "history"},
                     timeout=30).json()


def assert_exact(url: str, sid: str, spec: dict) -> list[dict]:
    rows = trials(url, sid)
    for opt in spec["optimizers"]:
        for stage, n in enumerate(spec["protocol"]["stages"], start=1):
            group = [t for t in rows if t["optimizer"] == opt and t["stage"] == stage]
            assert sorted(t["index"] for t in group) == list(range(n)), (opt, stage, group)
    assert all(t["status"] in ("completed", "diverged") for t in rows), \
        [(t["optimizer"], t["stage"], t["index"], t["status"], t["error"]) for t in rows if t["status"] == "failed"]
    for t in rows:  # no epoch twice, none missing
        epochs = [h["epoch"] for h in t["history"]]
        assert epochs == list(range(1, len(epochs) + 1)), (t["id"], epochs)
        if t["status"] == "completed":
            assert len(epochs) == spec["budget"]["epochs"]
    return rows


@pytest.mark.postgres
def test_a_database_outage_of_20_s_loses_nothing(pg_url, tmp_path):
    proxy = TcpProxy()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    spec = nqm("outage", stages=(4, 3), epochs=3, pace_ms=500)
    proc = serve(proxy.url(sa.engine.make_url(pg_url).database), port, tmp_path)
    try:
        sid = api.post(f"{url}/studies", json=spec, timeout=30).json()["id"]
        wait_for(url, sid, lambda s: finished_trials(s) >= 2)
        proxy.cut()
        time.sleep(3)
        code, body = health(url)
        assert code == 503 and body["database"].startswith("unreachable") and "database" in body["failing"]
        assert "postgres" not in str(body)  # no URL (and so no password) in the health answer
        time.sleep(17)
        proxy.restore()
        study = wait_for(url, sid, lambda s: s["status"] in ENDED)
        assert study["status"] == "completed", study["error"]
        rows = assert_exact(url, sid, spec)
        assert all(t["runs"] == 1 for t in rows)  # nothing was rerun: the reports waited
        assert health(url)[0] == 200
    finally:
        kill(proc)
        proxy.close()


def test_a_killed_worker_is_retried_and_a_killed_runner_process_is_restarted(tmp_path):
    """Two processes SIGKILLed by their own pids on one `serve`, one after the other (one test: both
    started the same controller): a Ray worker mid-trial (issue 30: an infrastructure failure is
    not a result; the trial runs again from its last checkpoint, counted in `attempts`, the study
    log says why, no trial fails), then the runner process (restarted; its study completes)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    db_url = f"sqlite:///{tmp_path / 'studies.db'}"
    proc = serve(db_url, port, tmp_path)
    try:
        spec = nqm("infra", stages=(2,), epochs=4, pace_ms=700, cap=1, optimizers=("sgd",))
        sid = api.post(f"{url}/studies", json=spec, timeout=30).json()["id"]
        deadline, victim = time.time() + 300, None
        while victim is None:
            assert time.time() < deadline, "no trial reported twice"
            for t in trials(url, sid):
                if t["status"] == "running" and len(t["history"]) >= 2 and t["history"][-1].get("pid"):
                    victim = t
            time.sleep(0.3)
        os.kill(victim["history"][-1]["pid"], signal.SIGKILL)  # the worker dies mid-trial
        study = wait_for(url, sid, lambda s: s["status"] in ENDED, timeout=400)
        assert study["status"] == "completed", study["error"]
        rows = assert_exact(url, sid, spec)  # no failed trial, every epoch once
        t = next(r for r in rows if r["id"] == victim["id"])
        assert t["status"] == "completed" and t["attempts"] == 2, t
        assert any(h.get("resumed_from_epoch") for h in t["history"])  # from its checkpoint
        assert all(r["attempts"] == 1 for r in rows if r["id"] != victim["id"])
        log = api.get(f"{url}/studies/{sid}/logs", params={"tail": 1000}, timeout=30).text
        assert "lost its worker" in log and "retrying from its last checkpoint" in log
        assert health(url)[1]["runner"]["restarts"] == 0  # a worker's death is not the runner's

        spec = nqm("restart", stages=(3, 2), epochs=3, pace_ms=400)
        sid = api.post(f"{url}/studies", json=spec, timeout=30).json()["id"]
        wait_for(url, sid, lambda s: finished_trials(s) >= 1)
        runner_pid = health(url)[1]["runner"]["pid"]
        assert runner_pid != proc.pid
        os.kill(runner_pid, signal.SIGKILL)
        t0 = time.time()
        while True:
            code, body = health(url)
            if body["runner"]["restarts"] == 1 and body["runner"]["role"] == "leader":
                break
            assert time.time() - t0 < 90, body
            time.sleep(0.3)
        assert body["runner"]["pid"] != runner_pid
        study = wait_for(url, sid, lambda s: s["status"] in ENDED)
        assert study["status"] == "completed", study["error"]
        assert_exact(url, sid, spec)
        # DELETE leaves nothing behind: no trial directories, no log, no Optuna views
        storage = tmp_path / "runs"
        assert list(storage.glob(f"*/{sid}-*")) and (storage / "logs" / f"study-{sid}.log").exists()
        # finished trials keep their final checkpoint only
        for d in storage.glob(f"*/{sid}-*"):
            assert len(list(d.glob("checkpoint_*"))) <= 1, list(d.iterdir())
        import optuna

        views = [n for n in optuna.get_all_study_names(db_url) if n.startswith("restart/")]
        assert views  # the live Optuna view (service/followers/optuna_view.py), one per optimizer
        # every trial once: the killed runner's view process died with it (no second writer)
        n_trials = len(api.get(f"{url}/studies/{sid}/trials", params={"limit": 1000}).json())
        assert sum(len(optuna.load_study(study_name=n, storage=db_url).trials) for n in views) == n_trials
        assert api.delete(f"{url}/studies/{sid}").status_code == 204
        assert not list(storage.glob(f"*/{sid}-*")) and not list((storage / "logs").glob(f"study-{sid}*"))
        assert not [n for n in optuna.get_all_study_names(db_url) if n.startswith(sid) or n in views]
    finally:
        kill(proc)


@pytest.fixture
def tmpfs(tmp_path):
    mount = tmp_path / "full"
    mount.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(path: Path) -> Path:
    filler = path / f"filler-{uuid.uuid4().hex[:6]}"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 2**20)
                f.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_fails_what_it_hits_and_the_api_keeps_answering(tmp_path, tmpfs):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = serve(f"sqlite:///{tmp_path / 'studies.db'}", port, tmp_path, storage=tmpfs, min_free_mb=4)
    try:
        spec = nqm("disk", stages=(8,), epochs=6, pace_ms=400, optimizers=("sgd",))
        sid = api.post(f"{url}/studies", json=spec, timeout=30).json()["id"]
        wait_for(url, sid, lambda s: finished_trials(s) >= 1)
        filler = fill(tmpfs)
        study = wait_for(url, sid, lambda s: s["status"] in ENDED, timeout=180)
        rows = api.get(f"{url}/studies/{sid}/trials", params={"limit": 1000}).json()
        reasons = " ".join([study["error"] or ""] + [t["error"] or "" for t in rows])
        assert "no space left on device" in reasons.lower() and str(tmpfs) in reasons, (study, rows)
        assert health(url)[0] == 200 and api.get(f"{url}/studies").status_code == 200
        filler.unlink()  # space returns: a new study runs
        again = api.post(f"{url}/studies", json=nqm("after", stages=(2,), epochs=2, optimizers=("sgd",)),
                           timeout=30).json()["id"]
        after = wait_for(url, again, lambda s: s["status"] in ENDED, timeout=180)
        trials = api.get(f"{url}/studies/{again}/trials", params={"limit": 1000}).json()
        assert after["status"] == "completed", (after["error"], [(t["status"], t["error"]) for t in trials])
    finally:
        kill(proc)
