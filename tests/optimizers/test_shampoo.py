"""Shampoo as the paper ran it (Fig. 5 left): the closed form, the cached roots, grafting,
momentum/weight-decay placement, validation and state_dict."""

import io

import numpy as np
import pytest
import torch
from scipy.linalg import fractional_matrix_power

import optimizers
from optimizers import Shampoo

LR, BETA2, LAM = 0.1, 0.3, 1e-3
W = torch.tensor([[1.0, 2.0, 0.5], [0.3, 1.5, 2.5], [2.0, 0.7, 1.1], [0.9, 0.4, 3.0]],
                 dtype=torch.float64)
C = torch.tensor([[0.5, -1.0, 0.2], [1.2, 0.3, -0.7], [-0.4, 0.8, 0.6], [0.1, -0.2, 0.9]],
                 dtype=torch.float64)


def _grad(M: np.ndarray) -> np.ndarray:
    """Gradient of 0.5 * sum(W * M^2) + sum(C * M) + 0.25 * sum(M)^2 (couples the entries)."""
    return W.numpy() * M + C.numpy() + 0.5 * M.sum()


def _loss(M: torch.Tensor) -> torch.Tensor:
    return 0.5 * (W * M**2).sum() + (C * M).sum() + 0.25 * M.sum() ** 2


def _root(S: np.ndarray) -> np.ndarray:
    return np.real(fractional_matrix_power(S + LAM * np.eye(len(S)), -0.25))


def _run(opt, params, steps):
    M, b = params
    for _ in range(steps):
        opt.zero_grad()
        (_loss(M) + 0.5 * (b**2 * torch.tensor([1.0, 3.0], dtype=b.dtype)).sum() + b.sum()).backward()
        opt.step()


def _params():
    M = torch.nn.Parameter(torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(4, 3))
    b = torch.nn.Parameter(torch.tensor([0.5, -2.0], dtype=torch.float64))
    return M, b


def test_first_two_steps_match_the_closed_form_in_float64():
    M, b = _params()
    opt = Shampoo([M, b], lr=LR, beta2=BETA2, momentum=0.0, damping=LAM, weight_decay=0.0,
                  grafting="none", update_every=1)
    M0, b0 = M.detach().numpy().copy(), b.detach().numpy().copy()
    _run(opt, (M, b), 2)

    # the closed form (scipy's fractional_matrix_power, not an eigendecomposition of ours)
    S_C, S_K, s, Mt, bt = np.zeros((4, 4)), np.zeros((3, 3)), np.zeros(2), M0, b0
    for _ in range(2):
        G = _grad(Mt)
        g = np.array([1.0, 3.0]) * bt + 1.0
        S_C = (1 - BETA2) * S_C + BETA2 * G @ G.T
        S_K = (1 - BETA2) * S_K + BETA2 * G.T @ G
        s = (1 - BETA2) * s + BETA2 * g**2
        Mt = Mt - LR * _root(S_C) @ G @ _root(S_K)
        bt = bt - LR * g / np.sqrt(s + LAM)
    np.testing.assert_allclose(M.detach().numpy(), Mt, rtol=0, atol=1e-6)
    np.testing.assert_allclose(b.detach().numpy(), bt, rtol=0, atol=1e-6)
    assert opt.state[M]["S_C"].dtype == torch.float64  # float64 parameters: float64 roots


def test_update_every_2_reuses_the_cached_roots_while_the_factors_take_every_gradient():
    M, b = _params()
    opt = Shampoo([M, b], lr=LR, beta2=BETA2, momentum=0.0, damping=LAM, update_every=2)
    M0 = M.detach().numpy().copy()
    _run(opt, (M, b), 3)
    G1 = _grad(M0)
    S_C1, S_K1 = BETA2 * G1 @ G1.T, BETA2 * G1.T @ G1
    M1 = M0 - LR * _root(S_C1) @ G1 @ _root(S_K1)
    G2 = _grad(M1)
    M2 = M1 - LR * _root(S_C1) @ G2 @ _root(S_K1)  # step 2: step 1's roots
    S_C2 = (1 - BETA2) * S_C1 + BETA2 * G2 @ G2.T
    S_K2 = (1 - BETA2) * S_K1 + BETA2 * G2.T @ G2
    G3 = _grad(M2)
    S_C3 = (1 - BETA2) * S_C2 + BETA2 * G3 @ G3.T
    S_K3 = (1 - BETA2) * S_K2 + BETA2 * G3.T @ G3
    M3 = M2 - LR * _root(S_C3) @ G3 @ _root(S_K3)  # step 3: fresh roots of the factors so far
    np.testing.assert_allclose(M.detach().numpy(), M3, rtol=0, atol=1e-6)
    np.testing.assert_allclose(opt.state[M]["S_C"].numpy(), S_C3, rtol=0, atol=1e-9)

    # and it differs from refreshing every step (the cache is what step 2 used)
    M_b, b_b = _params()
    every = Shampoo([M_b, b_b], lr=LR, beta2=BETA2, momentum=0.0, damping=LAM, update_every=1)
    _run(every, (M_b, b_b), 2)
    assert not np.allclose(M_b.detach().numpy(), M2, atol=1e-6)


def test_momentum_and_weight_decay_sit_where_rfshampoo_puts_them():
    """m <- momentum m + U + weight_decay M; M <- M - lr m (RF-Shampoo's placement)."""
    M, b = _params()
    alpha, kappa = 0.8, 0.05
    opt = Shampoo([M], lr=LR, beta2=BETA2, momentum=alpha, damping=LAM, weight_decay=kappa,
                  update_every=1)
    M0 = M.detach().numpy().copy()
    for _ in range(2):
        opt.zero_grad()
        _loss(M).backward()
        opt.step()
    G1 = _grad(M0)
    S_C, S_K = BETA2 * G1 @ G1.T, BETA2 * G1.T @ G1
    m = _root(S_C) @ G1 @ _root(S_K) + kappa * M0
    M1 = M0 - LR * m
    G2 = _grad(M1)
    S_C, S_K = (1 - BETA2) * S_C + BETA2 * G2 @ G2.T, (1 - BETA2) * S_K + BETA2 * G2.T @ G2
    m = alpha * m + _root(S_C) @ G2 @ _root(S_K) + kappa * M1
    np.testing.assert_allclose(M.detach().numpy(), M1 - LR * m, rtol=0, atol=1e-6)


def test_adam_grafting_takes_the_norm_of_adams_step_and_the_direction_of_shampoos():
    M, _ = _params()
    plain, grafted = M.detach().clone().requires_grad_(), M.detach().clone().requires_grad_()
    kw = dict(lr=LR, beta2=BETA2, momentum=0.0, damping=LAM, update_every=1)
    for p, opt in ((plain, Shampoo([plain], grafting="none", **kw)),
                   (grafted, Shampoo([grafted], grafting="adam", **kw))):
        _loss(p).backward()
        opt.step()
    M0 = M.detach()
    G = torch.from_numpy(_grad(M0.numpy()))
    adam = G / (BETA2 * G**2 + LAM).sqrt()
    u_plain, u_graft = (M0 - plain.detach()) / LR, (M0 - grafted.detach()) / LR
    torch.testing.assert_close(u_graft.norm(), adam.norm(), rtol=1e-9, atol=0)
    cos = (u_plain * u_graft).sum() / (u_plain.norm() * u_graft.norm())
    assert cos == pytest.approx(1.0, abs=1e-12)
    assert not torch.allclose(u_plain.norm(), u_graft.norm())


@pytest.mark.parametrize(
    "name,value",
    [("lr", 0.0), ("beta2", 0.0), ("beta2", 1.5), ("momentum", 1.0), ("damping", 0.0),
     ("weight_decay", -1.0), ("gamma", 2.0), ("update_every", 0), ("grafting", "sgd"),
     ("max_factor_dim", 0)],
)
def test_invalid_hyperparameters_are_named(name, value):
    with pytest.raises(ValueError, match=name):
        Shampoo([torch.nn.Parameter(torch.zeros(2, 2))], **{name: value})


def test_registry_builds_it_in_rfshampoos_vocabulary():
    assert optimizers.hyperparameters("shampoo") == (
        "lr", "beta2", "momentum", "damping", "weight_decay", "gamma", "update_every", "grafting",
        "max_factor_dim")
    p = torch.nn.Parameter(torch.zeros(3, 2))
    opt = optimizers.build("shampoo", [p], lr=0.01, beta2=0.05, damping=1e-6, grafting="adam")
    assert isinstance(opt, Shampoo)
    g = opt.param_groups[0]
    assert (g["beta2"], g["damping"], g["grafting"], g["update_every"]) == (0.05, 1e-6, "adam", 2)


def test_state_dict_round_trip_continues_bit_identically():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    x, y = torch.randn(16, 6), torch.randn(16, 3)

    def run(m, opt, n):
        for _ in range(n):
            opt.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            opt.step()

    opt = Shampoo(model.parameters(), lr=0.01, grafting="adam", update_every=2)
    run(model, opt, 3)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    run(model, opt, 3)
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    model2 = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    model2.load_state_dict(saved["model"])
    opt2 = Shampoo(model2.parameters(), lr=0.01, grafting="adam", update_every=2)
    opt2.load_state_dict(saved["opt"])
    run(model2, opt2, 3)
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b)
