"""The ifadagrad plugin's optimizer (torch): the method and its equations are described in
`rootfree_examples.ifadagrad`, the module the entry point loads."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim import Optimizer

MAX_DIM = 4096  # a d x d factor of 4096 float32 is 64 MiB per parameter tensor


class IFAdaGrad(Optimizer):
    """Inverse-free full-matrix AdaGrad (one d x d factor per parameter tensor).

    Args:
        lr: learning rate beta1. beta2: preconditioner step size. momentum: alpha1.
        weight_decay: kappa (coupled, inside the momentum). batch_size: B, the examples the loss
        averages over. init: S starts at init * I. max_dim: the largest parameter tensor (in
        elements) it accepts; a larger one raises ValueError at construction.
        safeguard: cap the step size at x = beta2 B g^T P g <= 1 (see `rootfree_examples.ifadagrad`);
        False runs Eq. 18 as printed.
    """

    def __init__(self, params, lr: float = 1e-3, beta2: float = 1e-2, momentum: float = 0.9,
                 weight_decay: float = 0.0, batch_size: int = 1, init: float = 1.0, max_dim: int = MAX_DIM,
                 safeguard: bool = True):
        for name, value, ok in (("lr", lr, lr > 0), ("beta2", beta2, 0 < beta2 <= 1),
                                ("momentum", momentum, 0 <= momentum < 1),
                                ("weight_decay", weight_decay, weight_decay >= 0),
                                ("batch_size", batch_size, batch_size >= 1), ("init", init, init > 0),
                                ("max_dim", max_dim, max_dim >= 1),
                                ("safeguard", safeguard, isinstance(safeguard, bool))):
            if not ok:
                raise ValueError(f"Invalid {name} value: {value!r}")
        defaults = dict(lr=lr, beta2=beta2, momentum=momentum, weight_decay=weight_decay,
                        batch_size=batch_size, init=init, max_dim=max_dim, safeguard=safeguard)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                d = p.numel()
                if d > group["max_dim"]:
                    raise ValueError(
                        f"ifadagrad keeps a full {d}x{d} factor for a parameter of shape {tuple(p.shape)} "
                        f"({d * d * 4 / 2**20:.0f} MiB); it allows tensors of at most max_dim={group['max_dim']} "
                        "elements. Use a smaller model, or rfrmsprop / ifshampoo for this one")

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, beta2, alpha1 = group["lr"], group["beta2"], group["momentum"]
            kappa, B = group["weight_decay"], group["batch_size"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    dtype = torch.float64 if p.dtype == torch.float64 else torch.float32  # never bf16
                    state["precond_inv"] = torch.eye(p.numel(), dtype=dtype, device=p.device) / group["init"]
                    if alpha1 != 0:
                        state["momentum_buffer"] = torch.zeros_like(p, dtype=dtype)  # float32 for bf16
                P = state["precond_inv"]
                g = p.grad.reshape(-1).to(P.dtype)
                u = P @ g
                gu = torch.dot(g, u)
                a = beta2 * B
                if group.get("safeguard", True):
                    # x = a g^T P g: Eq. 18 scales P along u by 1 - x + x^2/2, which grows past x = 2;
                    # a / max(1, x) keeps x <= 1 (P shrinks, stays PD), and is a itself when x <= 1
                    a = a / torch.clamp(a * gu, min=1.0)
                c = -a + 0.5 * a * a * gu
                P.addr_(u, u, alpha=float(c))  # P + c u u^T: Eq. 18 (in place, no d x d temporary)
                step = (u * (1 + c * torch.dot(u, g))).view_as(p)  # P_new g, in P's dtype
                if kappa != 0:
                    step.add_(p, alpha=kappa)
                if alpha1 != 0:
                    step = state["momentum_buffer"].mul_(alpha1).add_(step)
                p.add_(step.to(p.dtype), alpha=-lr)
        return loss
