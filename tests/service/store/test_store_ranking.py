"""The study store ranks trials per optimizer in SQL (best so far, /best, /export), on SQLite and
PostgreSQL: order by objective in the study's mode, ties by stage then index, only completed
trials with an objective, top-k per optimizer."""

import pytest

from service.api.schemas import StudySpec
from service.store.study_store import StudyStore


def _study(store, mode):
    spec = StudySpec(name="r", workload="fmnist_vit", optimizers=["adamw", "sgd"], mode=mode,
                     metric="test_error", protocol={"stages": [4, 2], "top_k": 2, "seed": 0}).resolved()
    study, _ = store.create_study(spec, None)
    return study.id


def _finish(store, sid, opt, stage, objectives, status="completed"):
    store.ensure_trials(sid, opt, stage, [{"lr": 0.1 * (i + 1)} for i in range(len(objectives))])
    ids = {t.index: t.id for t in store.trials(sid, optimizer=opt, stage=stage)}
    for i, obj in enumerate(objectives):
        if obj is not None:
            store.record_result(ids[i], {"epoch": 1, "test_error": obj, "status": status}, "test_error")


@pytest.mark.parametrize("mode", ["min", "max"])
def test_best_trials_per_optimizer(db_url, mode):
    store = StudyStore(db_url)
    sid = _study(store, mode)
    _finish(store, sid, "adamw", 1, [0.3, 0.1, None, 0.1])     # index 2 never reports
    _finish(store, sid, "adamw", 2, [0.2, 0.5])
    _finish(store, sid, "sgd", 1, [0.9, 0.4], status="diverged")  # diverged never ranks
    _finish(store, sid, "sgd", 2, [0.7, 0.6])
    ranked = store.best_trials(sid, mode, 3)
    got = {opt: [(r.stage, r.index, r.objective) for r in rows] for opt, rows in ranked.items()}
    if mode == "min":
        assert got["adamw"] == [(1, 1, 0.1), (1, 3, 0.1), (2, 0, 0.2)]
        assert got["sgd"] == [(2, 1, 0.6), (2, 0, 0.7)]
    else:
        assert got["adamw"] == [(2, 1, 0.5), (1, 0, 0.3), (2, 0, 0.2)]
        assert got["sgd"] == [(2, 0, 0.7), (2, 1, 0.6)]
    assert ranked["adamw"][0].config == {"lr": pytest.approx(0.2)}  # both modes: index 1
    assert [len(v) for v in store.best_trials(sid, mode, 1).values()] == [1, 1]
    store.engine.dispose()
