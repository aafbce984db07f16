"""Frozen target sets (POST /target-sets): AlgoPerf's recipe on constructed reruns, the set's
life (queued -> done with {"version", "targets"}), its immutability and its reuse by a suite."""

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.results.target_sets import best_value, workload_target
from service.settings import Settings
from service.store.study_store import StudyStore
from tests.service.conftest import bearer, make_token

BODY = {"name": "nqm targets", "workloads": [{"name": "noisy_quadratic", "budget": {"epochs": 2, "steps": 4}}],
        "optimizers": ["sgd", "adamw"], "trials": 3, "reruns": 3}


def run(values, epoch_values=None):
    evals = [{"global_step": k + 1, "train_time_s": k + 1.0, "eval_time_s": 0.0, "loss": v}
             for k, v in enumerate(epoch_values or [values])]
    return {"epoch": 1, "loss": evals[-1]["loss"], "evals": evals}


def test_the_target_is_the_best_baselines_median_over_reruns_of_each_reruns_best_value():
    assert best_value([run(None, [3.0, 1.0, 2.0])], "loss", "min") == 1.0  # best over the run, not the last
    assert best_value([run(None, [3.0, 1.0, 2.0])], "acc", "max") is None
    spec = {"metric": "loss", "mode": "min", "optimizers": ["a", "b"], "protocol": {"stages": [3]}}

    def t(opt, best, stage=2, status="completed"):
        return {"optimizer": opt, "stage": stage, "status": status, "history": [run(None, [9.0, best])]}

    trials = [t("a", 3.0), t("a", 1.0), t("a", 2.0), t("b", 0.5), t("b", 4.0), t("b", 5.0),
              t("b", 0.1, stage=1), t("a", 0.2, status="failed")]  # search trials and failures do not count
    d = workload_target(spec, trials)
    assert d["medians"] == {"a": 2.0, "b": 4.0} and d["optimizer"] == "a" and d["target"] == 2.0
    # max mode: the largest median wins (single evaluations: the best of a run is its value)
    flat = [{**x, "history": [run(None, [x["history"][0]["evals"][-1]["loss"]])]} for x in trials]
    assert workload_target({**spec, "mode": "max"}, flat)["target"] == 4.0
    assert workload_target(spec, [])["target"] is None


def finish(url, study_ids, values):
    """Stands in for the runner: each baseline's reruns (stage 2) end with these best values."""
    store = StudyStore(url)
    for sid in study_ids:
        for opt in ("sgd", "adamw"):
            store.ensure_trials(sid, opt, 1, [{}] * 3, seeds=[0] * 3)
            store.ensure_trials(sid, opt, 2, [{}] * 3, seeds=[1, 2, 3])
            for stage in (1, 2):
                for k, trial in enumerate(store.trials(sid, optimizer=opt, stage=stage)):
                    v = values[opt][k] + (10.0 if stage == 1 else 0.0)
                    store.record_result(trial.id, {**run(None, [20.0, v]), "status": "completed"}, "loss")
        store.set_status(sid, "completed")
    store.engine.dispose()


def test_a_target_set_freezes_its_targets_refuses_changes_and_is_reused_by_a_suite(db_url):
    url = db_url  # SQLite and PostgreSQL
    app = create_app(Settings(database_url=url, start_runner=False))
    alice, bob = make_token(url, "alice", admin=False), make_token(url, "bob", admin=False)
    with TestClient(app, headers=bearer(alice)) as c:
        for bad, field in (({"trials": 0}, "trials"), ({"optimizers": ["nope"]}, "optimizers"),
                           ({"workloads": [{"name": "noisy_quadratic", "target": 1.0}]}, "workloads")):
            r = c.post("/target-sets", json={**BODY, **bad})
            assert r.status_code == 422 and r.json()["errors"][0]["field"].startswith(field), r.text
        r = c.post("/target-sets", json=BODY)
        assert r.status_code == 201, r.text
        ts = r.json()
        assert ts["status"] == "queued" and ts["version"] is None and ts["targets"] is None
        study = c.get(f"/studies/{ts['studies'][0]['id']}").json()["spec"]
        assert study["protocol"]["stages"] == [3] and study["protocol"]["seeds"] == 3
        assert study["protocol"]["method"] == "sobol"
        suite = {"name": "ruled", "optimizers": ["sgd", "adamw"], "targets": ts["id"],
                 "ruleset": {"kind": "algoperf", "studies": 3, "trials_per_study": 1},
                 "workloads": [{"name": "noisy_quadratic", "budget": {"epochs": 2, "steps": 4}}]}
        r = c.post("/suites", json=suite)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "targets"  # not done yet
        finish(url, [s["id"] for s in ts["studies"]], {"sgd": [3.0, 1.0, 2.0], "adamw": [5.0, 6.0, 7.0]})
        done = c.get(f"/target-sets/{ts['id']}").json()
        assert done["status"] == "done" and done["version"] == ts["id"]
        assert done["targets"] == {"noisy_quadratic": 2.0}  # sgd's median best rerun; adamw's is 6
        for method in ("put", "patch"):
            r = c.request(method.upper(), f"/target-sets/{ts['id']}", json={"targets": {"noisy_quadratic": 9}})
            assert r.status_code == 405, r.text
        r = c.post("/suites", json={**suite, "workloads": [{**suite["workloads"][0], "target": 1.0}]})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "workloads[0].target"
        r = c.post("/suites", json=suite)
        assert r.status_code == 201, r.text
        used = r.json()
        assert used["studies"][0]["target"] == 2.0 and used["spec"]["targets"] == ts["id"]
        r = c.delete(f"/target-sets/{ts['id']}")
        assert r.status_code == 409 and used["id"] in r.json()["detail"]
        # frozen: deleting one of its studies changes nothing
        assert c.delete(f"/studies/{ts['studies'][0]['id']}").status_code == 204
        assert c.get(f"/target-sets/{ts['id']}").json()["targets"] == {"noisy_quadratic": 2.0}
        assert c.get(f"/suites/{ts['id']}").status_code == 404  # a target set is not a suite
        assert c.get(f"/target-sets/{used['id']}").status_code == 404  # nor a suite a target set
        other = c.post("/target-sets", json={**BODY, "name": "unused"}).json()
        r = c.delete(f"/target-sets/{other['id']}")
        assert r.status_code == 409 and r.json()["errors"][0]["field"] == "status"  # still queued
        for s in other["studies"]:
            c.post(f"/studies/{s['id']}/cancel")
        assert c.delete(f"/target-sets/{other['id']}").status_code == 204
        assert c.get(f"/target-sets/{other['id']}").status_code == 404
        assert all(c.get(f"/studies/{s['id']}").status_code == 404 for s in other["studies"])
    with TestClient(app, headers=bearer(bob)) as c:
        assert c.get(f"/target-sets/{ts['id']}").status_code == 404
        r = c.post("/suites", json=suite)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "targets"  # not bob's


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_changing_a_running_target_set_is_refused_too(tmp_path, method):
    url = f"sqlite:///{tmp_path / 's.db'}"
    app = create_app(Settings(database_url=url, start_runner=False))
    with TestClient(app, headers=bearer(make_token(url, "alice", admin=False))) as c:
        ts = c.post("/target-sets", json=BODY).json()
        assert c.request(method, f"/target-sets/{ts['id']}", json={}).status_code == 405


def test_a_target_set_that_did_not_complete_has_no_version_and_gives_no_targets(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    app = create_app(Settings(database_url=url, start_runner=False))
    with TestClient(app, headers=bearer(make_token(url, "alice", admin=False))) as c:
        ts = c.post("/target-sets", json=BODY).json()
        for s in ts["studies"]:
            c.post(f"/studies/{s['id']}/cancel")
        out = c.get(f"/target-sets/{ts['id']}").json()
        assert out["status"] == "cancelled" and out["version"] is None
        r = c.post("/suites", json={"name": "x", "optimizers": ["sgd"], "targets": ts["id"],
                                    "ruleset": {"kind": "algoperf", "studies": 1, "trials_per_study": 1},
                                    "workloads": [{"name": "noisy_quadratic"}]})
        assert r.status_code == 422 and "cancelled" in r.json()["errors"][0]["message"]
        r = c.post("/suites", json={"name": "x", "optimizers": ["sgd"], "targets": "nope",
                                    "workloads": [{"name": "noisy_quadratic"}]})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "targets"


def test_a_target_set_with_a_study_deleted_before_its_targets_froze_is_not_done(tmp_path):
    """A study deleted while the set still ran can never give its workload's target: the set ends
    without a version (as a cancelled one), not "done" with that workload's target missing."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    app = create_app(Settings(database_url=url, start_runner=False))
    two = {**BODY, "workloads": [BODY["workloads"][0], {"name": "noisy_quadratic", "budget": {"epochs": 3}}]}
    with TestClient(app, headers=bearer(make_token(url, "alice", admin=False))) as c:
        ts = c.post("/target-sets", json=two).json()
        first, second = (s["id"] for s in ts["studies"])
        assert c.post(f"/studies/{second}/cancel").status_code in (200, 202)
        assert c.delete(f"/studies/{second}").status_code == 204
        finish(url, [first], {"sgd": [3.0, 1.0, 2.0], "adamw": [5.0, 6.0, 7.0]})
        out = c.get(f"/target-sets/{ts['id']}").json()
        assert out["status"] != "done" and out["version"] is None, out
        assert [s["status"] for s in out["studies"]] == ["completed", "deleted"]


def test_an_idempotency_key_never_returns_a_suite_as_a_target_set_or_the_reverse(tmp_path):
    """Suites and target sets share the store's per-owner keys (a target set's carries the prefix
    "target-set:"): a suite sent with "target-set:<k>" after a target set sent with <k>, or the
    reverse, is a 409 naming the header, not the other kind's row (or a 500)."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    app = create_app(Settings(database_url=url, start_runner=False))
    suite = {"name": "s", "optimizers": ["sgd"], "baseline": "sgd", "protocol": {"stages": [2], "seeds": 2},
             "workloads": [{"name": "noisy_quadratic", "budget": {"epochs": 2, "steps": 3}}]}
    with TestClient(app, headers=bearer(make_token(url, "alice", admin=False)),
                    raise_server_exceptions=False) as c:
        assert c.post("/target-sets", json=BODY, headers={"Idempotency-Key": "a"}).status_code == 201
        r = c.post("/suites", json=suite, headers={"Idempotency-Key": "target-set:a"})
        assert r.status_code == 409 and r.json()["errors"][0]["field"] == "Idempotency-Key", r.text
        assert c.post("/suites", json=suite, headers={"Idempotency-Key": "target-set:b"}).status_code == 201
        r = c.post("/target-sets", json=BODY, headers={"Idempotency-Key": "b"})
        assert r.status_code == 409 and r.json()["errors"][0]["field"] == "Idempotency-Key", r.text
        # the same kind again is still the idempotent 200
        assert c.post("/target-sets", json=BODY, headers={"Idempotency-Key": "a"}).status_code == 200


def test_the_suites_using_a_target_set_are_found_in_sql_not_by_reading_every_suite(db_url):
    """`DELETE /target-sets/{id}` asks which suites take their targets from it: the database
    filters on the spec's `targets` (SQLite and PostgreSQL), rather than every suite's spec
    (every user's) being read into Python on each delete."""
    import sqlalchemy as sa

    from service.domain.spec import ResolvedSpec

    store = StudyStore(db_url)
    study = ResolvedSpec.model_validate({"name": "x", "workload": "noisy_quadratic", "optimizers": ["sgd"],
                                         "metric": "loss", "mode": "min", "budget": {"epochs": 1}})
    made = {}
    for name, spec in (("uses", {"targets": "T1"}), ("other", {"targets": "T2"}), ("plain", {}),
                       ("a set", {"targets": "T1", "kind": "target_set"})):
        suite, _ = store.create_suite({"name": name, **spec, "workloads": [{"name": "noisy_quadratic"}]},
                                      [study], None, owner="alice")
        made[name] = suite.id
    fetched = []

    @sa.event.listens_for(store.engine, "after_cursor_execute")
    def _rows(conn, cursor, statement, parameters, context, executemany):
        if "rf_suites" in statement:
            fetched.append(statement)

    assert store.suites_using_targets("T1") == [made["uses"]]
    assert store.suites_using_targets("nope") == []
    # the JSON path is a bound parameter: the statement filters on the spec column
    assert fetched and all("WHERE" in s and "spec" in s.split("WHERE", 1)[1] for s in fetched), fetched
    store.engine.dispose()


def test_a_target_sets_longest_idempotency_key_is_kept_on_every_database(db_url):
    """The header allows 200 characters, the column holds 200: the target set's "target-set:"
    prefix must not push the longest key past it (PostgreSQL: value too long, a 500)."""
    app = create_app(Settings(database_url=db_url, start_runner=False))
    with TestClient(app, headers=bearer(make_token(db_url, "alice", admin=False)),
                    raise_server_exceptions=False) as c:
        key = {"Idempotency-Key": "k" * 200}
        first = c.post("/target-sets", json=BODY, headers=key)
        assert first.status_code == 201, first.text
        again = c.post("/target-sets", json=BODY, headers=key)
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
        # another key sharing the first 189 characters is another set
        other = c.post("/target-sets", json=BODY, headers={"Idempotency-Key": "k" * 199 + "x"})
        assert other.status_code == 201 and other.json()["id"] != first.json()["id"]


def test_deleting_a_target_set_removes_its_studies_files_and_audits_each_deletion(tmp_path):
    """DELETE /target-sets/{id} deletes its studies as DELETE /studies/{id} does: their trial
    directories and logs under the storage path go too, and each deletion is in the audit trail
    with its owner (a claimant's late call then answers 410, not 404)."""
    from service.store.files import trial_dirname
    from service.store.study_log import log_path

    url = f"sqlite:///{tmp_path / 's.db'}"
    storage = tmp_path / "runs"
    app = create_app(Settings(database_url=url, start_runner=False, storage_path=str(storage)))
    admin = make_token(url, "root", admin=True)
    with TestClient(app, headers=bearer(make_token(url, "alice", admin=False))) as c:
        ts = c.post("/target-sets", json=BODY).json()
        sid = ts["studies"][0]["id"]
        trial_dir = storage / "rootfree-1" / trial_dirname(sid, "sgd", 1, 0)
        trial_dir.mkdir(parents=True)
        log = log_path(str(storage), sid)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("started\n")
        c.post(f"/studies/{sid}/cancel")
        assert c.delete(f"/target-sets/{ts['id']}").status_code == 204
        assert not trial_dir.exists() and not log.exists()
        entries = c.get("/audit", headers=bearer(admin)).json()["items"]
        deleted = [e for e in entries if e["action"] == "study.delete" and e["target"] == sid]
        assert len(deleted) == 1 and deleted[0]["actor"] == "alice"
        assert [e["target"] for e in entries if e["action"] == "target_set.delete"] == [ts["id"]]
        r = c.post(f"/studies/{sid}/trials/1/heartbeat", json={"claim_token": "t"})
        assert r.status_code == 410, r.text
