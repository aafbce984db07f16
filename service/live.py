"""Following a study until it ends: `rootfree watch`'s progress (a live table on a terminal, a
plain block per change otherwise) and `rootfree logs`'s log stream."""

from __future__ import annotations

import sys
import time

import httpx

from service.cli_http import AUTH, check, check_text
from service.render import console, plain_progress, render
from service.statuses import TERMINAL


def watch(url: str, study_id: str, interval: float = 2.0, stream=sys.stdout) -> dict:
    """Polls the study until it ends: a live table on a terminal, a plain block per change otherwise."""
    out = console(stream)
    if out.is_terminal:
        from rich.live import Live

        with Live(console=out, refresh_per_second=4, transient=False) as live:
            while True:
                study = check(httpx.get(f"{url}/studies/{study_id}", headers=AUTH, timeout=30))
                live.update(render(study))
                if study["status"] in TERMINAL:
                    return study
                time.sleep(interval)
    last = ""
    while True:
        study = check(httpx.get(f"{url}/studies/{study_id}", headers=AUTH, timeout=30))
        text = plain_progress(study)
        if text != last:
            print(text + "\n", file=stream, flush=True)
            last = text
        if study["status"] in TERMINAL:
            return study
        time.sleep(interval)


def follow_logs(url: str, study_id: str, lines: int = 50, follow: bool = False,
                interval: float = 1.0, stream=sys.stdout) -> int:
    """Prints the last `lines` lines of a study's log stream; with `follow`, keeps printing new
    lines until the study has ended (exit code 0 when it completed)."""
    offset, ended = None, None
    while True:
        # The study's status first: a study seen ended has written its last line before we read.
        status = check(httpx.get(f"{url}/studies/{study_id}", headers=AUTH, timeout=30))["status"]
        # First the last `lines` lines, then only what was written after them (by byte offset).
        params = {"tail": min(max(lines, 1), 100_000)} if offset is None else {"offset": offset}
        r = httpx.get(f"{url}/studies/{study_id}/logs", headers=AUTH, params=params, timeout=30)
        text = check_text(r)
        current = text.splitlines()
        if offset is None:
            current = current[-lines:] if lines > 0 else []
        offset = int(r.headers.get("X-Log-Offset", 0))
        for line in current:
            print(line, file=stream, flush=True)
        if not follow:
            return 0
        if ended is not None:  # one more read after the end, for a runner still writing
            return 0 if ended == "completed" else 1
        if status in TERMINAL:
            ended = status
        time.sleep(interval)
