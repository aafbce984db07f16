"""Suite-wide hooks."""

import os
import sys

import pytest

_status = {"code": None}

# The slow tests of these modules start Ray: in-process, through `rootfree serve`, or as a `ray start`
# cluster, which any later `ray.init()` on this machine joins and whose `ray stop` ends every Ray here.
# They get the marker `ray` (`-m "not ray"` leaves them out), and they must never run two at once: no
# pytest-xdist for them (`make test` runs them in a second pytest run, one at a time, after the rest;
# `make test-fast` has none of them).
# A new module whose tests start Ray belongs here; one whose `serve` runs without a runner
# (ROOTFREE_START_RUNNER=false: test_slow_server, test_hung_plugin) starts none and does not.
RAY_MODULES = {
    "tests/plugins/test_plugins_end_to_end.py", "tests/service/api/test_algoperf_suites.py",
    "tests/service/control/test_repeats.py", "tests/service/control/test_runner_ray.py",
    "tests/service/control/test_scheduler_ray.py", "tests/service/control/test_search_methods.py",
    "tests/service/end_to_end/test_external_studies.py", "tests/service/end_to_end/test_faults.py",
    "tests/service/end_to_end/test_multi_node_cluster.py",
    "tests/service/end_to_end/test_soak.py", "tests/service/end_to_end/test_studies_on_ray.py",
    "tests/service/followers/test_optuna_live.py", "tests/service/results/test_report.py",
    "tests/service/results/test_suites.py", "tests/workers/test_ray_tune.py",
}


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


def _starts_ray(item) -> bool:
    return item.get_closest_marker("slow") is not None and \
        item.path.relative_to(item.config.rootpath).as_posix() in RAY_MODULES


@pytest.hookimpl(tryfirst=True)  # before `-m` selects on the marker
def pytest_collection_modifyitems(config, items):
    for i in items:
        if _starts_ray(i):
            i.add_marker(pytest.mark.ray)
