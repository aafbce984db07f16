"""Which workloads and optimizers each Ray node offers: the cluster decides what exists.

Trials run on the cluster's nodes, which may have plugins the controller lacks (or lack ones it
has). The runner asks each live node once, with a zero-CPU task pinned to it that returns
`service.domain.catalog.local()` computed there (so with that node's installed plugins), and records the
answer next to the node's resources; `POST /studies` validates against that record. The question
is asked without waiting: an answer is recorded on the next refresh after it arrives. A node
that installs new plugins is asked again once it rejoins (a new node id)."""

from __future__ import annotations

import logging
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

log = logging.getLogger("rootfree.runner")


def _catalog_here() -> dict[str, Any]:
    from service.domain import catalog

    return catalog.local()


class NodeCatalogs:
    def __init__(self) -> None:
        self._known: dict[str, dict[str, Any]] = {}
        self._pending: dict[str, Any] = {}  # node id -> ObjectRef of its answer

    def update(self, alive: list[str]) -> dict[str, dict[str, Any]]:
        """{node id: catalog} of the `alive` nodes that have answered; asks the new ones."""
        for node_id, ref in list(self._pending.items()):
            ready, _ = ray.wait([ref], timeout=0)
            if not ready and node_id in alive:
                continue
            del self._pending[node_id]
            if ready:
                try:
                    self._known[node_id] = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - the node died or cannot import us: ask again later
                    log.warning("could not read the catalog of Ray node %s: %s", node_id, e)
        for node_id in alive:
            if node_id not in self._known and node_id not in self._pending:
                try:
                    self._pending[node_id] = ray.remote(_catalog_here).options(
                        num_cpus=0, max_retries=0, name="rootfree node catalog",
                        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote()
                except Exception as e:  # noqa: BLE001 - never in the way of recording the resources
                    log.warning("could not ask Ray node %s for its catalog: %s", node_id, e)
        return {n: self._known[n] for n in alive if n in self._known}
