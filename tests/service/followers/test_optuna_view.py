"""The live Optuna view (service/followers/optuna_view.py): the store's trials as Optuna sees them, driven
through the store's own write methods (the runner's), then read back with plain Optuna."""

import math
from datetime import timedelta

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from service.api.schemas import StudySpec
from service.cli import main as cli_main
from service.control.stages import StageMachine
from service.followers.optuna_view import OptunaFollower
from service.store.optuna_mirror import OptunaView
from service.store.study_store import StudyStore


@pytest.fixture
def store(tmp_path):
    s = StudyStore(f"sqlite:///{tmp_path / 'studies.db'}")
    yield s
    s.engine.dispose()


def make_study(store, name="watch", optimizers=("adamw",), stages=(4,)):
    spec = StudySpec(name=name, workload="noisy_quadratic", optimizers=list(optimizers),
                     protocol={"stages": list(stages), "top_k": 2},
                     budget={"epochs": 3, "pace_ms": 0}).resolved()
    study = store.create_study(spec, None)[0]
    store.set_status(study.id, "running")
    StageMachine(store).advance(store.get_study(study.id))
    return store.get_study(study.id)


def epoch(store, trial, e, value, status=None):
    row = {"epoch": e, "loss": value, "train_loss": value}
    if status:
        row["status"] = status
    store.record_result(trial.id, row, "loss")


def by_rootfree_id(name, url):
    return {t.user_attrs["rootfree_trial_id"]: t for t in optuna.load_study(study_name=name, storage=url).trials}


def test_live_view_running_then_final_states(store):
    study = make_study(store)
    follower = OptunaFollower(store)
    follower.poll()  # a study with no trial started: its view exists, empty
    url = store.url
    view = optuna.load_study(study_name="watch/adamw", storage=url)
    assert view.trials == [] and view.metric_names == ["loss"]
    attrs = view.user_attrs
    assert attrs["rootfree_study_id"] == study.id and attrs["workload"] == "noisy_quadratic"
    assert attrs["metric"] == "loss" and attrs["scheme"] == "modern" and "1" in attrs["stage_spaces"]
    assert view.direction == optuna.study.StudyDirection.MINIMIZE

    a, b, c, d = (store.claim_pending(study.id, "adamw", 1) for _ in range(4))
    for t in (a, b, c, d):
        store.mark_started(t.id)
    epoch(store, a, 1, 3.0)
    follower.poll()
    live = by_rootfree_id("watch/adamw", url)
    assert {t.state for t in live.values()} == {TrialState.RUNNING}
    assert live[a.id].intermediate_values == {1: 3.0} and live[b.id].intermediate_values == {}
    assert live[a.id].user_attrs["stage"] == 1 and live[a.id].user_attrs["seed"] == a.seed

    epoch(store, a, 2, 2.0)
    epoch(store, a, 3, 1.5, status="completed")
    epoch(store, b, 1, 4.0)
    store.mark_stopped(b.id, "asha: below the rung")
    epoch(store, c, 1, float("nan"), status="diverged")
    store.mark_failed(d.id, "worker died")
    follower.poll()
    done = by_rootfree_id("watch/adamw", url)
    assert done[a.id].state == TrialState.COMPLETE and done[a.id].value == 1.5
    assert done[a.id].intermediate_values == {1: 3.0, 2: 2.0, 3: 1.5}
    assert done[b.id].state == TrialState.PRUNED and done[b.id].value == 4.0
    assert done[b.id].user_attrs["reason"] == "asha: below the rung"
    assert done[c.id].state == TrialState.FAIL and done[c.id].user_attrs["reason"] == "diverged"
    assert done[d.id].state == TrialState.FAIL and done[d.id].user_attrs["reason"] == "worker died"
    # the store's times, not the moment of the write
    for t in (a, b, c, d):
        row = store.trial(study.id, t.id)
        ours = row.finished_at - row.started_at
        assert abs(done[t.id].duration - ours) < timedelta(seconds=1)
    # 1-minus-log parameters on a log axis under their own name, log-uniform ones on a log axis
    dists = done[a.id].distributions
    assert isinstance(dists["one_minus_beta2"], FloatDistribution) and dists["one_minus_beta2"].log
    assert dists["lr"].log and "beta2" not in dists
    assert math.isclose(done[a.id].params["one_minus_beta2"], 1 - a.config["beta2"])
    assert done[a.id].user_attrs["config"] == a.config

    # a restarted follower (a controller restart) and optuna-sync write nothing twice
    OptunaFollower(store).poll()
    assert cli_main(["optuna-sync", study.id, "--db", url]) == 0
    assert cli_main(["optuna-sync", study.id, "--db", url]) == 0
    again = by_rootfree_id("watch/adamw", url)
    assert len(optuna.load_study(study_name="watch/adamw", storage=url).trials) == 4
    assert {k: (t.state, t.value, t.intermediate_values) for k, t in again.items()} == \
           {k: (t.state, t.value, t.intermediate_values) for k, t in done.items()}


def test_sync_rebuilds_from_scratch_names_collide_and_delete_removes(store):
    first = make_study(store, name="same")
    second = make_study(store, name="same")
    t = store.claim_pending(first.id, "adamw", 1)
    epoch(store, t, 1, 2.5)
    epoch(store, t, 2, 2.0, status="completed")
    OptunaView(store).sync_study(first.id)  # a store from before the view: built after the fact
    OptunaView(store).sync_study(second.id)
    names = set(optuna.get_all_study_names(store.url))
    assert "same/adamw" in names and f"same/adamw ({second.id[:8]})" in names
    trials = optuna.load_study(study_name="same/adamw", storage=store.url).trials
    assert [(tr.state, tr.value, tr.intermediate_values) for tr in trials] == \
           [(TrialState.COMPLETE, 2.0, {1: 2.5, 2: 2.0})]
    assert store.delete_optuna_studies(first.id) == 1
    assert set(optuna.get_all_study_names(store.url)) == {f"same/adamw ({second.id[:8]})"}


def test_a_failing_view_never_reaches_the_caller(store, monkeypatch):
    make_study(store)
    follower = OptunaFollower(store, interval_s=0.05)

    def broken(*a, **k):
        raise RuntimeError("optuna storage down")

    monkeypatch.setattr(follower.view, "sync_trials", broken)
    follower.start()
    try:
        import time

        t0 = time.monotonic()
        while follower.errors < 1 and time.monotonic() - t0 < 10:
            time.sleep(0.05)
        assert follower.errors >= 1 and follower._thread.is_alive()
    finally:
        follower.stop()


def test_view_process_ends_with_its_runner(tmp_path):
    """A killed runner never leaves its view process writing (a restarted one starts its own)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    StudyStore(url).engine.dispose()
    code = ("import sys, time\n"
            "from service.followers.optuna_view import OptunaViewProcess\n"
            f"p = OptunaViewProcess({url!r}, 0.2).start()\n"
            "print(p._proc.pid, flush=True)\n"
            "time.sleep(600)\n")
    runner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ})
    child = int(runner.stdout.readline())
    os.kill(child, 0)  # it runs
    runner.send_signal(signal.SIGKILL)
    runner.wait(timeout=30)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        try:  # a zombie of ours? (it is not our child: init reaps it)
            with open(f"/proc/{child}/stat") as f:
                if f.read().split()[2] == "Z":
                    return
        except FileNotFoundError:
            return
        time.sleep(0.2)
    raise AssertionError("the view process outlived its runner")


def test_two_writers_syncing_at_once_number_trials_apart(db_url):
    """`rootfree optuna-sync` while the runner's view writes (or an old leader's view during a
    handover): each inserts trials the other has not written, both at the same moment; the
    numbers are counted under a lock, so no two trials share one (Optuna would show only one)."""
    import threading

    from sqlalchemy import event

    store = StudyStore(db_url)
    study = make_study(store, name="race")
    trials = [store.claim_pending(study.id, "adamw", 1) for _ in range(2)]
    a, b = OptunaView(store), OptunaView(store)
    a.sync_trials(study, full=True)
    b._view(study, "adamw")
    for t in trials:
        store.mark_started(t.id)
    at_insert = threading.Barrier(2)
    for view in (a, b):
        @event.listens_for(view.storage.engine, "before_cursor_execute")
        def _meet(conn, cursor, statement, params, context, executemany):
            # without the lock both writers have counted before either inserts: they meet here
            if statement.lstrip().upper().startswith("INSERT INTO TRIALS"):
                try:
                    at_insert.wait(timeout=2)
                except threading.BrokenBarrierError:
                    pass
    a._trials[trials[1].id] = [0, "RUNNING", set()]  # each writer writes one of the two
    b._trials[trials[0].id] = [0, "RUNNING", set()]
    study = store.get_study(study.id)
    threads = [threading.Thread(target=v.sync_trials, args=(study,)) for v in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    url = store.engine.url.render_as_string(hide_password=False)
    seen = optuna.load_study(study_name="race/adamw", storage=url).trials
    assert sorted(t.number for t in seen) == [0, 1]
    assert sorted(t.user_attrs["rootfree_trial_id"] for t in seen) == sorted(t.id for t in trials)
    a.close()
    b.close()
    store.engine.dispose()
