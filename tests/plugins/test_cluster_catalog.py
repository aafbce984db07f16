"""The cluster decides what exists: POST /studies checks the workload and optimizers against
each live node's catalog as the runner recorded it, and GET /workloads and /optimizers show
what the cluster offers; before anything is recorded the controller's own catalog applies."""

import copy

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.domain import catalog
from service.settings import Settings
from tests.plugins.conftest import require_examples
from tests.service.conftest import bearer, make_token

SPEC = {"name": "s", "workload": "digits_mlp", "optimizers": ["ifadagrad", "adamw"],
        "protocol": {"stages": [2]}, "budget": {"epochs": 1}}


@pytest.fixture
def app(tmp_path):
    require_examples()
    db = f"sqlite:///{tmp_path / 's.db'}"
    app = create_app(Settings(database_url=db, start_runner=False))
    with TestClient(app, headers=bearer(make_token(db))) as c:
        yield app, c


def _node(node_id, alive=True, drop_workloads=(), drop_optimizers=(), errors=()):
    c = copy.deepcopy(catalog.local())
    for w in drop_workloads:
        del c["workloads"][w]
    for o in drop_optimizers:
        del c["optimizers"][o]
    c["errors"] = list(errors)
    return {"node_id": node_id, "alive": alive, "address": "10.0.0.1", "resources": {"CPU": 4.0},
            "catalog": c}


def _record(app, *nodes):
    app.state.store.record_cluster(nodes=list(nodes), total={"CPU": 8.0}, available={"CPU": 8.0})


def test_nothing_recorded_yet_falls_back_to_the_controllers_catalog(app):
    a, c = app
    _record(a, {**_node("n1"), "catalog": None})  # a node that has not answered yet
    assert c.post("/studies", json=SPEC).status_code == 201


def test_a_workload_no_live_node_offers_is_422_naming_what_the_cluster_offers(app):
    a, c = app
    _record(a, _node("n1", drop_workloads=["digits_mlp"]), _node("n2", alive=False))  # n2 has it, but is dead
    r = c.post("/studies", json=SPEC)
    assert r.status_code == 422
    err = r.json()["errors"][0]
    assert err["field"] == "workload"
    assert "no live node of the cluster offers workload 'digits_mlp'" in err["message"]
    assert "noisy_quadratic" in err["message"] and "sbm_gcn" in err["message"]
    assert "digits_mlp" not in {w["name"] for w in c.get("/workloads").json()}
    assert c.get("/studies").json()["total"] == 0  # nothing stored


def test_an_optimizer_missing_where_the_workload_is_is_422_naming_optimizers(app):
    a, c = app
    # n1 has the workload but not the optimizer; n2 the optimizer but not the workload
    _record(a, _node("n1", drop_optimizers=["ifadagrad"]), _node("n2", drop_workloads=["digits_mlp"]))
    r = c.post("/studies", json=SPEC)
    assert r.status_code == 422
    err = r.json()["errors"][0]
    assert err["field"] == "optimizers" and "'ifadagrad'" in err["message"]
    _record(a, _node("n1"))
    assert c.post("/studies", json=SPEC).status_code == 201


def test_catalog_lists_what_the_nodes_offer_and_their_plugin_errors(app):
    a, c = app
    bad = {"kind": "optimizer", "name": "broken", "source": "x:y", "error": "import failed: ImportError: z"}
    _record(a, _node("n1", drop_optimizers=["ifadagrad"], errors=[bad]), _node("n2", errors=[bad]))
    r = c.get("/optimizers", params={"include": "errors"})
    assert "ifadagrad" in {o["name"] for o in r.json()["items"]}  # n2 offers it
    assert r.json()["errors"] == [{**bad, "where": ["n1", "n2"]}]
    assert r.headers["X-Plugin-Errors"] == "1"


def test_a_plugin_only_the_nodes_have_validates_from_their_record(app):
    """The controller lacks the plugin; a node has it: the study validates and resolves
    (budget, metric, default space) from the node's record, and nothing of it is imported here."""
    a, c = app
    node = _node("n1")
    w = {**node["catalog"]["workloads"]["digits_mlp"], "name": "remote_mlp", "plugin": "remote_pkg:W",
         "default_budget": {"epochs": 3, "batch_size": 16}, "budget_limits": {"epochs": 5}}
    o = {**node["catalog"]["optimizers"]["ifadagrad"], "name": "remote_opt", "plugin": "remote_pkg:Opt",
         "root_free": None, "zero_init": None}
    node["catalog"]["workloads"]["remote_mlp"] = w
    node["catalog"]["optimizers"]["remote_opt"] = o
    spec = {"name": "r", "workload": "remote_mlp", "optimizers": ["remote_opt", "adamw"], "protocol": {"stages": [2]}}
    assert c.post("/studies", json=spec).status_code == 422  # nothing recorded offers it yet
    try:
        _record(a, node)
        r = c.post("/studies", json=spec)
        assert r.status_code == 201, r.text
        resolved = r.json()["spec"]
        assert resolved["budget"] == {"epochs": 3, "batch_size": 16} and resolved["metric"] == "test_error"
        assert resolved["search_spaces"]["remote_opt"] == o["default_space"]
        r = c.post("/studies", json={**spec, "budget": {"epochs": 6}})
        assert r.status_code == 422 and "allows at most 5" in r.text
        r = c.post("/studies", json={**spec, "protocol": {"stages": [2], "scheme": "original"}})
        assert r.status_code == 422 and "does not state root_free and zero_init" in r.text
        # the export names the plugin's import path from the record (the controller cannot import it)
        from service.results.summary import snippet

        assert snippet("remote_opt", {"lr": 0.1}) == "from remote_pkg import Opt\nOpt(model.parameters(), lr=0.1)"
        # the controller's own catalog is unchanged: what it lists comes from the nodes
        assert "remote_mlp" not in catalog.local()["workloads"]
        assert "remote_mlp" in {x["name"] for x in c.get("/workloads").json()}
    finally:
        catalog.load(reload=True)
