"""IF-Shampoo: inverse- and root-free Shampoo (Lin et al. 2024, Fig. 5 right, full version Fig. 7).

The preconditioner of a matrix parameter M (p x d) is S_C^-1 (x) S_K^-1 with S_C^-1 = C C^T and
S_K^-1 = K K^T. The factors C, K are updated directly - no inverse, root or decomposition - by a
first-order truncated matrix exponential on the Riemannian step, with Riemannian momentum alpha2:

    A    = C^T G K                                          (G: gradient of the averaged loss)
    n_C  = B/(2d) A A^T + damping/2 * tr(K^T K)/d * C^T C - gamma/2 I_p
    n_K  = B/(2p) A^T A + damping/2 * tr(C^T C)/p * K^T K - gamma/2 I_d
    m_C <- alpha2 m_C + (1 - alpha2) n_C                    (likewise m_K)
    C   <- C - beta2 / max(||m_C||_F, 1) * C m_C            (likewise K)
    m   <- momentum * m + C C^T G K K^T + weight_decay * M
    M   <- M - lr * m

Factors are updated every ``update_every`` steps (from the first step on, before preconditioning),
both from the old values. C, K, m_C, m_K are stored in ``factor_dtype`` (bfloat16 by default, as in
the paper's mixed-precision runs; the normalisation by max(||m||_F, 1) is what keeps them stable
there). This follows the authors' reference package ``sirfshampoo`` 0.0.1 step for step on matrix
parameters (tests/optimizers/test_oracle_sirfshampoo.py).

Speed (bench/optimizer_step.py): C C^T and K K^T are cached between factor updates, so a step that
does not update the factors costs two matrix products per layer instead of four; same-shaped
layers are processed together with batched matrix products (``bmm``) on factors kept stacked per
bucket (each parameter's state holds views into the stacks: no stack/unstack copy per step); the
step makes no host-device synchronisation.

Which tensors get Kronecker factors: see ``optimizers._structure`` (conv kernels are reshaped to
(out, in*kh*kw); vectors, scalars and matrices with a side above ``max_factor_dim`` use the
RF-RMSProp diagonal rule). Differences from sirfshampoo by design: biases and other vectors get the
diagonal rule instead of a dense n x n factor; ``init`` sets the whole preconditioner S_C (x) S_K = init * I.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch
from torch.optim import Optimizer

from ._common import (
    FACTOR_DTYPES,
    KeepStateDtypes,
    baddbmm_,
    bmm,
    check_common,
    check_positive_int,
    check_unit_interval,
    group_by_device_and_dtype,
    params_with_grad,
    state_dtype,
)
from ._structure import matrix_shape

_FACTOR_KEYS = ("C", "K", "m_C", "m_K", "P_C", "P_K")


def _as_dtype(value: torch.dtype | str) -> torch.dtype:
    if isinstance(value, str):
        value = getattr(torch, value.removeprefix("torch."), value)
    if value not in FACTOR_DTYPES:
        raise ValueError(
            f"Invalid factor_dtype value: {value!r} (factor_dtype must be one of "
            f"{[str(d).removeprefix('torch.') for d in FACTOR_DTYPES]})"
        )
    return value  # type: ignore[return-value]


class IFShampoo(KeepStateDtypes, Optimizer):
    """Inverse- and root-free Shampoo.

    Args:
        params: iterable of parameters or param groups.
        lr: learning rate beta1.
        beta2: factor step size.
        momentum: alpha1, momentum on the parameter step.
        riemannian_momentum: alpha2, momentum on the factor steps m_C, m_K.
        damping: lambda.
        weight_decay: kappa (coupled, inside the momentum).
        gamma: 1 = moving average, 0 = sum.
        batch_size: B, the number of examples the loss averages over.
        update_every: T, factor update interval (default 2, as in the paper's runs).
        init: the initial preconditioner S_C (x) S_K = init * I (C_0 = K_0 = init^(-1/4) I), the
            same scale as the diagonal rule's ``s = init``.
        max_factor_dim: sides longer than this use the diagonal rule.
        factor_dtype: dtype of C, K, m_C, m_K (and the cached C C^T, K K^T).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        beta2: float = 0.01,
        momentum: float = 0.9,
        riemannian_momentum: float = 0.5,
        damping: float = 1e-3,
        weight_decay: float = 0.0,
        gamma: float = 1.0,
        batch_size: int = 1,
        update_every: int = 2,
        init: float = 1.0,
        max_factor_dim: int = 2048,
        factor_dtype: torch.dtype | str = torch.bfloat16,
    ):
        check_common(
            lr=lr, beta2=beta2, momentum=momentum, damping=damping, weight_decay=weight_decay,
            gamma=gamma, batch_size=batch_size, init=init,
        )
        check_unit_interval("riemannian_momentum", riemannian_momentum)
        check_positive_int("update_every", update_every)
        check_positive_int("max_factor_dim", max_factor_dim)
        defaults = dict(
            lr=lr, beta2=beta2, momentum=momentum, riemannian_momentum=riemannian_momentum,
            damping=damping, weight_decay=weight_decay, gamma=gamma, batch_size=batch_size,
            update_every=update_every, init=init, max_factor_dim=max_factor_dim,
            factor_dtype=_as_dtype(factor_dtype),
        )
        super().__init__(params, defaults)

    # ------------------------------------------------------------------ state
    def _init_state(self, p: torch.Tensor, group: dict) -> None:
        state = self.state[p]
        state["step"] = torch.tensor(0.0)
        shape = matrix_shape(p, group["max_factor_dim"])
        if shape is None:
            state["preconditioner"] = torch.full_like(p, group["init"], dtype=state_dtype(p))
            return
        kw = dict(device=p.device, dtype=group["factor_dtype"])
        c0 = group["init"] ** -0.25  # S_C (x) S_K = init * I, so C_0 C_0^T = I / sqrt(init)
        for key, n in zip(("C", "K"), shape, strict=True):
            state[key] = torch.eye(n, **kw) * c0
            state["m_" + key] = torch.zeros(n, n, **kw)
            state["P_" + key] = torch.eye(n, **kw) * (c0 * c0)

    # ------------------------------------------------------------------ step
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group: dict) -> None:
        T = group["update_every"]
        buckets: dict[tuple, list[torch.Tensor]] = defaultdict(list)
        diag_now: list[torch.Tensor] = []
        params: list[torch.Tensor] = []
        for p in params_with_grad(group):
            state = self.state[p]
            if len(state) == 0:
                self._init_state(p, group)
            update_now = int(state["step"]) % T == 0  # a CPU tensor: no device sync
            if "C" in state:
                key = (state["C"].shape[0], state["K"].shape[0], p.device, p.dtype, update_now)
                buckets[key].append(p)
            elif update_now:
                diag_now.append(p)
            params.append(p)
        if not params:
            return

        # Preconditioned steps, one per parameter (same order as `ordered`).
        ordered: list[torch.Tensor] = []
        steps: list[torch.Tensor] = []
        for (rows, cols, _dev, dtype, update_now), bucket in buckets.items():
            ordered.extend(bucket)
            steps.extend(self._kronecker_steps(bucket, rows, cols, dtype, update_now, group))
        diag = [p for p in params if "preconditioner" in self.state[p]]
        if diag:
            ordered.extend(diag)
            steps.extend(self._diagonal_steps(diag, diag_now, group))

        torch._foreach_add_([self.state[p]["step"] for p in ordered], 1.0)
        self._apply(ordered, steps, group)

    def _stacked(self, bucket: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The bucket's factors as stacked tensors, shared with the per-parameter state: each
        parameter's C, K, m_C, m_K, P_C, P_K are views into them, so steps update the stacks in
        place with no stack/unstack copies. Rebuilt (one copy) only when the views no longer
        match: the first step, after `load_state_dict`, or when the bucket's members change."""
        stacks = self.__dict__.setdefault("_stacks", {})
        key = tuple(id(p) for p in bucket)
        states = [self.state[p] for p in bucket]
        st = stacks.get(key)
        if st is not None and all(s[k].data_ptr() == st[k][i].data_ptr()
                                  for i, s in enumerate(states) for k in _FACTOR_KEYS):
            return st
        st = {k: torch.stack([s[k] for s in states]) for k in _FACTOR_KEYS}
        for i, s in enumerate(states):
            for k in _FACTOR_KEYS:
                s[k] = st[k][i]
        stacks[key] = st
        return st

    def _kronecker_steps(self, bucket, rows, cols, dtype, update_now, group):
        fdt = group["factor_dtype"]
        stacked = self._stacked(bucket)
        G = torch.stack([p.grad.reshape(rows, cols) for p in bucket]).to(fdt)
        if update_now:
            self._update_factors(G, stacked, group)
        U = bmm(bmm(stacked["P_C"], G), stacked["P_K"]).to(dtype)
        return [u.view(p.shape) for u, p in zip(U.unbind(0), bucket, strict=True)]

    def __getstate__(self):  # the stacks are a cache of the state: never pickled
        state = super().__getstate__()
        state.pop("_stacks", None)
        return state

    @staticmethod
    def _update_factors(G: torch.Tensor, f: dict[str, torch.Tensor], group: dict) -> None:
        """One Riemannian step on C and K of a stack of same-shaped layers (in place in `f`)."""
        B, lam, gamma = group["batch_size"], group["damping"], group["gamma"]
        alpha2, beta2 = group["riemannian_momentum"], group["beta2"]
        C, K, m_C, m_K = f["C"], f["K"], f["m_C"], f["m_K"]
        rows, cols = C.shape[-1], K.shape[-1]
        A = bmm(bmm(C.mT, G), K)
        # damping: tr(K^T K)/d = ||K||_F^2 / d, accumulated in float32
        tr_K = K.float().square().sum((-2, -1)).div_(cols)
        tr_C = C.float().square().sum((-2, -1)).div_(rows)
        n_C = bmm(C.mT, C).mul_((0.5 * lam * tr_K).to(C.dtype).view(-1, 1, 1))
        baddbmm_(n_C, A, A.mT, alpha=B / (2 * cols)).diagonal(dim1=-2, dim2=-1).sub_(gamma / 2)
        n_K = bmm(K.mT, K).mul_((0.5 * lam * tr_C).to(K.dtype).view(-1, 1, 1))
        baddbmm_(n_K, A.mT, A, alpha=B / (2 * rows)).diagonal(dim1=-2, dim2=-1).sub_(gamma / 2)
        for X, m, n in ((C, m_C, n_C), (K, m_K, n_K)):
            m.mul_(alpha2).add_(n, alpha=1 - alpha2)
            scale = beta2 / torch.linalg.matrix_norm(m.float()).clamp_(min=1.0)
            X.sub_(bmm(X, m).mul_(scale.to(X.dtype).view(-1, 1, 1)))
        bmm(C, C.mT, out=f["P_C"])  # in place: P_C, P_K are the stacks the state views
        bmm(K, K.mT, out=f["P_K"])

    def _diagonal_steps(self, diag, diag_now, group):
        """RF-RMSProp rule for vectors and oversized matrices (see optimizers._structure)."""
        beta2, gamma, B, lam = group["beta2"], group["gamma"], group["batch_size"], group["damping"]
        if diag_now:
            s_now = [self.state[p]["preconditioner"] for p in diag_now]
            g_now = [p.grad for p in diag_now]
            for (_d, _t), (s, g) in group_by_device_and_dtype([s_now, g_now]).items():
                torch._foreach_mul_(s, 1 - beta2 * gamma)
                torch._foreach_addcmul_(s, g, g, value=beta2 * B)
        denom = torch._foreach_add([self.state[p]["preconditioner"] for p in diag], lam)
        return list(torch._foreach_div([p.grad for p in diag], denom))

    def _apply(self, params, steps, group) -> None:
        lr, kappa, alpha1 = group["lr"], group["weight_decay"], group["momentum"]
        if alpha1 != 0:
            for p in params:
                st = self.state[p]
                if "momentum_buffer" not in st:
                    st["momentum_buffer"] = torch.zeros_like(p, dtype=state_dtype(p))
            bufs = [self.state[p]["momentum_buffer"] for p in params]
        else:
            bufs = steps
        for (_d, _t), (ps, us, ms) in group_by_device_and_dtype([params, steps, bufs]).items():
            if kappa != 0:
                torch._foreach_add_(us, ps, alpha=kappa)
            if alpha1 != 0:
                torch._foreach_mul_(ms, alpha1)
                torch._foreach_add_(ms, us)
            torch._foreach_add_(ps, ms, alpha=-lr)
