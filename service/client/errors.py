"""What the client raises: an error answer of the API (`ClientError`, with its status and detail),
and a study that ended under a claimant (`StudyEnded`)."""

from __future__ import annotations

from typing import Any


class ClientError(RuntimeError):
    """The API answered an error: `status` (HTTP) and `detail` (its message)."""

    def __init__(self, status: int, detail: str, body: Any = None):
        super().__init__(f"error {status}: {detail}")
        self.status, self.detail, self.body = status, detail, body


class StudyEnded(ClientError):
    """A claim on a study that has ended (410): nothing is left to train."""
