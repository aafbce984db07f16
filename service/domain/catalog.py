"""What can be tuned in this process: the built-in and plugin workloads and optimizers as one
JSON-able catalog. The API shows it (`GET /workloads`, `GET /optimizers`) and validates studies
against it until the runner has recorded the cluster's; the runner records each node's (computed
there by `local()`, in a probe task pinned to the node).

Plugins come from Python entry points (``rootfree.workloads``, ``rootfree.optimizers``; the
contract is `workers.plugin_api`), loaded once per process. A plugin optimizer's default space is
registered in `search_spaces` here, since search_spaces imports no torch."""

from __future__ import annotations

import logging
import threading
from typing import Any

import optimizers
import search_spaces
from search_spaces import SearchSpaceError
from search_spaces.defaults import register_optimizer, unregister_plugins
from workers import workloads

log = logging.getLogger("rootfree.plugins")
_lock = threading.Lock()
_loaded = False
_space_errors: list[dict[str, str]] = []
_adopted: set[tuple[str, str]] = set()  # ("workloads"|"optimizers", name) known only from the cluster
_adopted_optimizers: dict[str, dict[str, Any]] = {}  # their recorded descriptions


def load(reload: bool = False) -> None:
    """Loads the plugins of this process (idempotent; `reload` re-reads the entry points)."""
    global _loaded, _space_errors
    with _lock:
        if _loaded and not reload:
            return
        workloads.load_plugins(reload=reload)
        plugins = optimizers.registry.load_plugins(reload=reload)
        unregister_plugins()
        _adopted.clear()
        _adopted_optimizers.clear()
        errors = []
        for name, p in plugins.items():
            try:
                register_optimizer(name, tuple(p.hyperparameters), dict(p.default_space),
                                   root_free=p.root_free, zero_init=p.zero_init)
            except SearchSpaceError as e:
                errors.append({"name": name, "source": p.import_path, "error": f"default_space: {e}"})
                log.error("optimizer plugin %r (%s) refused: default_space: %s", name, p.import_path, e)
        _loaded, _space_errors = True, errors


def optimizer_names() -> list[str]:
    load()
    return search_spaces.optimizer_names()


def workload_info(w: workloads.Workload) -> dict[str, Any]:
    return {"name": w.name, "description": w.description, "metric": w.metric, "mode": w.mode,
            "default_budget": w.default_budget, "budget_limits": w.limits, "schedule": w.schedule,
            "zero_ok": sorted(w.zero_ok), "plugin": w.plugin}


def optimizer_info(name: str) -> dict[str, Any]:
    spec = optimizers.registry.spec(name)
    plugin = optimizers.registry.load_plugins().get(name)
    return {"name": name, "hyperparameters": list(search_spaces.accepted_hyperparameters(name)),
            "default_space": search_spaces.default_space(name).to_dict(),
            "description": spec.description, "root_free": plugin.root_free if plugin else spec.root_free,
            "zero_init": plugin.zero_init if plugin else name == "rfrmsprop", "plugin": spec.plugin}


def local() -> dict[str, Any]:
    """This process's catalog: {"workloads": {name: info}, "optimizers": {name: info},
    "errors": [{"kind", "name", "source", "error"}]}."""
    load()
    errors = ([{"kind": "workload", **e} for e in workloads.plugin_errors()]
              + [{"kind": "optimizer", **e} for e in optimizers.registry.plugin_errors() + _space_errors])
    return {"workloads": {n: workload_info(workloads.get(n)) for n in workloads.names()
                          if ("workloads", n) not in _adopted},
            "optimizers": {n: optimizer_info(n) for n in optimizer_names() if ("optimizers", n) not in _adopted},
            "errors": errors}


def optimizer_facts(name: str) -> tuple[bool, str | None]:
    """(root_free, plugin import path) of an optimizer, built in, installed here, or known only
    from the cluster's record (False, None when unknown)."""
    if name in optimizers.names():
        spec = optimizers.registry.spec(name)
        return spec.root_free, spec.plugin
    info = _adopted_optimizers.get(name) or {}
    return bool(info.get("root_free")), info.get("plugin")


def _not_here(name: str):
    def prepare(budget, seed, device):
        raise RuntimeError(f"workload {name!r} is installed on the cluster's nodes, not in this process")

    return prepare


def adopt(catalogs: dict[str, dict[str, Any]] | None) -> None:
    """Makes what only the cluster's nodes offer known here as descriptions, so a study can name a
    plugin the controller lacks: its spec validates and resolves (budget, metric, default space)
    from the node's record. Nothing of it is imported or run in this process."""
    load()
    if not catalogs:
        return
    with _lock:
        for name, info in union(catalogs, "workloads").items():
            if name in workloads.names() or ("workloads", name) in _adopted:
                continue
            try:
                workloads.register(workloads.Workload(
                    name, info["description"], info["metric"], info["mode"], dict(info["default_budget"]),
                    info["schedule"], _not_here(name), limits=dict(info.get("budget_limits") or {}),
                    zero_ok=frozenset(info.get("zero_ok") or ()), plugin=info.get("plugin")))
                _adopted.add(("workloads", name))
            except (KeyError, TypeError, ValueError) as e:
                log.warning("the cluster's workload %r cannot be described here: %s", name, e)
        for name, info in union(catalogs, "optimizers").items():
            if name in search_spaces.optimizer_names():
                continue
            try:
                register_optimizer(name, tuple(info["hyperparameters"]), info["default_space"],
                                   root_free=info.get("root_free"), zero_init=info.get("zero_init"))
                _adopted.add(("optimizers", name))
                _adopted_optimizers[name] = info
            except (KeyError, TypeError, ValueError) as e:
                log.warning("the cluster's optimizer %r cannot be described here: %s", name, e)


def offered(record: dict[str, Any]) -> dict[str, Any] | None:
    """The cluster's catalog from the runner's record: each live node's, or None while no live
    node's catalog is recorded (then the controller's own applies)."""
    nodes = [n for n in record.get("nodes") or [] if n.get("alive") and n.get("catalog")]
    return {n["node_id"]: n["catalog"] for n in nodes} or None


def union(catalogs: dict[str, dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """{name: info} of `kind` ("workloads" or "optimizers") that at least one node offers."""
    out: dict[str, dict[str, Any]] = {}
    for c in catalogs.values():
        for name, info in (c.get(kind) or {}).items():
            out.setdefault(name, info)
    return out


def check_offered(catalogs: dict[str, dict[str, Any]] | None, workload: str,
                  optimizer_list: list[str]) -> tuple[str, str] | None:
    """(field, message) when no live node could run some trial of the study: none offers the
    workload, or none that offers it also offers an optimizer; None when every trial has a node."""
    if catalogs is None:
        return None
    with_workload = {nid: c for nid, c in catalogs.items() if workload in (c.get("workloads") or {})}
    if not with_workload:
        return "workload", (f"no live node of the cluster offers workload {workload!r}; the cluster offers: "
                            f"{', '.join(sorted(union(catalogs, 'workloads'))) or 'nothing'}")
    there = union(with_workload, "optimizers")
    missing = [o for o in optimizer_list if o not in there]
    if missing:
        return "optimizers", (f"no live node of the cluster that offers workload {workload!r} offers "
                              f"{', '.join(map(repr, missing))}; those nodes offer: {', '.join(sorted(there))}")
    return None
