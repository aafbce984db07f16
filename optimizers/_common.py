"""Validation and small tensor helpers shared by the root-free optimizers."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

import torch

FACTOR_DTYPES = (torch.bfloat16, torch.float32, torch.float64)


def _bad(name: str, value: object, requirement: str) -> ValueError:
    return ValueError(f"Invalid {name} value: {value!r} ({name} must be {requirement})")


def check_finite(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(name, value, "a finite number")


def check_positive(name: str, value: float) -> None:
    check_finite(name, value)
    if value <= 0:
        raise _bad(name, value, "> 0")


def check_non_negative(name: str, value: float) -> None:
    check_finite(name, value)
    if value < 0:
        raise _bad(name, value, ">= 0")


def check_unit_interval(name: str, value: float, *, closed_right: bool = False) -> None:
    check_finite(name, value)
    ok = 0.0 <= value <= 1.0 if closed_right else 0.0 <= value < 1.0
    if not ok:
        raise _bad(name, value, "in [0, 1]" if closed_right else "in [0, 1)")


def check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(name, value, "a positive integer")


def check_common(
    *,
    lr: float,
    beta2: float,
    momentum: float,
    damping: float,
    weight_decay: float,
    gamma: float,
    batch_size: int,
    init: float,
    zero_init_ok: bool = False,
) -> None:
    """Checks the hyperparameters every root-free method shares (ARCHITECTURE.md's table).
    `zero_init_ok`: a diagonal method may start from s = 0 when damping > 0 (the original RMSProp's
    initialisation, the paper's Figure 2); a Kronecker factor must start positive definite."""
    check_positive("lr", lr)
    check_finite("beta2", beta2)
    if not 0.0 < beta2 <= 1.0:
        raise _bad("beta2", beta2, "in (0, 1]")
    check_unit_interval("momentum", momentum)
    check_non_negative("damping", damping)
    check_non_negative("weight_decay", weight_decay)
    check_unit_interval("gamma", gamma, closed_right=True)
    check_positive_int("batch_size", batch_size)
    if zero_init_ok and init == 0:
        if damping <= 0:
            raise _bad("init", init, "positive, or 0 with damping > 0 (1/(s + damping) must be finite)")
        return
    check_positive("init", init)


def state_dtype(p: torch.Tensor) -> torch.dtype:
    """The dtype of a parameter's optimizer state: float32 for a bfloat16/float16 parameter (an EMA
    with a small beta2 stalls in 8 mantissa bits: s = 1 - 1e-3 rounds back to 1), else its own."""
    return torch.float32 if p.dtype in (torch.bfloat16, torch.float16) else p.dtype


_HALF_GEMM: dict[torch.dtype, bool] = {}  # _cpu_has_half_gemm's answers, per dtype (tests set them)


def _cpu_has_half_gemm(dtype: torch.dtype) -> bool:
    """Whether oneDNN has a fast `dtype` kernel on this CPU (x86: AVX512BW/VL/DQ and up, AMX), as
    torch's own probe says; cached. Without one (AVX2 only) torch's half-precision matmul runs a
    generic kernel."""
    if dtype not in _HALF_GEMM:
        probe = {torch.bfloat16: "_is_mkldnn_bf16_supported", torch.float16: "_is_mkldnn_fp16_supported"}[dtype]
        try:
            _HALF_GEMM[dtype] = bool(getattr(torch.ops.mkldnn, probe)())
        except (AttributeError, RuntimeError):  # no probe in this build: float32 is never wrong
            _HALF_GEMM[dtype] = False
    return _HALF_GEMM[dtype]


def _in_float32(a: torch.Tensor) -> bool:
    # torch takes oneDNN's kernel only while oneDNN is enabled (read per call: users may toggle it)
    return a.device.type == "cpu" and a.dtype in (torch.bfloat16, torch.float16) and not (
        torch.backends.mkldnn.enabled and _cpu_has_half_gemm(a.dtype))


def _same_dtype(*ts: torch.Tensor | None) -> None:
    dtypes = {t.dtype for t in ts if t is not None}
    if len(dtypes) > 1:  # torch.bmm refuses this too: never let it pass on one path only
        raise RuntimeError(f"expected tensors of one dtype, got {sorted(map(str, dtypes))}")


def bmm(a: torch.Tensor, b: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.bmm``, except that bfloat16/float16 matrices on a CPU with no fast half-precision
    kernel (AVX2 only) are multiplied in float32 and rounded once to their dtype. That is what a
    half-precision GEMM with float32 accumulation computes, up to summation order (a GPU's, unless
    reduced-precision reductions are allowed), and is 20-75x faster there than torch's generic
    kernel (784x784 bf16: 503 ms vs 17 ms, AMD EPYC; bench/half_matmul.py)."""
    if not _in_float32(a):
        return torch.bmm(a, b, out=out)
    _same_dtype(a, b, out)
    r = torch.bmm(a.float(), b.float())
    return r.to(a.dtype) if out is None else out.copy_(r)


def baddbmm_(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, alpha: float) -> torch.Tensor:
    """In place ``x += alpha * a @ b`` (batched), in float32 where :func:`bmm` is; returns `x`."""
    if not _in_float32(x):
        return x.baddbmm_(a, b, alpha=alpha)
    _same_dtype(x, a, b)
    xf = x.float()
    xf.baddbmm_(a.float(), b.float(), alpha=alpha)
    return x.copy_(xf)


def group_by_device_and_dtype(
    tensor_lists: Sequence[Sequence[torch.Tensor]],
) -> dict[tuple[torch.device, torch.dtype], list[list[torch.Tensor]]]:
    """Splits parallel tensor lists by (device, dtype) of the first list, as foreach ops need."""
    grouped: dict[tuple[torch.device, torch.dtype], list[list[torch.Tensor]]] = defaultdict(
        lambda: [[] for _ in tensor_lists]
    )
    for i, t in enumerate(tensor_lists[0]):
        bucket = grouped[(t.device, t.dtype)]
        for j, lst in enumerate(tensor_lists):
            bucket[j].append(lst[i])
    return dict(grouped)


def params_with_grad(group: dict) -> Iterable[torch.nn.Parameter]:
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise RuntimeError("root-free optimizers do not support sparse gradients")
        yield p


class KeepStateDtypes:
    """Mixin: ``load_state_dict`` keeps each state tensor's saved dtype.

    torch.optim casts floating state to the parameter's dtype on load; factors kept in bfloat16
    (or float32 factors of a bfloat16 parameter) must come back exactly as they were saved so a
    restored optimizer continues bit-identically.
    """

    def load_state_dict(self, state_dict: dict) -> None:
        saved = {
            pid: {k: v.dtype for k, v in st.items() if torch.is_tensor(v)}
            for pid, st in state_dict["state"].items()
        }
        super().load_state_dict(state_dict)  # type: ignore[misc]
        ids = [pid for g in state_dict["param_groups"] for pid in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]  # type: ignore[attr-defined]
        for pid, p in zip(ids, params, strict=True):
            state = self.state[p]  # type: ignore[attr-defined]
            for key, dtype in saved.get(pid, {}).items():
                if state[key].dtype != dtype:
                    state[key] = state[key].to(dtype)
