"""The production path on a real multi-node Ray cluster on this machine, as docker-compose.yml
runs it: a head node that trains (`ray start --head`), a worker node (`ray start --address`), a
zero-resource node for the controller, token authentication on, and `rootfree serve
--ray-address HEAD --db <PostgreSQL>`. Trials run on both nodes and every result lands in
PostgreSQL; the worker node is killed (raylet and its workers, SIGKILL) mid-study and the study
still completes with exact counts."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support import free_port, wait_healthy
from tests.support.serving import AUTH, admin_token, api

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

RAY = str(Path(sys.executable).with_name("ray"))
SPEC = {
    "name": "cluster", "workload": "fmnist_cnn", "optimizers": ["adamw"],
    "protocol": {"stages": [6, 2], "top_k": 2, "seed": 3},
    "budget": {"epochs": 3, "train_subset": 768, "test_subset": 200, "width": 8, "batch_size": 64},
    "resources": {"cpu": 1, "gpu": 0}, "max_concurrent_trials": 2,
}


def _ray(env, *args):
    r = subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


def _pids_of_node(node_manager_port: int) -> list[int]:
    """The raylet listening on `node_manager_port` and every process below it (its workers)."""
    parents: dict[int, int] = {}
    raylet = None
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents[int(d)] = ppid
        if "raylet" in cmd and f"--node_manager_port={node_manager_port}" in cmd:
            raylet = int(d)
    assert raylet is not None, "worker node's raylet not found"
    tree, frontier = [raylet], [raylet]
    while frontier:
        frontier = [p for p, pp in parents.items() if pp in frontier]
        tree += frontier
    return tree


@pytest.fixture
def cluster(tmp_path):
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": uuid.uuid4().hex}
    gcs, worker_port = free_port(), free_port()
    address = f"127.0.0.1:{gcs}"
    store = str(100 * 2**20)
    try:
        _ray(env, "start", "--head", f"--port={gcs}", "--num-cpus=1", "--num-gpus=0",
             "--include-dashboard=false", f"--object-store-memory={store}")
        # one node joins at a time: two `ray start --address` at once on one host time out registering
        _ray(env, "start", f"--address={address}", "--num-cpus=1", "--num-gpus=0",
             f"--node-manager-port={worker_port}", f"--object-store-memory={store}")
        _ray(env, "start", f"--address={address}", "--num-cpus=0", "--num-gpus=0",  # the controller's node
             f"--object-store-memory={store}")
        yield env, address, worker_port
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_study_on_a_multi_node_cluster_survives_losing_a_worker_node(cluster, pg_url, tmp_path):
    env, address, worker_port = cluster
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    AUTH.clear()
    AUTH["Authorization"] = f"Bearer {admin_token(pg_url)}"
    serve_env = {**env, "ROOTFREE_STORAGE_PATH": str(tmp_path / "runs"), "ROOTFREE_POLL_INTERVAL_S": "0.5"}
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port),
                             "--ray-address", address, "--db", pg_url],
                            env=serve_env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        assert wait_healthy(url, alive=lambda: proc.poll() is None), log.read_text()[-3000:]
        sid = api.post(f"{url}/studies", json=SPEC, timeout=30).json()["id"]

        def nodes_seen():
            trials = api.get(f"{url}/studies/{sid}/trials", params={"limit": 1000, "include": "history"},
                               timeout=10).json()
            return {h["node_id"] for t in trials for h in t["history"] if h.get("node_id")}

        t0 = time.time()
        while len(nodes_seen()) < 2:
            assert time.time() - t0 < 300, "trials never ran on both nodes:\n" + log.read_text()[-3000:]
            time.sleep(0.5)
        for pid in _pids_of_node(worker_port):  # the worker node dies, as a machine would
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        t_kill = time.time()
        while True:
            study = api.get(f"{url}/studies/{sid}", timeout=10).json()
            if study["status"] in ("completed", "failed", "cancelled"):
                break
            assert time.time() - t_kill < 600, "study did not finish after the node loss"
            time.sleep(1)
        assert study["status"] == "completed", (study.get("error"), log.read_text()[-3000:])
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    # Every result is in PostgreSQL: exact protocol counts, one row per index, full histories.
    engine = sa.create_engine(pg_url)
    with engine.connect() as c:
        rows = [dict(r) for r in c.execute(sa.text("SELECT id, stage, index, status, objective, runs "
                                                   "FROM rf_trials ORDER BY stage, index")).mappings()]
        for r in rows:  # per-epoch reports are rows of rf_reports
            r["history"] = [json.loads(h) if isinstance(h, str) else h for h in c.execute(
                sa.text("SELECT row FROM rf_reports WHERE trial_id = :t ORDER BY epoch"), {"t": r["id"]}).scalars()]
    engine.dispose()
    for stage, n in enumerate(SPEC["protocol"]["stages"], start=1):
        assert sorted(r["index"] for r in rows if r["stage"] == stage) == list(range(n))
    assert all(r["status"] in ("completed", "diverged") for r in rows), [(r["index"], r["status"]) for r in rows]
    completed = [r for r in rows if r["status"] == "completed"]
    assert completed and all(r["objective"] is not None for r in completed)
    assert all([h["epoch"] for h in r["history"]] == [1, 2, 3] for r in completed)
    node_ids = {h["node_id"] for r in rows for h in r["history"]}
    assert len(node_ids) == 2  # head and worker; the controller's zero-CPU node trains nothing
    # The trial that was on the lost node went on from its last checkpoint on the head.
    resumed = [h["resumed_from_epoch"] for r in rows for h in r["history"] if h.get("resumed_from_epoch")]
    assert resumed, "no trial resumed from a checkpoint after the node loss"
