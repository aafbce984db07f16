"""`rootfree verdict FILE.csv [--mode min|max] [--paired] [--json]`: the verdicts for results got
anywhere (no server): `optimizer,seed,value` rows after a header line, through
`service.results.verdicts.compare_runs`. Paired: the runs are matched by seed (a seed some optimizer
lacks is left out of every pair, so each optimizer's i-th value has the same seed)."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

from service.api.limits import CONTROL, has_format_character
from service.results.verdicts import compare_runs

COLUMNS = ("optimizer", "seed", "value")


class CsvError(ValueError):
    """A file this command cannot read, said in plain words with the line."""


def read_runs(path: str, paired: bool) -> dict[str, list[float]]:
    """{optimizer: [value, ...]} in the file's order of optimizers (paired: ordered by the seeds
    every optimizer has)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise CsvError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise CsvError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8 CSV") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows or [c.strip().lower() for c in rows[0]] != list(COLUMNS):
        raise CsvError(f"{path}: the first line must be the header {','.join(COLUMNS)}")
    by_opt: dict[str, dict[str, float]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != 3:
            raise CsvError(f"{path} line {line}: expected 3 columns (optimizer,seed,value), got {len(row)}")
        opt, seed, value = (c.strip() for c in row)
        if not opt:
            raise CsvError(f"{path} line {line}: optimizer is empty")
        if CONTROL.search(opt) or has_format_character(opt):  # it is printed: a bidi override or an
            # escape sequence would show another name or drive the terminal
            raise CsvError(f"{path} line {line}: optimizer {opt.encode('unicode_escape').decode()!r} contains "
                           "control or Unicode format characters")
        try:
            v = float(value)
        except ValueError:
            raise CsvError(f"{path} line {line}: value {value!r} is not a number") from None
        if not math.isfinite(v):
            raise CsvError(f"{path} line {line}: value {value!r} is not finite")
        runs = by_opt.setdefault(opt, {})
        if seed in runs:
            raise CsvError(f"{path} line {line}: optimizer {opt!r} has seed {seed!r} twice")
        runs[seed] = v
    if len(by_opt) < 2:
        raise CsvError(f"{path}: a verdict needs at least two optimizers, found {len(by_opt)}")
    if not paired:
        return {o: list(r.values()) for o, r in by_opt.items()}
    common = set.intersection(*(set(r) for r in by_opt.values()))
    order = [s for s in next(iter(by_opt.values())) if s in common]
    if not order:
        raise CsvError(f"{path}: --paired matches runs by seed, and there is no seed that every optimizer has")
    return {o: [r[s] for s in order] for o, r in by_opt.items()}


def cmd_verdict(args) -> int:
    from service.cli.render import console, pairs_table

    try:
        runs = read_runs(args.file, args.paired)
    except CsvError as e:
        print(f"rootfree verdict: {e}", file=sys.stderr)
        return 2
    comps = compare_runs(runs, mode=args.mode, paired=args.paired)
    if args.json:
        print(json.dumps(comps, indent=2))
        return 0
    paired = " (paired by seed)" if args.paired else ""
    console().print(pairs_table(comps, f"verdicts{paired}, {'lower' if args.mode == 'min' else 'higher'} is better"))
    return 0


def add_command(sub) -> None:
    v = sub.add_parser("verdict", help="verdicts for results from anywhere: a CSV of optimizer,seed,value rows")
    v.add_argument("file", metavar="FILE.csv")
    v.add_argument("--mode", choices=["min", "max"], default="min", help="min: lower is better (default)")
    v.add_argument("--paired", action="store_true", help="the runs are matched by seed (paired t test)")
    v.add_argument("--json", action="store_true", help="print the comparisons as JSON")
    v.set_defaults(func=cmd_verdict)
