"""The runner lease on SQLite and PostgreSQL: one holder, takeover after expiry, fencing of a
paused old holder, and the runner's store retrying through a cut database connection."""

import threading
import time

import pytest
import sqlalchemy as sa

from service.store.lease import Lease, LeaseLost, current, release_dead_holder
from service.store.study_store import RunnerStore, StudyStore
from tests.support.tcp_proxy import TcpProxy

SPEC = {"name": "l", "workload": "noisy_quadratic", "optimizers": ["sgd"], "metric": "loss", "mode": "min",
        "protocol": {"stages": [2], "top_k": 2, "seed": 0, "margin": 0.25, "method": "random"},
        "budget": {"epochs": 1}, "resources": {"cpu": 1, "gpu": 0}, "max_concurrent_trials": 1,
        "search_spaces": {"sgd": {}}, "priority": 0}


def test_one_holder_then_takeover_after_expiry(db_url):
    store = StudyStore(db_url)
    a = Lease(store.engine, "a", ttl_s=1.5, fence_margin_s=0.5)
    b = Lease(store.engine, "b", ttl_s=1.5, fence_margin_s=0.5)
    assert a.acquire() and not b.acquire()
    assert current(store.engine)["holder"] == "a" and current(store.engine)["token"] == 1
    assert a.renew() and not a.expiring()
    time.sleep(1.1)
    assert a.expiring()  # past ttl - margin without a renewal: a stops its trials now
    assert not b.acquire()  # ...but the lease has not lapsed yet
    time.sleep(0.6)
    assert b.acquire() and current(store.engine) | {"expires_at": None, "acquired_at": None} == \
        {"holder": "b", "token": 2, "expires_at": None, "acquired_at": None}
    assert not a.renew() and not a.held  # the old holder learns it lost


def test_fencing_stops_a_paused_old_leader(db_url):
    store = StudyStore(db_url)
    study, _ = store.create_study(SPEC, None)
    old = Lease(store.engine, "old", ttl_s=1.0, fence_margin_s=0.2)
    assert old.acquire()
    fenced = RunnerStore(store, old, retry_s=0)
    fenced.set_status(study.id, "running")  # while held: writes pass
    time.sleep(1.1)  # the old leader "pauses" past its expiry
    with pytest.raises(LeaseLost, match="expired"):
        fenced.set_status(study.id, "failed")
    new = Lease(store.engine, "new", ttl_s=30)
    assert new.acquire()
    with pytest.raises(LeaseLost, match="held by new"):
        fenced.set_status(study.id, "failed")
    assert store.get_study(study.id).status == "running"  # nothing written over the new leader
    RunnerStore(store, new, retry_s=0).set_status(study.id, "completed")
    assert store.get_study(study.id).status == "completed"


def test_release_hands_over_at_once(db_url):
    store = StudyStore(db_url)
    a, b = Lease(store.engine, "a"), Lease(store.engine, "b")
    assert a.acquire() and not b.acquire()
    a.release()
    assert b.acquire()


@pytest.mark.postgres
def test_runner_writes_wait_through_a_database_outage(pg_url):
    name = sa.engine.make_url(pg_url).database
    proxy = TcpProxy()
    try:
        store = StudyStore(proxy.url(name))
        study, _ = store.create_study(SPEC, None)
        store.ensure_trials(study.id, "sgd", 1, [{"lr": 0.1}, {"lr": 0.2}])
        trial = store.trials(study.id)[0]
        runner_store = RunnerStore(store, None, retry_s=60)
        proxy.cut()
        done = threading.Event()

        def report():
            runner_store.record_result(trial.id, {"epoch": 1, "loss": 0.5, "status": "completed"}, "loss")
            done.set()

        t0 = time.monotonic()
        threading.Thread(target=report, daemon=True).start()
        time.sleep(3)
        assert not done.is_set()  # the report waits; it is not dropped
        proxy.restore()
        assert done.wait(30), "the report was never written after the database came back"
        assert time.monotonic() - t0 >= 3 and runner_store.retries >= 1
        fresh = StudyStore(pg_url)
        assert fresh.trial(study.id, trial.id).status == "completed"
        assert fresh.history(trial.id) == [{"epoch": 1, "loss": 0.5, "status": "completed"}]
        store.engine.dispose()
    finally:
        proxy.close()


def test_renew_fails_once_expired_or_taken_and_a_takeover_needs_the_expiry(db_url):
    store = StudyStore(db_url)
    a = Lease(store.engine, "a", ttl_s=1.0, fence_margin_s=0.2)
    b = Lease(store.engine, "b", ttl_s=30)
    assert a.acquire()
    time.sleep(1.1)
    # expired: a standby may take it at any moment, so the old holder cannot extend it
    assert not a.renew() and not a.held
    assert b.acquire() and current(store.engine)["token"] == 2
    a.token = 1
    assert not a.renew() and current(store.engine)["holder"] == "b"  # token and holder changed
    assert b.renew() and not Lease(store.engine, "c").acquire()


def test_the_fence_check_and_the_write_are_one_transaction(db_url, monkeypatch):
    """A takeover that commits between the old leader's lease check and its write must not let
    that write land after it: the new leader would work on state the old one then overwrites."""
    store = StudyStore(db_url)
    study, _ = store.create_study(SPEC, None)
    old = Lease(store.engine, "old", ttl_s=1.0, fence_margin_s=0.2)
    assert old.acquire()
    fenced = RunnerStore(store, old, retry_s=0)
    check = Lease.check

    def slow_check(self, session):  # the old leader pauses right after its (passing) check
        check(self, session)
        time.sleep(1.5)

    monkeypatch.setattr(Lease, "check", slow_check)
    outcome: list = []

    def old_leader_writes():
        try:
            fenced.set_status(study.id, "failed")
            outcome.append("written")
        except LeaseLost:
            outcome.append("lost")

    writer = threading.Thread(target=old_leader_writes)
    writer.start()
    time.sleep(1.1)  # the old lease has expired; the write is between its check and its update
    new = Lease(store.engine, "new", ttl_s=30)
    assert new.acquire()
    seen_by_new_leader = store.get_study(study.id).status
    writer.join(30)
    # whatever the old leader did, it happened before the takeover, never after it
    assert outcome and store.get_study(study.id).status == seen_by_new_leader


def test_a_claim_retried_after_a_lost_acknowledgement_returns_the_same_trial(db_url, monkeypatch):
    """The commit lands, the answer is lost (a failover): the store's retry must not claim a
    second trial, which would stay claimed until a takeover."""
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.orm import Session

    store = StudyStore(db_url)
    study, _ = store.create_study(SPEC, None)
    store.ensure_trials(study.id, "sgd", 1, [{"lr": 0.1}, {"lr": 0.2}, {"lr": 0.3}])
    lease = Lease(store.engine, "leader", ttl_s=30)
    assert lease.acquire()
    runner_store = RunnerStore(store, lease, retry_s=30)
    commit, failed = Session.commit, []

    def commit_then_lose_the_answer(self):
        commit(self)
        if not failed:
            failed.append(True)
            raise OperationalError("COMMIT", {}, ConnectionError("server closed the connection"))

    monkeypatch.setattr(Session, "commit", commit_then_lose_the_answer)
    first = runner_store.claim_pending(study.id, "sgd", 1, "claim-1")
    monkeypatch.setattr(Session, "commit", commit)
    assert failed and runner_store.retries == 1
    assert first.index == 0
    trials = store.trials(study.id)
    assert [t.claim for t in trials] == ["claim-1", None, None]
    # a claimed trial stays pending until its worker starts it
    assert [t.status for t in trials] == ["pending"] * 3
    assert runner_store.claim_pending(study.id, "sgd", 1, "claim-2").index == 1
    runner_store.mark_started(first.id)
    assert store.trial(study.id, first.id).status == "running" and store.trial(study.id, first.id).runs == 1
    runner_store.release_trial(first.id)  # the runner stops: back to pending, unclaimed
    assert (store.trial(study.id, first.id).status, store.trial(study.id, first.id).claim) == ("pending", None)


def test_a_dead_holders_parent_frees_its_lease_and_no_other(db_url):
    store = StudyStore(db_url)
    dead, standby = Lease(store.engine, "dead"), Lease(store.engine, "standby")
    assert dead.acquire() and not standby.acquire()
    assert not release_dead_holder(store.engine, "standby")  # not the holder: nothing changes
    assert not standby.acquire() and current(store.engine)["holder"] == "dead"
    assert release_dead_holder(store.engine, "dead")
    assert not release_dead_holder(store.engine, "dead")  # already free
    assert standby.acquire() and current(store.engine)["token"] == 2  # at once, not after the ttl (30 s)
    assert not dead.renew()  # were it alive after all, it is fenced out
