"""Suite-wide hooks."""

import os
import sys

import pytest

_status = {"code": None}


def pytest_configure(config):
    # Under pytest-xdist (`make test-fast`: -n 2) each worker trains with one thread: two workers
    # with torch's default of one thread per core thrash the two cores (a 3 s test took 60 s).
    if hasattr(config, "workerinput"):
        os.environ["OMP_NUM_THREADS"] = "1"
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)


def pytest_sessionfinish(session, exitstatus):
    _status["code"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    # The interpreter's own shutdown can crash (SIGSEGV) inside the C threads that Ray's gRPC
    # client and torch leave behind, after every test ran and the summary was printed; CI then
    # sees a signal instead of pytest's verdict. Everything is reported and torn down by now, so
    # leave with pytest's exit status and skip the finalisation.
    if _status["code"] is None or os.environ.get("ROOTFREE_TEST_NORMAL_EXIT"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_status["code"])
