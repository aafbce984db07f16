"""One trial -> Optuna mapping (service/store/optuna_mapping.py): the live Optuna view and the TPE
sampler show a trial alike; a trial stopped by ASHA is PRUNED with its last value, at its last
epoch, so TPE ranks it."""

import math

import pytest
from optuna.trial import TrialState

from service.control.samplers.tpe import TpeSampler
from service.store.optuna_mapping import last_report, optuna_state
from service.store.optuna_mirror import OptunaView
from service.store.study_store import StudyStore
from tests.service.followers.test_optuna_view import by_rootfree_id, epoch, make_study


@pytest.fixture
def store(tmp_path):
    s = StudyStore(f"sqlite:///{tmp_path / 'studies.db'}")
    yield s
    s.engine.dispose()


def test_the_mapping():
    assert optuna_state("running", None) == (TrialState.RUNNING, None)
    assert optuna_state("completed", 0.5) == (TrialState.COMPLETE, 0.5)
    assert optuna_state("stopped", 2) == (TrialState.PRUNED, 2.0)
    assert optuna_state("stopped", None) == (TrialState.PRUNED, None)
    for status, objective in (("completed", None), ("completed", math.nan), ("diverged", None),
                              ("failed", 1.0), ("stopped", math.inf)):
        state, value = optuna_state(status, objective)
        assert value is None and state == (TrialState.PRUNED if status == "stopped" else TrialState.FAIL)
    assert last_report(TrialState.PRUNED, 4.0, 3) == {3: 4.0}
    assert last_report(TrialState.PRUNED, None, 3) == last_report(TrialState.COMPLETE, 4.0, 3) == {}


def test_the_view_and_tpe_agree_on_each_trial(store):
    study = make_study(store)
    a, b, c, d = (store.claim_pending(study.id, "adamw", 1) for _ in range(4))
    for t in (a, b, c, d):
        store.mark_started(t.id)
    epoch(store, a, 1, 3.0)
    epoch(store, a, 2, 1.5, status="completed")
    epoch(store, b, 1, 4.0)
    epoch(store, b, 2, 3.5)
    store.mark_stopped(b.id, "asha: below the rung")
    epoch(store, c, 1, float("nan"), status="diverged")
    store.mark_failed(d.id, "worker died")

    OptunaView(store).sync_study(study.id)
    view = by_rootfree_id("watch/adamw", store.url)
    group = TpeSampler(store)._group(store.get_study(study.id), "adamw", 1)  # seeded from the store
    assert group["seeded"] == 4
    told = {ft.params["lr"]: ft for ft in group["study"].trials}  # the sampler's trials by configuration
    for t in (a, b, c, d):
        row, shown = store.trial(study.id, t.id), view[t.id]
        assert (told[row.config["lr"]].state, told[row.config["lr"]].value) == (shown.state, shown.value) \
            == optuna_state(row.status, row.objective)
    assert (view[b.id].state, view[b.id].value) == (TrialState.PRUNED, 3.5)
    assert told[b.config["lr"]].intermediate_values == {2: 3.5}  # what TPE ranks a pruned trial by
    assert max(view[b.id].intermediate_values.items()) == (2, 3.5)
    assert [view[t.id].state for t in (a, c, d)] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL]


def test_tpe_tells_a_stopped_trial_pruned_with_its_last_value(store):
    study = make_study(store)
    tpe = TpeSampler(store)
    a, b, c = (store.claim_pending(study.id, "adamw", 1) for _ in range(3))
    for t in (a, b):
        tpe.ask(store.get_study(study.id), "adamw", 1, t.id)
        store.mark_started(t.id)
    epoch(store, a, 1, 3.0)
    epoch(store, a, 2, 2.5)
    store.mark_stopped(a.id, "asha: below the rung")
    epoch(store, b, 1, 1.0)
    epoch(store, b, 2, 0.5, status="completed")
    for t in (a, b):  # as the dispatcher and the external-trials API tell it
        tpe.tell(store.trial(study.id, t.id))
    pruned, complete = tpe._groups[(study.id, "adamw", 1)]["study"].trials
    assert (pruned.state, pruned.value, pruned.intermediate_values) == (TrialState.PRUNED, 2.5, {2: 2.5})
    assert (complete.state, complete.value) == (TrialState.COMPLETE, 0.5)
    assert tpe.ask(store.get_study(study.id), "adamw", 1, c.id)  # the sampler goes on from both
