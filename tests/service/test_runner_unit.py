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

from .test_lease import SPEC


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
