"""The cluster as the runner sees it: Ray's nodes and resources, read on a clock and recorded in
the store (the API answers `GET /cluster` and checks a study's feasibility from that record)."""

from __future__ import annotations

import logging
import time
import traceback

import ray

from service.control.node_catalog import NodeCatalogs

log = logging.getLogger("rootfree.runner")


class ClusterRecorder:
    def __init__(self, store, refresh_s: float):
        self.store, self.refresh_s = store, refresh_s
        self.refreshed_at = 0.0  # monotonic time of the last read
        self.total: dict[str, float] = {}  # the cluster's resources
        self.nodes: list[dict[str, float]] = []  # each live node's resources
        self._catalogs = NodeCatalogs()  # each live node's workloads and optimizers (plugins)

    def record(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.refreshed_at < self.refresh_s:
            return
        self.refreshed_at = now
        try:
            nodes = [{"node_id": n["NodeID"], "alive": bool(n["Alive"]),
                      "address": n.get("NodeManagerAddress"),
                      "resources": {k: float(v) for k, v in (n.get("Resources") or {}).items()
                                    if not k.startswith("node:") and k != "object_store_memory"}}
                     for n in ray.nodes()]
            total = {k: float(v) for k, v in ray.cluster_resources().items() if not k.startswith("node:")}
            available = {k: float(v) for k, v in ray.available_resources().items()
                         if not k.startswith("node:")}
            catalogs = self._catalogs.update([n["node_id"] for n in nodes if n["alive"]])
            for n in nodes:
                n["catalog"] = catalogs.get(n["node_id"])  # None until the node has answered
        except Exception:  # noqa: BLE001 - keep the last record; Ray may be reconnecting
            log.warning("could not read the cluster's resources: %s", traceback.format_exc())
            return
        self.total = total
        self.nodes = [n["resources"] for n in nodes if n["alive"]]
        self.store.record_cluster(nodes=nodes, total=total, available=available)
