"""A suite under the algoperf ruleset in AlgoPerf's log layout: a zip of

    suite.json                                    the suite: protocol_version, ruleset, targets
    <optimizer>/study_<j>/<workload>/trial_<i>/eval_measurements.csv
    <optimizer>/study_<j>/<workload>/trial_<i>/meta_data.json

`eval_measurements.csv` has one row per evaluation with AlgoPerf's columns: global_step, score
(the accumulated training time, as AlgoPerf writes it), total_duration, accumulated_submission_time,
accumulated_eval_time, accumulated_logging_time, preemption_count, validation/<metric>, epoch.
Studies and trials are numbered from 1 (trial i: the i-th of the study's draws in sequence order);
`<workload>` is the workload's name, with `_<k>` (its entry number) when the suite has it twice.
`meta_data.json` holds the trial's hyperparameters and where it came from.
"""

from __future__ import annotations

import csv
import io
import json
import math
import zipfile
from collections import Counter
from collections.abc import Sequence
from typing import Any

from service.domain.ruleset import protocol_version
from service.domain.spec import as_spec
from service.results import algoperf
from service.results.algoperf_report import SCORED

COLUMNS = ("global_step", "score", "total_duration", "accumulated_submission_time", "accumulated_eval_time",
           "accumulated_logging_time", "preemption_count")


def workload_dirs(workloads: Sequence[dict]) -> list[str]:
    counts = Counter(w["name"] for w in workloads)
    return [w["name"] if counts[w["name"]] == 1 else f"{w['name']}_{i + 1}" for i, w in enumerate(workloads)]


def _num(v: Any) -> Any:
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


def eval_csv(evals: Sequence[dict], metric: str) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow([*COLUMNS, f"validation/{metric}", "epoch"])
    for e in evals:
        train, ev = float(e.get("train_time_s") or 0.0), float(e.get("eval_time_s") or 0.0)
        w.writerow([_num(e.get("global_step")), train, train + ev, train, ev, 0.0, 0, _num(e.get(metric)),
                    _num(e.get("epoch"))])
    return out.getvalue()


def algoperf_zip(suite_id: str, suite_spec: dict, studies: Sequence[dict]) -> bytes:
    """`studies` as for the report: in workload order, {"id", "spec", "trials"} (trials with
    histories; a deleted study has spec None and contributes nothing; spec typed or as stored).
    `suite_spec`: the suite's spec as stored (a dict)."""
    stamp = suite_spec.get("protocol_version") or protocol_version(suite_spec["ruleset"])
    dirs = workload_dirs(suite_spec["workloads"])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("suite.json", json.dumps({
            "suite_id": suite_id, "name": suite_spec["name"], "protocol_version": stamp,
            "ruleset": suite_spec["ruleset"], "optimizers": suite_spec["optimizers"],
            "baseline": suite_spec.get("baseline"),
            "workloads": [{"dir": d, "name": w["name"], "metric": w.get("metric"), "mode": w.get("mode"),
                           "target": w.get("target"), "budget": w.get("budget"),
                           "max_runtime_s": w.get("max_runtime_s")}
                          for d, w in zip(dirs, suite_spec["workloads"], strict=True)]}, indent=2))
        r = suite_spec["ruleset"]
        for d, w, st in zip(dirs, suite_spec["workloads"], studies, strict=True):
            if st["spec"] is None:
                continue
            spec = as_spec(st["spec"])
            for o in suite_spec["optimizers"]:
                mine = [t for t in st["trials"] if t["optimizer"] == o and t["stage"] == 1]
                groups = algoperf.by_study(mine, r["studies"], r["trials_per_study"], spec.protocol.seed, o)
                for j, group in enumerate(groups, start=1):
                    for i, t in enumerate((t for t in group if t["status"] in SCORED), start=1):
                        base = f"{o}/study_{j}/{d}/trial_{i}"
                        evals = algoperf.evaluations(t.get("history") or [], spec.metric)
                        z.writestr(f"{base}/eval_measurements.csv", eval_csv(evals, spec.metric))
                        z.writestr(f"{base}/meta_data.json", json.dumps({
                            "hyperparameters": t["config"], "optimizer": o, "study": j, "trial": i,
                            "index": t["index"], "trial_id": t["id"], "status": t["status"],
                            "seed": t.get("seed"), "workload": w["name"], "metric": f"validation/{spec.metric}",
                            "mode": spec.mode, "target": w.get("target"), "budget": spec.budget,
                            "study_id": st["id"], "suite_id": suite_id, "protocol_version": stamp}, indent=2))
    return buf.getvalue()
