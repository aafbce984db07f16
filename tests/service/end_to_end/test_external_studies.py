"""External studies end to end: a real `rootfree serve` (API + runner + local Ray, which drives
the stages), agents as subprocesses running examples/external_train.py on Fashion-MNIST."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.client import Client
from tests.service.conftest import make_token
from tests.support import free_port
from tests.support.serving import api, kill, serve, wait_for

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = str(ROOT / "examples" / "external_train.py")
LEASE_S = 10


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("external")
    db = f"sqlite:///{tmp / 'studies.db'}"
    port = free_port()
    proc = serve(db, port, tmp, external_lease_s=LEASE_S)
    url = f"http://127.0.0.1:{port}"
    token = make_token(db, "alice", admin=False)
    yield {"url": url, "token": token, "client": Client(url, token), "tmp": tmp}
    kill(proc)


def agent(service, sid, command, *extra, **kw):
    # one torch thread per training process: the test machine has two cores
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "service.cli", "agent", sid, "--url", service["url"],
                             "--token", service["token"], "--poll", "0.3", *extra, "--", *command],
                            env=env, stderr=subprocess.PIPE, text=True, **kw)


def counts(trials) -> dict:
    out: dict = {}
    for t in trials:
        out.setdefault(t["optimizer"], {}).setdefault(t["stage"], 0)
        out[t["optimizer"]][t["stage"]] += 1
    return out


def report_shape(html: str) -> tuple:
    return html.count("<figure"), re.findall(r"<h3>(.*?)</h3>", html)


def test_two_agents_run_an_external_study_like_ray_runs_one(service):
    c = service["client"]
    protocol = {"stages": [3, 2], "top_k": 2, "seed": 0, "seeds": 2,
                "early_stopping": {"kind": "asha", "grace_epochs": 1, "reduction_factor": 2}}
    study = c.submit({"name": "ext-fmnist", "workload": "fmnist_cnn", "optimizers": ["sgd"],
                      "execution": "external", "protocol": protocol, "max_concurrent_trials": 4,
                      "budget": {"epochs": 2, "train_subset": 256, "test_subset": 128, "width": 4,
                                 "batch_size": 64}})
    # the same protocol on Ray (the cheapest workload): its analysis and report set the shape
    ray = c.submit({"name": "ray-nqm", "workload": "noisy_quadratic", "optimizers": ["sgd"],
                    "protocol": {**protocol, "stages": [2, 1], "seeds": 1}, "budget": {"epochs": 2, "steps": 5}})
    agents = [agent(service, study.id, [sys.executable, EXAMPLE]) for _ in range(2)]
    for p in agents:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-3000:]
        assert "has ended (completed)" in err
    assert study.wait(interval=0.5, timeout=60).status == "completed"
    trials = study.trials(include="history")
    assert counts(trials) == {"sgd": {1: 3, 2: 2, 3: 2}}
    assert {t["status"] for t in trials} <= {"completed", "stopped", "diverged"}
    assert any(t["status"] == "stopped" and t["error"].startswith("ASHA") for t in trials)
    for opt in ("sgd",):
        spaces = next(o for o in study.data["optimizers"] if o["optimizer"] == opt)["stage_spaces"]
        assert spaces["2"]["lr"] != spaces["1"]["lr"]  # narrowed around the best stage-1 trials
        assert spaces["1"]["lr"]["low"] <= spaces["2"]["lr"]["low"] < spaces["2"]["lr"]["high"] \
            <= spaces["1"]["lr"]["high"]
        seeds = [t for t in trials if t["optimizer"] == opt and t["stage"] == 3]
        assert len({t["seed"] for t in seeds}) == 2 and all(t["status"] == "completed" for t in seeds)
        best = study.best()[opt][0]
        assert all(t["config"] == best["hyperparameters"] for t in seeds)
    assert all(t["history"] and t["history"][0]["epoch"] == 1 for t in trials if t["status"] == "completed")
    # trained by the agents, never by Ray (whose reports carry the node they ran on)
    assert not any("node_ip" in h for t in trials for h in t["history"])

    assert c.study(ray.id).wait(interval=0.5, timeout=600).status == "completed"
    assert any("node_ip" in h for t in c.study(ray.id).trials(include="history") for h in t["history"])
    ext, ray_a = study.analysis(), c.study(ray.id).analysis()
    for opt in ("sgd",):
        e, r = ext["optimizers"][opt], ray_a["optimizers"][opt]
        assert set(e) == set(r) and set(e["hyperparameters"]) == set(r["hyperparameters"])
        assert e["time_per_epoch_s"] and e["peak_memory_mb"] and e["seed_runs"]["n"] == 2
    assert report_shape(study.report_html()) == report_shape(c.study(ray.id).report_html())


def test_a_killed_claimant_loses_its_trial_to_another_agent(service):
    c = service["client"]
    study = c.submit({"name": "ext-kill", "workload": "noisy_quadratic", "optimizers": ["sgd"],
                      "execution": "external", "protocol": {"stages": [1], "top_k": 2},
                      "budget": {"epochs": 3, "steps": 2, "pace_ms": 1500}})
    claim_file = service["tmp"] / "claim.json"
    first = agent(service, study.id, ["sh", "-c", f'echo "$ROOTFREE_TRIAL" > {claim_file}; '
                                                  f'exec {sys.executable} {EXAMPLE}'], start_new_session=True)
    deadline = time.time() + 300
    while not (claim_file.exists() and any(t["history"] for t in study.trials(include="history"))):
        assert time.time() < deadline and first.poll() is None
        time.sleep(0.3)
    os.killpg(first.pid, signal.SIGKILL)  # mid-trial: reported epoch 1, training epoch 2
    first.wait(timeout=30)
    old = json.loads(claim_file.read_text())
    second = agent(service, study.id, [sys.executable, EXAMPLE])
    _, err = second.communicate(timeout=300)
    assert second.returncode == 0, err[-3000:]
    (t,) = study.trials(include="history")
    assert t["id"] == old["trial_id"] and t["status"] == "completed" and t["attempts"] == 2
    assert [h["epoch"] for h in t["history"]] == [1, 2, 3]  # the second claimant's run only
    late = api.post(f"{service['url']}/studies/{study.id}/trials/{t['id']}/reports",
                    headers={"Authorization": f"Bearer {service['token']}"},
                    json={"claim_token": old["claim_token"], "epoch": 2, "metrics": {"loss": 0.1}})
    assert late.status_code == 409 and "claim" in late.json()["detail"]
    assert wait_for(service["url"], study.id, lambda s: s["status"] == "completed")["status"] == "completed"
