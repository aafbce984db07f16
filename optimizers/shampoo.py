"""Root-based Shampoo as the paper ran it (Lin et al. 2024, Fig. 5 left; Gupta et al. 2018 with
the exponential moving average, damping and grafting of Meta's Distributed Shampoo, Shi et al. 2023).

For a parameter viewed as a matrix M (p x d) with gradient G, in the keyword vocabulary of
:class:`optimizers.RFShampoo` (so that the pair differs only in the root):

    S_C <- (1 - beta2*gamma) S_C + beta2 * G G^T          (S_C, S_K start at zero; no bias correction)
    S_K <- (1 - beta2*gamma) S_K + beta2 * G^T G
    R_C, R_K = (S_C + damping I)^(-1/4), (S_K + damping I)^(-1/4)       (cached)
    U   = R_C G R_K           (grafting "adam": U * ||A|| / ||U||, A = Adam's step, see below)
    m   <- momentum * m + U + weight_decay * M
    M   <- M - lr * m

The factors take every gradient; their roots are recomputed every ``update_every`` steps (the
paper: 2), starting at the first step, after that step's factor update, and reused in between --
Distributed Shampoo's ``precondition_frequency``, which the authors' runs set to 2. (RF-Shampoo
refreshes its factors themselves every T steps: the factor *is* its preconditioner.) The roots
come from a symmetric eigendecomposition in float32 (float64 for float64 parameters): Distributed
Shampoo's default precision and the paper's "FP-32" column of Table 1 -- float32 ``eigh`` of a
damped PSD factor is accurate to its round-off, and float64 would double the factor memory and
cost several times the time on a GPU; if float32 ``eigh`` fails to converge it is retried in
float64. Eigenvalues below zero (round-off of a PSD matrix) are clipped before the damping.

``grafting="none"`` (the default) is how the authors ran Distributed Shampoo for the paper
(``grafting_type=GraftingType.NONE, use_bias_correction=False`` in their ``train_search.py``):
the raw Shampoo step of Gupta et al. 2018. ``grafting="adam"`` (Distributed Shampoo's Adam
grafting) takes each tensor's step norm from the diagonal root method on the same statistics,
``A = g / sqrt(v + damping)`` with ``v <- (1 - beta2*gamma) v + beta2 g^2`` updated every step (no
bias correction, like the factors), and the direction from Shampoo.

Tensors that are not matrices (``optimizers._structure``): the diagonal rule with the root of the
one factor, ``s <- (1 - beta2*gamma) s + beta2 g^2`` (from zero), step ``g / sqrt(s + damping)``;
grafting changes nothing there (the step is its own graft). Optimizer state of a bfloat16/float16
parameter is float32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim import Optimizer

from ._common import (
    KeepStateDtypes,
    _bad,
    check_non_negative,
    check_positive,
    check_positive_int,
    check_unit_interval,
    params_with_grad,
    state_dtype,
)
from ._structure import matrix_shape

GRAFTING = ("none", "adam")


def inverse_root(S: torch.Tensor, damping: float, root: int = 4) -> torch.Tensor:
    """(S + damping I)^(-1/root) of a symmetric PSD matrix by eigendecomposition."""
    try:
        L, Q = torch.linalg.eigh(S)
    except torch.linalg.LinAlgError:  # float32 eigh did not converge: retry in float64
        L, Q = torch.linalg.eigh(S.double())
    scale = (L.clamp(min=0) + damping).pow(-1.0 / root)
    return ((Q * scale) @ Q.mT).to(S.dtype)


class Shampoo(KeepStateDtypes, Optimizer):
    """Root-based Shampoo with exponential moving averages, damping and optional Adam grafting.

    Args:
        params: iterable of parameters or param groups.
        lr: learning rate beta1.
        beta2: the Kronecker factors' EMA weight (Distributed Shampoo's ``1 - betas[1]``).
        momentum: alpha1, heavy-ball momentum on the (grafted) preconditioned step.
        damping: lambda in (S + lambda I)^(-1/4) (Distributed Shampoo's ``epsilon``); must be > 0:
            the factors start at zero. Default 1e-6, inside the authors' sweep (1e-10 - 1e-5):
            Distributed Shampoo's own 1e-12 gives the round-off directions of a zero-started
            float32 factor a gain of 1000 (1e-12^(-1/4)) and trained the small ViT here far worse.
        weight_decay: kappa, added to the preconditioned step inside the momentum (decoupled from
            the preconditioner), where RF-Shampoo adds it.
        gamma: 1 = moving average, 0 = sum (the original AdaGrad-like Shampoo).
        update_every: T, recompute the roots every T steps (the paper: 2).
        grafting: "none" (default: the authors' runs) or "adam" (the per-tensor step norm of
            Adam's step).
        max_factor_dim: sides longer than this fall back to the diagonal rule.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        beta2: float = 0.01,
        momentum: float = 0.9,
        damping: float = 1e-6,
        weight_decay: float = 0.0,
        gamma: float = 1.0,
        update_every: int = 2,
        grafting: str = "none",
        max_factor_dim: int = 2048,
    ):
        check_positive("lr", lr)
        check_positive("beta2", beta2)
        if beta2 > 1:
            raise _bad("beta2", beta2, "in (0, 1]")
        check_unit_interval("momentum", momentum)
        check_positive("damping", damping)  # the factors start at zero: damping keeps the root finite
        check_non_negative("weight_decay", weight_decay)
        check_unit_interval("gamma", gamma, closed_right=True)
        check_positive_int("update_every", update_every)
        check_positive_int("max_factor_dim", max_factor_dim)
        if grafting not in GRAFTING:
            raise _bad("grafting", grafting, f"one of {', '.join(map(repr, GRAFTING))}")
        defaults = dict(
            lr=lr, beta2=beta2, momentum=momentum, damping=damping, weight_decay=weight_decay,
            gamma=gamma, update_every=update_every, grafting=grafting, max_factor_dim=max_factor_dim,
        )
        super().__init__(params, defaults)

    def _init_state(self, p: torch.Tensor, group: dict) -> None:
        state = self.state[p]
        state["step"] = torch.tensor(0.0)
        dtype = state_dtype(p)
        shape = matrix_shape(p, group["max_factor_dim"])
        if shape is None:
            state["preconditioner"] = torch.zeros_like(p, dtype=dtype)
            return
        kw = dict(device=p.device, dtype=dtype)
        for key, n in zip(("C", "K"), shape, strict=True):
            state["S_" + key] = torch.zeros(n, n, **kw)
            state["R_" + key] = torch.zeros(n, n, **kw)  # (S + damping I)^(-1/4), set on step 1
        if group["grafting"] == "adam":
            state["graft"] = torch.zeros(p.shape, **kw)  # contiguous: viewed as (p, d)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, beta2, gamma = group["lr"], group["beta2"], group["gamma"]
            lam, kappa, alpha1 = group["damping"], group["weight_decay"], group["momentum"]
            decay = 1 - beta2 * gamma
            for p in params_with_grad(group):
                state = self.state[p]
                if len(state) == 0:
                    self._init_state(p, group)
                update_now = int(state["step"]) % group["update_every"] == 0
                state["step"] += 1
                if "preconditioner" in state:
                    s = state["preconditioner"]
                    g = p.grad.to(s.dtype)
                    s.mul_(decay).addcmul_(g, g, value=beta2)
                    step = g / (s + lam).sqrt_()
                else:
                    step = self._kronecker_step(p, state, group, update_now)
                if kappa != 0:
                    step.add_(p, alpha=kappa)
                if alpha1 != 0:
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p, dtype=step.dtype)
                    step = state["momentum_buffer"].mul_(alpha1).add_(step)
                p.add_(step.to(p.dtype), alpha=-lr)
        return loss

    @staticmethod
    def _kronecker_step(p: torch.Tensor, state: dict, group: dict, update_now: bool) -> torch.Tensor:
        beta2, lam = group["beta2"], group["damping"]
        decay = 1 - beta2 * group["gamma"]
        S_C, S_K = state["S_C"], state["S_K"]
        G = p.grad.reshape(S_C.shape[0], S_K.shape[0]).to(S_C.dtype)
        S_C.mul_(decay).addmm_(G, G.T, alpha=beta2)
        S_K.mul_(decay).addmm_(G.T, G, alpha=beta2)
        if update_now:
            state["R_C"].copy_(inverse_root(S_C, lam))
            state["R_K"].copy_(inverse_root(S_K, lam))
        U = state["R_C"] @ G @ state["R_K"]
        if "graft" in state:  # the step norm of Adam's step, the direction of Shampoo's
            v = state["graft"].view_as(G)
            v.mul_(decay).addcmul_(G, G, value=beta2)
            adam_norm = torch.linalg.vector_norm(G / (v + lam).sqrt())
            U.mul_(adam_norm / torch.linalg.vector_norm(U).clamp(min=torch.finfo(U.dtype).tiny))
        return U.reshape(p.shape)
