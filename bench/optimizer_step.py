"""Time per training step (forward + backward + optimizer step) of every optimizer, as a ratio to
torch AdamW (foreach) measured in the same run, and optimizer-state bytes per parameter.

    python bench/optimizer_step.py [--models mlp vit] [--steps 10] [--rounds 3] [--device cpu]

Models (issue #2): an MLP 784-512-512-512-512-10 at batch 128 (the optimizer dominates) and a ViT
(dim 192, depth 4, patch 4 on 28x28, batch 128; forward/backward dominate), on real
Fashion-MNIST batches. Optimizers are measured round-robin, several rounds, and the median of
the per-round means is kept: these machines are noisy, ratios taken side by side are what counts.
The authors' sirfshampoo (bf16 and fp32 factors, update every 2 steps) runs when installed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optimizers  # noqa: E402
from workers.datasets import fashion_mnist  # noqa: E402
from workers.models import MLP, ViT  # noqa: E402

BATCH = 128


def make_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "mlp":
        return MLP((784, 512, 512, 512, 512, 10))
    return ViT(dim=192, depth=4, heads=3, mlp_ratio=4, patch=4)


def make_optimizer(name: str, model: torch.nn.Module, dtype: torch.dtype):
    params = model.parameters()
    if name.startswith("sirfshampoo"):
        from sirfshampoo import SIRFShampoo

        fdt = torch.float32 if name.endswith("fp32") else dtype
        return SIRFShampoo(model, lr=1e-4, batch_size=BATCH, T=2, preconditioner_dtypes=fdt)
    if name == "ifshampoo-fp32":
        return optimizers.build("ifshampoo", params, lr=1e-4, batch_size=BATCH,
                                factor_dtype="float32")
    hp = {"lr": 1e-4}
    if name in ("rfrmsprop", "rfshampoo", "ifshampoo"):
        hp["batch_size"] = BATCH
    if name == "ifshampoo":
        hp["factor_dtype"] = dtype
    return optimizers.build(name, params, **hp)


def state_bytes(opt: torch.optim.Optimizer, model: torch.nn.Module) -> float:
    seen, total = set(), 0
    tensors = [t for st in opt.state.values() for t in st.values() if torch.is_tensor(t)]
    for attr in ("preconditioner", "preconditioner_momenta"):  # sirfshampoo keeps them aside
        for layer in getattr(opt, attr, []):
            tensors += [m.to_dense() if hasattr(m, "to_dense") else m for m in layer]
    for t in tensors:
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total / sum(p.numel() for p in model.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["mlp", "vit"])
    ap.add_argument("--optimizers", nargs="+", default=None)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16
    names = args.optimizers or (
        ["adamw", "sgd", "rmsprop", "rfrmsprop", "shampoo", "rfshampoo", "ifshampoo",
         "ifshampoo-fp32"]
        + (["sirfshampoo", "sirfshampoo-fp32"] if _has_sirfshampoo() else [])
    )
    data = fashion_mnist()
    x = data["train_x"][: BATCH * 4].float().div(255).unsqueeze(1).to(device)
    y = data["train_y"][: BATCH * 4].to(device)
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()}")
    for model_name in args.models:
        runs = {}
        for name in names:
            model = make_model(model_name).to(device)
            runs[name] = (model, make_optimizer(name, model, dtype))
        per_round: dict[str, list[float]] = {n: [] for n in runs}
        for r in range(args.rounds + 1):  # round 0 warms up (lazy state, allocator)
            for name, (model, opt) in runs.items():
                times = []
                for i in range(args.steps if r else 3):
                    xb = x[(i % 4) * BATCH : (i % 4 + 1) * BATCH]
                    yb = y[(i % 4) * BATCH : (i % 4 + 1) * BATCH]
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
                        loss = torch.nn.functional.cross_entropy(model(xb), yb)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    times.append(time.perf_counter() - t0)
                if r:
                    per_round[name].append(statistics.mean(times))
        base = statistics.median(per_round["adamw"])
        print(f"\n== {model_name} (batch {BATCH}); ratio = step time / AdamW step time")
        print(f"{'optimizer':<18}{'ms/step':>10}{'x AdamW':>10}{'state B/param':>15}")
        for name, (model, opt) in runs.items():
            t = statistics.median(per_round[name])
            print(f"{name:<18}{t * 1e3:>10.1f}{t / base:>10.2f}{state_bytes(opt, model):>15.1f}")
        if "sirfshampoo" in runs and "ifshampoo" in runs:
            ifs, sirf = (statistics.median(per_round[n]) for n in ("ifshampoo", "sirfshampoo"))
            print(f"ifshampoo / sirfshampoo step time: {ifs / sirf:.2f}")
            print(f"overhead over AdamW, ifshampoo / sirfshampoo: "
                  f"{(ifs / base - 1) / max(sirf / base - 1, 1e-9):.2f}")
        if "rfrmsprop" in runs and "rmsprop" in runs:
            print("rfrmsprop / rmsprop step time: "
                  f"{statistics.median(per_round['rfrmsprop']) / statistics.median(per_round['rmsprop']):.2f}")


def _has_sirfshampoo() -> bool:
    try:
        import sirfshampoo  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
