"""Each optimizer of the registry trains a small real model on Fashion-MNIST well above chance."""

import pytest
import torch

import optimizers
from workers.datasets import fashion_mnist
from workers.models import MLP

SETTINGS = {
    "sgd": dict(lr=0.05, momentum=0.9),
    "adamw": dict(lr=1e-3),
    "rmsprop": dict(lr=1e-3),
    "shampoo": dict(lr=3e-3, momentum=0.9),
    "rfrmsprop": dict(lr=1e-2, batch_size=64, damping=1e-4),
    "rfshampoo": dict(lr=2e-3, batch_size=64),
    "ifshampoo": dict(lr=2e-3, batch_size=64),
}


@pytest.mark.slow  # over ~3 s: `make test-fast` leaves it out
@pytest.mark.parametrize("name", list(SETTINGS))
def test_trains_fashion_mnist_above_chance(name):
    data = fashion_mnist()
    torch.manual_seed(0)
    x = data["train_x"][:3000].float().div(255).view(-1, 784)
    y = data["train_y"][:3000]
    tx = data["test_x"][:1000].float().div(255).view(-1, 784)
    ty = data["test_y"][:1000]
    model = MLP((784, 64, 10))
    opt = optimizers.build(name, model.parameters(), **SETTINGS[name])
    for _epoch in range(2):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    with torch.no_grad():
        acc = (model(tx).argmax(1) == ty).float().mean().item()
    assert acc > 0.6, f"{name}: test accuracy {acc:.3f}"
