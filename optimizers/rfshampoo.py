"""Root-free Shampoo (Lin et al. 2024, Fig. 5 middle; full version Fig. 7), with matrix inverses.

For a parameter viewed as a matrix M (p x d) with gradient G of a loss averaged over B examples:

    S_C <- (1 - beta2*gamma) S_C + beta2/d * (B G S_K^-1 G^T + damping * tr(S_K^-1) I_p)
    S_K <- (1 - beta2*gamma) S_K + beta2/p * (B G^T S_C^-1 G + damping * tr(S_C^-1) I_d)
    m   <- momentum * m + S_C^-1 G S_K^-1 + weight_decay * M
    M   <- M - lr * m

Both factors are updated from the old ones, every ``update_every`` steps, starting at the first
step, before the gradient is preconditioned. The damping term is the Kronecker projection of
``lambda I`` added to the curvature ``B g g^T`` (Appendix D). This is the numerically plain
reference for :class:`IFShampoo`: it keeps S_C, S_K and their inverses in float32 (float64 for
float64 parameters). Tensors that are not matrices follow the rule of ``optimizers._structure``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim import Optimizer

from ._common import KeepStateDtypes, check_common, check_positive_int, params_with_grad, state_dtype
from ._structure import matrix_shape


class RFShampoo(KeepStateDtypes, Optimizer):
    """Square-root-free Shampoo with explicit inverses (the reference implementation).

    Args: as :class:`optimizers.RFRMSProp`, plus
        update_every: T, update the Kronecker factors every T steps.
        max_factor_dim: sides longer than this fall back to the diagonal rule.
        init: the initial preconditioner S_C (x) S_K = init * I (each factor sqrt(init) * I), the
            same scale as the diagonal rule's ``s = init``.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        beta2: float = 0.01,
        momentum: float = 0.9,
        damping: float = 1e-3,
        weight_decay: float = 0.0,
        gamma: float = 1.0,
        batch_size: int = 1,
        update_every: int = 1,
        init: float = 1.0,
        max_factor_dim: int = 2048,
    ):
        check_common(
            lr=lr, beta2=beta2, momentum=momentum, damping=damping, weight_decay=weight_decay,
            gamma=gamma, batch_size=batch_size, init=init,
        )
        check_positive_int("update_every", update_every)
        check_positive_int("max_factor_dim", max_factor_dim)
        defaults = dict(
            lr=lr, beta2=beta2, momentum=momentum, damping=damping, weight_decay=weight_decay,
            gamma=gamma, batch_size=batch_size, update_every=update_every, init=init,
            max_factor_dim=max_factor_dim,
        )
        super().__init__(params, defaults)

    def _init_state(self, p: torch.Tensor, group: dict) -> None:
        state = self.state[p]
        state["step"] = torch.tensor(0.0)
        shape = matrix_shape(p, group["max_factor_dim"])
        if shape is None:
            state["preconditioner"] = torch.full_like(p, group["init"], dtype=state_dtype(p))
        else:
            rows, cols = shape
            dtype = torch.float64 if p.dtype == torch.float64 else torch.float32
            kw = dict(device=p.device, dtype=dtype)
            init = group["init"] ** 0.5  # S_C (x) S_K = init * I, the same scale as the diagonal rule
            state["S_C"] = torch.eye(rows, **kw) * init
            state["S_K"] = torch.eye(cols, **kw) * init
            state["S_C_inv"] = torch.eye(rows, **kw) / init
            state["S_K_inv"] = torch.eye(cols, **kw) / init

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, beta2, gamma = group["lr"], group["beta2"], group["gamma"]
            lam, kappa, alpha1 = group["damping"], group["weight_decay"], group["momentum"]
            B, T = group["batch_size"], group["update_every"]
            for p in params_with_grad(group):
                state = self.state[p]
                if len(state) == 0:
                    self._init_state(p, group)
                update_now = int(state["step"]) % T == 0
                state["step"] += 1
                g = p.grad
                if "preconditioner" in state:
                    s = state["preconditioner"]
                    if update_now:
                        s.mul_(1 - beta2 * gamma).addcmul_(g, g, value=beta2 * B)
                    step = g.to(s.dtype) / (s + lam)
                else:
                    S_C, S_K = state["S_C"], state["S_K"]
                    rows, cols = S_C.shape[0], S_K.shape[0]
                    G = g.reshape(rows, cols).to(S_C.dtype)
                    if update_now:
                        C_inv, K_inv = state["S_C_inv"], state["S_K_inv"]
                        new_C = torch.addmm(
                            S_C, G @ K_inv, G.T, beta=1 - beta2 * gamma, alpha=beta2 * B / cols
                        )
                        new_C.diagonal().add_(beta2 / cols * lam * K_inv.trace())
                        new_K = torch.addmm(
                            S_K, G.T @ C_inv, G, beta=1 - beta2 * gamma, alpha=beta2 * B / rows
                        )
                        new_K.diagonal().add_(beta2 / rows * lam * C_inv.trace())
                        S_C.copy_(new_C)
                        S_K.copy_(new_K)
                        state["S_C_inv"].copy_(torch.linalg.inv(S_C))
                        state["S_K_inv"].copy_(torch.linalg.inv(S_K))
                    step = (state["S_C_inv"] @ G @ state["S_K_inv"]).reshape(p.shape)
                    if p.dtype not in (torch.bfloat16, torch.float16):
                        step = step.to(p.dtype)
                if kappa != 0:
                    step = step.add(p, alpha=kappa)
                if alpha1 != 0:
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p, dtype=state_dtype(p))
                    step = state["momentum_buffer"].mul_(alpha1).add_(step)
                p.add_(step.to(p.dtype), alpha=-lr)
        return loss
