"""Fixes from the review of the external-trials API (service/api/trials.py, the store's claims)."""

import pytest

from tests.service.api.test_external_trials import SPEC, claim, field, make_client, submit


@pytest.fixture
def client(db_url):
    with make_client(db_url) as c:
        yield c


def _claimed(client, db_url, **changes):
    sid = submit(client, db_url, **changes)
    c = claim(client, sid).json()
    return sid, f"/studies/{sid}/trials/{c['trial_id']}", c["claim_token"]


def _report(client, url, tok, epoch, raw_metrics: str):
    return client.post(f"{url}/reports", content=f'{{"claim_token": "{tok}", "epoch": {epoch}, '
                                                 f'"metrics": {raw_metrics}}}',
                       headers={"Content-Type": "application/json"})


def test_huge_integer_metric_is_no_500(client, db_url):
    sid, url, tok = _claimed(client, db_url)
    r = _report(client, url, tok, 1, '{"loss": 1.0, "acc": ' + "9" * 400 + "}")
    assert r.status_code == 200 and r.json()["should_stop"] is False
    r = _report(client, url, tok, 2, '{"loss": ' + "9" * 400 + "}")
    assert r.status_code == 200 and r.json()["should_stop"] is True and "diverged" in r.json()["reason"]
    assert client.get(url).json()["status"] == "diverged"
    _, url2, tok2 = _claimed(client, db_url)
    r = client.post(f"{url2}/complete", content=f'{{"claim_token": "{tok2}", "status": "stopped", '
                                                '"metrics": {"loss": ' + "9" * 400 + "}}",
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 200


@pytest.mark.parametrize("value", [1.5e308, -1e101])
def test_enormous_finite_metric_diverges(client, db_url, value):
    sid, url, tok = _claimed(client, db_url)
    r = client.post(f"{url}/reports", json={"claim_token": tok, "epoch": 1, "metrics": {"loss": value}})
    assert r.status_code == 200 and r.json()["should_stop"] is True
    t = client.get(url).json()
    assert t["status"] == "diverged" and t["objective"] is None
    assert client.get(f"/studies/{sid}").status_code == 200  # the summary still adds up


@pytest.mark.parametrize("key,value", [("wall_time_s", -100), ("epoch_time_s", 1e308),
                                       ("peak_memory_mb", 1e308), ("wall_time_s", -0.001)])
def test_reserved_report_keys_are_validated(client, db_url, key, value):
    sid, url, tok = _claimed(client, db_url)
    r = client.post(f"{url}/reports", json={"claim_token": tok, "epoch": 1, "metrics": {"loss": 1.0, key: value}})
    assert r.status_code == 422 and field(r) == f"metrics.{key}"
    assert client.get(url).json()["history"] == []
    ok = {"loss": 1.0, "wall_time_s": 12.5, "epoch_time_s": 0.0, "peak_memory_mb": 2048}
    r = client.post(f"{url}/reports", json={"claim_token": tok, "epoch": 1, "metrics": ok})
    assert r.status_code == 200


def test_report_epoch_within_the_budget(client, db_url):
    _, url, tok = _claimed(client, db_url)  # budget.epochs 3
    for epoch in (0, 4, 500):
        r = client.post(f"{url}/reports", json={"claim_token": tok, "epoch": epoch, "metrics": {"loss": 1.0}})
        assert r.status_code == 422 and field(r) == "epoch", epoch
    assert client.get(url).json()["history"] == []
    for epoch in (1, 3):
        r = client.post(f"{url}/reports", json={"claim_token": tok, "epoch": epoch, "metrics": {"loss": 1.0}})
        assert r.status_code == 200


def _count_report_reads(engine):
    from sqlalchemy import event

    seen: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and "rf_reports" in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    return seen


def test_reports_without_early_stopping_read_no_peers(client, db_url):
    sid = submit(client, db_url)  # no early_stopping
    claims = [claim(client, sid).json() for _ in range(3)]
    seen = _count_report_reads(client.app.state.store.engine)
    for epoch in (1, 2, 3):
        for c in claims:
            r = client.post(f"/studies/{sid}/trials/{c['trial_id']}/reports",
                            json={"claim_token": c["claim_token"], "epoch": epoch, "metrics": {"loss": 1.0}})
            assert r.status_code == 200 and r.json()["should_stop"] is False
    assert seen == []


def test_asha_reads_peers_only_at_its_rung(client, db_url):
    sid = submit(client, db_url, protocol={**SPEC["protocol"], "early_stopping": {
        "kind": "asha", "grace_epochs": 1, "reduction_factor": 3}})  # budget 3: one rung, at epoch 1
    c = claim(client, sid).json()
    seen = _count_report_reads(client.app.state.store.engine)
    url = f"/studies/{sid}/trials/{c['trial_id']}/reports"
    tok = c["claim_token"]
    assert client.post(url, json={"claim_token": tok, "epoch": 1, "metrics": {"loss": 1.0}}).status_code == 200
    at_rung = len(seen)
    assert at_rung >= 1
    assert client.post(url, json={"claim_token": tok, "epoch": 2, "metrics": {"loss": 1.0}}).status_code == 200
    assert len(seen) == at_rung


def test_parallel_claims_respect_max_concurrent_trials(client, db_url):
    import threading

    sid = submit(client, db_url, max_concurrent_trials=1)
    barrier, codes = threading.Barrier(10), []

    def worker():
        barrier.wait()
        codes.append(claim(client, sid).status_code)

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(codes) == [200] + [204] * 9
    trials = client.get(f"/studies/{sid}/trials").json()
    trials = trials.get("trials", trials) if isinstance(trials, dict) else trials
    assert sum(t["status"] == "running" for t in trials) == 1


def _cancel(client, sid):
    r = client.post(f"/studies/{sid}/cancel")
    assert r.status_code in (200, 202), r.text


def test_heartbeat_and_complete_after_the_study_was_cancelled(client, db_url):
    sid = submit(client, db_url)
    a, b = claim(client, sid).json(), claim(client, sid).json()
    for c in (a, b):
        r = client.post(f"/studies/{sid}/trials/{c['trial_id']}/reports",
                        json={"claim_token": c["claim_token"], "epoch": 1, "metrics": {"loss": 1.0}})
        assert r.status_code == 200
    _cancel(client, sid)
    url = f"/studies/{sid}/trials/{a['trial_id']}"
    r = client.post(f"{url}/heartbeat", json={"claim_token": a["claim_token"]})
    assert r.status_code == 410
    t = client.get(url).json()
    assert t["status"] == "failed" and "cancelled" in t["error"]
    url = f"/studies/{sid}/trials/{b['trial_id']}"
    r = client.post(f"{url}/complete", json={"claim_token": b["claim_token"], "status": "completed"})
    assert r.status_code == 410
    t = client.get(url).json()
    assert t["status"] == "failed" and "cancelled" in t["error"]


def test_completing_again_with_another_status_is_409(client, db_url):
    _, url, tok = _claimed(client, db_url)
    assert client.post(f"{url}/reports", json={"claim_token": tok, "epoch": 1,
                                               "metrics": {"loss": 1.0}}).status_code == 200
    first = client.post(f"{url}/complete", json={"claim_token": tok, "status": "completed"})
    assert first.status_code == 200 and first.json()["status"] == "completed"
    again = client.post(f"{url}/complete", json={"claim_token": tok, "status": "completed"})
    assert again.status_code == 200 and again.json() == first.json()
    r = client.post(f"{url}/complete", json={"claim_token": tok, "status": "diverged"})
    assert r.status_code == 409 and field(r) == "status"
    assert client.get(url).json()["status"] == "completed"


def test_an_ended_study_forgets_its_tpe_samplers(client, db_url):
    sid = submit(client, db_url, protocol={**SPEC["protocol"], "method": "tpe"})
    assert claim(client, sid).status_code == 200
    tpe = client.app.state.external_samplers["tpe"]
    assert any(key[0] == sid for key in tpe._groups)
    _cancel(client, sid)
    assert not any(key[0] == sid for key in tpe._groups)


def test_rung_values_of_others_selects_the_metric(db_url):
    from service.store.study_store import StudyStore

    store = StudyStore(db_url)
    study, _ = store.create_study({**SPEC, "name": "r"}, None, owner="alice")
    store.ensure_trials(study.id, "sgd", 1, [{"lr": 0.1}] * 4)
    trials = store.trials(study.id)
    rows = [{"loss": 0.5, "epoch": 1}, {"loss": None, "epoch": 1}, {"loss": 2, "acc": 0.1, "epoch": 1},
            {"loss": 9.0, "epoch": 1}]
    for t, row in zip(trials, rows, strict=True):
        t2 = store.claim_external(study.id, "sgd", 1, f"tok-{t.id}", 60)
        assert store.report_external(study.id, t2.id, f"tok-{t2.id}", 1, row, "loss", 60)[0] == "ok"
    values = store.rung_values_of_others(study.id, "sgd", 1, 1, "loss", trials[3].id)
    assert sorted(values) == [0.5, 2.0]
    assert store.rung_values_of_others(study.id, "sgd", 1, 2, "loss", trials[3].id) == []
    store.engine.dispose()
