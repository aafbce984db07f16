"""The optimizer state of a bfloat16 (or float16) parameter is float32 and follows the exact EMA.

A bfloat16 ``s`` with beta2 = 1e-3 never moves: ``(1 - 1e-3) * 1.0`` rounds back to 1.0 in 8
mantissa bits, so after 500 steps it reads 1.0000 where the exact EMA is 0.999^500 = 0.6064.
(IF-Shampoo's bfloat16 Kronecker factors are its point and stay as they are; its diagonal state
does not.)"""

import pytest
import torch

from optimizers import IFShampoo, RFRMSProp, RFShampoo, Shampoo

BETA2, STEPS, G = 1e-3, 500, 0.1
CASES = {
    "rfrmsprop": lambda ps: RFRMSProp(ps, lr=1e-8, beta2=BETA2, momentum=0.9),
    "rfrmsprop-single-tensor": lambda ps: RFRMSProp(ps, lr=1e-8, beta2=BETA2, momentum=0.9,
                                                    foreach=False),
    "rfshampoo": lambda ps: RFShampoo(ps, lr=1e-8, beta2=BETA2, momentum=0.9),
    "ifshampoo": lambda ps: IFShampoo(ps, lr=1e-8, beta2=BETA2, momentum=0.9,
                                          factor_dtype="float32", update_every=1),
    "shampoo": lambda ps: Shampoo(ps, lr=1e-8, beta2=BETA2, momentum=0.9, damping=1e-6),
}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", list(CASES))
def test_low_precision_parameter_state_is_float32_and_tracks_the_exact_ema(name, dtype):
    p = torch.nn.Parameter(torch.ones(8, dtype=dtype))
    opt = CASES[name]([p])
    g = torch.full_like(p, G)
    for _ in range(STEPS):
        p.grad = g.clone()
        opt.step()
    state = opt.state[p]
    s = state["preconditioner"]
    assert s.dtype == torch.float32 and state["momentum_buffer"].dtype == torch.float32
    decay = (1 - BETA2) ** STEPS
    g2 = float(g[0]) ** 2  # the gradient as the parameter's dtype holds it
    start = 0.0 if name == "shampoo" else 1.0  # Shampoo starts from zero, the root-free ones at 1
    exact = start * decay + g2 * (1 - decay)
    torch.testing.assert_close(s, torch.full_like(s, exact), rtol=1e-4, atol=0)
    # the bfloat16 EMA would not have moved from its start at all
    stuck = torch.tensor(start, dtype=torch.bfloat16)
    for _ in range(STEPS):
        stuck = stuck * (1 - BETA2) + BETA2 * g2
    assert abs(float(stuck) - exact) > 100 * abs(float(s[0]) - exact)
    assert p.dtype == dtype


def test_shampoo_factors_of_a_bfloat16_matrix_are_float32_and_exact():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.zeros(3, 4, dtype=torch.bfloat16))
    opt = Shampoo([p], lr=1e-8, beta2=BETA2, damping=1e-6, grafting="adam")
    G_ = torch.randn(3, 4).to(torch.bfloat16)
    for _ in range(STEPS):
        p.grad = G_.clone()
        opt.step()
    Gd = G_.double()
    decay = (1 - BETA2) ** STEPS
    st = opt.state[p]
    assert {st[k].dtype for k in ("S_C", "S_K", "R_C", "R_K", "graft", "momentum_buffer")} == {
        torch.float32}
    torch.testing.assert_close(st["S_C"].double(), (1 - decay) * Gd @ Gd.T, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(st["S_K"].double(), (1 - decay) * Gd.T @ Gd, rtol=1e-4, atol=1e-6)


def test_ifshampoo_keeps_its_bfloat16_factors():
    p = torch.nn.Parameter(torch.zeros(3, 4, dtype=torch.bfloat16))
    opt = IFShampoo([p], lr=1e-3, batch_size=4)
    p.grad = torch.ones_like(p)
    opt.step()
    assert opt.state[p]["C"].dtype == torch.bfloat16


@pytest.mark.parametrize("native", [True, False])
def test_half_precision_bmm_rounds_a_float32_product_once_on_either_path(native, monkeypatch):
    # A CPU with no bf16 GEMM (AVX2 only) multiplies in float32 and rounds once, as a GPU's bf16 GEMM
    # with float32 accumulation does; a CPU with one (AVX512-BF16/AMX) keeps torch's own kernel.
    from optimizers import _common
    monkeypatch.setitem(_common._HALF_GEMM, torch.bfloat16, native)
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(3, 40, 40, generator=g).bfloat16() for _ in range(2))
    exact = torch.bmm(a.double(), b.double())
    got = _common.bmm(a, b)
    assert got.dtype == torch.bfloat16
    # within one bf16 rounding (8 mantissa bits) of the exact product, whichever kernel ran
    torch.testing.assert_close(got.double(), exact, rtol=2 ** -7, atol=1e-2)
    if not native:
        assert torch.equal(got, torch.bmm(a.float(), b.float()).bfloat16())
        out = torch.empty_like(a)
        assert _common.bmm(a, b, out=out) is out and torch.equal(out, got)
        x = torch.randn(3, 40, 40, generator=g).bfloat16()
        want = torch.baddbmm(x.float(), a.float(), b.float(), alpha=0.5).bfloat16()
        assert torch.equal(_common.baddbmm_(x, a, b, alpha=0.5), want) and torch.equal(x, want)


def test_ifshampoo_steps_agree_whichever_bf16_kernel_runs(monkeypatch):
    from optimizers import _common

    def run(native):
        monkeypatch.setitem(_common._HALF_GEMM, torch.bfloat16, native)
        torch.manual_seed(0)
        p = torch.nn.Parameter(torch.randn(12, 20))
        opt = IFShampoo([p], lr=1e-2, batch_size=8, update_every=1)
        for _ in range(5):
            p.grad = torch.randn(12, 20)
            opt.step()
        return p.detach().clone(), opt.state[p]["C"].float()

    (p_native, c_native), (p_f32, c_f32) = run(True), run(False)
    assert not torch.equal(p_native, torch.zeros_like(p_native))
    torch.testing.assert_close(p_f32, p_native, rtol=1e-2, atol=1e-4)
    torch.testing.assert_close(c_f32, c_native, rtol=2 ** -6, atol=1e-3)


def _recorded_bmm_dtypes(monkeypatch, run) -> set:
    """The dtypes torch.bmm/baddbmm actually multiply in while `run()` runs."""
    seen = set()
    real_bmm, real_baddbmm_ = torch.bmm, torch.Tensor.baddbmm_

    def bmm(a, b, **kw):
        seen.add(a.dtype)
        return real_bmm(a, b, **kw)

    def baddbmm_(self, a, b, **kw):
        seen.add(a.dtype)
        return real_baddbmm_(self, a, b, **kw)
    with monkeypatch.context() as m:  # only these two patches end here, none of the caller's
        m.setattr(torch, "bmm", bmm)
        m.setattr(torch.Tensor, "baddbmm_", baddbmm_)
        run()
    return seen


@pytest.mark.parametrize("native,kernel_dtypes", [(True, {torch.bfloat16}), (False, {torch.float32})])
def test_ifshampoo_multiplies_bf16_factors_in_the_dtype_the_cpu_does_fast(native, kernel_dtypes, monkeypatch):
    from optimizers import _common

    def run():
        with monkeypatch.context() as m:
            m.setitem(_common._HALF_GEMM, torch.bfloat16, native)
            p = torch.nn.Parameter(torch.randn(6, 5))
            opt = IFShampoo([p], lr=1e-2, batch_size=4, update_every=1)
            p.grad = torch.randn(6, 5)
            opt.step()
            assert opt.state[p]["C"].dtype == torch.bfloat16
    assert _recorded_bmm_dtypes(monkeypatch, run) == kernel_dtypes


def test_the_half_gemm_probe_falls_back_to_float32_and_follows_mkldnn_enabled(monkeypatch):
    from optimizers import _common

    class NoProbe:
        def __getattr__(self, name):
            raise AttributeError(name)
    monkeypatch.setattr(_common, "_HALF_GEMM", {})
    monkeypatch.setattr(torch.ops, "mkldnn", NoProbe())
    assert _common._cpu_has_half_gemm(torch.bfloat16) is False  # no probe: float32, never wrong
    a = torch.ones(1, 2, 2, dtype=torch.bfloat16)
    assert _common._in_float32(a) and not _common._in_float32(a.float())
    assert not _common._in_float32(torch.ones(1, 2, 2, dtype=torch.bfloat16, device="meta"))
    _common._HALF_GEMM[torch.bfloat16] = True  # a CPU with a fast kernel ...
    assert not _common._in_float32(a)
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)  # ... that the user switched off
    assert _common._in_float32(a)
    with pytest.raises(RuntimeError, match="one dtype"):
        _common.bmm(a, a.float())
