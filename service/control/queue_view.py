"""The queue as people see it (`GET /cluster`, `rootfree queue`, a study's place in line),
read from the store in the scheduler's own order."""

from __future__ import annotations

from typing import Any

from service.control.scheduler import StudyState, queue_order
from service.control.stages import planned_trials
from service.domain.statuses import ACTIVE, FINISHED
from service.store.study_store import StudyStore


def queue(store: StudyStore) -> list[dict[str, Any]]:
    """Every queued or running study, in the order the fair-share policy serves them: study_id,
    name, status, priority, running, pending (trials not yet started), position (1-based)."""
    counts = store.active_counts()
    studies = store.studies_with_status(*ACTIVE)
    by_id = {s.id: s for s in studies}
    states = [StudyState(s.id, s.resolved.priority, s.created_at.timestamp(),
                         counts.get(s.id, {}).get("running", 0), s.resolved.max_concurrent_trials, {})
              for s in studies]
    out = []
    for position, st in enumerate(queue_order(states), start=1):
        study, c = by_id[st.study_id], counts.get(st.study_id, {})
        finished = sum(n for status, n in c.items() if status in FINISHED)
        out.append({"study_id": study.id, "name": study.name, "status": study.status, "owner": study.owner,
                    "priority": st.priority, "running": st.running,
                    "pending": max(0, planned_trials(study.resolved) - finished - st.running),
                    "position": position})
    return out


def place(entries: list[dict[str, Any]], study_id: str) -> dict[str, Any] | None:
    """Where one study stands in `entries` (see `queue`): running, pending, position, priority
    (None when it is not in the queue: it has ended, or it was submitted after the snapshot)."""
    for entry in entries:
        if entry["study_id"] == study_id:
            return {k: entry[k] for k in ("position", "running", "pending", "priority")}
    return None
