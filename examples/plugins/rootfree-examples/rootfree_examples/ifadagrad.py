"""An optimizer plugin: inverse-free, root-free full-matrix AdaGrad (Lin et al. 2024, Eq. 18).

For each parameter tensor (flattened, d = numel) it keeps P = S^-1, a d x d matrix, and updates it
directly, with no inverse and no root:

    H  = B g g^T                                        (the empirical Fisher of an averaged loss)
    P <- P - beta2 P H P + beta2^2/2 P H P H P          (Eq. 18; the last term keeps P positive definite)
    m <- momentum m + P g + weight_decay mu
    mu <- mu - lr m

With u = P g the two products are rank one (P H P = B u u^T, P H P H P = B^2 (g^T u) u u^T), so a
step costs O(d^2). To first order in beta2 it is the root-free full-matrix AdaGrad of Eq. 17,
S <- S + beta2 H, mu <- mu - lr S^-1 g (paper App. E, Claim 4). P starts at I / init.
The diagonal version of the same method is RF-RMSProp with gamma=0.

The safeguard (``safeguard=True``, the default). Along u, Eq. 18 multiplies g^T P g by
1 - x + x^2/2 with x = beta2 B g^T P g: positive for every x (P stays positive definite), but
above 1 past x = 2, so a large gradient grows P and the next step grows with it (on least squares
with |g| ~ 28 and B = 20 the parameters leave the floats within a few steps for any beta2 >= 5e-4).
The guarded update takes the step size beta2 / max(1, x) -- the device of the paper's Fig. 7,
which divides IF-Shampoo's beta2 by max(1, ||m||) -- so x <= 1: the factor 1 - x + x^2/2 lies in
[1/2, 1], P_new <= P (bounded by P_0 = I / init) and positive definite. While x <= 1 the step
is Eq. 18 unchanged, bit for bit, so the first-order agreement with Eq. 17 is kept.

This module is what the entry point loads: the description only. The optimizer class is in
`_ifadagrad_torch` and imported when a trial builds one (or `IFAdaGrad` is imported from here),
so a controller that lists the catalog and validates studies never imports torch for it.
"""

from __future__ import annotations

from workers.plugin_api import OptimizerPlugin


def __getattr__(name: str):
    if name in ("IFAdaGrad", "MAX_DIM"):  # `from rootfree_examples.ifadagrad import IFAdaGrad` works as before
        from rootfree_examples import _ifadagrad_torch

        return getattr(_ifadagrad_torch, name)
    raise AttributeError(name)


def _build(params, **hyperparameters):
    from rootfree_examples._ifadagrad_torch import IFAdaGrad

    return IFAdaGrad(params, **hyperparameters)


# The export snippet and the workers import the factory by this path: the class of that name.
_build.__name__ = _build.__qualname__ = "IFAdaGrad"

PLUGIN = OptimizerPlugin(
    name="ifadagrad",
    factory=_build,
    hyperparameters=("lr", "beta2", "momentum", "weight_decay", "batch_size", "init", "max_dim",
                     "safeguard"),
    default_space={
        "lr": {"kind": "log_uniform", "low": 1e-4, "high": 1.0},
        # the safeguard caps x = beta2 B g^T S^-1 g at 1, so a large beta2 no longer blows up
        "beta2": {"kind": "log_uniform", "low": 1e-5, "high": 3e-2},
        "momentum": {"kind": "log_uniform", "low": 0.05, "high": 0.995},  # as the authors' sweeps
        "weight_decay": {"kind": "log_uniform", "low": 1e-7, "high": 1e-2},
    },
    description="inverse-free root-free full-matrix AdaGrad (paper Eq. 18; plugin example)",
    root_free=True,   # the trial passes B; the original scheme sets batch_size=1
    zero_init=False,  # P = S^-1 cannot start from S = 0: the original scheme keeps init
)
