"""Warnings before a study runs: whether its spec can produce a resolved verdict at all (pure, from
the resolved spec as the store keeps it). `POST /studies` and `POST /suites` answer them in
`warnings`, `rootfree submit` prints them.

A verdict needs seed runs of two or more optimizers, and enough of them: fewer than
`MIN_UNPAIRED` unpaired (`MIN_PAIRED` paired) runs per optimizer leave the t test too little power
to resolve any but a huge difference once Holm's adjustment divides alpha among the pairs (the
same for `protocol.repeats`, whose search outcomes are compared unpaired); each
warning says the power at a true difference of two standard deviations (of a run, or of the
per-seed difference when paired) and the minimum."""

from __future__ import annotations

import math
from typing import Any

from scipy import special

from service.domain.spec import ProtocolSpec, ResolvedSpec
from service.results.verdicts import ALPHA, MIN_PAIRED, MIN_UNPAIRED

EFFECT_SD = 2.0


def power_at(n: int, effect_sd: float, paired: bool, family: int, alpha: float = ALPHA) -> float:
    """The verdict test's power with n runs per optimizer against a true difference of `effect_sd`
    standard deviations, at Holm's strictest level alpha / family (noncentral t, n - 1 df)."""
    if n < 2:
        return 0.0
    sd_of_diff = 1.0 if paired else math.sqrt(2.0)  # paired: in units of the differences' sd
    ncp = effect_sd / (sd_of_diff / math.sqrt(n))
    crit = special.stdtrit(n - 1, 1 - alpha / family / 2)
    return float(1 - special.nctdtr(n - 1, ncp, crit) + special.nctdtr(n - 1, ncp, -crit))


def spec_warnings(spec: ResolvedSpec | dict[str, Any], prefix: str = "") -> list[str]:
    """What keeps this spec from a resolved verdict, each naming the field (`prefix` before it: a
    suite's fields are its own); [] when it can resolve. `spec`: a study's, or a suite's as stored
    (a dict: both carry the optimizers and the protocol, all that is read)."""
    if isinstance(spec, ResolvedSpec):
        optimizers, protocol = spec.optimizers, spec.protocol
    else:
        optimizers, protocol = spec.get("optimizers") or [], ProtocolSpec.model_validate(spec.get("protocol") or {})
    if len(optimizers) < 2:
        return []
    seeds, paired = protocol.seeds, protocol.paired
    minimum = MIN_PAIRED if paired else MIN_UNPAIRED
    family = len(optimizers) * (len(optimizers) - 1) // 2
    out = []
    if seeds == 0:
        out.append(f"{prefix}protocol.seeds is 0: without seed runs no verdict between the {len(optimizers)} "
                   f"optimizers is possible; set protocol.seeds to at least {MIN_UNPAIRED} "
                   f"({MIN_PAIRED} with protocol.paired: true)")
    elif seeds < minimum:
        kind = "paired" if paired else "unpaired"
        out.append(f"{prefix}protocol.seeds is {seeds}: {kind} seed runs this few can hardly resolve a verdict "
                   f"(chance {power_at(seeds, EFFECT_SD, paired, family):.0%} to resolve a true difference of "
                   f"{EFFECT_SD:g} standard deviations, after Holm's adjustment over {family} pair"
                   f"{'s' if family > 1 else ''}); the minimum is {minimum}"
                   + ("" if paired else f" (or {MIN_PAIRED} with protocol.paired: true, which removes the "
                                        "seed-to-seed spread both optimizers share)"))
    repeats = protocol.repeats
    if 2 <= repeats < MIN_UNPAIRED:
        out.append(f"{prefix}protocol.repeats is {repeats}: {repeats} search outcomes per optimizer can hardly resolve "
                   f"a search-level verdict (chance {power_at(repeats, EFFECT_SD, False, family):.0%} at a true "
                   f"difference of {EFFECT_SD:g} standard deviations); the minimum is {MIN_UNPAIRED} (the "
                   "seed-level verdicts are unaffected)")
    return out
