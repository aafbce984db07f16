"""Default stage-1 spaces per optimizer, derived from the paper (Lin et al. 2024, Appendix J).

Where each range comes from: the authors' published second-stage sweep files (ImageWoof /
CIFAR-100) give, per method, the narrowed ranges quoted in the comments below ("sweep"). Stage 1
must be wider than those (stage 2 narrows), so every stage-1 range contains its sweep range with
about an order of magnitude of room on each side for log-scale parameters and the full sensible
interval for momenta. Ranges the sweep files do not cover (SGD, RMSProp, Shampoo) follow the same
widths as the closest method. The preconditioner update interval is fixed at 2 for the matrix
methods, as in the paper's runs.

``ACCEPTED`` mirrors ``optimizers.hyperparameters(name)`` (search_spaces imports no torch; a test
keeps the two in step).
"""

from __future__ import annotations

from .parameters import Fixed, LogUniform, OneMinusLogUniform, SearchSpaceError, Uniform
from .space import SearchSpace

_COMMON = ("lr", "beta2", "momentum", "damping", "weight_decay", "gamma", "batch_size", "init")
ACCEPTED: dict[str, tuple[str, ...]] = {
    "sgd": ("lr", "momentum", "weight_decay", "nesterov"),
    "adamw": ("lr", "momentum", "beta2", "damping", "weight_decay"),
    "rmsprop": ("lr", "beta2", "momentum", "damping", "weight_decay"),
    "shampoo": ("lr", "momentum", "weight_decay", "damping", "update_every"),
    "rfrmsprop": _COMMON,
    "rfshampoo": _COMMON + ("update_every", "max_factor_dim"),
    "ifshampoo": _COMMON + ("riemannian_momentum", "update_every", "max_factor_dim",
                            "factor_dtype"),
}


def _space(**params) -> SearchSpace:
    return SearchSpace(params)


_DEFAULTS: dict[str, SearchSpace] = {
    "ifshampoo": _space(
        lr=LogUniform("lr", 1e-5, 1e-2),                      # sweep 8e-5 - 8e-4
        weight_decay=LogUniform("weight_decay", 1e-7, 1e-1),  # sweep 1e-6 - 6e-2
        damping=LogUniform("damping", 1e-6, 1e-2),            # sweep 3e-5 - 1e-3
        beta2=LogUniform("beta2", 1e-2, 0.95),                # sweep 0.05 - 0.8
        momentum=Uniform("momentum", 0.0, 0.99),              # sweep 0.1 - 0.95
        riemannian_momentum=Uniform("riemannian_momentum", 0.0, 0.95),  # sweep 0.1 - 0.9
        update_every=Fixed("update_every", 2),
    ),
    "rfshampoo": _space(  # as IF-Shampoo: the same method with explicit inverses
        lr=LogUniform("lr", 1e-5, 1e-2),
        weight_decay=LogUniform("weight_decay", 1e-7, 1e-1),
        damping=LogUniform("damping", 1e-6, 1e-2),
        beta2=LogUniform("beta2", 1e-2, 0.95),
        momentum=Uniform("momentum", 0.0, 0.99),
        update_every=Fixed("update_every", 2),
    ),
    "rfrmsprop": _space(
        lr=LogUniform("lr", 1e-5, 1e-1),                      # sweep 5e-5 - 1e-2
        weight_decay=LogUniform("weight_decay", 1e-6, 5e-1),  # sweep 5e-5 - 5e-2
        damping=LogUniform("damping", 1e-7, 1e-2),            # sweep 1e-5 - 1e-3
        beta2=LogUniform("beta2", 1e-4, 0.5),                 # sweep 8e-4 - 0.1
        momentum=Uniform("momentum", 0.0, 0.995),             # sweep 0.1 - 0.99
    ),
    "adamw": _space(
        lr=LogUniform("lr", 1e-5, 1e-1),
        momentum=OneMinusLogUniform("momentum", 0.5, 0.999),  # beta1; 1 - beta1 log-uniform
        beta2=OneMinusLogUniform("beta2", 0.9, 0.99999),      # torch's beta2 (decay)
        damping=LogUniform("damping", 1e-14, 1e-5),           # sweep (eps) 1e-12 - 1e-7
        weight_decay=LogUniform("weight_decay", 1e-6, 1.0),
    ),
    "rmsprop": _space(  # beta2 is the EMA weight, as the paper writes RMSProp (Fig. 4)
        lr=LogUniform("lr", 1e-6, 1e-1),
        beta2=LogUniform("beta2", 1e-4, 0.5),
        momentum=Uniform("momentum", 0.0, 0.99),
        damping=LogUniform("damping", 1e-10, 1e-3),
        weight_decay=LogUniform("weight_decay", 1e-7, 1e-1),
    ),
    "sgd": _space(
        lr=LogUniform("lr", 1e-4, 1.0),
        momentum=Uniform("momentum", 0.0, 0.99),
        weight_decay=LogUniform("weight_decay", 1e-7, 1e-1),
    ),
    "shampoo": _space(
        lr=LogUniform("lr", 1e-5, 1.0),
        momentum=Uniform("momentum", 0.0, 0.99),
        weight_decay=LogUniform("weight_decay", 1e-7, 1e-1),
        damping=LogUniform("damping", 1e-8, 1e-2),
        update_every=Fixed("update_every", 2),
    ),
}


BUILTIN = frozenset(ACCEPTED)
# Plugin optimizers (registered by whoever loaded them: search_spaces imports no torch):
# name -> (root_free, zero_init) as the plugin states them (None: not stated).
_PLUGIN_FLAGS: dict[str, tuple[bool | None, bool | None]] = {}


def register_optimizer(name: str, hyperparameters: tuple[str, ...], space: SearchSpace | dict,
                       root_free: bool | None = None, zero_init: bool | None = None) -> None:
    """Adds a plugin optimizer: its accepted names and default stage-1 space (checked against
    them: raises SearchSpaceError), and what the original scheme needs to know about it."""
    if name in BUILTIN:
        raise SearchSpaceError(f"optimizer {name!r} is built in")
    space = space if isinstance(space, SearchSpace) else SearchSpace.from_dict(space)
    space.validate_for(tuple(hyperparameters), name)
    ACCEPTED[name] = tuple(hyperparameters)
    _DEFAULTS[name] = space
    _PLUGIN_FLAGS[name] = (root_free, zero_init)


def unregister_plugins() -> None:
    for name in list(_PLUGIN_FLAGS):
        ACCEPTED.pop(name, None)
        _DEFAULTS.pop(name, None)
        del _PLUGIN_FLAGS[name]


def optimizer_names() -> list[str]:
    return list(ACCEPTED)


def accepted_hyperparameters(optimizer: str) -> tuple[str, ...]:
    if optimizer not in ACCEPTED:
        raise ValueError(f"Unknown optimizer {optimizer!r}; known: {', '.join(ACCEPTED)}")
    return ACCEPTED[optimizer]


def default_space(optimizer: str) -> SearchSpace:
    """The paper-derived stage-1 space of `optimizer`."""
    accepted_hyperparameters(optimizer)
    return _DEFAULTS[optimizer]


ROOT_FREE = ("rfrmsprop", "rfshampoo", "ifshampoo")
SCHEMES = ("modern", "original")


def original_scheme_space(optimizer: str) -> SearchSpace:
    """The training scheme the root was introduced in (the paper's Figure 2, Appendix J): only the
    learning rate is searched, every other hyperparameter stays at the optimizer's default; the
    root-free methods drop the mini-batch scaling (``batch_size=1``: the default for an averaged
    loss), and RF-RMSProp starts its preconditioner at zero (``init=0``) as RMSProp and Adam do.
    (The constant learning rate is the workload's side: the runner asks for ``schedule="constant"``.)
    A Kronecker factor cannot start at zero (it is inverted), so the Shampoo variants keep theirs.

    A plugin optimizer gets the same treatment from what it states (``root_free``, ``zero_init``);
    one that states neither, or has no ``lr`` in its default space, is refused (SearchSpaceError)."""
    space = default_space(optimizer)
    root_free, zero_init = _PLUGIN_FLAGS.get(
        optimizer, (optimizer in ROOT_FREE, optimizer == "rfrmsprop"))
    if root_free is None or zero_init is None:
        missing = " and ".join(k for k, v in (("root_free", root_free), ("zero_init", zero_init)) if v is None)
        raise SearchSpaceError(f"the original scheme cannot be applied to optimizer {optimizer!r}: its plugin "
                               f"does not state {missing} (whether it drops the mini-batch scaling and "
                               "starts its preconditioner at zero)")
    if "lr" not in space:
        raise SearchSpaceError(f"the original scheme searches only lr, and optimizer {optimizer!r} has no lr "
                               "in its default space")
    params: dict = {"lr": space["lr"]}
    if root_free:
        params["batch_size"] = Fixed("batch_size", 1)
    if zero_init:
        params["init"] = Fixed("init", 0.0)
    return SearchSpace(params)
