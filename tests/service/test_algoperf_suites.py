"""Suites under the algoperf ruleset: validation (422 naming `ruleset`), the studies it creates
(one stage of studies x trials_per_study Sobol draws, no seed runs), version stamps, and the
report's per-study times on constructed trials."""

import math

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.results import algoperf
from service.results.algoperf_report import algoperf_suite_report
from service.schemas import SuiteSpec
from service.settings import Settings

from .conftest import bearer, make_token

NQM = {"name": "noisy_quadratic", "budget": {"epochs": 2, "steps": 5}, "target": 50.0}
SUITE = {"name": "algoperf pair", "optimizers": ["sgd", "adamw"], "baseline": "sgd",
         "ruleset": {"kind": "algoperf", "version": "0.6", "studies": 3, "trials_per_study": 2},
         "workloads": [NQM, {**NQM, "budget": {"epochs": 3, "steps": 4, "eval_every": 2}, "max_runtime_s": 60}]}


@pytest.mark.parametrize("change", [
    {"protocol": {"method": "tpe"}},
    {"protocol": {"early_stopping": {"kind": "asha"}}},
    {"protocol": {"stages": [4]}},
    {"protocol": {"seeds": 2}},
    {"protocol": {"method": "random"}},
    {"workloads": [{"name": "noisy_quadratic"}]},  # no target
])
def test_what_the_ruleset_forbids_is_refused_naming_ruleset(tmp_path, change):
    url = f"sqlite:///{tmp_path / 's.db'}"
    app = create_app(Settings(database_url=url, start_runner=False))
    with TestClient(app, headers=bearer(make_token(url, "alice", admin=False))) as c:
        r = c.post("/suites", json={**SUITE, **change})
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["field"] == "ruleset", r.json()
        assert c.get("/studies").json()["total"] == 0


def test_bad_ruleset_fields_are_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    app = create_app(Settings(database_url=url, start_runner=False))
    with TestClient(app, headers=bearer(make_token(url, "alice", admin=False))) as c:
        for bad in ({"kind": "mlperf"}, {"kind": "algoperf", "version": "0.4"}, {"kind": "algoperf", "studies": 0},
                    {"kind": "algoperf", "extra": 1}):
            r = c.post("/suites", json={**SUITE, "ruleset": bad})
            assert r.status_code == 422 and r.json()["errors"][0]["field"].startswith("ruleset"), r.text


def test_versions_set_studies_and_trials_and_explicit_numbers_override():
    def resolved(r):
        return SuiteSpec.model_validate({**SUITE, "ruleset": r}).resolved()

    spec, studies = resolved({"kind": "algoperf", "version": "0.5"})
    assert (spec["ruleset"]["studies"], spec["ruleset"]["trials_per_study"]) == (5, 5)
    assert studies[0].protocol.stages == [25]
    spec, studies = resolved({"kind": "algoperf"})  # 0.6 by default
    assert (spec["ruleset"]["studies"], spec["ruleset"]["trials_per_study"]) == (3, 5)
    spec, studies = resolved({"kind": "algoperf", "version": "0.5", "trials_per_study": 2})
    assert studies[0].protocol.stages == [10] and spec["ruleset"]["stop_late"] is True


def test_a_ruleset_suite_creates_one_stage_of_sobol_draws_and_carries_its_version(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    app = create_app(Settings(database_url=url, start_runner=False))
    with TestClient(app, headers=bearer(make_token(url, "alice", admin=False))) as c:
        r = c.post("/suites", json=SUITE)
        assert r.status_code == 201, r.text
        suite = r.json()
        stamp = suite["protocol_version"]
        assert stamp["ruleset"] == "algoperf" and stamp["version"] == "0.6" and stamp["rootfree"]
        assert suite["spec"]["protocol_version"] == stamp
        for s in suite["studies"]:
            spec = c.get(f"/studies/{s['id']}").json()["spec"]
            p = spec["protocol"]
            assert p["stages"] == [6] and p["method"] == "sobol" and p["seeds"] == 0
            assert p["early_stopping"] is None and spec["protocol_version"] == stamp
            assert spec["ruleset"]["studies"] == 3
        assert c.get(f"/studies/{suite['studies'][1]['id']}").json()["spec"]["budget"]["max_runtime_s"] == 60
        report = c.get(f"/suites/{suite['id']}/report", params={"format": "json"}).json()
        assert report["protocol_version"] == stamp and report["scores"] == {"sgd": 0.0, "adamw": 0.0}
        page = c.get(f"/suites/{suite['id']}/report").text
        assert "Protocol: algoperf 0.6" in page
        # an ordinary study carries rootfree's own stamp
        r = c.post("/studies", json={"name": "plain", "workload": "noisy_quadratic", "optimizers": ["sgd"],
                                     "protocol": {"stages": [2]}})
        assert r.json()["spec"]["protocol_version"]["ruleset"] == "rootfree"


def _trial(tid, opt, index, times_losses, status="completed"):
    evals = [{"global_step": 2 * (k + 1), "train_time_s": t, "eval_time_s": 0.01, "loss": v}
             for k, (t, v) in enumerate(times_losses)]
    return {"id": tid, "optimizer": opt, "stage": 1, "index": index, "status": status, "objective": evals[-1]["loss"],
            "history": [{"epoch": 1, "loss": evals[-1]["loss"], "wall_time_s": 1.0, "evals": evals}]}


def test_the_report_takes_each_studys_time_and_the_median_over_studies():
    spec, studies = SuiteSpec.model_validate({**SUITE, "workloads": [NQM]}).resolved()
    sj = studies[0].model_dump(mode="json")
    split = {o: algoperf.study_split(6, 3, sj["protocol"]["seed"], o) for o in ("sgd", "adamw")}
    trials, tid = [], 0
    # sgd: study j's trials reach the target (50) at 10 (j + 1) s; adamw: only study 0 reaches it
    for o in ("sgd", "adamw"):
        for index in range(6):
            j = split[o][index]
            tid += 1
            reach = o == "sgd" or j == 0
            trials.append(_trial(tid, o, index, [(5.0 * (j + 1), 99.0), (10.0 * (j + 1), 40.0 if reach else 60.0)]))
    data = algoperf_suite_report(spec, [{"id": "s", "name": "n", "status": "completed", "spec": sj,
                                         "trials": trials}])
    w = data["workloads"][0]
    assert [s["time_s"] for s in w["studies"]["sgd"]] == [10.0, 20.0, 30.0]
    assert [s["trials"] for s in w["studies"]["sgd"]] == [2, 2, 2]
    assert w["time_to_target"]["sgd"]["time_s"] == 20.0
    assert [s["time_s"] for s in w["studies"]["adamw"]] == [10.0, math.inf, math.inf]
    assert w["time_to_target"]["adamw"]["time_s"] == math.inf  # the median is a miss
    assert data["scores"]["sgd"] == pytest.approx(1.0) and data["scores"]["adamw"] == 0.0
    assert data["protocol_version"]["ruleset"] == "algoperf"
