"""The optimizer registry: one vocabulary of hyperparameter names for every optimizer.

``build(name, params, **hyperparameters)`` accepts the keyword names of ARCHITECTURE.md's table
for every optimizer, so a search space written for one reads the same for all: ``momentum`` is
AdamW's beta1, ``beta2`` is AdamW's beta2 and RMSProp's EMA weight (torch's ``alpha = 1 - beta2``,
as the paper writes RMSProp), ``damping`` is AdamW's/RMSProp's ``eps`` and Shampoo's
``matrix_eps``, ``update_every`` is Shampoo's ``preconditioning_compute_steps``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from .ifshampoo import IFShampoo
from .rfrmsprop import RFRMSProp
from .rfshampoo import RFShampoo


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    description: str
    hyperparameters: tuple[str, ...]
    factory: Callable[..., torch.optim.Optimizer]


def _sgd(params, lr=0.1, momentum=0.9, weight_decay=0.0, nesterov=False):
    return torch.optim.SGD(
        params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
    )


def _adamw(params, lr=1e-3, momentum=0.9, beta2=0.999, damping=1e-8, weight_decay=0.01):
    return torch.optim.AdamW(
        params, lr=lr, betas=(momentum, beta2), eps=damping, weight_decay=weight_decay,
        foreach=True,
    )


def _rmsprop(params, lr=1e-3, beta2=0.01, momentum=0.0, damping=1e-8, weight_decay=0.0):
    if not 0.0 < beta2 <= 1.0:
        raise ValueError(f"Invalid beta2 value: {beta2!r} (beta2 must be in (0, 1])")
    return torch.optim.RMSprop(
        params, lr=lr, alpha=1.0 - beta2, eps=damping, momentum=momentum,
        weight_decay=weight_decay, foreach=True,
    )


def _shampoo(params, lr=1e-3, momentum=0.9, weight_decay=0.0, damping=1e-6, update_every=1):
    from pytorch_optimizer import Shampoo  # imported lazily: only this baseline needs it

    return Shampoo(
        params, lr=lr, momentum=momentum, weight_decay=weight_decay, matrix_eps=damping,
        preconditioning_compute_steps=update_every,
    )


_COMMON = ("lr", "beta2", "momentum", "damping", "weight_decay", "gamma", "batch_size", "init")
_REGISTRY: dict[str, OptimizerSpec] = {
    spec.name: spec
    for spec in (
        OptimizerSpec("sgd", "SGD with heavy-ball momentum (torch.optim.SGD)",
                      ("lr", "momentum", "weight_decay", "nesterov"), _sgd),
        OptimizerSpec("adamw", "AdamW (torch.optim.AdamW, foreach)",
                      ("lr", "momentum", "beta2", "damping", "weight_decay"), _adamw),
        OptimizerSpec("rmsprop", "RMSProp with the square root (torch.optim.RMSprop)",
                      ("lr", "beta2", "momentum", "damping", "weight_decay"), _rmsprop),
        OptimizerSpec("shampoo", "root-based Shampoo (pytorch-optimizer)",
                      ("lr", "momentum", "weight_decay", "damping", "update_every"), _shampoo),
        OptimizerSpec("rfrmsprop", "square-root-free RMSProp (paper Fig. 6)", _COMMON, RFRMSProp),
        OptimizerSpec("rfshampoo", "root-free Shampoo with inverses (paper Fig. 5 middle)",
                      _COMMON + ("update_every", "max_factor_dim"), RFShampoo),
        OptimizerSpec("ifshampoo", "inverse- and root-free Shampoo (paper Fig. 5 right, Fig. 7)",
                      _COMMON + ("riemannian_momentum", "update_every", "max_factor_dim",
                                 "factor_dtype"), IFShampoo),
    )
}


def names() -> list[str]:
    """Names accepted by :func:`build`."""
    return list(_REGISTRY)


def spec(name: str) -> OptimizerSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"Unknown optimizer {name!r}; known: {', '.join(_REGISTRY)}") from None


def hyperparameters(name: str) -> tuple[str, ...]:
    """The keyword names optimizer `name` accepts."""
    return spec(name).hyperparameters


def build(name: str, params: Iterable, **hyperparameters) -> torch.optim.Optimizer:
    """Constructs optimizer `name` over `params` (e.g. ``model.parameters()``)."""
    s = spec(name)
    unknown = sorted(set(hyperparameters) - set(s.hyperparameters))
    if unknown:
        raise ValueError(
            f"Optimizer {name!r} does not accept {', '.join(unknown)}; "
            f"it accepts: {', '.join(s.hyperparameters)}"
        )
    return s.factory(params, **hyperparameters)
