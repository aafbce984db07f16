"""RF-RMSProp: square-root-free RMSProp (Lin et al. 2024, Fig. 4 and the full version in Fig. 6).

    s  <- (1 - beta2*gamma) s + beta2 * B * g^2        (s starts at `init`, the paper uses 1)
    m  <- momentum * m + g / (s + damping) + weight_decay * mu
    mu <- mu - lr * m

`B` (`batch_size`) rescales the gradient of a loss averaged over B examples so that the update is
invariant to the scale of the loss (Sec. 3.1): the outer product of an averaged gradient is 1/B^2
of the summed one while the curvature it stands for is 1/B.

The state of a bfloat16/float16 parameter (``s``, ``m``) is float32: with beta2 = 1e-3 a bf16 ``s``
would round ``(1 - beta2) s`` back to ``s`` and never move.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim import Optimizer

from ._common import (
    KeepStateDtypes,
    check_common,
    group_by_device_and_dtype,
    params_with_grad,
    state_dtype,
)


class RFRMSProp(KeepStateDtypes, Optimizer):
    """Square-root-free RMSProp.

    Args:
        params: iterable of parameters or param groups.
        lr: learning rate beta1.
        beta2: preconditioner step size (EMA weight of the squared gradient).
        momentum: alpha1, heavy-ball momentum on the preconditioned step.
        damping: lambda, added to ``s`` before dividing.
        weight_decay: kappa, coupled weight decay (added to the step inside the momentum).
        gamma: 1 = moving average (RMSProp-like), 0 = sum (AdaGrad-like).
        batch_size: B, the number of examples the loss averages over.
        init: initial value of ``s`` (the paper: 1, not 0).
        foreach: batch the update over tensors with ``torch._foreach_*`` (default: on).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        beta2: float = 0.01,
        momentum: float = 0.9,
        damping: float = 1e-4,
        weight_decay: float = 0.0,
        gamma: float = 1.0,
        batch_size: int = 1,
        init: float = 1.0,
        *,
        foreach: bool | None = None,
    ):
        check_common(
            lr=lr, beta2=beta2, momentum=momentum, damping=damping, weight_decay=weight_decay,
            gamma=gamma, batch_size=batch_size, init=init, zero_init_ok=True,
        )
        defaults = dict(
            lr=lr, beta2=beta2, momentum=momentum, damping=damping, weight_decay=weight_decay,
            gamma=gamma, batch_size=batch_size, init=init, foreach=foreach,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)

    def _init_group(self, group, params, grads, precs, bufs) -> None:
        for p in params_with_grad(group):
            state = self.state[p]
            if len(state) == 0:
                state["preconditioner"] = torch.full_like(
                    p, group["init"], dtype=state_dtype(p), memory_format=torch.preserve_format
                )
            if group["momentum"] != 0 and "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(
                    p, dtype=state_dtype(p), memory_format=torch.preserve_format
                )
            params.append(p)
            grads.append(p.grad)
            precs.append(state["preconditioner"])
            bufs.append(state["momentum_buffer"] if group["momentum"] != 0 else None)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, precs, bufs = [], [], [], []
            self._init_group(group, params, grads, precs, bufs)
            if not params:
                continue
            use_foreach = group["foreach"] is not False
            update = _foreach_update if use_foreach else _single_tensor_update
            update(params, grads, precs, bufs, group)
        return loss


def _single_tensor_update(params, grads, precs, bufs, group) -> None:
    lr, beta2, gamma = group["lr"], group["beta2"], group["gamma"]
    alpha1, lam, kappa, B = group["momentum"], group["damping"], group["weight_decay"], group[
        "batch_size"
    ]
    for p, g, s, m in zip(params, grads, precs, bufs, strict=True):
        s.mul_(1 - beta2 * gamma).addcmul_(g, g, value=beta2 * B)
        step = g / (s + lam)
        if kappa != 0:
            step.add_(p, alpha=kappa)
        if m is not None:
            step = m.mul_(alpha1).add_(step)
        p.add_(step, alpha=-lr)


def _foreach_update(params, grads, precs, bufs, group) -> None:
    lr, beta2, gamma = group["lr"], group["beta2"], group["gamma"]
    alpha1, lam, kappa, B = group["momentum"], group["damping"], group["weight_decay"], group[
        "batch_size"
    ]
    has_momentum = bufs[0] is not None
    lists = [params, grads, precs] + ([bufs] if has_momentum else [])
    for (_device, _dtype), tensors in group_by_device_and_dtype(lists).items():
        p, g, s = tensors[0], tensors[1], tensors[2]
        torch._foreach_mul_(s, 1 - beta2 * gamma)
        torch._foreach_addcmul_(s, g, g, value=beta2 * B)
        denom = torch._foreach_add(s, lam)
        if has_momentum:
            m = tensors[3]
            torch._foreach_mul_(m, alpha1)
            torch._foreach_addcdiv_(m, g, denom)
            if kappa != 0:
                torch._foreach_add_(m, p, alpha=kappa)
            torch._foreach_add_(p, m, alpha=-lr)
        else:
            # no buffer: apply weight decay and the preconditioned gradient directly
            if kappa != 0:
                torch._foreach_add_(p, p, alpha=-lr * kappa)
            torch._foreach_addcdiv_(p, g, denom, value=-lr)
