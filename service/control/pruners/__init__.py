"""Pruners: stop unpromising trials early (ASHA). One interface (`base.Pruner`), one factory."""

from __future__ import annotations

from service.control.pruners.asha import AshaPruner
from service.control.pruners.base import GO_ON, Decision, Pruner, Report
from service.spec import ResolvedSpec


def pruner_for(spec: ResolvedSpec) -> Pruner | None:
    """The study's pruner (None: every trial trains its whole budget)."""
    return AshaPruner.from_spec(spec)


__all__ = ["GO_ON", "AshaPruner", "Decision", "Pruner", "Report", "pruner_for"]
