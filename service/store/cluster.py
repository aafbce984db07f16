"""The runner's record of the Ray cluster (nodes, resources), for controllers that do not run it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from service.store.engine import StoreBase, now
from service.store.models import ClusterRecord


class ClusterRepository(StoreBase):
    def record_cluster(self, **values: Any) -> None:
        """Stores what the runner sees of the Ray cluster (keys: nodes, total, available)."""
        with self.session() as s:
            for key, value in values.items():
                s.merge(ClusterRecord(key=key, value=value, updated_at=now()))
            s.commit()

    def cluster(self) -> dict[str, Any]:
        """The runner's last record of the cluster: {key: value, "updated_at": newest time}."""
        with self.session() as s:
            rows = list(s.scalars(select(ClusterRecord)))
        out: dict[str, Any] = {r.key: r.value for r in rows}
        if rows:
            out["updated_at"] = max(r.updated_at for r in rows)
        return out
