"""The cost of drawing a study's report (issue 19: the first `GET /studies/{id}/report` took 11-16 s
on a 2-core machine against a 2 s target, constant in the number of trials: the figures).

    python bench/report_render.py [--sizes 100 1000] [--epochs 5] [--repeat 3]

For each size: builds a completed study of N trials in a temporary SQLite store (the store code of
bench/store_scale.py), then, in a fresh Python process each time (cold: nothing imported, nothing
drawn yet, as the API's first request after a start): the import of the report code (matplotlib
included; the API pays it once at start), the study's analysis, the first report (`study_results` +
`render_report`, the analysis given, as `/report` after `/analysis`), then the same report again in
that process (warm: the median of 3); wall and CPU seconds. The machine's speed differs from run
to run (a shared machine), so each wall time is also given as a ratio to a yardstick measured in
the same process: a trivial matplotlib figure (one line, one axes) saved as SVG, the median of 15.
Medians over `--repeat` processes. Warnings emitted while drawing are counted (e.g. matplotlib's
"No artists with labels found to put in legend").

Run it against another tree with PYTHONPATH=/that/tree (the service code comes from there; this
script and bench/store_scale.py from here).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(url: str, sid: str) -> dict:
    """One cold process: the timings of the report of study `sid`."""
    import warnings

    t = time.perf_counter()
    import matplotlib  # noqa: F401

    from service.results.report import render_report
    from service.results.study_results import study_results
    from service.results.summary import study_analysis
    from service.store.study_store import StudyStore

    out = {"import": time.perf_counter() - t}
    store = StudyStore(url)
    study = store.get_study(sid)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = time.perf_counter()
        analysis = study_analysis(store, study)
        out["analysis"] = time.perf_counter() - t
        t, c = time.perf_counter(), time.process_time()
        page = render_report([study_results(store, study, analysis=analysis)])
        out["first"], out["first cpu"] = time.perf_counter() - t, time.process_time() - c
        warm = []
        for _ in range(3):
            t, c = time.perf_counter(), time.process_time()
            render_report([study_results(store, study, analysis=analysis)])
            warm.append((time.perf_counter() - t, time.process_time() - c))
        out["warm"], out["warm cpu"] = (statistics.median(w) for w in zip(*warm, strict=True))
    out["warnings"] = len(caught)
    out["figures"] = page.count("<figure>")
    out["kB"] = len(page.encode()) / 1000
    out["yardstick"] = statistics.median(yardstick() for _ in range(15))
    store.engine.dispose()
    return out


def yardstick() -> float:
    """A trivial matplotlib figure saved as SVG: the machine's speed at drawing, now."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = time.perf_counter()
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1, 2], [1, 0, 2])
    fig.savefig(io.StringIO(), format="svg")
    plt.close(fig)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3, help="cold processes per size (medians)")
    ap.add_argument("--child", nargs=2, metavar=("URL", "STUDY"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    sys.path.insert(0, str(ROOT / "bench"))
    from store_scale import build

    rows = {}
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/report.db"
            sid = build(url, n, args.epochs)
            runs = []
            for _ in range(args.repeat):
                r = subprocess.run([sys.executable, __file__, "--child", url, sid], capture_output=True, text=True,
                                   env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT))},
                                   check=True)
                runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
            rows[n] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"built and measured n={n}", file=sys.stderr, flush=True)
    print(f"\nreport timings, seconds (median of {args.repeat} fresh processes); "
          "x = multiples of the yardstick (one trivial figure saved as SVG, same process)")
    print(f"{'n':>6}{'import':>8}{'analysis':>10}{'first':>7}{'warm':>7}{'first cpu':>11}{'warm cpu':>10}"
          f"{'yardstick':>11}{'first x':>9}{'warm x':>8}{'figures':>9}{'kB':>7}{'warnings':>10}")
    for n, r in rows.items():
        print(f"{n:>6}{r['import']:8.2f}{r['analysis']:10.2f}{r['first']:7.2f}{r['warm']:7.2f}"
              f"{r['first cpu']:11.2f}{r['warm cpu']:10.2f}{r['yardstick']:11.4f}"
              f"{r['first'] / r['yardstick']:9.0f}{r['warm'] / r['yardstick']:8.0f}"
              f"{r['figures']:9.0f}{r['kB']:7.0f}{r['warnings']:10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
