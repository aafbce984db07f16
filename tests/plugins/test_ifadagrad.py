"""The example optimizer plugin `ifadagrad` (examples/plugins/rootfree-examples): Eq. 18 of the
paper, checked against the root-free full-matrix AdaGrad of Eq. 17 it approximates."""

import pytest
import torch

from tests.plugins.conftest import require_examples

require_examples()
from rootfree_examples.ifadagrad import IFAdaGrad  # noqa: E402


def _run_both(beta2: float, steps: int = 6, d: int = 5, B: int = 4, safeguard: bool = True):
    """Same gradient sequence: S^-1 from IFAdaGrad vs S from Eq. 17 (float64)."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.zeros(d, dtype=torch.float64))
    opt = IFAdaGrad([p], lr=1e-12, beta2=beta2, momentum=0.0, batch_size=B, safeguard=safeguard)
    S = torch.eye(d, dtype=torch.float64)
    grads = [torch.randn(d, dtype=torch.float64) for _ in range(steps)]
    for g in grads:
        p.grad = g.clone()
        opt.step()
        S = S + beta2 * B * torch.outer(g, g)  # Eq. 17 with H = B g g^T
    P = opt.state[p]["precond_inv"].double()
    return P, S


@pytest.mark.parametrize("safeguard", [True, False])
def test_inverse_free_update_agrees_with_eq17_to_first_order_in_beta2(safeguard):
    """Guarded and unguarded: while x = beta2 B g^T P g <= 1 the safeguard changes nothing."""
    errors = []
    for beta2 in (1e-2, 1e-3):
        P, S = _run_both(beta2, safeguard=safeguard)
        errors.append(torch.linalg.matrix_norm(P @ S - torch.eye(len(S), dtype=S.dtype)).item())
    # S_bar^-1 S = I + O(beta2^2): a 10x smaller beta2 makes the gap ~100x smaller (not ~10x).
    assert errors[1] < errors[0] / 50
    assert errors[0] < 0.1


def test_the_correction_term_keeps_the_preconditioner_positive_definite():
    """One step from P = I with x = beta2 B |g|^2 = 1.5: without Eq. 18's correction term the
    eigenvalue along g would be 1 - x = -0.5; with it, 1 - x + x^2/2 = 0.625 (Claim 3)."""
    p = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = IFAdaGrad([p], lr=1e-3, beta2=0.75, momentum=0.0, batch_size=2, safeguard=False)
    p.grad = torch.tensor([1.0, 0.0], dtype=torch.float64)  # x = 0.75 * 2 * 1 = 1.5
    opt.step()
    eig = torch.linalg.eigvalsh(opt.state[p]["precond_inv"])
    assert torch.allclose(eig, torch.tensor([0.625, 1.0], dtype=torch.float64))


def test_step_is_the_preconditioned_gradient():
    p = torch.nn.Parameter(torch.ones(3))
    opt = IFAdaGrad([p], lr=0.1, beta2=0.5, momentum=0.0, batch_size=2)
    g = torch.tensor([1.0, -2.0, 0.5])
    p.grad = g.clone()
    opt.step()
    P = opt.state[p]["precond_inv"]
    assert torch.allclose(p.detach(), torch.ones(3) - 0.1 * P @ g, atol=1e-6)


def test_a_tensor_past_the_size_limit_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match=r"full 5000x5000 factor .* max_dim=4096"):
        IFAdaGrad(torch.nn.Linear(100, 50).parameters())
    IFAdaGrad(torch.nn.Linear(100, 50).parameters(), max_dim=5000)  # the limit is a knob


def _least_squares(lr: float, beta2: float, safeguard: bool, steps: int = 30):
    """Least squares over B = 20 rows (|g| ~ 18 at the start), the loss averaged over the rows."""
    torch.manual_seed(0)
    B, d = 20, 10
    A = torch.randn(B, d, dtype=torch.float64) * 3
    y = torch.randn(B, dtype=torch.float64) * 10
    w = torch.nn.Parameter(torch.zeros(d, dtype=torch.float64))
    opt = IFAdaGrad([w], lr=lr, beta2=beta2, momentum=0.0, batch_size=B, safeguard=safeguard)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = 0.5 * ((A @ w - y) ** 2).mean()
        loss.backward()
        losses.append(loss.item())
        opt.step()
    return losses, opt.state[w]["precond_inv"]


@pytest.mark.parametrize("beta2", [5e-2, 5e-3, 5e-4])
def test_unguarded_eq18_diverges_where_the_guarded_update_descends(beta2):
    bad, _ = _least_squares(0.05, beta2, safeguard=False)
    assert not all(torch.isfinite(torch.tensor(bad)))  # x = beta2 B g^T P g >> 2: P grows, blows up
    good, P = _least_squares(0.05, beta2, safeguard=True)
    assert all(b <= a for a, b in zip(good, good[1:], strict=False))  # monotone descent
    assert good[-1] < 0.9 * good[0]
    eig = torch.linalg.eigvalsh(P)
    assert eig.min() > 0 and eig.max() <= 1.0 + 1e-12  # positive definite, bounded by P_0 = I


def test_the_safeguard_is_eq18_bit_for_bit_while_the_step_is_small():
    for beta2 in (1e-2, 1e-3):
        (P1, _), (P2, _) = _run_both(beta2, safeguard=True), _run_both(beta2, safeguard=False)
        assert torch.equal(P1, P2)
