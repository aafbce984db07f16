"""ASHA early stopping and TPE inside the two-stage protocol: the policy alone, then real studies
on a real local Ray (noisy-quadratic workload), then a SIGKILLed controller with each method."""


import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.api.schemas import StudySpec
from service.app import create_app
from service.control.pruners.asha import Asha
from service.domain.spec import load_spec, spec_json
from service.settings import Settings
from tests.service.conftest import bearer, make_token
from tests.support.serving import run_to_end

ENDED = ("completed", "failed", "cancelled")


def test_asha_rungs_and_decisions():
    asha = Asha(grace_epochs=1, reduction_factor=3, max_epochs=9)
    assert asha.rungs == [1, 3] and Asha(2, 2, 16).rungs == [2, 4, 8]
    assert asha.keep_going(0.5, [], "min")  # the first at a rung goes on
    assert asha.keep_going(0.1, [0.5, 0.4], "min") and not asha.keep_going(0.9, [0.5, 0.4], "min")
    assert asha.keep_going(0.9, [0.5, 0.4], "max") and not asha.keep_going(float("nan"), [], "min")


@pytest.mark.parametrize("es,words", [
    ({"kind": "asha", "grace_epochs": 3}, "grace_epochs 3 leaves no rung"),
    ({"kind": "asha", "reduction_factor": 1}, "reduction_factor must be an integer >= 2"),
    ({"kind": "hyperband"}, "unknown kind"),
    ({"kind": "asha", "patience": 2}, "unknown field"),
])
def test_invalid_early_stopping_is_422(db_url, es, words):
    app = create_app(Settings(database_url=db_url, start_runner=False))
    with TestClient(app, headers=bearer(make_token(db_url))) as c:
        r = c.post("/studies", json={"name": "x", "workload": "noisy_quadratic", "optimizers": ["sgd"],
                                     "budget": {"epochs": 3}, "protocol": {"stages": [4], "early_stopping": es}})
        assert r.status_code == 422 and r.json()["errors"][0]["field"].startswith("protocol.early_stopping") \
            or "early_stopping" in r.json()["detail"], r.json()
        assert words in r.json()["detail"]


@pytest.mark.parametrize("es,field,words", [
    ({"kind": "foo"}, "early_stopping", "unknown kind 'foo'; known: asha"),
    ({}, "early_stopping", "unknown kind None; known: asha"),
    ({"kind": "asha", "grace_epochs": 1.0}, "early_stopping", "grace_epochs must be a positive integer, got 1.0"),
    ({"kind": "asha", "reduction_factor": 1}, "early_stopping", "reduction_factor must be an integer >= 2, got 1"),
    ({"kind": "asha", "grace_epochs": 3}, "early_stopping", "grace_epochs 3 leaves no rung below the budget's 3"),
    ({"kind": "asha", "zzz": 1}, "protocol.early_stopping", "unknown field(s) zzz"),
    ("x", "protocol.early_stopping", "Input should be a valid dictionary"),
])
def test_early_stopping_errors_name_the_same_field_as_before_the_typed_spec(db_url, es, field, words):
    """The 422's field for each early-stopping mistake is a client contract: it stayed the same when
    the spec became typed (service/domain/spec.py)."""
    app = create_app(Settings(database_url=db_url, start_runner=False))
    with TestClient(app, headers=bearer(make_token(db_url))) as c:
        r = c.post("/studies", json={"name": "x", "workload": "noisy_quadratic", "optimizers": ["sgd"],
                                     "budget": {"epochs": 3}, "protocol": {"stages": [4], "early_stopping": es}})
        assert r.status_code == 422, r.json()
        error = r.json()["errors"][0]
        assert error["field"] == field and words in error["message"], error


def test_the_resolved_spec_is_frozen_and_loads_what_older_versions_stored():
    spec = StudySpec(name="x", workload="noisy_quadratic", optimizers=["sgd"], budget={"epochs": 3},
                     protocol={"stages": [4], "early_stopping": {"kind": "asha"}}).resolved()
    with pytest.raises(ValidationError):
        spec.priority = 3  # frozen: every layer reads the same values
    assert (spec.metric, spec.protocol.early_stopping.grace_epochs, spec.protocol.early_stopping.reduction_factor) \
        == ("loss", 1, 3)  # noisy_quadratic reports its loss
    assert load_spec(spec_json(spec)) == spec  # what the store keeps loads back equal
    # a spec stored before protocol.method/seeds/scheme, execution and priority existed
    old = {"name": "o", "workload": "noisy_quadratic", "optimizers": ["sgd"], "metric": "loss", "mode": "min",
           "budget": {"epochs": 3}, "search_spaces": {"sgd": {}}, "protocol": {"stages": [4], "top_k": 2},
           "resources": {"cpu": 1, "gpu": 0}, "max_concurrent_trials": 2}
    loaded = load_spec(old)
    assert (loaded.priority, loaded.execution, loaded.protocol.method, loaded.protocol.seeds) == (0, "ray", "random", 0)


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    pytest.importorskip("ray")
    tmp = tmp_path_factory.mktemp("methods")
    # sgd with a tiny fixed lr hardly moves; adamw learns: mixed rungs would stop every sgd trial
    asha = StudySpec(name="asha", workload="noisy_quadratic", optimizers=["sgd", "adamw"],
                     search_spaces={"sgd": {"lr": {"kind": "log_uniform", "low": 1e-6, "high": 1e-5}}},
                     protocol={"stages": [9, 3], "top_k": 3, "seed": 1, "seeds": 2,
                               "early_stopping": {"kind": "asha", "grace_epochs": 1, "reduction_factor": 3}},
                     budget={"epochs": 9, "steps": 5}, max_concurrent_trials=2).resolved()
    tpe = StudySpec(name="tpe", workload="noisy_quadratic", optimizers=["adamw"],
                    protocol={"stages": [10, 6], "top_k": 3, "seed": 2, "method": "tpe"},
                    budget={"epochs": 2, "steps": 10}, max_concurrent_trials=2).resolved()
    store, (a, t) = run_to_end(tmp, [asha, tpe])
    yield store, a, t


@pytest.mark.slow
def test_asha_stops_within_each_group_and_never_seed_runs(ran):
    store, sid, _ = ran
    assert store.get_study(sid).status == "completed", store.get_study(sid).error
    for opt in ("sgd", "adamw"):
        stage1 = store.trials(sid, optimizer=opt, stage=1)
        stopped = [t for t in stage1 if t.status == "stopped"]
        completed = [t for t in stage1 if t.status == "completed"]
        assert stopped and completed, (opt, [t.status for t in stage1])  # each group has its own rungs
        for t in stopped:
            epochs = [h["epoch"] for h in store.history(t.id)]
            assert epochs[-1] in (1, 3) and epochs == list(range(1, epochs[-1] + 1)) and "ASHA" in t.error
            assert t.objective is not None  # a result, with its last objective
        assert all(len(store.history(t.id)) == 9 for t in completed)
        seeds = store.trials(sid, optimizer=opt, stage=3)
        assert len(seeds) == 2 and all(t.status == "completed" and len(store.history(t.id)) == 9 for t in seeds)
    total = sum(len(store.history(t.id)) for t in store.trials(sid) if t.stage <= 2)
    assert total < 12 * 2 * 9  # fewer epochs than a full random search
    # through the API and the export: stopped is a finished status; the best went the furthest
    app = create_app(Settings(database_url=store.url, start_runner=False))
    with TestClient(app, headers=bearer(make_token(store.url, "alice", admin=False))) as c:
        assert c.get(f"/studies/{sid}/trials", params={"status": "stopped"}).json()
        body = c.get(f"/studies/{sid}").json()
        assert all(o["stages"]["1"]["by_status"].get("stopped") for o in body["optimizers"])
        export = c.get(f"/studies/{sid}/export").json()
        for opt in ("sgd", "adamw"):
            best = store.trial(sid, export["best"][opt][0]["trial_id"])
            assert best.epochs == 9


@pytest.mark.slow
def test_tpe_samples_inside_the_narrowed_space(ran):
    store, _, sid = ran
    study = store.get_study(sid)
    assert study.status == "completed", study.error
    assert any("TPESampler" in n for n in study.notes)
    s2 = study.stage_spaces["adamw"]["2"]
    stage2 = store.trials(sid, optimizer="adamw", stage=2)
    assert len(stage2) == 6
    for t in stage2:
        for name, d in s2.items():
            if d["kind"] not in ("fixed", "choice"):
                assert d["low"] <= t.config[name] <= d["high"], (name, t.config[name], d)
    from search_spaces import SearchSpace, sample

    random_configs = sample(SearchSpace.from_dict(study.stage_spaces["adamw"]["1"]), 10, 2, stage=1)
    assert [t.config for t in store.trials(sid, optimizer="adamw", stage=1)] != random_configs


# A controller killed mid-study and restarted resumes ASHA and TPE studies: checked with the other
# studies of tests/service/end_to_end/test_studies_on_ray.py, which kill and restart the same `serve`.
