"""The cluster's and the queue's REST schemas."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class NodeOut(BaseModel):
    node_id: str
    alive: bool
    address: str | None = None
    resources: dict[str, float]


class QueueEntry(BaseModel):
    study_id: str
    name: str
    status: str
    priority: int
    running: int
    pending: int
    position: int


class ClusterOut(BaseModel):
    nodes: list[NodeOut]
    resources: dict[str, dict[str, float]]  # total, available
    queue: list[QueueEntry]
    updated_at: datetime | None  # when the runner last recorded the cluster (None: never)
