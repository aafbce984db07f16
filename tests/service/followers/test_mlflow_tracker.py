"""MLflow tracking from the store (service/followers/mlflow_tracker.py): a parent run per study, a nested run
per trial with the store's per-epoch history as metric histories; idempotent across restarts; an
unreachable MLflow never reaches the caller."""

import os
import time

import pytest

from service.followers.mlflow_tracker import MlflowFollower
from tests.service.followers.test_optuna_view import epoch, make_study

mlflow = pytest.importorskip("mlflow")


def test_parent_and_nested_runs_match_the_store(tmp_path):
    from service.store.study_store import StudyStore

    store = StudyStore(f"sqlite:///{tmp_path / 'studies.db'}")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    study = make_study(store, name="tracked")
    a, b = (store.claim_pending(study.id, "adamw", 1) for _ in range(2))
    store.set_checkpoint(a.id, "/runs/a/checkpoint_000002")
    epoch(store, a, 1, 3.0)
    epoch(store, b, 1, 4.0)
    follower = MlflowFollower(store, uri)
    follower.poll()
    epoch(store, a, 2, 2.0)
    epoch(store, a, 3, 1.5, status="completed")
    store.mark_stopped(b.id, "asha: below the rung")
    store.set_status(study.id, "completed")
    follower.poll()
    MlflowFollower(store, uri).poll()  # a restarted runner: nothing twice

    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name("rootfree")
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs([exp.experiment_id], output_format="list")
    parents = [r for r in runs if r.data.tags.get("rootfree.kind") == "study"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2 and len(runs) == 3
    parent = parents[0]
    assert parent.info.run_name == "tracked" and parent.info.status == "FINISHED"
    assert parent.data.params["workload"] == "noisy_quadratic" and parent.data.params["metric"] == "loss"
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    by_trial = {int(c.data.tags["rootfree.trial_id"]): c for c in children}
    histories = store.histories([a.id, b.id])
    for t in (a, b):
        run = by_trial[t.id]
        got = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")]
        assert got == [(r["epoch"], r["loss"]) for r in histories[t.id]]
        assert run.data.params["lr"] == str(t.config["lr"]) and run.data.tags["seed"] == str(t.seed)
    assert by_trial[a.id].data.tags["status"] == "completed" and by_trial[a.id].info.status == "FINISHED"
    assert by_trial[a.id].data.tags["checkpoint"] == "/runs/a/checkpoint_000002"
    assert by_trial[b.id].data.tags["status"] == "stopped"
    store.engine.dispose()


def test_mlflow_outage_never_reaches_the_study(tmp_path):
    from service.store.study_store import StudyStore

    store = StudyStore(f"sqlite:///{tmp_path / 'studies.db'}")
    make_study(store)
    follower = MlflowFollower(store, "http://127.0.0.1:9/", interval_s=0.05)  # nothing listens there
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "2"
    follower.start()
    try:
        t0 = time.monotonic()
        while follower.errors < 1 and time.monotonic() - t0 < 60:
            time.sleep(0.1)
        assert follower.errors >= 1 and follower._thread.is_alive()
    finally:
        follower.stop(timeout=30)
        os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
        os.environ.pop("MLFLOW_HTTP_REQUEST_TIMEOUT")
    store.engine.dispose()
