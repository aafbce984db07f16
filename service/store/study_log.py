"""The study's log stream: one file per study, readable over REST and in the Ray dashboard.

Every event of a study (its start, each stage and its search space, every trial report and how
each trial ended, the end of the study) is one line of `<storage_path>/logs/study-<id>.log`. The
file lives next to the Tune checkpoints, so it survives a controller restart (a resumed study
appends to it) and, on a cluster, sits on the shared volume. The runner links it into its Ray
node's log directory as `rootfree/study-<id>.log`, so the Ray dashboard's Logs view (and `ray
logs`) shows each study's stream next to the trial actors' own logs.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

LOG_SUBDIR = "rootfree"  # the folder under the Ray node's log directory

_console = logging.getLogger("rootfree.study")


def log_path(storage_path: str, study_id: str) -> Path:
    """Where a study's log file lives (a local path; a URI storage path keeps logs in ./runs)."""
    base = Path(storage_path) if "://" not in storage_path else Path("runs")
    return (base / "logs" / f"study-{study_id}.log").resolve()


def ray_log_name(study_id: str) -> str:
    """The study log's file name relative to a Ray node's log directory."""
    return f"{LOG_SUBDIR}/study-{study_id}.log"


def ray_logs_dir() -> Path | None:
    """This process's Ray node log directory, or None when Ray is not connected.

    Ray has no public accessor for it; the private one is guarded so a Ray upgrade that moves it
    only loses the dashboard link, never a study."""
    try:
        import ray

        node = ray._private.worker._global_node  # noqa: SLF001
        return Path(node.get_logs_dir_path()) if node is not None else None
    except Exception:  # noqa: BLE001
        return None


def _open(path: Path, within: Path | None):
    """The log file opened for reading, or None: missing, a symlink (never followed), or a path
    outside `within` (the storage path's log folder)."""
    if within is not None and not path.resolve().is_relative_to(within.resolve()):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:  # a symlink (ELOOP) or no permission: nothing to show
        return None
    return os.fdopen(fd, "rb")


def _last_bytes(f, end: int, lines: int, block: int = 64 * 1024) -> bytes:
    """Enough of the file before `end` to hold its last `lines` lines, read backwards in blocks:
    each block is read and counted once, and joined once (linear in what is read)."""
    blocks: list[bytes] = []
    pos, newlines = end, 0
    while pos > 0 and newlines <= lines:
        step = min(block, pos)
        pos -= step
        f.seek(pos)
        chunk = f.read(step)
        blocks.append(chunk)
        newlines += chunk.count(b"\n")
    blocks.reverse()
    return b"".join(blocks)


def tail(path: Path, lines: int, within: Path | None = None) -> list[str]:
    """The last `lines` lines of a log file ([] when it does not exist yet), read backwards from
    its end in blocks (a long study's log is never read whole). A symlink is never followed, nor
    a path outside `within` (the storage path's log folder)."""
    f = _open(path, within)
    if f is None:
        return []
    with f:
        data = _last_bytes(f, f.seek(0, os.SEEK_END), lines)
    text = data.decode("utf-8", errors="replace").splitlines()
    return text[-lines:] if lines else []


def tail_with_offset(path: Path, lines: int, within: Path | None = None) -> tuple[list[str], int]:
    """`tail`'s complete lines, and the byte offset where they end (for `read_from`): a line
    still being written is left for the next read."""
    f = _open(path, within)
    if f is None:
        return [], 0
    with f:
        end = f.seek(0, os.SEEK_END)
        data = _last_bytes(f, end, lines)
    cut = data.rfind(b"\n") + 1
    end -= len(data) - cut
    text = data[:cut].decode("utf-8", errors="replace").splitlines()
    return (text[-lines:] if lines else []), end


READ_LIMIT = 4 * 2**20  # at most this much per `read_from` call (the caller asks again from where it ended)


def read_from(path: Path, offset: int, within: Path | None = None,
              limit: int = READ_LIMIT) -> tuple[str, int]:
    """The complete lines written from byte `offset` on (at most `limit` bytes), and the offset
    where they end. An offset past the end means the file rotated: read the new file from 0."""
    f = _open(path, within)
    if f is None:
        return "", 0
    with f:
        size = f.seek(0, os.SEEK_END)
        if offset > size:
            offset = 0
        f.seek(offset)
        data = f.read(min(size - offset, limit))
    cut = data.rfind(b"\n") + 1
    if cut == 0 and len(data) == limit:  # one line longer than the limit: pass it on in parts
        cut = len(data)
    return data[:cut].decode("utf-8", errors="replace"), offset + cut


class StudyLog:
    """Appends timestamped lines to one study's log file; thread-safe (Tune callbacks and the
    runner loop both write). Study-level lines, and warnings, also go to the runner's console log;
    per-trial lines stay in the file (`echo=False`), or a console would scroll a line per epoch."""

    MAX_BYTES = 20 * 2**20  # then the file rotates: study-<id>.log.1, .2 (the oldest goes)
    BACKUPS = 2

    def __init__(self, storage_path: str, study_id: str, logs_dir: Path | None = None,
                 max_bytes: int | None = None):
        self.study_id = study_id
        self.max_bytes = max_bytes or self.MAX_BYTES
        self.path = log_path(storage_path, study_id)
        self._lock = threading.Lock()
        self.ray_name: str | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed in close()
        except OSError as e:  # an unwritable storage path costs the log file, never the study
            _console.warning("study %s: cannot write its log file %s: %s", study_id, self.path, e)
            self._file = None
            return
        if logs_dir is not None:
            self.ray_name = self._link_into(logs_dir)

    def _link_into(self, logs_dir: Path) -> str | None:
        # A symlink: Ray's log agent follows links that sit inside its log directory.
        link = logs_dir / ray_log_name(self.study_id)
        try:
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.exists():
                link.unlink()
            os.symlink(self.path, link)
            return ray_log_name(self.study_id)
        except OSError as e:
            _console.warning("could not link the study log into %s: %s", logs_dir, e)
            return None

    def event(self, message: str, *args, level: int = logging.INFO, echo: bool = True) -> None:
        text = message % args if args else message
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        with self._lock:
            if self._file is not None and not self._file.closed:
                try:
                    self._file.write(f"{stamp} {logging.getLevelName(level)} {text}\n")
                    if self._file.tell() > self.max_bytes:
                        self._rotate()
                except OSError as e:  # a full disk costs log lines, never the study
                    _console.warning("study %s: cannot write its log file %s: %s", self.study_id, self.path, e)
        if echo or level >= logging.WARNING:
            _console.log(level, "[%s] %s", self.study_id[:8], text)

    def _rotate(self) -> None:
        self._file.close()
        for i in range(self.BACKUPS, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            newer = self.path.with_name(f"{self.path.name}.{i - 1}") if i > 1 else self.path
            if newer.exists():
                os.replace(newer, older)
        self._file = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()


def remove_logs(storage_path: str, study_id: str) -> None:
    """A deleted study's log file and its rotated parts."""
    path = log_path(storage_path, study_id)
    for p in [path, *(path.with_name(f"{path.name}.{i}") for i in range(1, StudyLog.BACKUPS + 1))]:
        try:
            p.unlink(missing_ok=True)
        except OSError:
            pass
