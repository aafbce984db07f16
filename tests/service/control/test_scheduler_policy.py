"""The scheduling policy alone: pure functions, no Ray, no database."""

import pytest

from service.control.scheduler import (
    FairShare,
    Group,
    Sequential,
    StudyState,
    fits,
    free_resources,
    infeasible,
    policy,
    queue_order,
)
from service.domain.spec import Resources

CPU1 = {"CPU": 1.0, "GPU": 0.0}


def study(sid, priority=0, created=0.0, running=0, cap=4, request=CPU1, groups=None):
    groups = groups if groups is not None else (Group("sgd", 1, 0, runnable=5),)
    return StudyState(sid, priority, created, running, cap, request, tuple(groups))


def test_higher_priority_first():
    studies = [study("a", priority=0, created=0), study("b", priority=7, created=5)]
    assert FairShare().choose(studies, {"CPU": 1}).study_id == "b"


def test_equal_priority_fewest_running_then_older():
    studies = [study("old", created=0, running=2), study("new", created=9, running=1)]
    assert FairShare().choose(studies, {"CPU": 1}).study_id == "new"
    studies = [study("old", created=0, running=1), study("new", created=9, running=1)]
    assert FairShare().choose(studies, {"CPU": 1}).study_id == "old"


def test_cap_and_nothing_runnable_are_skipped():
    studies = [study("capped", priority=9, running=2, cap=2),
               study("empty", priority=8, groups=[Group("sgd", 1, 0, runnable=0, running=3)]),
               study("ok", priority=0)]
    assert FairShare().choose(studies, {"CPU": 4}).study_id == "ok"
    assert FairShare().choose(studies[:2], {"CPU": 4}) is None


def test_backfill_a_trial_that_fits_when_the_first_does_not():
    big = study("big", priority=9, request={"CPU": 2.0, "GPU": 0.0})
    small = study("small", priority=0)
    assert FairShare().choose([big, small], {"CPU": 1.0}).study_id == "small"
    assert FairShare().choose([big, small], {"CPU": 2.0}).study_id == "big"


def test_groups_inside_a_study_share_slots():
    groups = [Group("sgd", 1, 0, runnable=3, running=2), Group("adamw", 2, 1, runnable=3, running=0)]
    c = FairShare().choose([study("s", groups=groups)], {"CPU": 1})
    assert (c.optimizer, c.stage) == ("adamw", 2)


def test_sequential_runs_one_group_of_the_oldest_study():
    old = study("old", created=0, groups=[Group("sgd", 1, 0, runnable=0, running=1),
                                          Group("adamw", 1, 1, runnable=4)])
    new = study("new", priority=99, created=5)
    assert Sequential().choose([old, new], {"CPU": 4}) is None  # sgd stage 1 still runs
    done = study("old", created=0, groups=[Group("sgd", 1, 0, runnable=0, finished=True),
                                           Group("adamw", 1, 1, runnable=4)])
    c = Sequential().choose([done, new], {"CPU": 4})
    assert (c.study_id, c.optimizer) == ("old", "adamw")
    finished = study("old", created=0, groups=[Group("sgd", 1, 0, runnable=0, finished=True)])
    assert Sequential().choose([finished, new], {"CPU": 4}).study_id == "new"


def test_queue_order_matches_the_policy():
    studies = [study("a", 0, created=1), study("b", 5, created=2), study("c", 0, created=0, running=3)]
    assert [s.study_id for s in queue_order(studies)] == ["b", "a", "c"]


def test_resources():
    assert fits({"CPU": 0.5, "GPU": 0.5}, {"CPU": 1, "GPU": 0.5})
    assert not fits({"CPU": 0.5, "GPU": 0.5}, {"CPU": 1, "GPU": 0.25})
    assert fits({"CPU": 0.1, "GPU": 0.0}, free_resources({"CPU": 0.3}, [{"CPU": 0.1}, {"CPU": 0.1}]))
    assert free_resources({"CPU": 2, "GPU": 1}, [{"CPU": 1, "GPU": 0.5}]) == {"CPU": 1, "GPU": 0.5}
    assert Resources(cpu=1, gpu=0.5, memory_mb=1024).ray_request() == {"CPU": 1, "GPU": 0.5, "memory": 2**30}


def test_infeasible_names_the_short_resource():
    nodes = [{"CPU": 2.0, "memory": 4e9}, {"CPU": 16.0, "GPU": 0.0}]
    assert infeasible({"CPU": 64.0}, nodes) == "CPU"
    assert infeasible({"CPU": 1.0, "GPU": 1.0}, nodes) == "GPU"
    assert infeasible({"CPU": 1.0, "memory": 8e9}, nodes) == "memory"
    assert infeasible({"CPU": 8.0, "GPU": 0.0}, nodes) is None
    assert infeasible({"CPU": 64.0}, []) is None  # nothing recorded yet: accept


def test_unknown_policy():
    with pytest.raises(ValueError, match="unknown scheduler 'lottery'"):
        policy("lottery")
