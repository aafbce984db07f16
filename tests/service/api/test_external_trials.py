"""The REST contract of external studies (claim, report, complete, fail) without Ray: the
runner's part (opening stages) is done by its own `StageMachine`, as `_refresh` does."""

import threading
import time

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.control.stages import StageMachine
from service.settings import Settings
from service.store.study_store import StudyStore
from tests.service.conftest import bearer, make_token

SPEC = {"name": "ext", "workload": "noisy_quadratic", "optimizers": ["sgd"], "execution": "external",
        "protocol": {"stages": [4, 2], "top_k": 2, "seed": 0}, "max_concurrent_trials": 8,
        "budget": {"epochs": 3, "steps": 2}}
CLAIM_KEYS = {"trial_id", "optimizer", "stage", "seed", "budget", "hyperparameters", "workload", "schedule",
              "metric", "mode", "claim_token", "lease_expires_at"}


def make_client(db_url, lease_s=600.0):
    app = create_app(Settings(database_url=db_url, start_runner=False, external_lease_s=lease_s))
    return TestClient(app, headers=bearer(make_token(db_url, "alice", admin=False)))


@pytest.fixture
def client(db_url):
    with make_client(db_url) as c:
        yield c


def open_stages(db_url, sid):
    """What the runner does for an external study: admit it, open its runnable stages."""
    store = StudyStore(db_url)
    store.set_status(sid, "running", only_from=("queued", "running"))
    progress = StageMachine(store).advance(store.get_study(sid))
    store.engine.dispose()
    return progress


def submit(client, db_url, **changes):
    r = client.post("/studies", json={**SPEC, **changes})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert r.json()["spec"]["execution"] == "external"
    open_stages(db_url, sid)
    return sid


def claim(client, sid):
    return client.post(f"/studies/{sid}/trials/claim")


def field(r):
    return r.json()["errors"][0]["field"]


def test_claim_shape_and_state(client, db_url):
    sid = submit(client, db_url)
    r = claim(client, sid)
    assert r.status_code == 200, r.text
    c = r.json()
    assert set(c) == CLAIM_KEYS
    assert (c["optimizer"], c["stage"], c["workload"], c["metric"], c["mode"], c["schedule"]) == \
        ("sgd", 1, "noisy_quadratic", "loss", "min", "workload")
    assert c["budget"]["epochs"] == 3 and "lr" in c["hyperparameters"] and c["seed"] == 0
    t = client.get(f"/studies/{sid}/trials/{c['trial_id']}").json()
    assert t["status"] == "running" and t["attempts"] == 1 and t["config"] == c["hyperparameters"]
    # the next claim hands out another trial
    assert claim(client, sid).json()["trial_id"] != c["trial_id"]


def test_claim_204_410_and_ray_study(client, db_url):
    r = client.post("/studies", json={**SPEC, "max_concurrent_trials": 2})
    sid = r.json()["id"]
    assert claim(client, sid).status_code == 204  # queued: the runner has not opened it yet
    open_stages(db_url, sid)
    assert claim(client, sid).status_code == 200
    assert claim(client, sid).status_code == 200
    assert claim(client, sid).status_code == 204  # max_concurrent_trials claims are out
    assert client.post(f"/studies/{sid}/cancel").status_code == 202
    r = claim(client, sid)
    assert r.status_code == 410 and "cancelled" in r.json()["detail"]
    ray = client.post("/studies", json={**SPEC, "execution": "ray"}).json()["id"]
    r = claim(client, ray)
    assert r.status_code == 409 and field(r) == "execution"


def test_stage_two_waits_then_opens_narrowed(client, db_url):
    sid = submit(client, db_url)
    claims = [claim(client, sid).json() for _ in range(4)]
    assert claim(client, sid).status_code == 204  # stage 1 all out, stage 2 not open
    for i, c in enumerate(claims):
        r = client.post(f"/studies/{sid}/trials/{c['trial_id']}/complete",
                        json={"claim_token": c["claim_token"], "status": "completed", "metrics": {"loss": i}})
        assert r.status_code == 200 and r.json()["status"] == "completed"
    assert claim(client, sid).status_code == 204  # the runner has not advanced the study yet
    open_stages(db_url, sid)
    c = claim(client, sid).json()
    assert c["stage"] == 2
    spaces = client.get(f"/studies/{sid}").json()["optimizers"][0]["stage_spaces"]
    assert spaces["2"]["lr"] != spaces["1"]["lr"]  # narrowed around the best stage-1 trials


def test_reports_contract(client, db_url):
    sid = submit(client, db_url)
    c = claim(client, sid).json()
    url, tok = f"/studies/{sid}/trials/{c['trial_id']}", c["claim_token"]

    def report(epoch, **metrics):
        return client.post(f"{url}/reports", json={"claim_token": tok, "epoch": epoch, "metrics": metrics})

    r = report(1, loss=2.0, train_loss=2.5)
    assert r.status_code == 200 and r.json() == {"should_stop": False, "reason": None}
    assert report(2, loss=1.5).json()["should_stop"] is False
    assert report(2, loss=1.25).status_code == 200  # a repeated epoch replaces its row
    r = report(1, loss=1.0)
    assert r.status_code == 422 and field(r) == "epoch"
    r = report(3, loss="low")
    assert r.status_code == 422 and field(r) == "metrics.loss"
    r = report(3, loss=1.0, acc=True)
    assert r.status_code == 422 and field(r) == "metrics.acc"
    r = report(3, train_loss=1.0)
    assert r.status_code == 422 and field(r) == "metrics.loss"
    r = client.post(f"{url}/reports", json={"claim_token": tok, "epoch": "3", "metrics": {"loss": 1}})
    assert r.status_code == 422 and field(r) == "epoch"
    t = client.get(url).json()
    assert [h["epoch"] for h in t["history"]] == [1, 2] and t["history"][1]["loss"] == 1.25
    assert t["objective"] == 1.25
    r = client.post(f"{url}/reports", json={"claim_token": "not-mine", "epoch": 3, "metrics": {"loss": 1}})
    assert r.status_code == 409


def test_complete_and_fail_are_idempotent(client, db_url):
    sid = submit(client, db_url)
    a, b, c = (claim(client, sid).json() for _ in range(3))
    url = f"/studies/{sid}/trials"
    # completed without the study's metric, reported or sent: 422, nothing changes
    r = client.post(f"{url}/{a['trial_id']}/complete", json={"claim_token": a["claim_token"], "status": "completed"})
    assert r.status_code == 422 and field(r) == "metrics.loss"
    client.post(f"{url}/{a['trial_id']}/reports", json={"claim_token": a["claim_token"], "epoch": 1,
                                                         "metrics": {"loss": 0.5}})
    body = {"claim_token": a["claim_token"], "status": "completed"}
    first = client.post(f"{url}/{a['trial_id']}/complete", json=body)
    again = client.post(f"{url}/{a['trial_id']}/complete", json=body)
    assert first.status_code == again.status_code == 200 and first.json() == again.json()
    assert client.get(f"{url}/{a['trial_id']}").json()["objective"] == 0.5
    # a late report retried under the ended claim: harmless
    r = client.post(f"{url}/{a['trial_id']}/reports", json={"claim_token": a["claim_token"], "epoch": 1,
                                                             "metrics": {"loss": 0.1}})
    assert r.status_code == 200 and r.json()["should_stop"] is True
    assert client.get(f"{url}/{a['trial_id']}").json()["objective"] == 0.5
    # another claim's token: 409
    r = client.post(f"{url}/{a['trial_id']}/complete", json={**body, "claim_token": b["claim_token"]})
    assert r.status_code == 409 and field(r) == "claim_token"
    # a reason's control characters are replaced, not refused (issue 30): the trial is failed
    fail = {"claim_token": b["claim_token"], "reason": "Traceback:\n  CUDA\x00 out of memory"}
    assert client.post(f"{url}/{b['trial_id']}/fail", json=fail).json()["status"] == "failed"
    assert client.post(f"{url}/{b['trial_id']}/fail", json=fail).status_code == 200
    t = client.get(f"{url}/{b['trial_id']}").json()
    assert t["status"] == "failed" and t["error"] == "Traceback:\n  CUDA\ufffd out of memory"
    r = client.post(f"{url}/{c['trial_id']}/complete", json={"claim_token": c["claim_token"], "status": "diverged"})
    assert r.json()["status"] == "diverged"
    r = client.post(f"{url}/{c['trial_id']}/complete", json={"claim_token": c["claim_token"], "status": "done"})
    assert r.status_code == 422 and field(r) == "status"


def test_nan_metric_diverges(client, db_url):
    sid = submit(client, db_url)
    c = claim(client, sid).json()
    url = f"/studies/{sid}/trials/{c['trial_id']}"
    r = client.post(f"{url}/reports", content=f'{{"claim_token": "{c["claim_token"]}", "epoch": 1, '
                                              '"metrics": {"loss": NaN}}',
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["should_stop"] is True and "diverged" in r.json()["reason"]
    t = client.get(url).json()
    assert t["status"] == "diverged" and t["objective"] is None


def test_asha_stops_the_worst_at_its_rung(client, db_url):
    sid = submit(client, db_url, protocol={**SPEC["protocol"], "stages": [6, 2],
                                           "early_stopping": {"kind": "asha", "grace_epochs": 1,
                                                              "reduction_factor": 3}})
    claims = [claim(client, sid).json() for _ in range(6)]
    answers = []
    for i, c in enumerate(claims):
        r = client.post(f"/studies/{sid}/trials/{c['trial_id']}/reports",
                        json={"claim_token": c["claim_token"], "epoch": 1, "metrics": {"loss": 0.1 + i / 10}})
        answers.append(r.json())
    # values rise as they come: the first goes on, later ones are outside the best third
    assert answers[0] == {"should_stop": False, "reason": None}
    assert any(a["should_stop"] for a in answers)
    stopped = [c for c, a in zip(claims, answers, strict=True) if a["should_stop"]]
    for c in stopped:
        t = client.get(f"/studies/{sid}/trials/{c['trial_id']}").json()
        assert t["status"] == "stopped" and t["error"].startswith("ASHA: loss")
    # a rung is only at epoch 1 (grace 1, factor 3, budget 3): epoch 2 never stops
    go = next(c for c, a in zip(claims, answers, strict=True) if not a["should_stop"])
    r = client.post(f"/studies/{sid}/trials/{go['trial_id']}/reports",
                    json={"claim_token": go["claim_token"], "epoch": 2, "metrics": {"loss": 99.0}})
    assert r.json()["should_stop"] is False


def test_expired_claim_goes_back_to_pending(db_url):
    with make_client(db_url, lease_s=0.4) as client:
        sid = submit(client, db_url, max_concurrent_trials=1, protocol={**SPEC["protocol"], "stages": [1, 1]})
        old = claim(client, sid).json()
        url = f"/studies/{sid}/trials/{old['trial_id']}"
        assert client.post(f"{url}/reports", json={"claim_token": old["claim_token"], "epoch": 2,
                                                   "metrics": {"loss": 3.0}}).status_code == 200
        time.sleep(0.6)
        new = claim(client, sid).json()
        assert new["trial_id"] == old["trial_id"] and new["claim_token"] != old["claim_token"]
        t = client.get(url).json()
        assert t["attempts"] == 2 and t["history"] == [] and t["status"] == "running"
        for path, body in (("reports", {"epoch": 3, "metrics": {"loss": 1.0}}),
                           ("complete", {"status": "completed"}), ("fail", {"reason": "late"})):
            r = client.post(f"{url}/{path}", json={"claim_token": old["claim_token"], **body})
            assert r.status_code == 409, (path, r.text)
        # the new claimant starts from epoch 1 (the old claim's reports are gone)
        assert client.post(f"{url}/reports", json={"claim_token": new["claim_token"], "epoch": 1,
                                                   "metrics": {"loss": 2.0}}).status_code == 200
        # heartbeats keep a claimant in a long epoch alive; the old claim's heartbeat is 409
        for _ in range(3):
            time.sleep(0.2)
            r = client.post(f"{url}/heartbeat", json={"claim_token": new["claim_token"]})
            assert r.status_code == 200 and r.json()["status"] == "running" and r.json()["lease_expires_at"]
        assert client.post(f"{url}/heartbeat", json={"claim_token": old["claim_token"]}).status_code == 409
        # a lease that passes with nobody claiming: the claimant's own next report is 409
        time.sleep(0.6)
        r = client.post(f"{url}/reports", json={"claim_token": new["claim_token"], "epoch": 2,
                                                "metrics": {"loss": 1.0}})
        assert r.status_code == 409
        assert client.get(url).json()["status"] == "pending"


def test_another_users_study_is_404(client, db_url):
    sid = submit(client, db_url)
    c = claim(client, sid).json()
    with TestClient(client.app, headers=bearer(make_token(db_url, "bob", admin=False))) as bob:
        assert claim(bob, sid).status_code == 404
        url = f"/studies/{sid}/trials/{c['trial_id']}"
        tok = c["claim_token"]
        assert bob.post(f"{url}/reports", json={"claim_token": tok, "epoch": 1,
                                                "metrics": {"loss": 1}}).status_code == 404
        assert bob.post(f"{url}/complete", json={"claim_token": tok, "status": "completed"}).status_code == 404
        assert bob.post(f"{url}/fail", json={"claim_token": tok, "reason": "x"}).status_code == 404
    assert client.post(f"/studies/{sid}/trials/999999/complete",
                       json={"claim_token": tok, "status": "completed"}).status_code == 404


def test_concurrent_claims_never_share_a_trial(db_url):
    """20 threads claim at once on the store (PostgreSQL: real row-level concurrency)."""
    store = StudyStore(db_url)
    study, _ = store.create_study({**SPEC, "name": "c"}, None, owner="alice")
    store.ensure_trials(study.id, "sgd", 1, [{"lr": 0.1}] * 12)
    got: list = []
    barrier = threading.Barrier(20)

    def worker(i):
        barrier.wait()
        while True:
            t = store.claim_external(study.id, "sgd", 1, f"token-{i}-{len(got)}-{time.monotonic_ns()}", 60)
            if t is None:
                return
            got.append(t.id)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(got) == sorted(t.id for t in store.trials(study.id))
    assert all(t.status == "running" and t.runs == 1 for t in store.trials(study.id))
    store.engine.dispose()


def test_tpe_study_gets_configs_at_claim(client, db_url):
    sid = submit(client, db_url, protocol={**SPEC["protocol"], "method": "tpe"})
    c = claim(client, sid).json()
    assert "lr" in c["hyperparameters"]
    assert client.get(f"/studies/{sid}/trials/{c['trial_id']}").json()["config"] == c["hyperparameters"]
