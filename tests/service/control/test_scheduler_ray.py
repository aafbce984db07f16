"""The multiplexing runner on a real local Ray (2 CPUs, 1 logical GPU) with the noisy-quadratic
workload: groups and studies overlap, priority and fair share order the starts, fractional GPUs
share a GPU, cancel stops one study without touching the other, the cluster is recorded."""

from datetime import datetime

import pytest

from tests.support.ray_runner import ended, max_concurrency, ray_runner_fixtures, submit, wait

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

FINISHED = ("completed", "diverged", "failed")

local_ray, harness = ray_runner_fixtures("rootfree-test", num_gpus=1)


def intervals(store, sid, **kw):
    return [(t.started_at, t.finished_at) for t in store.trials(sid, **kw)]


def overlaps(a, b) -> bool:
    return any(s1 < e2 and s2 < e1 for s1, e1 in a for s2, e2 in b)


def test_groups_and_studies_overlap_and_stages_follow_each_other(harness):
    store, _ = harness
    # Half a CPU each: four slots, so both studies hold two at once from the first pass and the
    # overlaps below never hang on how fast this machine runs the other study's trials.
    half = {"cpu": 0.5, "gpu": 0}
    x = submit(store, "x", optimizers=("sgd", "adamw"), stages=(3, 2), resources=half)
    y = submit(store, "y", stages=(4,), resources=half)
    wait(lambda: ended(store, x, y))
    assert store.get_study(x).status == "completed" and store.get_study(y).status == "completed"
    for sid, opts, stages in ((x, ("sgd", "adamw"), (3, 2)), (y, ("sgd",), (4,))):
        for opt in opts:
            for stage, n in enumerate(stages, start=1):
                rows = store.trials(sid, optimizer=opt, stage=stage)
                assert sorted(t.index for t in rows) == list(range(n))
                assert all(t.status == "completed" and t.runs == 1 for t in rows)
    # inside one study, the two optimizers' groups run at the same time
    assert overlaps(intervals(store, x, optimizer="sgd"), intervals(store, x, optimizer="adamw"))
    # two studies at once
    assert overlaps(intervals(store, x), intervals(store, y))
    # stage 2 of an optimizer opens when its stage 1 has ended, whatever the other optimizer does
    for opt in ("sgd", "adamw"):
        s1_end = max(e for _, e in intervals(store, x, optimizer=opt, stage=1))
        assert min(s for s, _ in intervals(store, x, optimizer=opt, stage=2)) >= s1_end
    # the runner recorded the cluster for the API
    record = store.cluster()
    assert record["total"]["CPU"] == 2.0 and record["total"]["GPU"] == 1.0
    assert [n["alive"] for n in record["nodes"]] == [True]


def test_priority_then_fair_share_no_head_of_line_blocking(harness):
    store, _ = harness
    big = submit(store, "big", stages=(12,), pace_ms=400)
    wait(lambda: sum(t.status == "completed" for t in store.trials(big)) >= 2)
    small = submit(store, "small", stages=(2,))
    urgent = submit(store, "urgent", stages=(2,), priority=10)
    submitted = store.get_study(urgent).created_at
    wait(lambda: ended(store, big, small, urgent), timeout=240)

    def starts(sid):
        return sorted(t.started_at for t in store.trials(sid))

    big_starts, small_starts, urgent_starts = starts(big), starts(small), starts(urgent)
    assert all(store.get_study(s).status == "completed" for s in (big, small, urgent))
    # the priority study takes the next slots, then the small one: before big's remaining trials
    assert urgent_starts[-1] <= small_starts[0]
    # Before the small study's first trial, big may start at most: the (up to 2) trials it had
    # claimed before the others arrived, and one more when both have 0 running (ties: the older).
    between = [s for s in big_starts if _aware(submitted) < _aware(s) < _aware(small_starts[0])]
    assert len(between) <= 3, (between, small_starts)
    assert max(t.finished_at for t in store.trials(small)) < max(t.finished_at for t in store.trials(big))


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=datetime.now().astimezone().tzinfo).astimezone()


def test_fractional_gpus_share_one_logical_gpu(harness):
    store, _ = harness
    half = submit(store, "half", stages=(4,), cap=4, resources={"cpu": 0.5, "gpu": 0.5})
    wait(lambda: ended(store, half))
    trials = store.trials(half)
    assert store.get_study(half).status == "completed" and all(t.status == "completed" for t in trials)
    # CPUs would allow 4 at once; the one GPU allows two halves
    assert max_concurrency(intervals(store, half)) == 2


def test_infeasible_study_queued_before_the_record_fails_with_a_reason(harness):
    store, _ = harness
    wait(lambda: store.cluster().get("nodes"))
    huge = submit(store, "huge", resources={"cpu": 8, "gpu": 0})
    wait(lambda: ended(store, huge), timeout=60)
    study = store.get_study(huge)
    assert study.status == "failed" and "CPU" in study.error and store.trials(huge) == []


def test_cancel_stops_one_study_and_leaves_the_other(harness):
    store, _ = harness
    keep = submit(store, "keep", stages=(4,), cap=1, pace_ms=300)
    stop = submit(store, "stop", stages=(6,), cap=1, pace_ms=1000, epochs=6)
    wait(lambda: any(t.status == "running" and store.history(t.id) for t in store.trials(stop)))
    store.set_status(stop, "cancelled", only_from=("queued", "running"))
    wait(lambda: all(t.status in FINISHED + ("pending",) for t in store.trials(stop)), timeout=30)
    wait(lambda: ended(store, keep))
    assert store.get_study(keep).status == "completed"
    assert all(t.status == "completed" and t.runs == 1 for t in store.trials(keep))
    stopped = [t for t in store.trials(stop) if t.status == "failed"]
    assert len(stopped) == 1 and "cancelled" in stopped[0].error and len(store.history(stopped[0].id)) < 6
    assert all(t.status in ("completed", "failed", "pending") for t in store.trials(stop))
