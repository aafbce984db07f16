"""The torch.optim contract: validation, groups, None grads, state_dict, every layer type."""

import copy
import io

import pytest
import torch

import optimizers
from optimizers import IFShampoo, RFRMSProp, RFShampoo
from workers.models import LSTMLanguageModel, ResNet, ViT

CLASSES = [RFRMSProp, RFShampoo, IFShampoo]


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize(
    "name,value",
    [("lr", -1.0), ("lr", float("nan")), ("beta2", 0.0), ("beta2", 1.5), ("momentum", 1.0),
     ("damping", -1e-3), ("weight_decay", -0.1), ("gamma", 2.0), ("batch_size", 0),
     ("batch_size", 2.5), ("init", -1.0)],
)
def test_invalid_hyperparameters_are_named(cls, name, value):
    with pytest.raises(ValueError, match=name):
        cls([torch.nn.Parameter(torch.zeros(2))], **{name: value})


@pytest.mark.parametrize("cls", CLASSES)
def test_zero_init_only_for_the_diagonal_method_with_damping(cls):
    """RMSProp's original zero initialisation (the paper's Figure 2) works for RF-RMSProp, whose
    update divides by s + damping; a Kronecker factor is inverted and must start positive."""
    p = [torch.nn.Parameter(torch.zeros(2, 2))]
    if cls is RFRMSProp:
        cls(p, init=0.0, damping=1e-3)
        with pytest.raises(ValueError, match="init"):
            cls(p, init=0.0, damping=0.0)
    else:
        with pytest.raises(ValueError, match="init"):
            cls(p, init=0.0)


def test_shampoo_specific_validation():
    p = [torch.nn.Parameter(torch.zeros(2, 2))]
    with pytest.raises(ValueError, match="update_every"):
        IFShampoo(p, update_every=0)
    with pytest.raises(ValueError, match="riemannian_momentum"):
        IFShampoo(p, riemannian_momentum=1.0)
    with pytest.raises(ValueError, match="factor_dtype"):
        IFShampoo(p, factor_dtype="int8")
    with pytest.raises(ValueError, match="max_factor_dim"):
        RFShampoo(p, max_factor_dim=0)


def _run(model, opt, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        X = torch.randn(8, 6, generator=g)
        opt.zero_grad()
        model(X).square().mean().backward()
        opt.step()


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))


@pytest.mark.parametrize("cls", CLASSES)
def test_state_dict_round_trip_continues_bit_identically(cls):
    model = _model()
    opt = cls(model.parameters(), lr=0.05, batch_size=8)
    _run(model, opt, 5)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    _run(model, opt, 5, seed=1)
    expected = [p.detach().clone() for p in model.parameters()]

    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    model2 = _model()
    model2.load_state_dict(saved["model"])
    opt2 = cls(model2.parameters(), lr=0.05, batch_size=8)
    opt2.load_state_dict(saved["opt"])
    for p1, p2 in zip(model.parameters(), model2.parameters(), strict=True):
        for key, value in opt.state[p1].items():
            assert opt2.state[p2][key].dtype == value.dtype, key
    _run(model2, opt2, 5, seed=1)
    for a, b in zip(expected, model2.parameters(), strict=True):
        assert torch.equal(a, b.detach())


@pytest.mark.parametrize("cls", CLASSES)
def test_param_groups_and_missing_gradients(cls):
    model = _model()
    frozen = torch.nn.Parameter(torch.ones(3, 3))
    opt = cls(
        [{"params": model[0].parameters(), "lr": 0.0 + 1e-12},
         {"params": list(model[2].parameters()) + [frozen], "lr": 0.1}],
        batch_size=8,
    )
    before = [p.detach().clone() for p in model.parameters()]
    _run(model, opt, 3)
    after = list(model.parameters())
    assert torch.allclose(before[0], after[0], atol=1e-9)  # tiny lr group barely moves
    assert not torch.allclose(before[2], after[2])  # lr 0.1 group moves
    assert torch.equal(frozen, torch.ones(3, 3)) and len(opt.state[frozen]) == 0


def test_rfrmsprop_foreach_matches_single_tensor():
    m1, m2 = _model(), _model()
    o1 = RFRMSProp(m1.parameters(), lr=0.05, weight_decay=1e-2, foreach=True)
    o2 = RFRMSProp(m2.parameters(), lr=0.05, weight_decay=1e-2, foreach=False)
    _run(m1, o1, 6)
    _run(m2, o2, 6)
    for a, b in zip(m1.parameters(), m2.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_rfrmsprop_matches_the_paper_formula_by_hand():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = RFRMSProp([p], lr=0.1, beta2=0.2, momentum=0.5, damping=0.01, weight_decay=0.1,
                    batch_size=4)
    mu, s, m = p.detach().clone(), torch.ones(2), torch.zeros(2)
    for g in (torch.tensor([0.5, 1.0]), torch.tensor([-1.0, 0.25])):
        p.grad = g.clone()
        opt.step()
        s = 0.8 * s + 0.2 * 4 * g**2
        m = 0.5 * m + g / (s + 0.01) + 0.1 * mu
        mu = mu - 0.1 * m
    torch.testing.assert_close(p.detach(), mu)


@pytest.mark.parametrize("name", ["rfrmsprop", "rfshampoo", "ifshampoo"])
@pytest.mark.parametrize(
    "make_model,make_input",
    [
        (lambda: ResNet(width=4), lambda: torch.randn(4, 1, 28, 28)),
        (lambda: ViT(dim=16, depth=1, heads=2), lambda: torch.randn(4, 1, 28, 28)),
        (lambda: LSTMLanguageModel(3000, dim=8, layers=3), lambda: torch.randint(0, 3000, (4, 5))),
    ],
    ids=["resnet", "vit", "lstm"],
)
def test_every_parameter_of_resnet_vit_lstm_trains(name, make_model, make_input):
    torch.manual_seed(0)
    model = make_model()
    extra = {} if name == "rfrmsprop" else {"max_factor_dim": 1024}
    opt = optimizers.build(name, model.parameters(), lr=1e-2, batch_size=4, **extra)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(2):
        opt.zero_grad()
        out = model(make_input())
        out.float().square().mean().backward()
        opt.step()
    for n, p in model.named_parameters():
        assert torch.isfinite(p).all(), n
        if p.grad is not None and p.grad.abs().sum() > 0:
            assert not torch.equal(before[n], p.detach()), f"{n} did not move"
    if name == "ifshampoo":  # the rule: conv kernels get factors, vectors/huge sides diagonal
        kinds = {n: ("C" in opt.state[p]) for n, p in model.named_parameters()
                 if len(opt.state[p])}
        assert any(kinds.values()) and not all(kinds.values())


def test_registry_names_build_and_errors():
    assert optimizers.registry.BUILTIN == {
        "sgd", "adamw", "rmsprop", "shampoo", "rfrmsprop", "rfshampoo", "ifshampoo"}
    assert set(optimizers.names()) >= optimizers.registry.BUILTIN  # and the installed plugins
    model = _model()
    for name in optimizers.registry.BUILTIN:
        opt = optimizers.build(name, model.parameters(), lr=0.01)
        _run(model, opt, 2)
        assert all(torch.isfinite(p).all() for p in model.parameters()), name
    with pytest.raises(ValueError, match="Unknown optimizer 'adam'"):
        optimizers.build("adam", model.parameters())
    with pytest.raises(ValueError, match="riemannian_momentum"):
        optimizers.build("rfrmsprop", model.parameters(), riemannian_momentum=0.5)


def test_adamw_vocabulary_is_translated():
    opt = optimizers.build("adamw", _model().parameters(), lr=0.01, momentum=0.8, beta2=0.95,
                           damping=1e-6)
    g = opt.param_groups[0]
    assert g["betas"] == (0.8, 0.95) and g["eps"] == 1e-6


def test_deepcopy_and_cuda_agnostic_state():
    model = _model()
    opt = IFShampoo(model.parameters(), batch_size=8)
    _run(model, opt, 2)
    clone = copy.deepcopy(opt.state_dict())
    assert clone["param_groups"][0]["factor_dtype"] == torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("cls", CLASSES)
def test_cuda_step(cls):
    model = _model().cuda()
    opt = cls(model.parameters(), batch_size=8)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 6, device="cuda")).square().mean().backward()
        opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_ifshampoo_keeps_same_shaped_factors_stacked_across_steps():
    """Factors of same-shaped layers live in one stacked tensor per bucket; the per-parameter
    state holds views into it, so a step neither stacks nor unstacks (the storage stays put)."""
    torch.manual_seed(0)
    layers = [torch.nn.Linear(6, 6, bias=False) for _ in range(3)]
    params = [layer.weight for layer in layers]
    opt = IFShampoo(params, lr=1e-2, update_every=1, factor_dtype="float32")

    def step():
        x = torch.randn(4, 6)
        for layer in layers:
            x = torch.tanh(layer(x))
        opt.zero_grad()
        x.sum().backward()
        opt.step()

    step()
    ptrs = {k: [opt.state[p][k].data_ptr() for p in params] for k in ("C", "K", "P_C", "m_K")}
    storage = opt.state[params[0]]["C"].untyped_storage().data_ptr()
    assert all(opt.state[p]["C"].untyped_storage().data_ptr() == storage for p in params)  # one stack
    before = opt.state[params[1]]["C"].clone()
    step()
    assert {k: [opt.state[p][k].data_ptr() for p in params] for k in ptrs} == ptrs  # updated in place
    assert not torch.equal(opt.state[params[1]]["C"], before)
    # state_dict round-trips into a fresh optimizer that goes on identically
    clone_layers = copy.deepcopy(layers)
    other = IFShampoo([l.weight for l in clone_layers], lr=1e-2, update_every=1, factor_dtype="float32")
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    other.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(4, 6)
    for ls, o in ((layers, opt), (clone_layers, other)):
        h = x
        for layer in ls:
            h = torch.tanh(layer(h))
        o.zero_grad()
        h.sum().backward()
        o.step()
    for a, b in zip(layers, clone_layers, strict=True):
        assert torch.equal(a.weight, b.weight)
