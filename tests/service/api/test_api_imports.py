"""The API process carries neither torch nor Ray (issue 19: they were most of its 555 MB of RSS):
the built-in workloads and optimizers are described without importing what trains them, and the
study runner's module (Ray, Tune) is imported only in the runner's own process.

A fresh interpreter, since this test process has imported both long ago. The installed plugins
are left out there: a plugin's module is imported to describe it (the example plugins import
torch), which is the plugins' cost, not the service's."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = """
import json, sys, tempfile

import optimizers.plugins
import optimizers.registry

optimizers.plugins.entry_points = lambda group: []  # no installed plugins: the built-ins alone

from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.service.conftest import bearer, make_token

db = f"sqlite:///{tempfile.mkdtemp()}/s.db"
app = create_app(Settings(database_url=db, start_runner=False))
spec = {"name": "s", "workload": "fmnist_vit", "optimizers": ["sgd", "rfrmsprop", "ifshampoo"],
        "protocol": {"stages": [2, 2], "top_k": 2, "seed": 0}, "budget": {"epochs": 1, "train_subset": 256}}
with TestClient(app, headers=bearer(make_token(db))) as c:
    out = {"workloads": c.get("/workloads").json(), "optimizers": c.get("/optimizers").json(),
           "invalid": c.post("/studies", json={**spec, "budget": {"epochs": 10**6}}).status_code,
           "valid": c.post("/studies", json=spec).status_code}
out["imported"] = sorted(m for m in ("torch", "ray") if m in sys.modules)
print(json.dumps(out))
"""


@pytest.mark.slow  # over ~3 s: `make test-fast` leaves it out
def test_the_api_imports_neither_torch_nor_ray():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    workloads = {w["name"]: w for w in out["workloads"]}
    assert {"fmnist_cnn", "noisy_quadratic", "sbm_gcn"} <= set(workloads)
    assert workloads["ptb_lstm"]["metric"] == "perplexity" and workloads["sbm_gcn"]["schedule"] == "step"
    optimizers = {o["name"]: o for o in out["optimizers"]}
    assert optimizers["ifshampoo"]["root_free"] and "riemannian_momentum" in optimizers["ifshampoo"]["hyperparameters"]
    assert out["invalid"] == 422 and out["valid"] == 201
    assert out["imported"] == []
