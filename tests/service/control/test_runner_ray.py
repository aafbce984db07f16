"""The runner on a real 2-CPU local Ray with the noisy-quadratic workload: every slot is filled
(a study that follows a finished one runs two trials at once, and so do two studies submitted
together; issue 25), and a finished trial keeps its final checkpoint, loadable (issue 19)."""

import time
from pathlib import Path

import pytest

from tests.support.ray_runner import ended, max_concurrency, ray_runner_fixtures, spans, submit, wait
from workers.tune import CHECKPOINT_FILE

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

local_ray, harness = ray_runner_fixtures("rootfree-test-slots")


def test_a_study_after_a_finished_one_and_two_studies_together_fill_both_slots(harness):
    store, runner = harness
    first = submit(store, "first", stages=(2,), pace_ms=400)
    wait(lambda: ended(store, first))
    time.sleep(2)  # the same Tune run goes on; the first study's actors are idle now
    second = submit(store, "second", stages=(6,), pace_ms=400)
    running_seen: list[int] = []
    wait(lambda: running_seen.append(sum(t.status == "running" for t in store.trials(second)))
         or ended(store, second))
    assert store.get_study(second).status == "completed"
    assert max_concurrency(spans(store, second)) == 2, spans(store, second)
    assert max(running_seen) <= 2
    time.sleep(2)
    a = submit(store, "a", stages=(4,), cap=1, pace_ms=400)
    b = submit(store, "b", stages=(4,), cap=1, priority=10, pace_ms=400)
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
