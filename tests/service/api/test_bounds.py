"""Bounds on every input (runner off): budgets within each workload's limits, seeds that fit 32
bits, no control characters in text, bodies up to 1 MiB, pages up to 1000, trial lists without
per-epoch history unless asked; the history as rows, migrated from the old JSON column."""

import json

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from service.store.study_store import StudyStore
from tests.service.conftest import bearer, make_token

GOOD = {"name": "b", "workload": "fmnist_cnn", "optimizers": ["sgd"],
        "protocol": {"stages": [2], "top_k": 2}, "budget": {"epochs": 1}}


@pytest.fixture
def client(db_url):
    with TestClient(create_app(Settings(database_url=db_url, start_runner=False)),
                    headers=bearer(make_token(db_url))) as c:
        yield c


def _error(r):
    assert r.status_code == 422, r.text
    return r.json()["errors"][0]["field"], r.json()["detail"]


@pytest.mark.parametrize("workload,key,value,limit", [
    ("fmnist_cnn", "epochs", 10**9, 1000), ("fmnist_cnn", "width", 10**6, 512),
    ("fmnist_vit", "train_subset", 10**7, 60000), ("ptb_lstm", "bptt", 4096, 1024),
    ("noisy_quadratic", "pace_ms", 10**9, 600_000),
])
def test_budget_beyond_the_workload_limit(client, workload, key, value, limit):
    field, detail = _error(client.post("/studies", json={**GOOD, "workload": workload, "budget": {key: value}}))
    assert field == f"budget.{key}" and f"at most {limit}" in detail


@pytest.mark.parametrize("seed", [2**32, 2**70, -1])
def test_seed_must_fit_32_bits(client, seed):
    field, _ = _error(client.post("/studies", json={**GOOD, "protocol": {"stages": [2], "seed": seed}}))
    assert field == "protocol.seed"
    assert client.post("/studies", json={**GOOD, "protocol": {"stages": [2], "seed": 2**32 - 1}}).status_code == 201


@pytest.mark.parametrize("change,field", [
    ({"name": "a\x00b"}, "name"), ({"name": "line\nbreak"}, "name"),
    ({"search_spaces": {"sgd": {"lr": {"kind": "fixed", "value": "x\x00"}}}}, "search_spaces.sgd.lr.value"),
])
def test_control_characters_are_refused(client, change, field):
    assert _error(client.post("/studies", json={**GOOD, **change}))[0] == field
    assert client.get("/studies").json()["total"] == 0


def test_control_characters_in_path_and_query(client):
    sid = client.post("/studies", json=GOOD).json()["id"]
    r = client.get(f"/studies/{sid}/trials", params={"optimizer": "sg\x00d"})
    assert _error(r)[0] == "query.optimizer"
    assert _error(client.get("/studies/ab%00cd"))[0] == "path"


def test_bodies_over_one_mib_are_413(client):
    big = {**GOOD, "search_spaces": {"sgd": {"lr": {"kind": "fixed", "value": 0.1}}}, "name": "x" * 200,
           "padding": "y" * (1 << 20)}
    r = client.post("/studies", content=json.dumps(big), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "body" in r.json()["detail"]

    def chunks():  # no Content-Length: counted while read
        yield b'{"name": "'
        for _ in range(20):
            yield b"z" * 65536
        yield b'"}'

    r = client.post("/studies", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert client.get("/studies").json()["total"] == 0


def test_pages_are_capped_at_1000(client):
    assert _error(client.get("/studies", params={"limit": 1001}))[0] == "query.limit"
    sid = client.post("/studies", json=GOOD).json()["id"]
    assert _error(client.get(f"/studies/{sid}/trials", params={"limit": 5000}))[0] == "query.limit"
    assert client.get(f"/studies/{sid}/trials", params={"limit": 1000}).status_code == 200


def test_trial_lists_leave_out_history_unless_asked(client, db_url):
    sid = client.post("/studies", json=GOOD).json()["id"]
    store = StudyStore(db_url)
    store.ensure_trials(sid, "sgd", 1, [{"lr": 0.1}])
    tid = store.trials(sid)[0].id
    for epoch in (1, 2, 2):  # a repeated epoch replaces the earlier report
        store.record_result(tid, {"epoch": epoch, "test_error": 0.5 / epoch, "status": "running"}, "test_error")
    assert client.get(f"/studies/{sid}/trials").json()[0]["history"] is None
    rows = client.get(f"/studies/{sid}/trials", params={"include": "history"}).json()[0]["history"]
    assert [h["epoch"] for h in rows] == [1, 2]
    assert [h["epoch"] for h in client.get(f"/studies/{sid}/trials/{tid}").json()["history"]] == [1, 2]


def test_migration_moves_json_history_into_rows(tmp_path):
    from alembic import command
    from alembic.config import Config

    from service.store.study_store import MIGRATIONS, make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
        conn.execute(sa.text("INSERT INTO rf_studies (id, name, status, spec, stage_spaces, notes, created_at, "
                             "updated_at) VALUES ('s', 'old', 'completed', '{}', '{}', '[]', '2026-01-01', "
                             "'2026-01-01')"))
        history = [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.0}]
        conn.execute(sa.text("INSERT INTO rf_trials (study_id, optimizer, stage, \"index\", config, status, "
                             "metrics, history, runs) VALUES ('s', 'sgd', 1, 0, '{}', 'completed', '{}', :h, 1)"),
                     {"h": json.dumps(history)})
        conn.commit()
    engine.dispose()
    store = StudyStore(f"sqlite:///{tmp_path / 'old.db'}")  # migrates to the newest revision
    assert store.history(store.trials("s")[0].id) == history
