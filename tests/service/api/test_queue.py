"""Admission (quotas, feasibility, priority) and the queue views, with the runner off; the
cluster record is written as the runner writes it."""

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.cli.render import queue_table
from service.settings import Settings
from tests.service.conftest import bearer, make_token

SPEC = {"name": "q", "workload": "noisy_quadratic", "optimizers": ["sgd", "adamw"],
        "protocol": {"stages": [3, 2], "top_k": 2}, "budget": {"epochs": 1}}
NODES = [{"node_id": "a" * 56, "alive": True, "address": "10.0.0.1",
          "resources": {"CPU": 2.0, "memory": 8 * 2**30}},
         {"node_id": "b" * 56, "alive": False, "address": "10.0.0.2",
          "resources": {"CPU": 64.0, "GPU": 8.0}}]


@pytest.fixture
def app(db_url):
    return create_app(Settings(database_url=db_url, start_runner=False, max_trials_per_study=40,
                               max_active_studies=3))


@pytest.fixture
def client(app, db_url):
    with TestClient(app, headers=bearer(make_token(db_url))) as c:
        yield c


def _record(app):
    app.state.store.record_cluster(nodes=NODES, total={"CPU": 2.0, "memory": 8 * 2**30},
                                   available={"CPU": 1.0})


def test_nothing_recorded_yet_accepts_any_resources(client):
    r = client.post("/studies", json={**SPEC, "resources": {"cpu": 64, "gpu": 1}})
    assert r.status_code == 201, r.text
    body = client.get("/cluster").json()
    assert body["nodes"] == [] and body["updated_at"] is None
    assert [q["study_id"] for q in body["queue"]] == [r.json()["id"]]


@pytest.mark.parametrize("resources,field,words", [
    ({"cpu": 64}, "resources.cpu", "largest node has 2"),
    ({"cpu": 1, "gpu": 1}, "resources.gpu", "largest node has 0"),  # the GPU node is dead
    ({"cpu": 1, "gpu": 0.5}, "resources.gpu", "0.5 gpu"),
    ({"cpu": 1, "memory_mb": 16384}, "resources.memory_mb", "largest node has 8192"),
])
def test_infeasible_resources_are_422_naming_the_resource(app, client, resources, field, words):
    _record(app)
    r = client.post("/studies", json={**SPEC, "resources": resources})
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == field and words in r.json()["detail"]
    assert client.get("/studies").json()["total"] == 0
    assert client.post("/studies", json={**SPEC, "resources": {"cpu": 2}}).status_code == 201


def test_quotas(client):
    r = client.post("/studies", json={**SPEC, "protocol": {"stages": [20, 1], "top_k": 2}})  # 42 > 40
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "trials"
    assert "42 trials" in r.json()["detail"] and "40" in r.json()["detail"]
    for _ in range(3):
        assert client.post("/studies", json=SPEC).status_code == 201
    r = client.post("/studies", json=SPEC)
    assert r.status_code == 429 and "max_active_studies" in r.json()["detail"] and "3" in r.json()["detail"]
    sid = client.get("/studies").json()["items"][0]["id"]
    client.post(f"/studies/{sid}/cancel")
    assert client.post("/studies", json=SPEC).status_code == 201  # cancelled ones do not count


@pytest.mark.parametrize("priority", [-1, 101, 2.5, "high"])
def test_priority_out_of_range(client, priority):
    r = client.post("/studies", json={**SPEC, "priority": priority})
    assert r.status_code == 422 and "priority" in r.json()["detail"]


def test_cluster_and_queue_in_serving_order(app, client):
    _record(app)
    low = client.post("/studies", json={**SPEC, "name": "low"}).json()
    high = client.post("/studies", json={**SPEC, "name": "high", "priority": 50}).json()
    assert high["spec"]["priority"] == 50 and low["spec"]["priority"] == 0
    body = client.get("/cluster").json()
    assert body["nodes"][0]["resources"]["CPU"] == 2.0 and body["nodes"][1]["alive"] is False
    assert body["resources"] == {"total": {"CPU": 2.0, "memory": 8 * 2**30}, "available": {"CPU": 1.0}}
    assert [(q["name"], q["position"], q["priority"], q["running"], q["pending"]) for q in body["queue"]] \
        == [("high", 1, 50, 0, 10), ("low", 2, 0, 0, 10)]
    assert client.get(f"/studies/{low['id']}").json()["queue"] == \
        {"position": 2, "running": 0, "pending": 10, "priority": 0}
    client.post(f"/studies/{high['id']}/cancel")
    assert client.get(f"/studies/{high['id']}").json()["queue"] is None
    assert client.get(f"/studies/{low['id']}").json()["queue"]["position"] == 1
    text = queue_table(client.get("/cluster").json())
    assert "low" in text and "high" not in text and "CPU=2" in text and "no" in text


def test_noisy_quadratic_is_listed(client):
    w = {x["name"]: x for x in client.get("/workloads").json()}["noisy_quadratic"]
    assert w["metric"] == "loss" and w["mode"] == "min" and "pace_ms" in w["default_budget"]
