"""Trial workers lower their own priority (every thread) so a controller on the same machine
stays responsive; 0 leaves it alone."""

import os
import threading

import pytest

from workers.tune import lower_priority


def _nices():
    return {int(t): os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir("/proc/self/task")}


@pytest.mark.slow  # over ~3 s: `make test-fast` leaves it out
def test_lower_priority_sets_every_thread():
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q,))
    p.start()
    before, after, disabled = q.get(timeout=60)
    p.join(timeout=60)
    assert disabled == 0
    assert all(n >= 7 for n in after.values()) and len(after) >= 2
    assert set(before) <= set(after)


def _child(q):
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    before = _nices()
    os.environ["ROOTFREE_WORKER_NICE"] = "0"
    disabled = lower_priority()
    lower_priority(7)
    q.put((before, _nices(), disabled))
    stop.set()
    t.join()
