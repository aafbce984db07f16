"""Rulesets: the rules a suite's results were produced under, and the version stamp they carry.

`{"kind": "algoperf", "version": "0.6", "studies": 3, "trials_per_study": 5}` is AlgoPerf's
external-tuning ruleset (v0.6: 3 studies of 5 trials; v0.5: 5 x 5; explicit numbers override):
each optimizer's `studies x trials_per_study` configurations are drawn quasi-randomly (scrambled
Sobol, seeded) from its one declared space and split at random into the studies; each trial trains
once (one search stage, no seed runs, no early stopping by ASHA, no TPE). Without a ruleset a study
follows rootfree's own protocol (staged search, seed runs).

Every study, suite, report and export carries `protocol_version`: {"ruleset", "version",
"rootfree"}, so results are compared only within one ruleset version.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ROOTFREE_PROTOCOL = "1"  # rootfree's own staged protocol; bump when its arithmetic changes
ALGOPERF_VERSIONS = {"0.5": (5, 5), "0.6": (3, 5)}  # version -> (studies, trials per study)


def rootfree_version() -> str:
    try:
        return importlib.metadata.version("rootfree")
    except importlib.metadata.PackageNotFoundError:
        return "0.1.0"


class RulesetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["algoperf"]
    version: Literal["0.5", "0.6"] = "0.6"
    studies: int | None = Field(default=None, ge=1, le=20)
    trials_per_study: int | None = Field(default=None, ge=1, le=100)
    # A trial still running past 4x the fastest recorded time to target of its workload stops
    # and counts as a miss (its time could only have been infinite after the 4x rule).
    stop_late: bool = True

    def resolved(self) -> dict[str, Any]:
        s, o = ALGOPERF_VERSIONS[self.version]
        return {"kind": self.kind, "version": self.version, "studies": self.studies or s,
                "trials_per_study": self.trials_per_study or o, "stop_late": self.stop_late}


def protocol_version(ruleset: dict | None) -> dict[str, str]:
    """The stamp for results produced under `ruleset` (None: rootfree's own protocol)."""
    if ruleset:
        return {"ruleset": ruleset["kind"], "version": ruleset["version"], "rootfree": rootfree_version()}
    return {"ruleset": "rootfree", "version": ROOTFREE_PROTOCOL, "rootfree": rootfree_version()}
