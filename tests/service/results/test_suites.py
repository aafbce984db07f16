"""Suites: one submission over several workloads (POST /suites), their status, and the report's
AlgoPerf-style scoring (time to target, performance profile, score, speed-up, tuning cost)."""

import json
import math

import httpx
import pytest
from fastapi.testclient import TestClient

from service.api.schemas import SuiteSpec
from service.app import create_app
from service.results import suites
from service.settings import Settings
from tests.service.conftest import bearer, make_token
from tests.support.serving import run_to_end


def hist(*values, dt=1.0):
    return [{"epoch": i + 1, "loss": v, "wall_time_s": dt * (i + 1)} for i, v in enumerate(values)]


def test_a_missed_target_counts_as_infinite():
    assert suites.run_time_to_target(hist(3.0, 2.0, 1.5), "loss", "min", 1.0) == (math.inf, math.inf)
    assert suites.run_time_to_target(hist(3.0, 2.0, 0.9), "loss", "min", 1.0) == (3.0, 3.0)
    assert suites.run_time_to_target(hist(0.5, 0.7), "acc", "max", 0.6) == (math.inf, math.inf)  # other metric
    spec = {"metric": "loss", "mode": "min", "protocol": {"stages": [2]}}

    def seed_run(history, status="completed"):
        return {"optimizer": "sgd", "stage": 2, "index": 0, "status": status, "objective": 1.0, "history": history}

    # two of three seed runs miss: the median is a miss
    runs = [seed_run(hist(0.5)), seed_run(hist(2.0, 2.0)), seed_run([], status="diverged")]
    t = suites.optimizer_time_to_target(spec, runs, "sgd", 1.0)
    assert t["time_s"] == math.inf and t["epochs"] == math.inf and not t["reached"] and t["runs"] == 3
    runs = [seed_run(hist(0.5)), seed_run(hist(2.0, 0.9, dt=2.0)), seed_run(hist(2.0, 2.0))]
    t = suites.optimizer_time_to_target(spec, runs, "sgd", 1.0)
    assert t["time_s"] == 4.0 and t["epochs"] == 2.0 and t["reached"]  # the median of 1, 4, inf
    # a target at the median of an even number of runs is reached by half of them: the lower median
    runs = [seed_run(hist(0.5)), seed_run(hist(2.0, 0.9)), seed_run(hist(2.0)), seed_run(hist(3.0))]
    assert suites.optimizer_time_to_target(spec, runs, "sgd", 1.0)["time_s"] == 2.0
    # a miss everywhere scores 0 and never within any tau; JSON carries it as null
    prof = suites.profile_and_scores({"w1": {"a": 5.0, "b": math.inf}}, ["a", "b"], taus=[1, 4, 100])
    assert prof["ratios"]["w1"]["b"] == math.inf and prof["scores"]["b"] == 0.0
    assert prof["profile"]["b"] == [[1, 0.0], [4, 0.0], [100, 0.0]]
    assert suites.jsonable({"x": [math.inf, 1.0]}) == {"x": [None, 1.0]}


def test_profile_score_and_speedup_against_a_hand_computation():
    times = {"w1": {"a": 10.0, "b": 20.0, "c": math.inf}, "w2": {"a": 30.0, "b": 15.0, "c": math.inf},
             "w3": {"a": math.inf, "b": math.inf, "c": math.inf}}  # nobody solved w3: infinite for all
    prof = suites.profile_and_scores(times, ["a", "b", "c"], taus=[1, 2, 4])
    assert prof["ratios"]["w1"] == {"a": 1.0, "b": 2.0, "c": math.inf}
    # integral over tau in [1, 4] of the profile / 3 = sum_w max(0, 4 - r_w) / (3 W): a: (3 + 2 + 0) / 9
    assert prof["scores"]["a"] == pytest.approx(5 / 9) and prof["scores"]["b"] == pytest.approx(5 / 9)
    assert prof["scores"]["c"] == 0.0
    assert prof["profile"]["a"] == [[1, 1 / 3], [2, 2 / 3], [4, 2 / 3]]
    # the profile's integral on a fine grid agrees with the exact score
    grid = [1 + 3 * i / 30000 for i in range(30001)]
    fine = suites.profile_and_scores(times, ["a", "b", "c"], taus=grid)["profile"]["a"]
    assert sum(s for _, s in fine[:-1]) * 3 / 30000 / 3 == pytest.approx(5 / 9, abs=1e-3)
    sp = suites.speedups(times, ["a", "b", "c"], "a")
    assert sp["b"] == {"geomean": pytest.approx(1.0), "workloads": 2}  # sqrt(10/20 * 30/15)
    assert sp["c"] == {"geomean": None, "workloads": 0}


def test_suite_status_follows_its_studies():
    assert suites.suite_status(["queued", "queued"]) == "queued"
    assert suites.suite_status(["completed", "queued"]) == "running"
    assert suites.suite_status(["failed", "running"]) == "running"
    assert suites.suite_status(["completed", "failed", "cancelled"]) == "failed"
    assert suites.suite_status(["completed", "cancelled"]) == "cancelled"
    assert suites.suite_status(["completed", "completed"]) == "completed"
    assert suites.suite_status([]) == "cancelled"  # every study deleted


SUITE = {"name": "nqm pair", "optimizers": ["sgd", "rfrmsprop"], "baseline": "sgd",
         "protocol": {"stages": [3], "top_k": 2, "seed": 2, "seeds": 4},
         "workloads": [{"name": "noisy_quadratic", "budget": {"epochs": 3, "pace_ms": 5}},
                       {"name": "noisy_quadratic", "budget": {"epochs": 4, "steps": 10, "pace_ms": 5},
                        "target": 1e6}],
         "max_concurrent_trials": 2}


@pytest.mark.parametrize(("change", "field"), [
    ({"baseline": "adamw"}, "baseline"),
    ({"baseline": None}, "baseline"),
    ({"protocol": {"stages": [3]}}, "protocol.seeds"),
    ({"optimizers": ["sgd", "nope"]}, "optimizers"),
    ({"workloads": [{"name": "nope"}]}, "workloads.0"),
    ({"workloads": [{"name": "noisy_quadratic", "budget": {"epochs": 10**9}, "target": 1.0}]}, "workloads.0"),
    ({"workloads": [{"name": "noisy_quadratic", "target": float("nan")}]}, "workloads.0.target"),
    ({"search_spaces": {"adamw": {}}}, "search_spaces.adamw"),
])
def test_bad_suites_are_refused_naming_the_field(tmp_path, change, field):
    url = f"sqlite:///{tmp_path / 's.db'}"
    app = create_app(Settings(database_url=url, start_runner=False))
    with TestClient(app, headers=bearer(make_token(url, "alice", admin=False))) as c:
        body = {**SUITE, **change}
        r = c.post("/suites", json=body) if "nan" not in repr(change) else c.post(
            "/suites", content=repr(body).replace("'", '"').replace("None", "null").replace("nan", "NaN"),
            headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["field"].startswith(field), r.json()
        assert c.get("/studies").json()["total"] == 0  # nothing stored


def test_a_suite_creates_one_ordinary_study_per_workload_entry(db_url):
    url = db_url  # SQLite and PostgreSQL
    app = create_app(Settings(database_url=url, start_runner=False))
    alice, bob = make_token(url, "alice", admin=False), make_token(url, "bob", admin=False)
    with TestClient(app, headers=bearer(alice)) as c:
        r = c.post("/suites", json=SUITE, headers={"Idempotency-Key": "k1"})
        assert r.status_code == 201, r.text
        suite = r.json()
        assert r.headers["location"] == f"/suites/{suite['id']}" and suite["status"] == "queued"
        assert [s["budget"]["epochs"] for s in suite["studies"]] == [3, 4]  # the same workload twice
        assert [s["target"] for s in suite["studies"]] == [None, 1e6]
        for s in suite["studies"]:
            study = c.get(f"/studies/{s['id']}").json()
            assert study["suite_id"] == suite["id"] and study["status"] == "queued"
            assert study["spec"]["optimizers"] == ["sgd", "rfrmsprop"] and study["spec"]["protocol"]["seeds"] == 4
            assert study["spec"]["search_spaces"] == suite["spec"]["search_spaces"]  # declared once
        again = c.post("/suites", json=SUITE, headers={"Idempotency-Key": "k1"})
        assert again.status_code == 200 and again.json()["id"] == suite["id"]
        assert c.get("/studies").json()["total"] == 2
        assert c.get(f"/suites/{suite['id']}").json()["studies"] == suite["studies"]
        c.post(f"/studies/{suite['studies'][0]['id']}/cancel")
        assert c.get(f"/suites/{suite['id']}").json()["status"] == "running"  # one ended, one queued
        assert c.delete(f"/studies/{suite['studies'][0]['id']}").status_code == 204
        after = c.get(f"/suites/{suite['id']}").json()
        assert [s["status"] for s in after["studies"]] == ["deleted", "queued"] and after["status"] == "queued"
        report = c.get(f"/suites/{suite['id']}/report", params={"format": "json"})
        assert report.status_code == 200 and report.json()["workloads"][0]["no_verdict"] == "the study was deleted"
        assert "No verdict is possible" in c.get(f"/suites/{suite['id']}/report").text
        assert c.get("/suites/nope").status_code == 404
    with TestClient(app, headers=bearer(bob)) as c:  # another user's suite does not exist for bob
        assert c.get(f"/suites/{suite['id']}").status_code == 404
        assert c.get(f"/suites/{suite['id']}/report").status_code == 404


def test_suite_keys_are_per_user_and_suites_count_against_the_quota(db_url, monkeypatch):
    """The idempotency key of a suite is per user, as for studies (never a joined "<owner>:<key>"
    string), and a suite counts all its studies against ROOTFREE_MAX_ACTIVE_STUDIES."""
    from service.store import study_store as store_mod

    url = db_url
    app = create_app(Settings(database_url=url, start_runner=False, max_active_studies=3))
    alice, bob = make_token(url, "alice", admin=False), make_token(url, "bob", admin=False)
    with TestClient(app, headers=bearer(bob)) as c:
        r = c.post("/suites", json=SUITE, headers={"Idempotency-Key": "k1"})
        assert r.status_code == 201, r.text
        bobs = r.json()["id"]
    # the attack of issue 19 on the old joined form "<owner>:<key>": alice's key "bob:k1" and user
    # "alice:bob"'s key "k1" were one string (names with ":" exist in stores from before the check)
    store = store_mod.StudyStore(url)
    first, created = store.create_suite({**SUITE, "name": "a"}, [], "bob:k1", owner="alice")
    second, created2 = store.create_suite({**SUITE, "name": "b"}, [], "k1", owner="alice:bob")
    assert created and created2 and first.id != second.id
    store.engine.dispose()
    with TestClient(app, headers=bearer(alice)) as c:
        r = c.post("/suites", json=SUITE, headers={"Idempotency-Key": "k1"})
        assert r.status_code == 201 and r.json()["id"] != bobs  # alice's own, new suite (2 studies)
        r = c.post("/suites", json=SUITE)  # 2 more would make 4 > 3
        assert r.status_code == 429, r.text
        assert r.json()["errors"][0]["field"] == "max_active_studies"
        assert c.get("/studies").json()["total"] == 2  # nothing more stored


@pytest.mark.slow
def test_a_suite_of_two_noisy_quadratic_variants_runs_and_reports(tmp_path):
    pytest.importorskip("ray")
    spec, studies = SuiteSpec.model_validate(SUITE).resolved()
    made = {}

    def create(store):
        made["suite"] = store.create_suite(spec, studies, None, owner="alice")[0]
        return [s.id for s in store.suite_studies(made["suite"].id)]

    store, ids = run_to_end(tmp_path, [], create=create)
    sid = made["suite"].id
    app = create_app(Settings(database_url=store.url, start_runner=False))
    with TestClient(app, headers=bearer(make_token(store.url, "alice", admin=False))) as c:
        assert c.get(f"/suites/{sid}").json()["status"] == "completed"
        r = c.get(f"/suites/{sid}/report", params={"format": "json"}).json()
        page = c.get(f"/suites/{sid}/report").text
    assert [w["study_id"] for w in r["workloads"]] == ids
    first, second = r["workloads"]
    assert first["target_source"] == "median seed result of sgd" and first["target"] is not None
    assert second["target"] == 1e6 and all(v["reached"] for v in second["time_to_target"].values())
    for w in r["workloads"]:
        assert [(c["a"], c["b"]) for c in w["comparisons"]] == [("sgd", "rfrmsprop")]
        assert set(w["comparisons"][0]) == {"a", "b", "diff", "lo", "hi", "p", "p_adjusted", "verdict", "seeds_needed",
                                            "level"}
        assert w["comparisons"][0]["p"] is not None
    assert set(r["scores"]) == {"sgd", "rfrmsprop"} and all(0 <= v <= 1 for v in r["scores"].values())
    assert max(r["scores"].values()) > 0  # someone is the fastest on the second workload at least
    assert [pt[0] for pt in r["profile"]["sgd"]][0] == 1 and r["profile"]["sgd"][-1][0] == 4
    assert r["speedups"]["sgd"]["geomean"] == pytest.approx(1.0)
    assert r["tuning_cost"]["sgd"]["trials"] == 2 * (3 + 4) and r["tuning_cost"]["sgd"]["cpu_s"] > 0
    for part in ("Performance profile", "Time to target", "verdict", "score"):
        assert part in page


def test_cli_suite_tables_show_scores_misses_and_verdicts():
    import io

    from rich.console import Console

    from service.cli import render

    spec = {"metric": "loss", "mode": "min", "protocol": {"stages": [1], "seeds": 4}, "optimizers": ["sgd", "adamw"],
            "budget": {"epochs": 2}, "resources": {"cpu": 1, "gpu": 0}}
    trials = [{"id": 10 * i + j, "optimizer": o, "stage": 2, "index": j, "status": "completed", "seed": j,
               "objective": v, "config": {}, "history": hist(v + 1, v)}
              for i, (o, base) in enumerate((("sgd", 1.0), ("adamw", 3.0))) for j, v in
              enumerate(base + 0.1 * k for k in range(4))]
    suite = {"name": "s", "optimizers": ["sgd", "adamw"], "baseline": "sgd",
             "workloads": [{"name": "noisy_quadratic", "target": 1.5}]}
    report = suites.jsonable(suites.suite_report(suite, [{"id": "x", "name": "x", "status": "completed",
                                                          "spec": spec, "trials": trials}]))
    report["status"] = "completed"
    assert report["workloads"][0]["time_to_target"]["adamw"] == {"time_s": None, "epochs": None, "reached": False,
                                                                 "runs": 4, "from": "median of 4 seed runs"}
    assert report["scores"] == {"sgd": 1.0, "adamw": 0.0}
    out = io.StringIO()
    for table in render.suite_tables(report):
        Console(file=out, width=200).print(table)
    text = out.getvalue()
    assert "missed" in text and "sgd better than adamw" in text and "1" in text


def test_the_paper_suites_ask_the_papers_questions():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[3] / "examples" / "suites"
    asked = set()
    for path in sorted(root.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            spec, studies = SuiteSpec.model_validate(doc).resolved()
            # verdicts can resolve: paired seed runs, six of them (the minimum the warnings ask for)
            assert spec["protocol"]["paired"] and spec["protocol"]["seeds"] >= 6, path
            if path.stem == "paper":
                for s in studies:
                    asked.add((s.workload, s.protocol.scheme, tuple(s.optimizers)))
    assert asked == {("fmnist_cnn", "modern", ("rmsprop", "rfrmsprop", "sgd")),  # Figure 1
                     ("fmnist_vit", "modern", ("adamw", "rfrmsprop")),  # Figure 1
                     ("fmnist_cnn", "original", ("rmsprop", "rfrmsprop")),  # Figure 2
                     ("fmnist_vit", "modern", ("shampoo", "ifshampoo", "adamw"))}  # Table 1


def test_suite_submit_sends_each_yaml_document(tmp_path, monkeypatch, capsys):
    from service.cli import commands as cli
    from service.client import Client

    sent = []

    def post(request):
        sent.append((str(request.url), json.loads(request.content), request.headers.get("Idempotency-Key")))
        return httpx.Response(201, json={"id": f"suite-{len(sent)}"})

    http = httpx.Client(base_url="http://svc", transport=httpx.MockTransport(post))
    monkeypatch.setattr(cli, "connect", lambda args: Client(args.url, http=http))
    path = tmp_path / "suites.yaml"
    path.write_text("name: a\nworkloads: [{name: noisy_quadratic, target: 1.0}]\noptimizers: [sgd]\n---\n"
                    "name: b\nworkloads: [{name: noisy_quadratic, target: 1.0}]\noptimizers: [sgd]\n")
    assert cli.main(["suite", "submit", str(path), "--url", "http://svc", "--token", "t",
                     "--idempotency-key", "k"]) == 0
    assert [(u, b["name"], k) for u, b, k in sent] == [("http://svc/suites", "a", "k-0"),
                                                       ("http://svc/suites", "b", "k-1")]
    assert capsys.readouterr().out.split() == ["suite-1", "suite-2"]


def test_a_suite_report_is_computed_once_per_state_of_its_studies(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    app = create_app(Settings(database_url=url, start_runner=False))
    with TestClient(app, headers=bearer(make_token(url, "alice", admin=False))) as c:
        sid = c.post("/suites", json=SUITE).json()["id"]
        assert c.get(f"/suites/{sid}/report").status_code == 200
        computed = app.state.results.computed
        assert c.get(f"/suites/{sid}/report").status_code == 200
        assert c.get(f"/suites/{sid}/report", params={"format": "json"}).status_code == 200
        assert app.state.results.computed == computed  # from the cache, not recomputed
        first = c.get(f"/suites/{sid}").json()["studies"][0]["id"]
        c.post(f"/studies/{first}/cancel")  # a study changed: the report follows
        assert "cancelled" in c.get(f"/suites/{sid}/report", params={"format": "json"}).text
        assert app.state.results.computed > computed
