"""The one follower thread (service/followers/base.py): a failed pass is counted, recovered from and
retried; the thread outlives it, and stop ends it and closes the follower."""

import time

from service.followers.base import Follower


class Flaky(Follower):
    def __init__(self):
        super().__init__(interval_s=0.01)
        self.passes, self.recovered, self.closed = 0, 0, False

    def poll(self):
        self.passes += 1
        if self.passes <= 2:
            raise RuntimeError("the target is down")

    def recover(self):
        self.recovered += 1

    def close(self):
        self.closed = True


def test_a_failing_pass_is_retried_and_stop_closes():
    f = Flaky().start()
    deadline = time.monotonic() + 10
    while f.passes < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert f.passes >= 4 and f.errors == 2 and f.recovered == 2 and f._thread.is_alive()
    f.stop()
    assert not f._thread.is_alive() and f.closed
