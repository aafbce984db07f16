"""A study's files under the storage path: its Tune trial directories (checkpoints, results) in
every Tune run, and its log. The runner prunes checkpoints; DELETE removes everything."""

from __future__ import annotations

import shutil
from pathlib import Path

from .study_log import remove_logs


def study_dirs(storage_path: str, study_id: str, suffix: str = "") -> list[Path]:
    """The study's (or one trial's, with `suffix`) directories in every Tune run under the
    storage path (trial directories are named ``<study id>-<optimizer>-s<k>-i<n>``)."""
    if "://" in storage_path:
        return []  # remote storage: the bucket's own lifecycle rules apply
    root = Path(storage_path).resolve()
    return sorted(d for d in root.glob(f"*/{study_id}-{suffix}*") if d.is_dir() and not d.is_symlink())


def remove_study_files(storage_path: str, study_id: str) -> int:
    """Removes every trial directory and the log of a study; returns the directories removed."""
    dirs = study_dirs(storage_path, study_id)
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    remove_logs(storage_path, study_id)
    return len(dirs)
