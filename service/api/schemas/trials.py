"""The bodies of the external trials' endpoints (service/api/trials.py): what a claimant sends
and what it gets back. Clients in any language depend on these shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from service.api.schemas.text import PlainText


class _Body(PlainText):
    model_config = ConfigDict(extra="forbid")


class ClaimOut(BaseModel):
    trial_id: int
    optimizer: str
    stage: int
    seed: int
    budget: dict[str, Any]
    hyperparameters: dict[str, Any]
    workload: str
    schedule: Literal["workload", "constant"]
    metric: str
    mode: Literal["min", "max"]
    claim_token: str
    lease_expires_at: datetime


class ReportIn(_Body):
    claim_token: str = Field(min_length=1, max_length=64)
    epoch: StrictInt = Field(ge=0, le=1_000_000)
    metrics: dict[str, Any] = Field(max_length=100)


class ReportOut(BaseModel):
    should_stop: bool
    reason: str | None = None


class CompleteIn(_Body):
    claim_token: str = Field(min_length=1, max_length=64)
    status: Literal["completed", "diverged", "stopped"]
    metrics: dict[str, Any] | None = Field(default=None, max_length=100)


class FailIn(PlainText):
    model_config = ConfigDict(extra="forbid")
    # a stderr tail or a traceback (tqdm's carriage returns, ANSI colours): sanitised and capped,
    # never refused, so a failing trial is always recorded as failed (issue 30)
    free_text: ClassVar[tuple[str, ...]] = ("reason",)
    claim_token: str = Field(min_length=1, max_length=64)
    reason: str = Field(default="the client failed the trial")

    @field_validator("reason")
    @classmethod
    def _some_reason(cls, v: str) -> str:
        return v or "the client failed the trial"


class HeartbeatIn(_Body):
    claim_token: str = Field(min_length=1, max_length=64)


class HeartbeatOut(BaseModel):
    trial_id: int
    status: str
    lease_expires_at: datetime | None  # None: the trial has ended under this claim


class FinishOut(BaseModel):
    trial_id: int
    status: str
