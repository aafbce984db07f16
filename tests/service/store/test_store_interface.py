"""The store's one interface (service/store/interface.py): the SQL store implements every call of
`Store` with its signature, the runner's store has exactly `RunnerCalls`, each declared fenced or
only retried, and the declaration holds (a fenced call refuses a lapsed lease)."""

import ast
import inspect
import time
from pathlib import Path

import pytest

import service.control
import service.store
from service.store.interface import RunnerCalls, Store
from service.store.lease import Lease, LeaseLost
from service.store.runner_store import RunnerStore
from service.store.study_store import PARTS, StudyStore
from tests.service.store.test_lease import SPEC


def _members(protocol) -> set[str]:
    return {n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")}


def _params(fn) -> list[tuple]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_the_sql_store_implements_every_call_of_the_interface_and_no_other():
    """A call the other layers need is added to the interface too (this fails until it is)."""
    public = {n for n in dir(StudyStore) if not n.startswith("_") and callable(getattr(StudyStore, n))}
    assert public == _members(Store)
    for name in _members(Store):
        assert _params(getattr(StudyStore, name)) == _params(getattr(Store, name)), name


def test_each_call_of_the_sql_store_is_one_repositorys():
    store_calls = {name: part for part, repository in PARTS.items()
                   for name in vars(repository) if not name.startswith("_")}
    assert set(store_calls) | {"with_sessions", "delete_optuna_studies", "delete_suite", "session"} == _members(Store)
    assert all(StudyStore.__dict__[name].__wrapped__ is PARTS[part].__dict__[name]
               for name, part in store_calls.items())


def test_the_runner_store_has_exactly_the_runner_calls_each_declared():
    public = {n for n, v in vars(RunnerStore).items() if callable(v) and not n.startswith("_")}
    assert public == _members(RunnerCalls)
    assert _members(RunnerCalls) <= _members(Store)
    for name in public:
        method = getattr(RunnerStore, name)
        assert method.fenced in (True, False), name
        assert _params(method) == _params(getattr(StudyStore, name)), name


def test_fenced_calls_refuse_a_lapsed_lease_and_retried_reads_do_not(db_url):
    store = StudyStore(db_url)
    runner = RunnerStore(store, lease := Lease(store.engine, "old", ttl_s=1.0, fence_margin_s=0.2), retry_s=0)
    assert lease.acquire()
    study = store.create_study(SPEC, None)[0]
    assert runner.get_study(study.id).id == study.id  # held: reads and writes pass
    time.sleep(1.1)
    fenced = {"get_study": (study.id,), "studies_with_status": ("queued",), "trials": (study.id,),
              "count_trials": (study.id,), "set_status": (study.id, "failed")}
    for name, args in fenced.items():
        assert getattr(RunnerStore, name).fenced, name
        with pytest.raises(LeaseLost):
            getattr(runner, name)(*args)
    assert store.get_study(study.id).status == "queued"  # nothing written
    assert runner.best_trials(study.id, "min", 1) == {}  # retried only: no lease check


def _store_imports() -> dict[str, set[str]]:
    """service/store's modules -> the service.store modules each imports (lazy ones included)."""
    root = Path(service.store.__file__).parent
    graph: dict[str, set[str]] = {}
    for path in root.glob("*.py"):
        if path.name == "__init__.py":  # the package's face re-exports; no part imports it
            continue
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("service.store."):
                names.add(node.module.removeprefix("service.store."))
        graph[path.stem] = names
    return graph


def test_no_import_circle_in_the_store():
    """The Optuna mirror and the runner's store read the store through the interface: nothing
    the SQL store is built from imports it back (lazily or for annotations)."""
    graph, done, path = _store_imports(), set(), []

    def visit(node):
        assert node not in path, " -> ".join([*path[path.index(node):], node])
        if node in done:
            return
        path.append(node)
        for nxt in graph.get(node, ()):
            visit(nxt)
        path.pop()
        done.add(node)

    for node in graph:
        visit(node)
    assert "study_store" not in graph["optuna_mirror"] | graph["runner_store"]


def test_the_runners_parts_call_only_what_the_runner_store_has():
    """The runner hands its `RunnerStore` to its parts (dispatch, stages, samplers, the Tune
    callback): every `<...>.store.X` they name in service/control is one of its calls."""
    root = Path(service.control.__file__).parent
    called = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                    and node.value.attr == "store":
                called.add(node.attr)
    assert {"record_result", "claim_pending", "get_study"} <= called
    assert called <= _members(RunnerCalls), called - _members(RunnerCalls)
