"""The runner on a real 2-CPU local Ray with the noisy-quadratic workload: every slot is filled
(a study that follows a finished one runs two trials at once, and so do two studies submitted
together; issue 25), and a finished trial keeps its final checkpoint, loadable (issue 19)."""

import time
from pathlib import Path

import pytest

from service.control.runner import StudyRunner
from service.schemas import StudySpec
from service.settings import Settings
from service.store.study_store import StudyStore
from workers.tune import CHECKPOINT_FILE

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False,
             log_to_driver=False, namespace="rootfree-test-slots")
    yield
    ray.shutdown()


@pytest.fixture
def harness(tmp_path):
    store = StudyStore(f"sqlite:///{tmp_path / 'studies.db'}")
    runner = StudyRunner(store, Settings(database_url=store.url, storage_path=str(tmp_path / "runs"),
                                         poll_interval_s=0.2, cluster_refresh_s=0.5))
    runner.start()
    yield store, runner
    runner.stop()


def submit(store, name, stages=(4,), cap=2, pace_ms=400, epochs=2, priority=0):
    spec = StudySpec(name=name, workload="noisy_quadratic", optimizers=["sgd"],
                     protocol={"stages": list(stages), "top_k": 2},
                     budget={"epochs": epochs, "pace_ms": pace_ms}, max_concurrent_trials=cap,
                     priority=priority, resources={"cpu": 1, "gpu": 0}).resolved()
    return store.create_study(spec, None)[0].id


def wait(cond, timeout=180):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def ended(store, *sids):
    return all(store.get_study(s).status in ("completed", "failed", "cancelled") for s in sids)


def spans(store, *sids):
    return [(t.started_at, t.finished_at) for sid in sids for t in store.trials(sid)]


def max_concurrency(intervals) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = cur = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def test_a_study_after_a_finished_one_and_two_studies_together_fill_both_slots(harness):
    store, runner = harness
    first = submit(store, "first", stages=(2,))
    wait(lambda: ended(store, first))
    time.sleep(2)  # the same Tune run goes on; the first study's actors are idle now
    second = submit(store, "second", stages=(6,))
    running_seen: list[int] = []
    wait(lambda: running_seen.append(sum(t.status == "running" for t in store.trials(second)))
         or ended(store, second))
    assert store.get_study(second).status == "completed"
    assert max_concurrency(spans(store, second)) == 2, spans(store, second)
    assert max(running_seen) <= 2
    time.sleep(2)
    a, b = submit(store, "a", stages=(4,), cap=1), submit(store, "b", stages=(4,), cap=1, priority=10)
    wait(lambda: ended(store, a, b))
    assert store.get_study(a).status == "completed" and store.get_study(b).status == "completed"
    assert max_concurrency(spans(store, a, b)) == 2, spans(store, a, b)


def test_a_finished_trial_keeps_its_final_checkpoint_and_it_loads(harness, tmp_path):
    import torch

    store, _ = harness
    sid = submit(store, "ckpt", stages=(3,), pace_ms=0, epochs=3)
    wait(lambda: ended(store, sid))
    trials = store.trials(sid)
    assert store.get_study(sid).status == "completed" and len(trials) == 3
    for t in trials:
        assert t.status == "completed" and t.checkpoint, (t.status, t.checkpoint)
        final = Path(t.checkpoint)
        assert final.is_dir() and [p.name for p in final.parent.glob("checkpoint_*")] == [final.name]
        state = torch.load(final / CHECKPOINT_FILE, weights_only=True)
        assert state["epoch"] == 3 and [h["epoch"] for h in state["history"]] == [1, 2, 3]
        assert state["model"] and state["optimizer"]["state"]


def test_delete_right_after_cancel_leaves_no_files_once_the_trial_stops(harness, tmp_path):
    from service.store.files import remove_study_files, study_dirs

    store, runner = harness
    storage = str(tmp_path / "runs")
    sid = submit(store, "doomed", stages=(1,), cap=1, pace_ms=700, epochs=6)
    wait(lambda: any(store.history(t.id) for t in store.trials(sid)))
    # what the API's cancel and DELETE do, back to back, while the trial still trains
    store.set_status(sid, "cancelled", only_from=("queued", "running"))
    store.delete_study(sid)
    remove_study_files(storage, sid)
    wait(lambda: not any(t.study_id == sid for t in runner.dispatcher.live.values()), timeout=60)
    time.sleep(1.0)
    assert study_dirs(storage, sid) == []
