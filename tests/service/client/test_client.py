"""The Python client against the real app (FastAPI's TestClient as its transport, runner off;
the runner's stage opening is done by its own StageMachine, see test_external_api)."""

import json

import pytest
import torch
from fastapi.testclient import TestClient

from service.app import create_app
from service.client import Client, Study, current_trial
from service.settings import Settings
from tests.service.api.test_external_trials import SPEC, open_stages
from tests.service.conftest import bearer, make_token


@pytest.fixture
def client(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'studies.db'}"
    app = create_app(Settings(database_url=db_url, start_runner=False))
    with TestClient(app, headers=bearer(make_token(db_url, "alice", admin=False))) as http:
        c = Client("http://testserver", "unused", http=http)
        c.db_url = db_url
        yield c


def external(client, **changes) -> Study:
    study = client.submit({**SPEC, **changes})
    assert study.status == "queued" and study.data["spec"]["execution"] == "external"
    open_stages(client.db_url, study.id)
    return study


def test_trials_loop_completes_fails_and_diverges(client):
    study = external(client, optimizers=["rfrmsprop"])
    trials = client.trials(study.id, poll_s=0.01)
    t = next(trials)
    assert (t.optimizer, t.stage, t.metric, t.mode) == ("rfrmsprop", 1, "loss", "min")
    with t:
        model = torch.nn.Linear(3, 1)
        opt = t.build_optimizer(model.parameters())
        assert type(opt).__name__ == "RFRMSProp" and opt.param_groups[0]["lr"] == t.hyperparameters["lr"]
        assert opt.param_groups[0]["batch_size"] == t.budget["batch_size"]  # B, as the service's workers pass it
        assert t.report(1, loss=0.5, train_loss=0.7) is True
    assert t.status == "completed"
    row = client.get(f"/studies/{study.id}/trials/{t.id}")
    assert row["status"] == "completed" and row["objective"] == 0.5
    assert set(row["history"][0]) >= {"epoch", "loss", "train_loss", "epoch_time_s", "wall_time_s"}

    t = next(trials)
    with pytest.raises(ValueError), t:
        raise ValueError("bad batch shape (3, 4)")
    row = client.get(f"/studies/{study.id}/trials/{t.id}")
    assert row["status"] == "failed" and row["error"] == "ValueError: bad batch shape (3, 4)"

    t = next(trials)
    with t:
        assert t.report(1, loss=float("nan")) is False and t.should_stop
    assert t.status == "diverged"
    assert client.get(f"/studies/{study.id}/trials/{t.id}")["status"] == "diverged"


def test_asha_stop_and_count_and_end(client):
    study = external(client, protocol={**SPEC["protocol"], "early_stopping": {"kind": "asha", "grace_epochs": 1}})
    answers = []
    for i, t in enumerate(client.trials(study.id, count=3, poll_s=0.01)):
        with t:
            answers.append(t.report(1, loss=float(i)))
            if t.should_stop:
                assert t.reason.startswith("ASHA")
                break
    assert answers == [True, False]  # loss 1 is not in the best third of {0, 1} at the rung
    states = sorted(r["status"] for r in study.trials(stage=1))
    assert states == ["completed", "pending", "pending", "stopped"]
    assert client.post(f"/studies/{study.id}/cancel") is not None
    assert list(client.trials(study.id, poll_s=0.01)) == []  # 410: the loop ends
    assert study.wait(interval=0.01).status == "cancelled"


def test_best_export_report_and_current_trial(client, monkeypatch):
    study = external(client)
    claim = client.request("POST", f"/studies/{study.id}/trials/claim").json()
    monkeypatch.setenv("ROOTFREE_TRIAL", json.dumps(claim))
    monkeypatch.setenv("ROOTFREE_STUDY_ID", study.id)
    t = current_trial(client)
    assert t.id == claim["trial_id"] and t.hyperparameters == claim["hyperparameters"]
    with t:
        t.report(1, loss=0.25)
    best = study.best()
    assert best["sgd"][0]["trial_id"] == t.id and best["sgd"][0]["objective"] == 0.25
    assert study.export()["best"]["sgd"][0]["trial_id"] == t.id
    assert "sgd" in study.export(format="yaml")
    assert "<html" in study.report_html().lower()


def test_readme_shows_the_example_script_verbatim():
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    script = (root / "examples" / "external_train.py").read_text()
    readme = (root / "README.md").read_text()
    assert f"```python\n{script}```" in readme
    assert len(script.splitlines()) <= 25
