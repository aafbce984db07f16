"""The optimizer registry: one vocabulary of hyperparameter names for every optimizer.

``build(name, params, **hyperparameters)`` accepts the keyword names of ARCHITECTURE.md's table
for every optimizer, so a search space written for one reads the same for all: ``momentum`` is
AdamW's beta1, ``beta2`` is AdamW's beta2 and RMSProp's EMA weight (torch's ``alpha = 1 - beta2``,
as the paper writes RMSProp), ``damping`` is AdamW's/RMSProp's ``eps``; Shampoo
(``optimizers.shampoo``) is written in RF-Shampoo's own vocabulary.

Torch is imported when an optimizer is built, not here: the API process reads the names,
descriptions and vocabularies (catalog, study validation) and never trains.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .plugins import PluginRegistry

if TYPE_CHECKING:
    import torch

ENTRY_POINT_GROUP = "rootfree.optimizers"


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    description: str
    hyperparameters: tuple[str, ...]
    factory: Callable[..., torch.optim.Optimizer]
    # The trial passes the mini-batch size B (``batch_size``) to a root-free method (paper Sec. 3.1).
    root_free: bool = False
    # For a plugin: where the factory comes from ("package.module:attribute"); None: built-in.
    plugin: str | None = None


@dataclass(frozen=True)
class OptimizerPlugin:
    """The public optimizer contract (``from workers.plugin_api import OptimizerPlugin``).

    An installed package names one under the entry point group ``rootfree.optimizers``; the entry
    point's name must equal ``name``.

    - ``factory(params, **hyperparameters) -> torch.optim.Optimizer``, in the torch.optim style.
    - ``hyperparameters``: the keyword names the factory accepts (a trial passes no others).
    - ``default_space``: the stage-1 search space in the search-space language, exactly the
      JSON/YAML a study's ``search_spaces.<name>`` takes, e.g.
      ``{"lr": {"kind": "log_uniform", "low": 1e-4, "high": 1e-1}}``.
    - ``root_free``: True: the trial passes ``batch_size`` = B (it must be a hyperparameter) and the
      original scheme fixes it to 1; False: a method with a square root (or none). None (not
      stated): ``scheme: original`` refuses this optimizer.
    - ``zero_init``: True: the preconditioner may start at zero (``init`` must be a hyperparameter;
      the original scheme sets ``init=0``); False: it cannot (it is inverted) or there is no
      preconditioner, so the original scheme keeps the default. None: ``scheme: original`` refuses.
    """

    name: str
    factory: Callable[..., torch.optim.Optimizer]
    hyperparameters: tuple[str, ...]
    default_space: Mapping[str, Any]
    description: str = ""
    root_free: bool | None = None
    zero_init: bool | None = None
    import_path: str = field(default="", compare=False)  # filled from the entry point on load


def _sgd(params, lr=0.1, momentum=0.9, weight_decay=0.0, nesterov=False):
    import torch

    return torch.optim.SGD(
        params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
    )


def _adamw(params, lr=1e-3, momentum=0.9, beta2=0.999, damping=1e-8, weight_decay=0.01):
    import torch

    return torch.optim.AdamW(
        params, lr=lr, betas=(momentum, beta2), eps=damping, weight_decay=weight_decay,
        foreach=True,
    )


def _rmsprop(params, lr=1e-3, beta2=0.01, momentum=0.0, damping=1e-8, weight_decay=0.0):
    if not 0.0 < beta2 <= 1.0:
        raise ValueError(f"Invalid beta2 value: {beta2!r} (beta2 must be in (0, 1])")
    import torch

    return torch.optim.RMSprop(
        params, lr=lr, alpha=1.0 - beta2, eps=damping, momentum=momentum,
        weight_decay=weight_decay, foreach=True,
    )


def _root_free(module: str, cls: str) -> Callable[..., torch.optim.Optimizer]:
    """The class `cls` of ``optimizers.<module>``, imported when a trial first builds it
    (root-free or not: the name says where the class lives, ``OptimizerSpec.root_free`` what it is)."""

    def factory(params, **hyperparameters):
        return getattr(importlib.import_module(f"{__package__}.{module}"), cls)(params, **hyperparameters)

    return factory


_COMMON = ("lr", "beta2", "momentum", "damping", "weight_decay", "gamma", "batch_size", "init")
# Shampoo in RF-Shampoo's vocabulary (no batch_size: the root makes it scale-invariant; no init:
# its factors start at zero)
SHAMPOO = ("lr", "beta2", "momentum", "damping", "weight_decay", "gamma", "update_every", "grafting",
           "max_factor_dim")
_REGISTRY: dict[str, OptimizerSpec] = {
    spec.name: spec
    for spec in (
        OptimizerSpec("sgd", "SGD with heavy-ball momentum (torch.optim.SGD)",
                      ("lr", "momentum", "weight_decay", "nesterov"), _sgd),
        OptimizerSpec("adamw", "AdamW (torch.optim.AdamW, foreach)",
                      ("lr", "momentum", "beta2", "damping", "weight_decay"), _adamw),
        OptimizerSpec("rmsprop", "RMSProp with the square root (torch.optim.RMSprop)",
                      ("lr", "beta2", "momentum", "damping", "weight_decay"), _rmsprop),
        OptimizerSpec("shampoo", "root-based Shampoo as the paper ran it (Fig. 5 left; EMA factors, "
                      "damping, Adam grafting)", SHAMPOO, _root_free("shampoo", "Shampoo")),
        OptimizerSpec("rfrmsprop", "square-root-free RMSProp (paper Fig. 6)", _COMMON,
                      _root_free("rfrmsprop", "RFRMSProp"), root_free=True),
        OptimizerSpec("rfshampoo", "root-free Shampoo with inverses (paper Fig. 5 middle)",
                      _COMMON + ("update_every", "max_factor_dim"), _root_free("rfshampoo", "RFShampoo"),
                      root_free=True),
        OptimizerSpec("ifshampoo", "inverse- and root-free Shampoo (paper Fig. 5 right, Fig. 7)",
                      _COMMON + ("riemannian_momentum", "update_every", "max_factor_dim",
                                 "factor_dtype"), _root_free("ifshampoo", "IFShampoo"), root_free=True),
    )
}
BUILTIN = frozenset(_REGISTRY)


def _check_plugin(p: OptimizerPlugin) -> str | None:
    if not callable(p.factory):
        return "factory is not callable"
    if not p.hyperparameters or not all(isinstance(h, str) for h in p.hyperparameters):
        return "hyperparameters must be a non-empty tuple of keyword names"
    if not isinstance(p.default_space, Mapping):
        return "default_space must be a mapping in the search-space language"
    unknown = sorted(set(p.default_space) - set(p.hyperparameters))
    if unknown:
        return f"default_space names {', '.join(unknown)}, which the optimizer does not accept"
    if p.root_free and "batch_size" not in p.hyperparameters:
        return "a root-free optimizer must accept batch_size (the trial passes B)"
    if p.zero_init and "init" not in p.hyperparameters:
        return "zero_init=True needs an init hyperparameter"
    return None


def _admit(p: OptimizerPlugin, path: str) -> tuple[OptimizerPlugin, OptimizerSpec]:
    factory_path = f"{p.factory.__module__}:{getattr(p.factory, '__qualname__', path)}"
    return (dataclasses.replace(p, import_path=factory_path),
            OptimizerSpec(p.name, p.description, tuple(p.hyperparameters), p.factory,
                          root_free=bool(p.root_free), plugin=factory_path))


PLUGINS = PluginRegistry(ENTRY_POINT_GROUP, OptimizerPlugin, _REGISTRY, check=_check_plugin, admit=_admit,
                         what="optimizer")


def load_plugins(reload: bool = False) -> dict[str, OptimizerPlugin]:
    """Loads the ``rootfree.optimizers`` entry points once per process and registers them."""
    return PLUGINS.load(reload)


def plugin_errors() -> list[dict[str, str]]:
    """The optimizer plugins refused in this process, each ``{"name", "source", "error"}``."""
    return PLUGINS.refused()


def names() -> list[str]:
    """Names accepted by :func:`build` (built-ins, then installed plugins)."""
    return PLUGINS.names()


def spec(name: str) -> OptimizerSpec:
    return PLUGINS.get(name)


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
