"""Plugins on a real local Ray: the example workload and optimizer next to built-in optimizers,
through stages and narrowing, seed runs, TPE, ASHA and the original scheme, then analysis, report
and export; a plugin workload whose prepare raises fails its own trials with the plugin's message
and nothing else; each node's catalog (with a plugin that fails to import) is recorded.

The test-only plugins are a real installed distribution: a dist-info directory with entry points
in a tmp dir on PYTHONPATH, which the Ray workers inherit."""

import os
import sys
import textwrap

import pytest
from fastapi.testclient import TestClient

from service.api.schemas import StudySpec
from service.app import create_app
from service.domain import catalog
from service.settings import Settings
from tests.plugins.conftest import require_examples
from tests.service.conftest import bearer, make_token
from tests.support.serving import run_to_end

FAILING = textwrap.dedent("""
    import dataclasses
    from rootfree_examples.digits import WORKLOAD

    def prepare(budget, seed, device):
        raise RuntimeError("digits_down: the plugin's data server is down")

    DOWN = dataclasses.replace(WORKLOAD, name="digits_down", prepare=prepare)
""")
ENTRY_POINTS = textwrap.dedent("""
    [rootfree.workloads]
    digits_down = rf_e2e_plugin:DOWN
    never_imports = rf_e2e_missing_module:W
""")


def _install_test_distribution(root) -> None:
    (root / "rf_e2e_plugin.py").write_text(FAILING)
    info = root / "rf_e2e_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rf-e2e-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)


@pytest.mark.slow
def test_plugin_studies_end_to_end(tmp_path, monkeypatch):
    require_examples()
    plugins = tmp_path / "site"
    plugins.mkdir()
    _install_test_distribution(plugins)
    monkeypatch.syspath_prepend(str(plugins))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(plugins), os.environ.get("PYTHONPATH", "")]))
    catalog.load(reload=True)
    try:
        _run(tmp_path)
    finally:
        monkeypatch.undo()
        sys.modules.pop("rf_e2e_plugin", None)
        catalog.load(reload=True)


def _run(tmp_path):
    main = StudySpec(name="digits", workload="digits_mlp", optimizers=["ifadagrad", "adamw"],
                     protocol={"stages": [3, 2], "top_k": 2, "seed": 0, "seeds": 2},
                     budget={"epochs": 2, "width": 16}).resolved()
    original = StudySpec(name="original", workload="digits_mlp", optimizers=["ifadagrad", "sgd"],
                         protocol={"stages": [4], "seed": 1, "method": "tpe", "scheme": "original",
                                   "early_stopping": {"kind": "asha", "grace_epochs": 1, "reduction_factor": 3}},
                         budget={"epochs": 3, "width": 16}).resolved()
    down = StudySpec(name="down", workload="digits_down", optimizers=["adamw"],
                     protocol={"stages": [2], "seed": 0}, budget={"epochs": 1}).resolved()
    assert original.search_spaces["ifadagrad"]["batch_size"] == {"kind": "fixed", "value": 1}
    assert "init" not in original.search_spaces["ifadagrad"]  # P = S^-1 cannot start at S = 0
    store, (m, o, d) = run_to_end(tmp_path, [main, original, down])

    # the plugin workload + plugin optimizer + a built-in: exact counts per stage
    assert store.get_study(m).status == "completed", store.get_study(m).error
    for opt in ("ifadagrad", "adamw"):
        counts = [len(store.trials(m, optimizer=opt, stage=s)) for s in (1, 2, 3)]
        assert counts == [3, 2, 2], (opt, counts)
        trials = store.trials(m, optimizer=opt)
        assert all(t.status in ("completed", "diverged") for t in trials), [(t.status, t.error) for t in trials]
        assert sum(t.status == "completed" for t in trials) >= 4
    ifa = [t for t in store.trials(m, optimizer="ifadagrad") if t.status == "completed"]
    assert all(len(store.history(t.id)) == 2 for t in ifa)
    assert store.get_study(m).stage_spaces  # stage 2 was narrowed

    # TPE + ASHA + the original scheme with the plugin optimizer
    assert store.get_study(o).status == "completed", store.get_study(o).error
    for opt in ("ifadagrad", "sgd"):
        trials = store.trials(o, optimizer=opt)
        assert len(trials) == 4 and all(t.status in ("completed", "stopped", "diverged") for t in trials)
        assert all(set(t.config) == ({"lr", "batch_size"} if opt == "ifadagrad" else {"lr"}) for t in trials)

    # the plugin whose prepare raises: its trials fail with its message; the others are unaffected
    failed = store.trials(d)
    assert len(failed) == 2 and all(t.status == "failed" for t in failed), [t.status for t in failed]
    assert all("the plugin's data server is down" in (t.error or "") for t in failed)

    # the runner recorded the node's catalog, computed on the node: the plugins and the refused one
    nodes = [n for n in store.cluster()["nodes"] if n["alive"]]
    assert nodes and all(n["catalog"] for n in nodes)
    node_catalog = nodes[0]["catalog"]
    assert {"digits_mlp", "digits_down", "sbm_gcn"} <= set(node_catalog["workloads"])
    assert node_catalog["optimizers"]["ifadagrad"]["plugin"] == "rootfree_examples.ifadagrad:IFAdaGrad"
    assert [e["name"] for e in node_catalog["errors"]] == ["never_imports"]
    assert "ModuleNotFoundError" in node_catalog["errors"][0]["error"]

    app = create_app(Settings(database_url=store.url, start_runner=False))
    with TestClient(app, headers=bearer(make_token(store.url))) as c:
        r = c.get("/workloads", params={"include": "errors"}).json()
        assert {"digits_mlp", "digits_down"} <= {w["name"] for w in r["items"]}
        assert {"never_imports"} == {e["name"] for e in r["errors"]}
        assert nodes[0]["node_id"] in r["errors"][0]["where"]
        export = c.get(f"/studies/{m}/export").json()
        snippet = export["best"]["ifadagrad"][0]["snippet"]
        assert snippet.startswith("from rootfree_examples.ifadagrad import IFAdaGrad\nIFAdaGrad(model.parameters(), ")
        assert "batch_size=32" in snippet  # B, as the trial passed it
        assert export["best"]["adamw"][0]["snippet"].startswith('optimizers.build("adamw"')
        assert set(export["seed_runs"]) == {"ifadagrad", "adamw"}
        analysis = c.get(f"/studies/{m}/analysis")
        assert analysis.status_code == 200 and "ifadagrad" in str(analysis.json())
        report = c.get(f"/studies/{m}/report")
        assert report.status_code == 200 and "ifadagrad" in report.text and "digits_mlp" in report.text
