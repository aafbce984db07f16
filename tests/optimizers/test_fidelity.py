"""The paper's properties, checked numerically (Appendix A, Sec. 3.1, Claims 3, 9, 10)."""

import copy

import pytest
import torch

from optimizers import IFShampoo, RFRMSProp, RFShampoo


def _scalar_step(opt_factory, scale: float) -> float:
    """One step on loss 1/2 (scale * b)^2 from b0 = 2 / scale (so a = scale * b starts at 2)."""
    b = torch.nn.Parameter(torch.tensor([2.0 / scale], dtype=torch.float64))
    opt = opt_factory([b])
    opt.zero_grad()
    (0.5 * (scale * b) ** 2).sum().backward()
    opt.step()
    return b.item()


@pytest.mark.parametrize(
    "factory",
    [
        lambda p: RFRMSProp(p, lr=1.0, beta2=1.0, momentum=0.0, damping=0.0),
        lambda p: RFShampoo(p, lr=1.0, beta2=1.0, momentum=0.0, damping=0.0),
        lambda p: IFShampoo(p, lr=1.0, beta2=1.0, momentum=0.0, damping=0.0),
    ],
)
def test_appendix_a_root_free_step_is_affine_invariant(factory):
    a_new = _scalar_step(factory, 1.0)
    b_new = _scalar_step(factory, 2.0)
    assert a_new == pytest.approx(1.5)
    assert b_new == pytest.approx(0.75)
    assert a_new == pytest.approx(2 * b_new)


def test_appendix_a_root_based_step_breaks_invariance():
    def rmsprop(p):
        return torch.optim.RMSprop(p, lr=1.0, alpha=0.0, eps=0.0)

    a_new, b_new = _scalar_step(rmsprop, 1.0), _scalar_step(rmsprop, 2.0)
    assert a_new == pytest.approx(1.0) and b_new == pytest.approx(0.0)
    assert a_new != pytest.approx(2 * b_new)


def _mlp(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)
    ).to(dtype)


def _trajectory(model, opt, loss_scale, steps=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(16, 6, generator=g, dtype=torch.float64)
    Y = torch.randn(16, 3, generator=g, dtype=torch.float64)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        (loss_scale * ((model(X) - Y) ** 2).sum()).backward()
        opt.step()
        out.append(torch.cat([p.detach().flatten().clone() for p in model.parameters()]))
    return torch.stack(out)


B = 4  # a power of two: the rescaled runs are exact in floating point up to summation order
HP = dict(lr=0.05, beta2=0.1, momentum=0.5, weight_decay=1e-3)


@pytest.mark.parametrize(
    "make",
    [
        lambda p, b: RFRMSProp(p, **HP, damping=1e-3 / b, batch_size=b, init=1.0 / b),
        lambda p, b: RFShampoo(p, **HP, damping=1e-3 / b, batch_size=b, init=1.0 / b),
        lambda p, b: IFShampoo(p, **HP, damping=1e-3 / b, batch_size=b, init=1.0 / b,
                               factor_dtype=torch.float64),
    ],
    ids=["rfrmsprop", "rfshampoo", "ifshampoo"],
)
def test_scale_invariance_with_batch_size(make):
    m1, m2 = _mlp(), _mlp()
    t1 = _trajectory(m1, make(m1.parameters(), 1), loss_scale=1.0)
    t2 = _trajectory(m2, make(m2.parameters(), B), loss_scale=1.0 / B)
    torch.testing.assert_close(t1, t2, rtol=1e-9, atol=1e-11)
    assert (t1[-1] - t1[0]).abs().max() > 1e-3  # it did move


def test_without_batch_size_the_scale_matters():
    m1, m2 = _mlp(), _mlp()
    t1 = _trajectory(m1, RFRMSProp(m1.parameters(), **HP), loss_scale=1.0)
    t2 = _trajectory(m2, RFRMSProp(m2.parameters(), **HP), loss_scale=1.0 / B)
    assert not torch.allclose(t1, t2, rtol=1e-3)


def test_rfshampoo_kronecker_affine_invariance_claim_9():
    """W = U W~ R^T: running on W~ with S~_C = U^T S_C U, S~_K = R^T S_K R tracks W exactly."""
    torch.manual_seed(0)
    p, d = 4, 3
    X, Y = torch.randn(32, d, dtype=torch.float64), torch.randn(32, p, dtype=torch.float64)
    U = torch.eye(p, dtype=torch.float64) + 0.3 * torch.randn(p, p, dtype=torch.float64)
    R = torch.eye(d, dtype=torch.float64) + 0.3 * torch.randn(d, d, dtype=torch.float64)
    W = torch.nn.Parameter(torch.randn(p, d, dtype=torch.float64))
    Wt = torch.nn.Parameter(torch.linalg.solve(U, W.detach()) @ torch.linalg.inv(R.T))
    hp = dict(lr=0.1, beta2=0.2, momentum=0.5, damping=0.0, weight_decay=0.0, batch_size=32)
    o1, o2 = RFShampoo([W], **hp), RFShampoo([Wt], **hp)
    SC, SK = U.T @ U, R.T @ R
    o2.state[Wt].update(step=torch.tensor(0.0), S_C=SC.clone(), S_K=SK.clone(),
                        S_C_inv=torch.linalg.inv(SC), S_K_inv=torch.linalg.inv(SK))
    for _ in range(10):
        for opt, w in ((o1, W), (o2, None)):
            opt.zero_grad()
            Wcur = W if w is W else U @ Wt @ R.T
            ((X @ Wcur.T - Y) ** 2).mean().backward()
            opt.step()
    torch.testing.assert_close(U @ Wt.detach() @ R.T, W.detach(), rtol=1e-8, atol=1e-10)


def test_ifshampoo_factors_stay_positive_definite_and_finite_in_bfloat16_claim_3():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5))
    opt = IFShampoo(model.parameters(), lr=0.01, beta2=0.5, batch_size=64, damping=1e-4)
    X, y = torch.randn(64, 20), torch.randint(0, 5, (64,))
    for _ in range(400):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    for p in model.parameters():
        st = opt.state[p]
        if "C" not in st:
            continue
        for key in ("C", "K"):
            F = st[key]
            assert F.dtype == torch.bfloat16
            assert torch.isfinite(F).all()
            eig = torch.linalg.eigvalsh(F.double() @ F.double().T)
            assert eig.min() > 0, f"{key} lost positive definiteness"
    assert all(torch.isfinite(p).all() for p in model.parameters())


def _one_update_preconditioner(beta2: float) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(3)
    G = 0.3 * torch.randn(3, 2, dtype=torch.float64)
    out = []
    for cls, extra in ((IFShampoo, dict(riemannian_momentum=0.0, factor_dtype=torch.float64)),
                       (RFShampoo, {})):
        W = torch.nn.Parameter(torch.zeros(3, 2, dtype=torch.float64))
        opt = cls([W], lr=1.0, beta2=beta2, momentum=0.0, damping=1e-2, batch_size=2,
                  update_every=1, **extra)
        W.grad = G.clone()
        opt.step()
        st = opt.state[W]
        out.append(st["C"] @ st["C"].T if "C" in st else st["S_C_inv"])
    return out[0], out[1]


def test_ifshampoo_agrees_with_rfshampoo_to_first_order_claim_10():
    gaps = []
    for beta2 in (0.04, 0.02, 0.01):
        if_prec, rf_prec = _one_update_preconditioner(beta2)
        gaps.append((if_prec - rf_prec).norm().item())
    ratios = [gaps[i] / gaps[i + 1] for i in range(2)]
    for r in ratios:  # halving beta2 quarters the gap: the difference is O(beta2^2)
        assert 3.5 < r < 4.5, (gaps, ratios)


def test_bf16_factor_training_tracks_fp32_closely():
    m1 = _mlp(dtype=torch.float32)
    m2 = copy.deepcopy(m1)
    X, Y = torch.randn(16, 6), torch.randn(16, 3)
    o1 = IFShampoo(m1.parameters(), lr=0.01, batch_size=16)
    o2 = IFShampoo(m2.parameters(), lr=0.01, batch_size=16, factor_dtype="float32")
    for _ in range(20):
        for m, o in ((m1, o1), (m2, o2)):
            o.zero_grad()
            ((m(X) - Y) ** 2).mean().backward()
            o.step()
    for a, b in zip(m1.parameters(), m2.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0.05, atol=5e-3)
