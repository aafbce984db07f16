"""Issue 30: the outside review's findings on the external-trials API, each failing first on the
code before it (items 1-3, 6, 7; the agent's in test_agent.py, users' names in test_auth_names.py,
plugins in tests/plugins)."""

import time

import pytest

from service.client import Client
from service.store.study_store import StudyStore
from tests.service.api.test_external_trials import SPEC, claim, field, make_client, submit


@pytest.fixture
def client(db_url):
    with make_client(db_url) as c:
        yield c


def _claimed(client, db_url, **changes):
    sid = submit(client, db_url, **changes)
    c = claim(client, sid).json()
    return sid, f"/studies/{sid}/trials/{c['trial_id']}", c["claim_token"]


def _post_raw(client, url, body: str):
    return client.post(url, content=body, headers={"Content-Type": "application/json"})


# -- item 1: reasons are sanitised, not refused; `with trial:` keeps the user's exception
def test_fail_reason_is_sanitised_and_capped_not_refused(client, db_url):
    _, url, tok = _claimed(client, db_url)
    reason = "x" * 20_000 + "\r 50%|##|\x1b[31mRuntimeError: boom\x1b[0m \u202eevil\x00"
    r = client.post(f"{url}/fail", json={"claim_token": tok, "reason": reason})
    assert r.status_code == 200 and r.json()["status"] == "failed"
    error = client.get(url).json()["error"]
    assert error.endswith("\n 50%|##|RuntimeError: boom \ufffdevil\ufffd")
    assert not any(ord(ch) < 32 and ch not in "\n\t" for ch in error) and len(error) <= 10_000


def test_trial_exit_reraises_the_users_exception(client, db_url):
    sid = submit(client, db_url)
    api = Client("http://testserver", http=client)
    trial = api.claim(sid)
    with pytest.raises(ValueError, match="bad value"):
        with trial:
            raise ValueError("bad value\r\x1b[31m in epoch 3")
    t = client.get(f"/studies/{sid}/trials/{trial.id}").json()
    assert t["status"] == "failed" and "ValueError: bad value" in t["error"]
    # the failure cannot be recorded (the claim is gone): still the user's exception
    other = api.claim(sid)
    client.post(f"/studies/{sid}/cancel")
    with pytest.raises(KeyError):
        with other:
            raise KeyError("mine")


# -- item 2: a non-finite final metric diverges
@pytest.mark.parametrize("raw", ["NaN", "1e300", "Infinity"])
def test_non_finite_final_metric_makes_the_trial_diverged(client, db_url, raw):
    sid, url, tok = _claimed(client, db_url)
    assert client.post(f"{url}/reports", json={"claim_token": tok, "epoch": 1,
                                               "metrics": {"loss": 0.5}}).status_code == 200
    r = _post_raw(client, f"{url}/complete",
                  f'{{"claim_token": "{tok}", "status": "completed", "metrics": {{"loss": {raw}}}}}')
    assert r.status_code == 200 and r.json()["status"] == "diverged"
    t = client.get(url).json()
    assert t["status"] == "diverged" and t["objective"] is None and "not finite" in t["error"]
    assert client.get(f"/studies/{sid}/best").json().get("sgd", []) == []


# -- item 3: cancel and delete end claims at once; lapsed claims read as pending
def test_cancel_ends_the_studys_claims_at_once(client, db_url):
    sid = submit(client, db_url)
    a, b = claim(client, sid).json(), claim(client, sid).json()
    assert client.post(f"/studies/{sid}/cancel").status_code == 202
    for c in (a, b):
        t = client.get(f"/studies/{sid}/trials/{c['trial_id']}").json()
        assert t["status"] == "failed" and t["error"] == "stopped: the study was cancelled"
    assert client.get(f"/studies/{sid}").json()["status"] == "cancelled"
    url = f"/studies/{sid}/trials/{a['trial_id']}"
    tok = a["claim_token"]
    for path, body in (("reports", {"epoch": 1, "metrics": {"loss": 1.0}}), ("heartbeat", {}),
                       ("complete", {"status": "completed", "metrics": {"loss": 1.0}}), ("fail", {"reason": "x"})):
        r = client.post(f"{url}/{path}", json={"claim_token": tok, **body})
        assert r.status_code == 410, (path, r.text)
    assert client.get(url).json()["error"] == "stopped: the study was cancelled"


def test_delete_ends_claims_and_their_later_calls_answer_410(client, db_url):
    sid = submit(client, db_url)
    a = claim(client, sid).json()
    client.post(f"/studies/{sid}/cancel")
    assert client.delete(f"/studies/{sid}").status_code == 204
    url = f"/studies/{sid}/trials/{a['trial_id']}"
    r = client.post(f"{url}/reports", json={"claim_token": a["claim_token"], "epoch": 1, "metrics": {"loss": 1.0}})
    assert r.status_code == 410 and "deleted" in r.json()["detail"]
    assert client.post(f"{url}/heartbeat", json={"claim_token": a["claim_token"]}).status_code == 410
    # a study that never existed is still 404
    assert client.post("/studies/nope/trials/1/heartbeat", json={"claim_token": "t"}).status_code == 404


def test_lapsed_claims_read_as_pending_when_read(db_url):
    with make_client(db_url, lease_s=0.5) as client:
        sid = submit(client, db_url)
        a = claim(client, sid).json()
        time.sleep(1.2)
        stage1 = client.get(f"/studies/{sid}").json()["optimizers"][0]["stages"]["1"]
        assert stage1["by_status"] == {"pending": 4}  # the study's view (watch), at its first read
        t = client.get(f"/studies/{sid}/trials/{a['trial_id']}").json()
        assert t["status"] == "pending" and t["metrics"] == {}
        assert client.get(f"/studies/{sid}/trials", params={"status": "running"}).json() == []


# -- item 6: names refuse Unicode format characters
@pytest.mark.parametrize("name", ["report\u202egnp.exe", "a\u200bb", "x\u2066y"])
def test_study_and_suite_names_refuse_format_characters(client, db_url, name):
    r = client.post("/studies", json={**SPEC, "name": name})
    assert r.status_code == 422 and field(r) == "name", r.text
    r = client.post("/studies", json={**SPEC, "search_spaces": {"sgd": {name: {"type": "float"}}}})
    assert r.status_code == 422
    r = client.post("/suites", json={"name": name, "optimizers": ["sgd"],
                                     "workloads": [{"workload": "noisy_quadratic"}]})
    assert r.status_code == 422, r.text


# -- item 7: fail after complete, fail on an ended study, a diverged trial's metrics
def test_fail_after_complete_is_409(client, db_url):
    _, url, tok = _claimed(client, db_url)
    client.post(f"{url}/reports", json={"claim_token": tok, "epoch": 1, "metrics": {"loss": 0.5}})
    assert client.post(f"{url}/complete", json={"claim_token": tok, "status": "completed"}).status_code == 200
    r = client.post(f"{url}/fail", json={"claim_token": tok, "reason": "late"})
    assert r.status_code == 409 and field(r) == "status"
    t = client.get(url).json()
    assert t["status"] == "completed" and t["objective"] == 0.5


def test_fail_on_an_ended_study_records_the_studys_reason(client, db_url):
    sid, url, tok = _claimed(client, db_url)
    store = StudyStore(db_url)
    store.set_status(sid, "failed", only_from=("running",))  # the runner ended it
    store.engine.dispose()
    r = client.post(f"{url}/fail", json={"claim_token": tok, "reason": "my own reason"})
    assert r.status_code == 410
    t = client.get(url).json()
    assert t["status"] == "failed" and t["error"] == "stopped: the study was failed"


def test_a_diverged_trials_metrics_say_so(client, db_url):
    _, url, tok = _claimed(client, db_url)
    client.post(f"{url}/reports", json={"claim_token": tok, "epoch": 1, "metrics": {"loss": 0.5}})
    r = _post_raw(client, f"{url}/reports", f'{{"claim_token": "{tok}", "epoch": 2, "metrics": {{"loss": NaN}}}}')
    assert r.json()["should_stop"] is True
    t = client.get(url).json()
    assert t["status"] == "diverged" and t["metrics"] == {"loss": None, "diverged": True}
    assert t["objective"] is None
    _, url2, tok2 = _claimed(client, db_url)
    client.post(f"{url2}/reports", json={"claim_token": tok2, "epoch": 1, "metrics": {"loss": 0.25}})
    client.post(f"{url2}/complete", json={"claim_token": tok2, "status": "diverged"})
    t = client.get(url2).json()
    assert t["metrics"]["diverged"] is True and t["metrics"]["loss"] is None


@pytest.mark.parametrize("path, body", [("complete", {"status": "completed", "metrics": {"loss": 1.0}}),
                                        ("fail", {"reason": "x"})])
def test_a_cancel_landing_during_a_complete_or_fail_answers_410_not_409(client, db_url, path, body):
    """The cancel commits after the route read the study (still running) and before its write:
    the claim was ended by the study, which is a 410 as when the cancel came first, not a 409
    saying the client itself ended the trial otherwise."""
    sid, url, tok = _claimed(client, db_url)
    store = client.app.state.store
    real = store.finish_external

    def cancel_first(*args, **kwargs):
        store.set_status(sid, "cancelled", only_from=("queued", "running"))
        store.end_claims(sid, "stopped: the study was cancelled")
        return real(*args, **kwargs)

    store.finish_external = cancel_first
    try:
        r = client.post(f"{url}/{path}", json={"claim_token": tok, **body})
    finally:
        del store.finish_external
    assert r.status_code == 410, r.text
    assert client.get(url).json()["error"] == "stopped: the study was cancelled"


def test_a_failure_message_with_nul_is_stored_on_every_database(client, db_url):
    """The runner stores a trial's own exception message (workers/tune.py) and Ray's error tail
    as they are: a NUL in one (PostgreSQL refuses NUL in text) must not make the write raise in
    the runner's callback; it is stored as U+FFFD."""
    sid, url, _ = _claimed(client, db_url)
    trial_id = int(url.rsplit("/", 1)[1])
    store = StudyStore(db_url)
    store.mark_failed(trial_id, "ValueError: bad\x00byte")
    store.engine.dispose()
    t = client.get(url).json()
    assert t["status"] == "failed" and t["error"] == "ValueError: bad\ufffdbyte"


def test_a_claim_after_the_cancel_committed_takes_no_trial(client, db_url):
    """The claim route read the study as running; the cancel (status, then its claims ended)
    commits before the claim's transaction: the claim takes nothing, rather than a trial left
    running in a cancelled study (whose lapsed claims are never expired again). The claim and
    the ending of claims are serialised by the study's claim lock."""
    sid = submit(client, db_url)
    store = StudyStore(db_url)
    assert store.set_status(sid, "cancelled", only_from=("queued", "running"))
    store.end_claims(sid, "stopped: the study was cancelled")
    t = store.claim_next_external(sid, lambda counts: ("sgd", 1), "tok", 600.0)
    store.engine.dispose()
    assert t is None
    assert all(x["status"] != "running" for x in client.get(f"/studies/{sid}/trials").json())
