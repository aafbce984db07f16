"""The REST contract without Ray: validation, idempotency, 404s, catalog (runner off)."""

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.service.conftest import bearer, make_token

GOOD = {"name": "s", "workload": "fmnist_vit", "optimizers": ["sgd", "rfrmsprop"],
        "protocol": {"stages": [2, 2], "top_k": 2, "seed": 0},
        "budget": {"epochs": 1, "train_subset": 256}}


@pytest.fixture
def client(db_url):
    app = create_app(Settings(database_url=db_url, start_runner=False))
    with TestClient(app, headers=bearer(make_token(db_url))) as c:
        yield c


def test_create_get_list_delete(client):
    r = client.post("/studies", json=GOOD)
    assert r.status_code == 201 and r.json()["status"] == "queued"
    sid = r.json()["id"]
    body = client.get(f"/studies/{sid}").json()
    assert body["spec"]["metric"] == "test_error" and body["spec"]["budget"]["epochs"] == 1
    assert body["spec"]["search_spaces"]["sgd"]["lr"]["kind"] == "log_uniform"
    assert client.get("/studies", params={"status": "queued"}).json()["total"] == 1
    assert client.get("/studies", params={"status": "completed"}).json()["total"] == 0
    assert client.delete(f"/studies/{sid}").status_code == 409  # queued: cancel first
    assert client.post(f"/studies/{sid}/cancel").status_code == 202
    assert client.get(f"/studies/{sid}").json()["status"] == "cancelled"
    assert client.post(f"/studies/{sid}/cancel").status_code == 409
    assert client.delete(f"/studies/{sid}").status_code == 204
    assert client.get(f"/studies/{sid}").status_code == 404


def test_idempotent_post(client):
    h = {"Idempotency-Key": "abc-123"}
    a = client.post("/studies", json=GOOD, headers=h)
    b = client.post("/studies", json=GOOD, headers=h)
    assert a.status_code == 201 and b.status_code == 200
    assert a.json()["id"] == b.json()["id"]
    assert client.get("/studies").json()["total"] == 1


@pytest.mark.parametrize(
    "change,field",
    [
        ({"workload": "imagenet"}, "workload"),
        ({"optimizers": ["adam"]}, "optimizers"),
        ({"optimizers": []}, "optimizers"),
        ({"protocol": {"stages": [0, 10]}}, "protocol.stages"),
        ({"protocol": {"stages": [10001]}}, "protocol.stages"),
        ({"resources": {"cpu": 0}}, "resources.cpu"),
        ({"resources": {"gpu": -1}}, "resources.gpu"),
        ({"search_spaces": {"sgd": {"lr": {"kind": "log_uniform", "low": 1, "high": 0.1}}}},
         "search_spaces.sgd: parameter 'lr'"),
        ({"search_spaces": {"sgd": {"beta2": {"kind": "fixed", "value": 0.9}}}},
         "not a hyperparameter of optimizer 'sgd'"),
        ({"search_spaces": {"adamw": {}}}, "not one of the study's optimizers"),
        ({"budget": {"epochz": 1}}, "budget.epochz"),
        ({"metric": "perplexity"}, "metric"),
        ({"max_concurrent_trials": 0}, "max_concurrent_trials"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_invalid_specs_are_422_naming_the_field(client, change, field):
    r = client.post("/studies", json={**GOOD, **change})
    assert r.status_code == 422
    assert field in r.json()["detail"], r.json()
    assert client.get("/studies").json()["total"] == 0  # nothing stored


def test_unknown_ids_are_404(client):
    assert client.get("/studies/nope").status_code == 404
    assert client.get("/studies/nope/trials").status_code == 404
    sid = client.post("/studies", json=GOOD).json()["id"]
    r = client.get(f"/studies/{sid}/trials/999")
    assert r.status_code == 404 and "999" in r.json()["detail"]


def test_catalog_and_health(client):
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "database": "ok",
                             "runner": {"role": "off", "pid": None, "restarts": 0, "lease_expires_at": None},
                             "ray": {"nodes_alive": 0, "recorded_at": None}}
    names = {w["name"] for w in client.get("/workloads").json()}
    assert {"fmnist_cnn", "fmnist_vit", "ptb_lstm"} <= names
    opts = {o["name"]: o for o in client.get("/optimizers").json()}
    assert "ifshampoo" in opts and "riemannian_momentum" in opts["ifshampoo"]["default_space"]
    assert client.get("/openapi.json").status_code == 200
