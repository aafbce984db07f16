"""The external trials' use-cases (service/control/external_trials.py) and the submissions'
(service/control/studies.py) called directly, on a real SQLite store, with no HTTP: each refusal
is the `Refused` kind (service/domain/refusals.py) the api turns into its status. The REST
contract over the same calls is in tests/service/api/test_external_trials*.py."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from service.api.schemas import StudySpec
from service.control.external import ExternalSamplers
from service.control.external_trials import ExternalTrials, Finished, Verdict
from service.control.studies import cancel_study, submit_study
from service.domain.refusals import Conflict, Gone, InvalidField, NotFound, OverQuota
from service.settings import Settings
from service.store.models import Trial
from service.store.study_store import StudyStore
from tests.service.api.test_external_trials import SPEC, open_stages

AUDIT = {"actor": "alice", "client": None}


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'studies.db'}"


@pytest.fixture
def store(url):
    s = StudyStore(url)
    yield s
    s.engine.dispose()


@pytest.fixture
def trials(store):
    return ExternalTrials(store, ExternalSamplers(), lease_s=600.0)


def settings(url, **changes):
    return Settings(database_url=url, start_runner=False, **changes)


def submitted(store, url, **changes):
    """An external study as POST /studies stores it (SPEC: 3 epochs), its stages opened as the
    runner opens them; the study as the store has it now."""
    spec = StudySpec.model_validate({**SPEC, **changes}).resolved()
    study, created = submit_study(store, settings(url), spec, None, "alice", AUDIT)
    assert created and study.resolved.external
    open_stages(url, study.id)
    return store.get_study(study.id)


def claimed(trials, store, url):
    study = submitted(store, url)
    body = trials.claim(study)
    assert body is not None
    return study, body["trial_id"], body["claim_token"]


def test_claim_answers_a_trial_with_its_token(trials, store, url):
    study = submitted(store, url)
    body = trials.claim(study)
    assert body["claim_token"] and body["stage"] == 1 and body["optimizer"] == "sgd"
    t = store.trial(study.id, body["trial_id"])
    assert t.status == "running" and t.claim_token == body["claim_token"]
    assert trials.claim(study)["trial_id"] != body["trial_id"]  # the next claim gets another trial


def test_non_finite_metric_diverges_the_trial(trials, store, url):
    study, tid, token = claimed(trials, store, url)
    assert trials.report(study, tid, token, 1, {"loss": 1.0}) == Verdict(should_stop=False)
    verdict = trials.report(study, tid, token, 2, {"loss": math.nan})
    assert verdict.should_stop and verdict.reason.startswith("diverged")
    assert store.trial(study.id, tid).status == "diverged"


def test_a_foreign_or_lapsed_claim_is_a_conflict(trials, store, url):
    study, tid, token = claimed(trials, store, url)
    with pytest.raises(Conflict) as e:
        trials.report(study, tid, "not-mine", 1, {"loss": 1.0})
    assert e.value.field == "claim_token" and "not the trial's current claim" in e.value.message
    # the lease passes: the claim is stale, and the trial goes back to pending at once
    with store.engine.begin() as c:
        c.execute(update(Trial).where(Trial.id == tid)
                  .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    with pytest.raises(Conflict) as e:
        trials.heartbeat(study, tid, token)
    assert e.value.field == "claim_token" and "lease expired" in e.value.message
    assert store.trial(study.id, tid).status == "pending"


def test_unknown_trial_is_not_found(trials, store, url):
    study, tid, token = claimed(trials, store, url)
    with pytest.raises(NotFound):
        trials.report(study, tid + 1000, token, 1, {"loss": 1.0})
    with pytest.raises(NotFound):
        trials.complete(study, tid + 1000, token, "completed", {"loss": 1.0})


def test_report_after_cancel_is_gone(trials, store, url):
    study, tid, token = claimed(trials, store, url)
    assert cancel_study(store, study, "alice", None, trials.samplers)
    with pytest.raises(Gone) as e:
        trials.report(store.get_study(study.id), tid, token, 1, {"loss": 1.0})
    assert "cancelled" in e.value.message
    t = store.trial(study.id, tid)
    assert t.status == "failed" and t.error == "stopped: the study was cancelled"


@pytest.mark.parametrize("epoch", [0, 4])  # 1-based, up to budget.epochs (3)
def test_out_of_range_epoch_is_invalid(trials, store, url, epoch):
    study, tid, token = claimed(trials, store, url)
    with pytest.raises(InvalidField) as e:
        trials.report(study, tid, token, epoch, {"loss": 1.0})
    assert e.value.field == "epoch"
    assert store.trial(study.id, tid).epochs in (None, 0)  # nothing stored


def test_complete_is_idempotent_and_fail_after_it_conflicts(trials, store, url):
    study, tid, token = claimed(trials, store, url)
    first = trials.complete(study, tid, token, "completed", {"loss": 0.5})
    assert first == Finished(tid, "completed")
    assert trials.complete(study, tid, token, "completed", {"loss": 0.5}) == first  # a retry: the same answer
    with pytest.raises(Conflict) as e:
        trials.fail(study, tid, token, "out of memory")
    assert e.value.field == "status"
    with pytest.raises(Conflict) as e:
        trials.complete(study, tid, token, "stopped", None)
    assert e.value.field == "status"
    assert store.trial(study.id, tid).status == "completed"


def test_submit_study_over_quota(store, url):
    spec = StudySpec.model_validate(SPEC).resolved()
    limited = settings(url, max_active_studies=1)
    first, created = submit_study(store, limited, spec, "k1", "alice", AUDIT)
    assert created
    # the same idempotency key returns the first study, without counting against the quota
    again, created = submit_study(store, limited, spec, "k1", "alice", AUDIT)
    assert (again.id, created) == (first.id, False)
    with pytest.raises(OverQuota) as e:
        submit_study(store, limited, spec, "k2", "alice", AUDIT)
    assert e.value.field == "max_active_studies" and "1 of your studies" in e.value.message
    # another user's quota is their own
    assert submit_study(store, limited, spec, None, "bob", AUDIT)[1]
