"""The runner without Ray: what it does when the lease goes during a stage transition."""

import time

import pytest
from sqlalchemy import update

from service.control.runner import StudyRunner
from service.settings import Settings
from service.store.lease import LeaseLost
from service.store.models import Lease as LeaseRow
from service.store.study_log import log_path
from service.store.study_store import StudyStore
from tests.service.store.test_lease import SPEC


def test_a_lease_lost_in_a_stage_transition_is_not_a_study_failure(tmp_path, monkeypatch):
    store = StudyStore(f"sqlite:///{tmp_path / 'studies.db'}")
    study, _ = store.create_study(SPEC, None)
    runner = StudyRunner(store, Settings(database_url=store.url, storage_path=str(tmp_path / "runs")))
    assert runner.lease.acquire()
    runner.dispatcher.cluster.refreshed_at = time.monotonic()  # no Ray here: keep the (empty) cluster record
    advance = runner.dispatcher.stages.advance

    def taken_over_meanwhile(study, slog=None):  # a standby takes the lease mid-transition
        with store.engine.begin() as conn:
            conn.execute(update(LeaseRow).values(holder="standby", token=LeaseRow.token + 1))
        return advance(study, slog)

    monkeypatch.setattr(runner.dispatcher.stages, "advance", taken_over_meanwhile)
    with pytest.raises(LeaseLost):
        runner.dispatcher.refresh()
    assert store.get_study(study.id).status == "running"  # not failed: the new leader resumes it
    text = log_path(str(tmp_path / "runs"), study.id).read_text()
    assert "study failed" not in text and "Traceback" not in text
    assert "lost the runner lease" in text


class _Checkpoint:
    def __init__(self, path):
        self.path = path


class _TuneTrial:
    def __init__(self, trial_id, config):
        self.trial_id, self.config, self.error_file = trial_id, {"trial": config}, None


@pytest.mark.parametrize("keep", ["final", "none"])
def test_trials_released_from_what_the_callback_stored_complete_the_study(tmp_path, keep):
    """Tune's order of events for each trial (start, a report per epoch with its checkpoint,
    then the searcher's release), without Ray: the study goes through both stages to completed,
    a released trial is not read back from the store (the callback stored its end), each
    finished trial names its final checkpoint, and only that one stays on disk (`final`)."""
    from service.api.schemas import StudySpec
    from service.control.driver import QueueSearcher, StoreCallback, _meta
    from service.domain.statuses import TERMINAL
    from service.store.files import trial_dirname

    store = StudyStore(f"sqlite:///{tmp_path / 'studies.db'}")
    spec = StudySpec(name="events", workload="noisy_quadratic", optimizers=["sgd", "adamw"],
                     protocol={"stages": [4, 3], "top_k": 2, "seed": 0}, budget={"epochs": 2},
                     max_concurrent_trials=3).resolved()
    study, _ = store.create_study(spec, None)
    runner = StudyRunner(store, Settings(database_url=store.url, storage_path=str(tmp_path / "runs"),
                                         keep_checkpoints=keep, poll_interval_s=0.05))
    assert runner.lease.acquire()
    d = runner.dispatcher
    d.cluster.refreshed_at = time.monotonic() + 1e9  # no Ray: a cluster of 3 CPUs, recorded once
    d.cluster.total, d.cluster.nodes = {"CPU": 3.0}, [{"CPU": 3.0}]
    reads = []
    read = runner.store.trial
    runner.store.trial = lambda *a, **k: reads.append(a) or read(*a, **k)
    callback, searcher = StoreCallback(runner), QueueSearcher(runner)
    final: dict[int, str] = {}
    n = 0
    deadline = time.monotonic() + 60
    while store.get_study(study.id).status not in TERMINAL and time.monotonic() < deadline:
        started = []
        while len(started) < 3 and isinstance(config := searcher.suggest(f"t{n}"), dict):
            trial = _TuneTrial(f"t{n}", config["trial"])
            callback.on_trial_start(0, [], trial)
            started.append(trial)
            n += 1
        if not started:
            time.sleep(0.06)  # the next stage opens at the next refresh
        for trial in started:
            m = _meta(trial)
            for epoch in (1, 2):
                result = {"epoch": epoch, "loss": 1.0 / (epoch + m["index"]), "train_loss": 1.0, "meta": m}
                if epoch == 2:
                    result["status"] = "completed"
                callback.on_trial_result(0, [], trial, result)
                path = (tmp_path / "runs" / "rootfree-1"
                        / trial_dirname(study.id, m["optimizer"], m["stage"], m["index"]) / f"checkpoint_{epoch:06d}")
                path.mkdir(parents=True)
                callback.on_checkpoint(0, [], trial, _Checkpoint(str(path)))
            final[m["trial_id"]] = str(path)
            searcher.on_trial_complete(trial.trial_id, result=result)
            callback.on_trial_complete(0, [], trial)
    assert store.get_study(study.id).status == "completed"
    trials = store.trials(study.id)
    assert sorted((t.optimizer, t.stage) for t in trials) == sorted(
        [(o, 1) for o in ("sgd", "adamw") for _ in range(4)] + [(o, 2) for o in ("sgd", "adamw") for _ in range(3)])
    assert all(t.status == "completed" and t.checkpoint == final[t.id] for t in trials)
    assert reads == []  # every end was known from the callback: no row read back
    on_disk = sorted(str(p) for p in (tmp_path / "runs" / "rootfree-1").glob("*/checkpoint_*"))
    assert on_disk == (sorted(final.values()) if keep == "final" else [])
    store.engine.dispose()
