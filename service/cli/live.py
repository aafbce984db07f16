"""Following a study until it ends: `rootfree watch`'s progress (a live table on a terminal, a
plain block per change otherwise) and `rootfree logs`'s log stream."""

from __future__ import annotations

import sys
import time

from service.cli.render import console, plain_progress, render
from service.client import Study
from service.domain.statuses import TERMINAL


def watch(study: Study, interval: float = 2.0, stream=sys.stdout) -> dict:
    """Polls the study until it ends: a live table on a terminal, a plain block per change otherwise."""
    out = console(stream)
    if out.is_terminal:
        from rich.live import Live

        with Live(console=out, refresh_per_second=4, transient=False) as live:
            while True:
                data = study.refresh()
                live.update(render(data))
                if data["status"] in TERMINAL:
                    return data
                time.sleep(interval)
    last = ""
    while True:
        data = study.refresh()
        text = plain_progress(data)
        if text != last:
            print(text + "\n", file=stream, flush=True)
            last = text
        if data["status"] in TERMINAL:
            return data
        time.sleep(interval)


def follow_logs(study: Study, lines: int = 50, follow: bool = False, interval: float = 1.0,
                stream=sys.stdout) -> int:
    """Prints the last `lines` lines of a study's log stream; with `follow`, keeps printing new
    lines until the study has ended (exit code 0 when it completed)."""
    offset, ended = None, None
    while True:
        # The study's status first: a study seen ended has written its last line before we read.
        status = study.refresh()["status"]
        # First the last `lines` lines, then only what was written after them (by byte offset).
        if offset is None:
            text, offset = study.logs(tail=min(max(lines, 1), 100_000))
            current = text.splitlines()[-lines:] if lines > 0 else []
        else:
            text, offset = study.logs(offset=offset)
            current = text.splitlines()
        for line in current:
            print(line, file=stream, flush=True)
        if not follow:
            return 0
        if ended is not None:  # one more read after the end, for a runner still writing
            return 0 if ended == "completed" else 1
        if status in TERMINAL:
            ended = status
        time.sleep(interval)
