"""The live Optuna view end to end: a real `StudyRunner` on a real local Ray runs a small ASHA study
of the noisy-quadratic workload (paced, so it is watched while it runs); plain Optuna reads the
view during and after the run, and optuna-dashboard serves it to a headless Chromium."""

import math
import time
from datetime import UTC, timedelta

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy.exc import OperationalError

from service.api.schemas import StudySpec
from service.cli import main as cli_main
from service.settings import Settings
from service.store.study_store import StudyStore

pytestmark = pytest.mark.slow

SPEC = dict(name="live view", workload="noisy_quadratic", optimizers=["adamw"],
            protocol={"stages": [6], "top_k": 2, "seed": 3,
                      "early_stopping": {"kind": "asha", "grace_epochs": 1, "reduction_factor": 3}},
            budget={"epochs": 3, "pace_ms": 400}, max_concurrent_trials=2)
STATES = {"completed": TrialState.COMPLETE, "stopped": TrialState.PRUNED,
          "diverged": TrialState.FAIL, "failed": TrialState.FAIL}


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    pytest.importorskip("ray")
    import httpx
    import ray

    from service.control.runner import StudyRunner
    from tests.support import free_port, ray_auth_token_file

    tmp = tmp_path_factory.mktemp("optuna-live")
    metrics_port = free_port()
    ctx = ray.init(num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=True,
                   dashboard_host="127.0.0.1", dashboard_port=free_port(), log_to_driver=False,
                   _metrics_export_port=metrics_port, _system_config={"metrics_report_interval_ms": 1000})
    dashboard = f"http://{ctx.dashboard_url}"
    token_file = ray_auth_token_file()
    ray_auth = {"Authorization": f"Bearer {token_file.read_text().strip()}"} if token_file.exists() else {}
    store = StudyStore(f"sqlite:///{tmp / 'studies.db'}")
    runner = StudyRunner(store, Settings(database_url=store.url, storage_path=str(tmp / "runs"), num_cpus=2,
                                         dashboard=False, poll_interval_s=0.2, optuna_view_interval_s=0.3,
                                         mlflow_tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}",
                                         trial_actor_names=True))
    sid = store.create_study(StudySpec(**SPEC).resolved(), None)[0].id
    live: list = []  # snapshots of the view while the study runs
    exported: list[str] = []  # Ray's Prometheus export, our series only
    actors: set[str] = set()  # the repr names of the alive actors in the Ray dashboard
    runner.start()
    try:
        t0 = time.time()
        while store.get_study(sid).status not in ("completed", "failed", "cancelled"):
            assert time.time() - t0 < 300, "the study did not finish"
            try:
                live.append(optuna.load_study(study_name="live view/adamw", storage=store.url).trials)
            except (KeyError, OperationalError):
                pass  # the view is not there yet (or the follower creates Optuna's tables right now)
            try:
                text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
                exported.extend(line for line in text.splitlines() if "rootfree_study_" in line)
            except httpx.HTTPError:
                pass  # the metrics agent may still be starting
            try:
                r = httpx.get(f"{dashboard}/api/v0/actors", params={"detail": "1", "limit": "1000"},
                              headers=ray_auth, timeout=10)
                if r.status_code == 200:
                    actors |= {a.get("repr_name") or "" for a in r.json()["data"]["result"]["result"]
                               if a.get("state") == "ALIVE"}
            except (httpx.HTTPError, KeyError, ValueError):
                pass  # the dashboard may still be starting
            time.sleep(0.5)
        time.sleep(4)  # the followers' last passes
    finally:
        runner.stop()
        ray.shutdown()
    yield store, sid, live, tmp, exported, actors


def test_running_study_shows_running_trials_with_intermediate_values(ran):
    _, _, live, _, _, _ = ran
    assert any(t.state == TrialState.RUNNING and t.intermediate_values for snap in live for t in snap), \
        [[(t.state.name, t.intermediate_values) for t in s] for s in live]


def test_finished_view_matches_the_store(ran):
    store, sid, _, _, _, _ = ran
    study = store.get_study(sid)
    assert study.status == "completed", study.error
    view = optuna.load_study(study_name="live view/adamw", storage=store.url)
    assert view.user_attrs["rootfree_study_id"] == sid and view.metric_names == [study.spec["metric"]]
    ours = {t.id: t for t in store.trials(sid)}
    theirs = {t.user_attrs["rootfree_trial_id"]: t for t in view.trials}
    assert set(theirs) == set(ours) and len(view.trials) == len(ours) == 6
    assert any(t.status == "stopped" for t in ours.values()), "ASHA stopped nothing: no PRUNED to check"
    histories = store.histories(list(ours))
    for tid, t in ours.items():
        o = theirs[tid]
        assert o.state == STATES[t.status], (t.status, o.state)
        if t.status in ("completed", "stopped"):
            assert math.isclose(o.value, t.objective)
        metric = study.spec["metric"]
        assert o.intermediate_values == {r["epoch"]: r[metric] for r in histories[tid]
                                         if isinstance(r.get(metric), float) and math.isfinite(r[metric])}
        assert o.user_attrs["stage"] == t.stage and o.user_attrs["seed"] == t.seed
        started, finished = (d.replace(tzinfo=UTC) for d in (t.started_at, t.finished_at))
        assert o.duration > timedelta(0)
        assert abs(o.duration - (finished - started)) < timedelta(seconds=1)
        # log-uniform parameters on log axes, 1-minus-log ones under their transformed name
        assert o.distributions["lr"].log and o.distributions["one_minus_beta2"].log
        assert math.isclose(o.params["one_minus_beta2"], 1 - t.config["beta2"])
    # optuna-sync after the fact changes nothing
    before = [(t.number, t.state, t.value, t.intermediate_values, t.datetime_complete) for t in view.trials]
    assert cli_main(["optuna-sync", sid, "--db", store.url]) == 0
    after = optuna.load_study(study_name="live view/adamw", storage=store.url).trials
    assert [(t.number, t.state, t.value, t.intermediate_values, t.datetime_complete) for t in after] == before


def test_optuna_dashboard_shows_the_study_and_its_learning_curves(ran):
    """`rootfree dashboard` (optuna-dashboard on the store) in a headless Chromium: the study's
    name and the intermediate-values plot are on its page; the screenshot stays in the tmp dir."""
    import os
    import subprocess
    import sys

    import httpx

    from tests.service.results.test_report import _chromium
    from tests.support import free_port

    pytest.importorskip("optuna_dashboard")
    store, _, _, tmp, _, _ = ran
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "service.cli", "dashboard", "--db", store.url,
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env={**os.environ})
    try:
        base = f"http://127.0.0.1:{port}"
        t0 = time.time()
        while True:
            try:
                studies = httpx.get(f"{base}/api/studies", timeout=5).json()["study_summaries"]
                break
            except (httpx.HTTPError, ValueError):
                assert time.time() - t0 < 60 and server.poll() is None, "optuna-dashboard did not start"
                time.sleep(0.5)
        oid = next(s["study_id"] for s in studies if s["study_name"] == "live view/adamw")
        page = f"{base}/dashboard/studies/{oid}"
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--no-first-run", "--disable-component-update", f"--user-data-dir={tmp / 'chrome'}",
                 "--virtual-time-budget=15000", "--window-size=1400,3000"]
        shot = tmp / "optuna-dashboard.png"
        r = subprocess.run([exe, *flags, f"--screenshot={shot}", page], capture_output=True, text=True,
                           timeout=120)
        assert shot.exists() and shot.stat().st_size > 10_000, r.stderr[-2000:]
        dom = subprocess.run([exe, *flags, "--dump-dom", page], capture_output=True, text=True,
                             timeout=120).stdout
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert "live view/adamw" in dom
    assert "Intermediate values" in dom and dom.count("js-plotly-plot") >= 2


def test_ray_metrics_export_the_study_progress(ran):
    """The follower's per-study gauges reach Ray's Prometheus export (what the dashboard's Metrics
    view and the compose file's Grafana read)."""
    _, sid, _, _, exported, _ = ran
    trials = [line for line in exported if "rootfree_study_trials" in line and sid in line]
    assert any('status="running"' in line and 'study="live view"' in line and not line.rstrip().endswith(" 0.0")
               for line in trials), exported[-20:]
    assert any("rootfree_study_epochs_reported" in line and sid in line for line in exported)
    assert any("rootfree_study_best_objective" in line and 'optimizer="adamw"' in line for line in exported)


def test_mlflow_has_a_parent_run_and_a_nested_run_per_trial(ran):
    """With ROOTFREE_MLFLOW_TRACKING_URI set, the same study in MLflow: metric histories are the store's."""
    mlflow = pytest.importorskip("mlflow")
    store, sid, _, tmp, _, _ = ran
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = mlflow.tracking.MlflowClient(uri)
    runs = mlflow.search_runs([client.get_experiment_by_name("rootfree").experiment_id], output_format="list")
    parents = [r for r in runs
               if r.data.tags.get("rootfree.study_id") == sid and r.data.tags.get("rootfree.kind") == "study"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = {int(r.data.tags["rootfree.trial_id"]): r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
    ours = {t.id: t for t in store.trials(sid)}
    assert set(children) == set(ours)
    metric = store.get_study(sid).spec["metric"]
    histories = store.histories(list(ours))
    for tid, t in ours.items():
        got = [(m.step, m.value) for m in client.get_metric_history(children[tid].info.run_id, metric)]
        assert got == [(r["epoch"], r[metric]) for r in histories[tid]]
        assert children[tid].data.tags["status"] == t.status


def test_ray_dashboard_names_the_running_trials_actors(ran):
    """The Ray dashboard's actor list (its state API, with Ray's token) names each running trial's
    actor by study, optimizer, stage and trial id."""
    store, sid, _, _, _, actors = ran
    ids = {t.id for t in store.trials(sid)}
    named = {a for a in actors if a.startswith("rootfree live view adamw s1 #")}
    assert named and {int(a.rsplit("#", 1)[1]) for a in named} <= ids, actors
    assert len(named) >= 2  # a new actor, and name, per trial (Ray reads the name once per actor)
