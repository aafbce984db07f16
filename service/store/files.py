"""A study's files under the storage path: its Tune trial directories (checkpoints, results) in
every Tune run, and its log. The runner prunes checkpoints; DELETE removes everything."""

from __future__ import annotations

import shutil
from pathlib import Path

from service.store.study_log import remove_logs


def trial_dirname(study_id: str, optimizer: str, stage: int, index: int) -> str:
    """A trial's directory in every Tune run that ran it: ``<study id>-<optimizer>-s<k>-i<n>``
    (the whole study id, so a study's directories can be found and removed)."""
    return f"{study_id}-{optimizer}-s{stage}-i{index}"


def _dirs(storage_path: str, pattern: str) -> list[Path]:
    if "://" in storage_path:
        return []  # remote storage: the bucket's own lifecycle rules apply
    root = Path(storage_path).resolve()
    return sorted(d for d in root.glob(f"*/{pattern}") if d.is_dir() and not d.is_symlink())


def study_dirs(storage_path: str, study_id: str) -> list[Path]:
    """The study's trial directories in every Tune run under the storage path."""
    return _dirs(storage_path, f"{study_id}-*")


def trial_dirs(storage_path: str, study_id: str, optimizer: str, stage: int, index: int) -> list[Path]:
    """One trial's directories in every Tune run under the storage path."""
    return _dirs(storage_path, trial_dirname(study_id, optimizer, stage, index))


def remove_study_files(storage_path: str, study_id: str) -> int:
    """Removes every trial directory and the log of a study; returns the directories removed."""
    dirs = study_dirs(storage_path, study_id)
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    remove_logs(storage_path, study_id)
    return len(dirs)
