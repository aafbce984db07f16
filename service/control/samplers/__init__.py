"""Samplers: how a stage's configurations are chosen, behind one interface (`base.Sampler`):
random, halton and sobol fix them when the stage opens (`fixed`, `sobol`), TPE asks as slots free up (`tpe`)."""

from __future__ import annotations

from service.control.samplers.base import Sampler
from service.control.samplers.fixed import FixedSampler
from service.control.samplers.sobol import SobolSampler
from service.control.samplers.tpe import TpeSampler


class Samplers:
    """One sampler per `protocol.method` for a runner (or the API's external claims): TPE keeps
    its per-study state here, rebuilt from the store on demand."""

    def __init__(self, store):
        self._by_method: dict[str, Sampler] = {
            "random": FixedSampler("random"), "halton": FixedSampler("halton"), "tpe": TpeSampler(store),
            "sobol": SobolSampler()}

    def __getitem__(self, method: str) -> Sampler:
        return self._by_method[method]

    def forget(self, study_id: str) -> None:
        for sampler in self._by_method.values():
            sampler.forget(study_id)


__all__ = ["FixedSampler", "Sampler", "Samplers", "SobolSampler", "TpeSampler"]
