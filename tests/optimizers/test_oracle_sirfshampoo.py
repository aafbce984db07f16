"""IFShampoo follows the authors' reference package sirfshampoo 0.0.1 step for step."""

import copy

import pytest
import torch

from optimizers import IFShampoo

sirfshampoo = pytest.importorskip("sirfshampoo")


@pytest.mark.parametrize("shape", [(7, 5, 3), (16, 4, 9), (3, 12, 12)])
@pytest.mark.parametrize(
    "hp",
    [
        dict(lr=0.05, beta2=0.1, momentum=0.9, riemannian_momentum=0.5, damping=1e-3,
             weight_decay=1e-2, update_every=2),
        dict(lr=0.01, beta2=0.5, momentum=0.0, riemannian_momentum=0.0, damping=1e-2,
             weight_decay=0.0, update_every=1),
        dict(lr=0.1, beta2=0.02, momentum=0.5, riemannian_momentum=0.9, damping=0.0,
             weight_decay=1e-3, update_every=3),
    ],
)
def test_matches_sirfshampoo_within_1e_4_over_20_steps(shape, hp):
    torch.manual_seed(0)
    d_in, d_hidden, d_out = shape
    ref_model = torch.nn.Sequential(
        torch.nn.Linear(d_in, d_hidden, bias=False), torch.nn.Tanh(),
        torch.nn.Linear(d_hidden, d_out, bias=False),
    )
    model = copy.deepcopy(ref_model)
    batch = 8
    ref = sirfshampoo.SIRFShampoo(
        ref_model, lr=hp["lr"], beta2=hp["beta2"], alpha1=hp["momentum"],
        alpha2=hp["riemannian_momentum"], lam=hp["damping"], kappa=hp["weight_decay"],
        batch_size=batch, T=hp["update_every"], preconditioner_dtypes=torch.float32,
    )
    ours = IFShampoo(model.parameters(), batch_size=batch, factor_dtype=torch.float32, **hp)
    g = torch.Generator().manual_seed(1)
    worst = 0.0
    for _ in range(20):
        X, Y = torch.randn(batch, d_in, generator=g), torch.randn(batch, d_out, generator=g)
        for m, opt in ((ref_model, ref), (model, ours)):
            opt.zero_grad()
            ((m(X) - Y) ** 2).mean().backward()
            opt.step()
        for a, b in zip(ref_model.parameters(), model.parameters(), strict=True):
            worst = max(worst, ((a - b).norm() / a.norm()).item())
    assert worst < 1e-4
