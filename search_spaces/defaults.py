"""Default stage-1 spaces per optimizer, derived from the paper (Lin et al. 2024, Appendix J).

Where each range comes from. The authors' public repository, github.com/yorkerlin/
remove-the-square-root, holds their second-stage wandb sweeps; the comments below quote them
("sweep", with the file), e.g. ``models/ViTs/GCVit/wandb-sweep/sweep-ifshampoob16.yaml``. Their
``lr_cov`` is our ``beta2`` (AdamW's and RMSProp's ``1 - beta2``/``1 - alpha``), and every sweep
samples ``momentum`` *log-uniformly in momentum itself* (``log_uniform_values``, 0.1 - 0.99 in all
of them), so the momentum ranges here are LogUniform, not log-uniform in 1 - momentum.
Stage 1 must be wider than a sweep (stage 2 narrows), so each stage-1 range contains its sweep
range with about an order of magnitude of room on each side for log-scale parameters, and momentum
runs over [0.05, 0.995]. RMSProp has no sweep file: it takes RF-RMSProp's ranges except damping,
which sits after the root (AdamW's range). The preconditioner update interval is fixed at 2 for
the matrix methods, as in the paper's runs (App. J, and ``--T=2`` in every sweep), and Shampoo
runs without grafting, as the authors' ``train_search.py`` builds Distributed Shampoo
(``grafting_type=GraftingType.NONE, use_bias_correction=False``).

``ACCEPTED`` mirrors ``optimizers.hyperparameters(name)`` (search_spaces imports no torch; a test
keeps the two in step).
"""

from __future__ import annotations

from .parameters import Fixed, LogUniform, OneMinusLogUniform, SearchSpaceError
from .space import SearchSpace

_COMMON = ("lr", "beta2", "momentum", "damping", "weight_decay", "gamma", "batch_size", "init")
ACCEPTED: dict[str, tuple[str, ...]] = {
    "sgd": ("lr", "momentum", "weight_decay", "nesterov"),
    "adamw": ("lr", "momentum", "beta2", "damping", "weight_decay"),
    "rmsprop": ("lr", "beta2", "momentum", "damping", "weight_decay"),
    "shampoo": ("lr", "beta2", "momentum", "damping", "weight_decay", "gamma", "update_every",
                "grafting", "max_factor_dim"),
    "rfrmsprop": _COMMON,
    "rfshampoo": _COMMON + ("update_every", "max_factor_dim"),
    "ifshampoo": _COMMON + ("riemannian_momentum", "update_every", "max_factor_dim",
                            "factor_dtype"),
}


def _space(**params) -> SearchSpace:
    return SearchSpace(params)


def _momentum() -> LogUniform:
    # every sweep file: momentum log_uniform_values 0.1 - 0.99
    return LogUniform("momentum", 0.05, 0.995)


_GCVIT = "models/ViTs/GCVit/wandb-sweep/"
_CNN = "models/CNNs/wandb-sweep/"
_DEFAULTS: dict[str, SearchSpace] = {
    "ifshampoo": _space(  # sweep: _GCVIT sweep-ifshampoob16.yaml
        lr=LogUniform("lr", 1e-5, 1e-2),                      # sweep 1e-4 - 5e-4
        weight_decay=LogUniform("weight_decay", 1e-7, 1e-1),  # sweep 1e-2 - 6e-2
        damping=LogUniform("damping", 1e-6, 1e-2),            # sweep 3e-5 - 6e-5
        beta2=LogUniform("beta2", 1e-2, 0.95),                # sweep (lr_cov) 0.1 - 0.4
        momentum=_momentum(),                                 # sweep 0.1 - 0.5
        riemannian_momentum=LogUniform("riemannian_momentum", 0.05, 0.95),  # sweep (beta2) 0.1 - 0.7
        update_every=Fixed("update_every", 2),
    ),
    "rfshampoo": _space(  # no sweep: IF-Shampoo's, the same method with explicit inverses
        lr=LogUniform("lr", 1e-5, 1e-2),
        weight_decay=LogUniform("weight_decay", 1e-7, 1e-1),
        damping=LogUniform("damping", 1e-6, 1e-2),
        beta2=LogUniform("beta2", 1e-2, 0.95),
        momentum=_momentum(),
        update_every=Fixed("update_every", 2),
    ),
    "shampoo": _space(  # sweep: _GCVIT sweep-shampoo.yaml (Distributed Shampoo, --T=2)
        lr=LogUniform("lr", 5e-5, 0.5),                       # sweep 5e-4 - 5e-2
        weight_decay=LogUniform("weight_decay", 1e-7, 1e-1),  # sweep 5e-4 - 5e-2
        damping=LogUniform("damping", 1e-12, 1e-4),           # sweep (epsilon) 1e-10 - 1e-5
        beta2=LogUniform("beta2", 1e-4, 0.95),                # sweep (lr_cov) 5e-4 - 1e-1
        momentum=_momentum(),                                 # sweep 0.1 - 0.99
        update_every=Fixed("update_every", 2),
        grafting=Fixed("grafting", "none"),                   # the authors' GraftingType.NONE
    ),
    "rfrmsprop": _space(  # sweep: _CNN sweep-rfrmsprop-resnet34.yaml (and the other networks')
        lr=LogUniform("lr", 1e-5, 1e-1),                      # sweep 2e-3 - 1e-2
        weight_decay=LogUniform("weight_decay", 1e-6, 5e-1),  # sweep 1e-4 - 5e-2
        damping=LogUniform("damping", 1e-7, 1e-2),            # sweep 1e-5 - 1e-4
        beta2=LogUniform("beta2", 1e-4, 0.5),                 # sweep (lr_cov) 8e-4 - 5e-3
        momentum=_momentum(),                                 # sweep 0.1 - 0.99
    ),
    "adamw": _space(  # sweep: _CNN sweep-adamwb16-resnet34.yaml
        lr=LogUniform("lr", 1e-5, 1e-1),                      # sweep 1e-4 - 8e-3
        momentum=_momentum(),                                 # sweep (beta1) 0.1 - 0.99
        beta2=OneMinusLogUniform("beta2", 0.9, 0.99999),      # sweep: 1 - beta2 (lr_cov) 5e-4 - 1e-2
        damping=LogUniform("damping", 1e-14, 1e-5),           # sweep (eps) 1e-12 - 1e-6
        weight_decay=LogUniform("weight_decay", 1e-6, 1.0),   # sweep 5e-4 - 5e-2
    ),
    "rmsprop": _space(  # no sweep: RF-RMSProp's ranges; beta2 is the EMA weight (Fig. 4)
        lr=LogUniform("lr", 1e-6, 1e-1),
        beta2=LogUniform("beta2", 1e-4, 0.5),
        momentum=_momentum(),
        damping=LogUniform("damping", 1e-10, 1e-3),           # after the root: AdamW's eps scale
        weight_decay=LogUniform("weight_decay", 1e-7, 1e-1),
    ),
    "sgd": _space(  # sweep: _CNN sweep-sgdb16-resnet34.yaml
        lr=LogUniform("lr", 1e-4, 1.0),                       # sweep 5e-4 - 5e-1
        momentum=_momentum(),                                 # sweep 0.1 - 0.99
        weight_decay=LogUniform("weight_decay", 1e-7, 1e-1),  # sweep 1e-4 - 5e-2
    ),
}

# The original scheme (Figure 2) searches only lr. Within a root / root-free pair every other
# hyperparameter takes the same value on both sides, so the pair differs in the root (and in what
# the scheme itself changes: B = 1, RF-RMSProp's s_0 = 0, Shampoo's factors from zero) and nothing
# else. The values: RMSProp as it was introduced (no momentum, torch's alpha = 0.99, i.e. beta2 =
# 0.01); a damping that keeps 1/(s + damping) of a zero-started RF-RMSProp bounded and is harmless
# after RMSProp's root; Shampoo as Distributed Shampoo's defaults (momentum 0.9, no weight decay),
# without grafting (Gupta et al. 2018, and the authors' runs), its factors refreshed every 2 steps.
PAIRS: dict[str, tuple[str, ...]] = {
    "rmsprop": ("rmsprop", "rfrmsprop"),
    "shampoo": ("shampoo", "rfshampoo", "ifshampoo"),
}
_PAIR_VALUES: dict[str, dict[str, object]] = {
    "rmsprop": {"beta2": 0.01, "momentum": 0.0, "damping": 1e-4, "weight_decay": 0.0, "gamma": 1.0},
    "shampoo": {"beta2": 0.01, "momentum": 0.9, "damping": 1e-4, "weight_decay": 0.0, "gamma": 1.0,
                "update_every": 2, "grafting": "none"},
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
    learning rate is searched; the root-free methods drop the mini-batch scaling (``batch_size=1``:
    the default for an averaged loss), and RF-RMSProp starts its preconditioner at zero (``init=0``)
    as RMSProp and Adam do. (The constant learning rate is the workload's side: the runner asks for
    ``schedule="constant"``.) A Kronecker factor cannot start at zero (it is inverted), so RF- and
    IF-Shampoo keep theirs; Shampoo's start at zero anyway.

    Every other hyperparameter of a root / root-free pair (``PAIRS``) is fixed, in the space, to the
    value both sides share (``_PAIR_VALUES``), so each trial's hyperparameters list what ran.
    Another optimizer keeps its defaults (nothing else fixed).

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
    pair = next((p for p, members in PAIRS.items() if optimizer in members), None)
    if pair is not None:
        accepted = ACCEPTED[optimizer]
        params.update({k: Fixed(k, v) for k, v in _PAIR_VALUES[pair].items() if k in accepted})
    if root_free:
        params["batch_size"] = Fixed("batch_size", 1)
    if zero_init:
        params["init"] = Fixed("init", 0.0)
    return SearchSpace(params)
