"""Suites under the algoperf ruleset: validation (422 naming `ruleset`), the studies it creates
(one stage of studies x trials_per_study Sobol draws, no seed runs), version stamps, and the
report's per-study times on constructed trials."""

import math

import pytest
from fastapi.testclient import TestClient

from service.api.schemas import SuiteSpec
from service.app import create_app
from service.results import algoperf
from service.results.algoperf_report import algoperf_suite_report
from service.settings import Settings
from tests.service.conftest import bearer, make_token

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
        assert c.get(f"/studies/{r.json()['id']}/export").json()["protocol_version"]["ruleset"] == "rootfree"
        ruled_study = suite["studies"][0]["id"]
        assert c.get(f"/studies/{ruled_study}/export").json()["protocol_version"] == stamp


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


def recompute_from_export(content: bytes) -> dict:
    """AlgoPerf's scoring from the exported zip alone (pandas + numpy, not service code): per
    study the trial reaching the target at the earliest evaluation, the median over studies, the
    4x rule, rho on 100 points in [1, 4], trapezoid / 3."""
    import io
    import json
    import zipfile

    import numpy as np
    import pandas as pd

    z = zipfile.ZipFile(io.BytesIO(content))
    suite = json.loads(z.read("suite.json"))
    frames = {}
    for name in z.namelist():
        if name.endswith("/eval_measurements.csv"):
            opt, study, wdir, trial = name.split("/")[:4]
            df = pd.read_csv(z.open(name))
            assert {"global_step", "score", "accumulated_submission_time", "accumulated_eval_time"} <= set(df.columns)
            meta = json.loads(z.read(name.replace("eval_measurements.csv", "meta_data.json")))
            assert meta["hyperparameters"] and meta["optimizer"] == opt
            frames.setdefault((wdir, opt), {}).setdefault(int(study.split("_")[1]), {})[int(trial.split("_")[1])] = df
    opts = suite["optimizers"]
    times, per_study, counts = {}, {}, {}
    for w in suite["workloads"]:
        col, target = f"validation/{w['metric']}", w["target"]
        times[w["dir"]] = {}
        for o in opts:
            studies = frames.get((w["dir"], o), {})
            counts[(w["dir"], o)] = [len(studies[j]) for j in sorted(studies)]
            vals = []
            for j in sorted(studies):
                best = None
                for i in sorted(studies[j]):
                    df = studies[j][i]
                    hit = (df[col] <= target) if w["mode"] == "min" else (df[col] >= target)
                    if hit.any():
                        k = int(np.argmax(hit.to_numpy()))
                        if best is None or k < best[0]:
                            best = (k, float(df["score"].iloc[k]))
                vals.append(best[1] if best else np.inf)
            per_study[(w["dir"], o)] = vals
            times[w["dir"]][o] = float(np.median(vals)) if vals else np.inf
    table = pd.DataFrame(times).T[opts]  # rows: workloads
    best = table.min(axis=1)
    table = table.mask(table.gt(4 * best, axis=0), np.inf)
    ratio = table.div(table.min(axis=1), axis=0).fillna(table)
    x = np.linspace(1, 4, 100)
    rho = np.array([[(ratio[o] <= t).sum() / len(ratio) for t in x] for o in opts])
    scores = {o: float(np.sum((rho[n, 1:] + rho[n, :-1]) * np.diff(x)) / 2 / 3) for n, o in enumerate(opts)}
    return {"scores": scores, "per_study": per_study, "counts": counts, "suite": suite}


@pytest.mark.slow
def test_a_ruleset_suite_runs_s_times_o_trials_and_its_export_gives_the_reports_scores(tmp_path):
    pytest.importorskip("ray")
    pytest.importorskip("pandas")
    from tests.support.serving import run_to_end

    body = {"name": "algoperf e2e", "optimizers": ["sgd", "adamw"], "baseline": "sgd",
            "ruleset": {"kind": "algoperf", "version": "0.6", "studies": 3, "trials_per_study": 2},
            "workloads": [{"name": "noisy_quadratic", "budget": {"epochs": 2, "steps": 4, "eval_every": 2},
                           "target": 5.5},
                          {"name": "noisy_quadratic", "budget": {"epochs": 2, "steps": 6, "eval_every": 3},
                           "target": 5.0, "max_runtime_s": 600}],
            "max_concurrent_trials": 2}
    spec, studies = SuiteSpec.model_validate(body).resolved()
    made = {}

    def create(store):
        made["suite"] = store.create_suite(spec, studies, None, owner="alice")[0]
        return [s.id for s in store.suite_studies(made["suite"].id)]

    store, ids = run_to_end(tmp_path, [], create=create)
    sid = made["suite"].id
    for study_id in ids:  # exactly S x O trials per optimizer and workload, each trained once
        trials = store.trial_dicts(study_id)
        for o in ("sgd", "adamw"):
            mine = [t for t in trials if t["optimizer"] == o]
            assert len(mine) == 6 and {t["stage"] for t in mine} == {1}
            assert all(t["status"] in ("completed", "diverged") for t in mine), \
                [(t["status"], t["error"]) for t in mine]
    app = create_app(Settings(database_url=store.url, start_runner=False))
    with TestClient(app, headers=bearer(make_token(store.url, "alice", admin=False))) as c:
        assert c.get(f"/suites/{sid}").json()["status"] == "completed"
        report = c.get(f"/suites/{sid}/report", params={"format": "json"}).json()
        r = c.get(f"/suites/{sid}/export", params={"format": "algoperf"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
        assert "Protocol: algoperf 0.6" in c.get(f"/suites/{sid}/report").text
    again = recompute_from_export(r.content)
    assert again["suite"]["protocol_version"] == report["protocol_version"]
    assert len(again["counts"]) == 4  # 2 workloads x 2 optimizers
    assert all(n == [2, 2, 2] for n in again["counts"].values())  # S studies of O trials each
    for k, w in enumerate(report["workloads"]):
        wdir = again["suite"]["workloads"][k]["dir"]
        for o in ("sgd", "adamw"):
            mine = [s["time_s"] if s["time_s"] is not None else math.inf for s in w["studies"][o]]
            assert mine == pytest.approx(again["per_study"][(wdir, o)])
    assert report["scores"] == pytest.approx(again["scores"])
    assert any(v is not None for w in report["workloads"] for v in w["capped"].values())  # someone reached one


def test_export_is_for_ruleset_suites_and_the_cli_writes_the_zip(tmp_path, monkeypatch, capsys):
    import io
    import json
    import zipfile

    from service.cli import commands as cli
    from service.client import Client

    url = f"sqlite:///{tmp_path / 's.db'}"
    app = create_app(Settings(database_url=url, start_runner=False))
    alice, bob = make_token(url, "alice", admin=False), make_token(url, "bob", admin=False)
    with TestClient(app, headers=bearer(alice)) as c:
        ruled = c.post("/suites", json=SUITE).json()
        assert ruled["links"]["export"] == f"/suites/{ruled['id']}/export?format=algoperf"
        plain = c.post("/suites", json={**{k: v for k, v in SUITE.items() if k != "ruleset"},
                                        "workloads": [NQM], "protocol": {"stages": [2]}}).json()
        r = c.get(f"/suites/{plain['id']}/export", params={"format": "algoperf"})
        assert r.status_code == 409 and r.json()["errors"][0]["field"] == "format"
        assert c.get(f"/suites/{ruled['id']}/export", params={"format": "csv"}).status_code == 422
        monkeypatch.setattr(cli, "connect", lambda args: Client(args.url, http=c))
        out = tmp_path / "suite.zip"
        assert cli.main(["suite", "export", ruled["id"], "--format", "algoperf", "-o", str(out),
                         "--url", "http://testserver", "--token", alice]) == 0
        z = zipfile.ZipFile(io.BytesIO(out.read_bytes()))
        meta = json.loads(z.read("suite.json"))
        assert meta["protocol_version"] == ruled["protocol_version"]
        assert [w["dir"] for w in meta["workloads"]] == ["noisy_quadratic_1", "noisy_quadratic_2"]
        assert [w["target"] for w in meta["workloads"]] == [50.0, 50.0]
        assert cli.main(["suite", "export", ruled["id"], "--url", "http://testserver", "--token", alice]) == 2
    with TestClient(app, headers=bearer(bob)) as c:  # another user's suite: not found
        assert c.get(f"/suites/{ruled['id']}/export", params={"format": "algoperf"}).status_code == 404


def test_the_cli_tables_of_an_algoperf_report_show_per_study_times_and_misses():
    from rich.console import Console

    from service.cli.render import suite_tables
    from service.results.suites import jsonable

    spec, studies = SuiteSpec.model_validate({**SUITE, "workloads": [NQM]}).resolved()
    sj = studies[0].model_dump(mode="json")
    data = algoperf_suite_report(spec, [{"id": "s", "name": "n", "status": "running", "spec": sj, "trials": []}])
    data = jsonable({**data, "status": "running", "id": "x"})
    console = Console(record=True, width=160)
    for t in suite_tables(data):
        console.print(t)
    text = console.export_text()
    assert "algoperf 0.6" in text and "study 3" in text and "after 4x rule" in text


def test_the_export_is_built_once_per_state_of_the_suites_studies(tmp_path):
    """`GET /suites/{id}/export` reads every trial's history and zips it: built once and served
    from the results cache until a study changes (as the report is), not on every request."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    app = create_app(Settings(database_url=url, start_runner=False))
    with TestClient(app, headers=bearer(make_token(url, "alice", admin=False))) as c:
        suite = c.post("/suites", json=SUITE).json()
        store = app.state.store
        real, reads = store.trial_dicts, []

        def counted(study_id, *args, **kwargs):
            reads.append(study_id)
            return real(study_id, *args, **kwargs)

        store.trial_dicts = counted
        try:
            first = c.get(f"/suites/{suite['id']}/export")
            second = c.get(f"/suites/{suite['id']}/export")
            assert first.status_code == second.status_code == 200
            assert first.content == second.content
            assert len(reads) == len(suite["studies"])  # the second came from the cache
            c.post(f"/studies/{suite['studies'][0]['id']}/cancel")  # a study changed: built again
            assert c.get(f"/suites/{suite['id']}/export").status_code == 200
            assert len(reads) == 2 * len(suite["studies"])
        finally:
            del store.trial_dicts


def test_the_cli_export_to_a_path_it_cannot_write_says_so_with_exit_2(tmp_path, monkeypatch, capsys):
    from service.cli import commands as cli
    from service.client import Client

    url = f"sqlite:///{tmp_path / 's.db'}"
    app = create_app(Settings(database_url=url, start_runner=False))
    alice = make_token(url, "alice", admin=False)
    with TestClient(app, headers=bearer(alice)) as c:
        ruled = c.post("/suites", json=SUITE).json()
        monkeypatch.setattr(cli, "connect", lambda args: Client(args.url, http=c))
        capsys.readouterr()
        out = tmp_path / "no such dir" / "suite.zip"
        assert cli.main(["suite", "export", ruled["id"], "-o", str(out), "--url", "http://testserver"]) == 2
        err = capsys.readouterr().err
        assert "cannot write" in err and "no such dir" in err and "Traceback" not in err
