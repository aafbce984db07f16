"""Pruners: stop unpromising trials early (ASHA). One interface (`base.Pruner`), one factory."""

from __future__ import annotations

from service.control.pruners.asha import AshaPruner
from service.control.pruners.base import GO_ON, Decision, Pruner, Report
from service.control.pruners.late import LateStopPruner
from service.domain.spec import ResolvedSpec


def pruner_for(spec: ResolvedSpec, trials=None) -> Pruner | None:
    """The study's pruner (None: every trial trains its whole budget). `trials(study_id, history=...)`:
    the study's trials, with their histories when asked (the algoperf ruleset's late stops read them)."""
    return LateStopPruner.from_spec(spec, trials) or AshaPruner.from_spec(spec)


__all__ = ["GO_ON", "AshaPruner", "Decision", "LateStopPruner", "Pruner", "Report", "pruner_for"]
