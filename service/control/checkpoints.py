"""Which checkpoints a trial keeps (ROOTFREE_KEEP_CHECKPOINTS): the runner prunes them itself
instead of Tune's `num_to_keep` (service/control/tune_actors.py says why)."""

from __future__ import annotations

import shutil
from pathlib import Path

from service.store.files import trial_dirs


def prune_older(keep: str, path: str) -> None:
    """A trial's new checkpoint makes its older ones in this Tune run useless (unless `all`):
    removed with one directory listing."""
    if keep == "all" or "://" in path:
        return
    new = Path(path)
    for old in new.parent.glob("checkpoint_*"):
        if old.name != new.name:
            shutil.rmtree(old, ignore_errors=True)


def prune_finished(keep: str, storage_path: str, t) -> None:
    """A finished trial keeps its final checkpoint only (`final`), all of them (`all`) or none
    (`none`); checkpoints of earlier, interrupted runs of it go."""
    if keep == "all":
        return
    final = Path(t.checkpoint).resolve() if t.checkpoint and "://" not in t.checkpoint else None
    for d in trial_dirs(storage_path, t.study_id, t.optimizer, t.stage, t.index):
        for ckpt in d.glob("checkpoint_*"):
            if keep == "none" or ckpt.resolve() != final:
                shutil.rmtree(ckpt, ignore_errors=True)
