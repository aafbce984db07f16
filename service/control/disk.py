"""The disk guard: no trial starts while the storage path has less than ROOTFREE_MIN_FREE_MB free."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

log = logging.getLogger("rootfree.runner")


class DiskGuard:
    def __init__(self, storage_path: str, min_free_mb: float):
        self.storage_path, self.min_free_mb = storage_path, min_free_mb
        self.message: str | None = None  # what is short, while it is
        self._checked = 0.0

    def full(self, fresh: bool = False) -> bool:
        """Whether the storage path is short of space (looked at most once a second unless
        `fresh`: a decision that fails a study takes a fresh look)."""
        now = time.monotonic()
        if not fresh and now - self._checked < 1.0:
            return self.message is not None
        self._checked = now
        sp = self.storage_path
        message = None
        if "://" not in sp:
            path = Path(sp).resolve()
            probe = path if path.exists() else path.parent
            try:
                free = shutil.disk_usage(probe).free / 2**20
            except OSError:
                free = float("inf")
            if free < self.min_free_mb:
                message = (f"no space left on device under {path}: {free:.0f} MB free, trials need "
                           f"{self.min_free_mb} MB (ROOTFREE_MIN_FREE_MB)")
        if message and not self.message:
            log.error("%s; no trial starts until there is space", message)
        self.message = message
        return message is not None
