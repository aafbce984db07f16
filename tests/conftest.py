"""Suite-wide hooks."""

import os
import sys

import pytest

_status = {"code": None}

# The slow tests of these modules start Ray: in-process or through `rootfree serve` (a local Ray of
# their own, on ports Ray picks), or as a `ray start` cluster (RAY_START_MODULES), which any later
# `ray.init()` on this machine joins and whose `ray stop` ends every Ray here.
# They get the marker `ray` (`-m "not ray"` leaves them out); the `ray start` ones also get
# `ray_start`. `make test` (scripts/run_tests.sh) runs the `ray` tests on two pytest-xdist workers,
# a module per worker (`--dist loadscope`: module-scoped Ray fixtures), with no `ray start` cluster
# up, and the `ray_start` tests alone afterwards; `make test-fast` has none of them.
# A new module whose tests start Ray belongs here; one whose `serve` runs without a runner
# (ROOTFREE_START_RUNNER=false: test_slow_server, test_hung_plugin) starts none and does not.
RAY_MODULES = {
    "tests/plugins/test_plugins_end_to_end.py", "tests/service/api/test_algoperf_suites.py",
    "tests/service/control/test_repeats.py", "tests/service/control/test_runner_ray.py",
    "tests/service/control/test_scheduler_ray.py", "tests/service/control/test_search_methods.py",
    "tests/service/end_to_end/test_external_studies.py", "tests/service/end_to_end/test_faults.py",
    "tests/service/end_to_end/test_infra_retries.py", "tests/service/end_to_end/test_multi_node_cluster.py",
    "tests/service/end_to_end/test_soak.py", "tests/service/end_to_end/test_studies_on_ray.py",
    "tests/service/followers/test_optuna_live.py", "tests/service/results/test_report.py",
    "tests/service/results/test_suites.py", "tests/workers/test_ray_tune.py",
}
RAY_START_MODULES = {"tests/service/end_to_end/test_multi_node_cluster.py"}


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


def _module(item) -> str:
    return item.path.relative_to(item.config.rootpath).as_posix()


@pytest.hookimpl(tryfirst=True)  # before `-m` selects on the markers
def pytest_collection_modifyitems(config, items):
    for i in items:
        if i.get_closest_marker("slow") is not None and _module(i) in RAY_MODULES:
            i.add_marker(pytest.mark.ray)
            if _module(i) in RAY_START_MODULES:
                i.add_marker(pytest.mark.ray_start)
