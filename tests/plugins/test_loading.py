"""Discovery through entry points: a plugin that fails to import, breaks the contract or clashes
with a built-in name is refused with its error (log, GET /workloads and /optimizers) and nothing
else is affected. Real modules in a tmp dir on sys.path, real EntryPoint objects."""

import logging
import sys
import textwrap
from importlib.metadata import EntryPoint

import pytest
from fastapi.testclient import TestClient

import optimizers
import optimizers.plugins
from service.app import create_app
from service.domain import catalog
from service.settings import Settings
from tests.plugins.conftest import require_examples
from tests.service.conftest import bearer, make_token
from workers import workloads

MODULES = {
    "rf_test_broken": "raise RuntimeError('the plugin cannot find its data')\n",
    "rf_test_clash": textwrap.dedent("""
        from workers.plugin_api import Workload
        from rootfree_examples.digits import WORKLOAD
        import dataclasses
        CLASH = dataclasses.replace(WORKLOAD, name="noisy_quadratic")
        MISNAMED = dataclasses.replace(WORKLOAD, name="something_else")
        NOT_A_WORKLOAD = 42
    """),
    "rf_test_optimizers": textwrap.dedent("""
        import torch
        from workers.plugin_api import OptimizerPlugin
        def make(params, lr=0.1):
            return torch.optim.SGD(params, lr=lr)
        CLASH = OptimizerPlugin(name="adamw", factory=make, hyperparameters=("lr",),
                                default_space={"lr": {"kind": "log_uniform", "low": 1e-3, "high": 1.0}})
        BAD_SPACE = OptimizerPlugin(name="bad_space", factory=make, hyperparameters=("lr",),
                                    default_space={"lr": {"kind": "log_uniform", "low": 1.0, "high": 1e-3}})
        PLAIN = OptimizerPlugin(name="plain_sgd", factory=make, hyperparameters=("lr",),
                                default_space={"lr": {"kind": "log_uniform", "low": 1e-3, "high": 1.0}})
    """),
}
WORKLOAD_EPS = [("broken_workload", "rf_test_broken:W"), ("noisy_quadratic", "rf_test_clash:CLASH"),
                ("misnamed", "rf_test_clash:MISNAMED"), ("number", "rf_test_clash:NOT_A_WORKLOAD")]
OPTIMIZER_EPS = [("adamw", "rf_test_optimizers:CLASH"), ("bad_space", "rf_test_optimizers:BAD_SPACE"),
                 ("plain_sgd", "rf_test_optimizers:PLAIN"), ("broken_optimizer", "rf_test_broken:O")]


@pytest.fixture
def test_plugins(tmp_path, monkeypatch):
    """The installed plugins plus the test-only ones above."""
    require_examples()
    for name, source in MODULES.items():
        (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    installed = optimizers.plugins.entry_points
    extra = {"rootfree.workloads": WORKLOAD_EPS, "rootfree.optimizers": OPTIMIZER_EPS}

    def entry_points(group):
        return installed(group) + [EntryPoint(n, v, group) for n, v in extra[group]]

    monkeypatch.setattr(optimizers.plugins, "entry_points", entry_points)
    catalog.load(reload=True)
    yield
    monkeypatch.undo()
    for name in MODULES:
        sys.modules.pop(name, None)
    catalog.load(reload=True)


def _errors(kind):
    return {e["name"]: e["error"] for e in catalog.local()["errors"] if e["kind"] == kind}


def test_refused_plugins_are_reported_by_name_and_the_rest_loads(test_plugins, caplog):
    with caplog.at_level(logging.ERROR, logger="rootfree.plugins"):
        catalog.load(reload=True)
    w = _errors("workload")
    assert w["broken_workload"] == "import failed: RuntimeError: the plugin cannot find its data"
    assert "clashes with a built-in workload" in w["noisy_quadratic"]
    assert "calls itself 'something_else'" in w["misnamed"]
    assert "is a int, not a Workload" in w["number"]
    o = _errors("optimizer")
    assert "clashes with a built-in optimizer" in o["adamw"]
    assert o["bad_space"].startswith("default_space:") and "'lr'" in o["bad_space"]
    assert o["broken_optimizer"].startswith("import failed: RuntimeError")
    assert "the plugin cannot find its data" in caplog.text and "broken_workload" in caplog.text
    # the built-ins are untouched, the good plugins are there
    assert workloads.get("noisy_quadratic").plugin is None
    assert optimizers.registry.spec("adamw").plugin is None
    assert "digits_mlp" in workloads.names() and "plain_sgd" in catalog.optimizer_names()
    assert "bad_space" not in catalog.optimizer_names()


def test_the_service_runs_and_lists_the_errors(test_plugins, tmp_path):
    db = f"sqlite:///{tmp_path / 's.db'}"
    app = create_app(Settings(database_url=db, start_runner=False))
    with TestClient(app, headers=bearer(make_token(db))) as c:
        r = c.get("/workloads")
        assert r.status_code == 200 and isinstance(r.json(), list)  # the old shape
        assert r.headers["X-Plugin-Errors"] == "4"
        names = {w["name"]: w for w in r.json()}
        assert names["digits_mlp"]["plugin"] == "rootfree_examples.digits:WORKLOAD"
        assert names["noisy_quadratic"]["plugin"] is None and "broken_workload" not in names
        body = c.get("/workloads", params={"include": "errors"}).json()
        assert {e["name"] for e in body["errors"]} == {"broken_workload", "noisy_quadratic", "misnamed", "number"}
        assert all(e["where"] == ["controller"] for e in body["errors"])
        assert [w["name"] for w in body["items"]] == list(names)
        opts = c.get("/optimizers", params={"include": "errors"}).json()
        assert {e["name"] for e in opts["errors"]} == {"adamw", "bad_space", "broken_optimizer"}
        assert {"ifadagrad", "plain_sgd"} <= {o["name"] for o in opts["items"]}
        # a study with the plugin optimizer that states nothing about the original scheme
        spec = {"name": "s", "workload": "digits_mlp", "optimizers": ["plain_sgd", "adamw"],
                "protocol": {"stages": [2], "scheme": "original"}}
        r = c.post("/studies", json=spec)
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "optimizers"
        assert "does not state root_free and zero_init" in r.json()["detail"]
        spec["protocol"]["scheme"] = "modern"
        assert c.post("/studies", json=spec).status_code == 201


@pytest.mark.parametrize("name", ["digits_mlp", "sbm_gcn"])
def test_plugin_example_studies_are_valid(name):
    """examples/plugins/*.yaml: what `rootfree submit` would send, with seed runs."""
    from pathlib import Path

    import yaml

    from service.api.schemas import StudySpec

    require_examples()
    path = Path(__file__).resolve().parents[2] / "examples" / "plugins" / f"{name}.yaml"
    spec = StudySpec(**yaml.safe_load(path.read_text())).resolved()
    assert spec.workload == name and spec.protocol.seeds >= 3
