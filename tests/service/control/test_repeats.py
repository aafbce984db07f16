"""`protocol.repeats` (issue 32): each optimizer's whole search runs R times with independent sampler
seeds; `repeats: 2` doubles each stage's trial count, repeat 0 is the study without repeats, and the
analysis gains search-level comparisons of the per-repeat outcomes."""

import pytest

from service.api.schemas import StudySpec
from service.control.stages import StageMachine, planned_trials, repeat_seed, seed_run_seeds
from service.results.analysis import analyse
from service.store.study_store import StudyStore


@pytest.fixture
def store(tmp_path):
    s = StudyStore(f"sqlite:///{tmp_path / 'studies.db'}")
    yield s
    s.engine.dispose()


def make(store, repeats, name="r", seeds=3):
    spec = StudySpec(name=name, workload="noisy_quadratic", optimizers=["sgd", "adamw"],
                     protocol={"stages": [4, 2], "top_k": 2, "seeds": seeds, "paired": True, "repeats": repeats},
                     budget={"epochs": 2, "pace_ms": 0}).resolved()
    study = store.create_study(spec, None)[0]
    store.set_status(study.id, "running")
    return study


def finish_open(store, machine, study, value):
    """Completes every pending trial (objective value(trial)) and advances; returns the progress."""
    for t in store.trials(study.id):
        if t.status == "pending":
            store.record_result(t.id, {"epoch": 2, "loss": value(t), "status": "completed"}, "loss")
    return machine.advance(store.get_study(study.id))


def run_to_end(store, study, value):
    machine = StageMachine(store)
    progress = machine.advance(store.get_study(study.id))
    for _ in range(10):
        if progress.done:
            return
        progress = finish_open(store, machine, study, value)
    raise AssertionError("the study did not end")


def test_repeats_double_each_stage_and_repeat_zero_is_the_study_without_repeats(store):
    one, two = make(store, 1, "one"), make(store, 2, "two")
    assert planned_trials(store.get_study(two.id).resolved) == 2 * planned_trials(store.get_study(one.id).resolved)
    value = lambda t: (t.config["lr"] - 0.01) ** 2 + (0.1 if t.optimizer == "adamw" else 0.0)  # noqa: E731
    run_to_end(store, one, value)
    run_to_end(store, two, value)
    count = lambda s, stage: len(store.trials(s.id, optimizer="sgd", stage=stage))  # noqa: E731
    assert [count(one, st) for st in (1, 2, 3)] == [4, 2, 3]
    assert [count(two, st) for st in (1, 2, 3)] == [8, 4, 6]
    # repeat 0 is trial for trial the study without repeats; repeat 1 is another search
    configs = lambda s, stage: [t.config for t in store.trials(s.id, optimizer="sgd", stage=stage)]  # noqa: E731
    assert configs(two, 1)[:4] == configs(one, 1) and configs(two, 1)[4:] != configs(one, 1)
    assert configs(two, 2)[:2] == configs(one, 2)
    seeds = [t.seed for t in store.trials(two.id, optimizer="sgd", stage=1)]
    assert seeds == [0] * 4 + [repeat_seed(0, 1)] * 4 and repeat_seed(0, 1) != 0
    spec = store.get_study(two.id).resolved
    runs = [t.seed for t in store.trials(two.id, optimizer="adamw", stage=3)]
    assert runs == seed_run_seeds(spec, "adamw", 0) + seed_run_seeds(spec, "adamw", 1)
    assert seed_run_seeds(spec, "adamw", 0) == seed_run_seeds(spec, "sgd", 0)  # paired within a repeat
    assert "sgd/repeat 1" in store.get_study(two.id).stage_spaces  # repeat 1's narrowed space, kept apart
    # the analysis: seed-level comparisons of repeat 0, search-level ones of the per-repeat outcomes
    st = store.get_study(two.id)
    a = analyse(st.spec, st.stage_spaces, store.trial_dicts(st.id, history=False))
    levels = [(c["level"], c["a"], c["b"]) for c in a["comparisons"]]
    assert levels == [("seed", "sgd", "adamw"), ("search", "sgd", "adamw")]
    search = a["comparisons"][1]
    assert "repeats_needed" in search and "seeds_needed" not in search
    assert search["verdict"] in ("not resolved with 2 repeats", "sgd better than adamw")
    assert a["optimizers"]["sgd"]["seed_runs"]["n"] == 3  # one search's seed runs: repeat 0's
    one_a = analyse(store.get_study(one.id).spec, {}, store.trial_dicts(one.id, history=False))
    assert [c["level"] for c in one_a["comparisons"]] == ["seed"]


def test_search_level_comparisons_resolve_with_enough_repeats(store):
    study = make(store, 6, "six", seeds=0)
    run_to_end(store, study, lambda t: (t.config["lr"] - 0.01) ** 2 + (1.0 if t.optimizer == "adamw" else 0.0))
    st = store.get_study(study.id)
    a = analyse(st.spec, st.stage_spaces, store.trial_dicts(st.id, history=False))
    (c,) = a["comparisons"]  # no seed runs: only the search level
    assert c["level"] == "search" and c["verdict"] == "sgd better than adamw"
    assert a["no_verdict"] is None


def test_repeats_are_refused_with_tpe_and_past_ten():
    for protocol, message in (({"repeats": 2, "method": "tpe"}, "repeats"), ({"repeats": 11}, "repeats")):
        with pytest.raises(ValueError, match=message):
            StudySpec(name="x", workload="noisy_quadratic", optimizers=["sgd"], protocol=protocol)


@pytest.mark.slow
def test_a_study_with_two_repeats_runs_end_to_end_on_ray(tmp_path):
    """The runner (real Ray, noisy_quadratic) with repeats: 2 runs every stage twice and the analysis
    has seed- and search-level comparisons."""
    pytest.importorskip("ray")
    from tests.support.serving import run_to_end as run_on_ray

    spec = StudySpec(name="rep", workload="noisy_quadratic", optimizers=["sgd", "rfrmsprop"],
                     protocol={"stages": [3, 2], "top_k": 2, "seeds": 2, "paired": True, "repeats": 2},
                     budget={"epochs": 2, "pace_ms": 0}).resolved()
    store, (sid,) = run_on_ray(tmp_path, [spec])
    st = store.get_study(sid)
    assert st.status == "completed"
    counts: dict = {}
    for o, s, _, n in store.count_trials(sid):  # per status: every trial, whatever its status
        counts[(o, s)] = counts.get((o, s), 0) + n
    assert counts == {(o, s): n for o in ("sgd", "rfrmsprop") for s, n in ((1, 6), (2, 4), (3, 4))}
    a = analyse(st.spec, st.stage_spaces, store.trial_dicts(sid, history=False))
    assert [c["level"] for c in a["comparisons"]] == ["seed", "search"]
    assert a["comparisons"][1]["p"] is not None
