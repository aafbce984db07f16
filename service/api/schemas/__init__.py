"""Pydantic schemas of the REST API (separate from the ORM models), one module per resource:
`text` (the plain-text check every client body passes), `studies`, `suites`, `cluster`, `trials`
(the external trials' bodies). Every name is importable from here, as it was from the single
module before."""

from service.api.schemas.cluster import ClusterOut, NodeOut, QueueEntry
from service.api.schemas.studies import (
    BestConfig,
    Export,
    OptimizerSummary,
    QueuePlace,
    StageCounts,
    StudyList,
    StudyOut,
    StudySpec,
    TrialOut,
)
from service.api.schemas.suites import SuiteOut, SuiteSpec, SuiteStudy, SuiteWorkload
from service.api.schemas.text import PlainText, check_early_stopping, first_error, reject_control_characters
from service.api.schemas.trials import (
    ClaimOut,
    CompleteIn,
    FailIn,
    FinishOut,
    HeartbeatIn,
    HeartbeatOut,
    ReportIn,
    ReportOut,
)
from service.domain.spec import EarlyStopping, ProtocolSpec, ResolvedSpec, Resources, SpecFields

__all__ = [
    "BestConfig", "ClaimOut", "ClusterOut", "CompleteIn", "EarlyStopping", "Export", "FailIn", "FinishOut",
    "HeartbeatIn", "HeartbeatOut", "NodeOut", "OptimizerSummary", "PlainText", "ProtocolSpec", "QueueEntry",
    "QueuePlace", "ReportIn", "ReportOut", "ResolvedSpec", "Resources", "SpecFields", "StageCounts",
    "StudyList", "StudyOut", "StudySpec", "SuiteOut", "SuiteSpec", "SuiteStudy", "SuiteWorkload", "TrialOut",
    "check_early_stopping", "first_error", "reject_control_characters",
]
