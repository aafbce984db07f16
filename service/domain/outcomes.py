"""What a claimant's write to the store came to (service/store/claims.py), as one `str` enum the
store returns and the external-trial use-cases branch on (a str enum: equal to its value, so logs and
older call sites read the same)."""

from __future__ import annotations

from enum import StrEnum


class ClaimOutcome(StrEnum):
    OK = "ok"  # written under the claim
    MISSING = "missing"  # no such trial in this study
    LOST = "lost"  # another claim holds the trial, or none does
    FINISHED = "finished"  # it ended under this claim before: a retry, nothing changes
    EXPIRED = "expired"  # the claim's lease passed
    CONDITION = "condition"  # the write's own condition failed (the callers say which below)
    EPOCH = "epoch"  # a report: an epoch lower than one already reported
    METRIC = "metric"  # a completion: the study's metric was never reported


# Outcomes after which the caller answers as it did the first time
ACCEPTED = frozenset({ClaimOutcome.OK, ClaimOutcome.FINISHED})
