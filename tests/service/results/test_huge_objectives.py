"""A finite but huge objective (1.5e308: an external client may report one) must not overflow the
sums that summarise a study: every page that lists or summarises it answered 500 before."""

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from service.store.study_store import StudyStore
from tests.service.conftest import bearer, make_token

SPEC = {"name": "huge", "workload": "noisy_quadratic", "optimizers": ["sgd", "adamw"], "metric": "loss",
        "mode": "min", "protocol": {"stages": [2], "seeds": 2}, "budget": {"epochs": 1}}


@pytest.mark.parametrize("value", [1.5e308, -1.5e308])
def test_huge_objectives_never_make_a_page_fail(tmp_path, value):
    url = f"sqlite:///{tmp_path / 's.db'}"
    token = make_token(url, "alice", admin=True)
    app = create_app(Settings(database_url=url, start_runner=False))
    with TestClient(app, headers=bearer(token)) as c:
        r = c.post("/studies", json=SPEC)
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        store = StudyStore(url)
        for opt in SPEC["optimizers"]:
            store.ensure_trials(sid, opt, 1, [{"lr": 0.1}, {"lr": 0.01}])
            store.ensure_trials(sid, opt, 2, [{"lr": 0.1}] * 2, seeds=[1, 2])
        for t in store.trials(sid):
            store.record_result(t.id, {"epoch": 1, "loss": value, "status": "completed"}, "loss")
        store.engine.dispose()
        for path in ("/studies", f"/studies/{sid}", f"/studies/{sid}/best", f"/studies/{sid}/export",
                     f"/studies/{sid}/analysis", f"/studies/{sid}/report", f"/report?study_id={sid}"):
            r = c.get(path)
            assert r.status_code == 200, (path, r.text[:300])
        opts = {o["optimizer"]: o for o in c.get(f"/studies/{sid}").json()["optimizers"]}
        assert opts["sgd"]["top_k_mean"] is None  # not a number one can average, not a 500
        analysis = c.get(f"/studies/{sid}/analysis").json()
        assert analysis["optimizers"]["sgd"]["seed_runs"]["mean"] is None
