"""IF-Shampoo's bfloat16 factor products on this CPU: torch's own bf16 batched matmul against
`optimizers._common.bmm` (float32 product, rounded once to bf16), side by side in one run.

    python bench/half_matmul.py [--sizes 64 256 784] [--rounds 5]

A CPU with no native bf16 GEMM (AVX2 only; oneDNN's probe says so) runs torch's bf16 bmm in a
generic kernel; a GPU's bf16 GEMM, and the float32 route here, accumulate in float32 and round once.
Also one IF-Shampoo step (MLP 784-64-10, batch 64) with each kernel. Prints ratios (native/float32).
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
from optimizers import _common  # noqa: E402
from workers.models import MLP  # noqa: E402


def timed(fn, reps: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def ifshampoo_step(native: bool, steps: int = 6) -> float:
    saved = dict(_common._HALF_GEMM)
    _common._HALF_GEMM[torch.bfloat16] = native  # which kernel `_common.bmm` takes
    try:
        return _ifshampoo_step(steps)
    finally:
        _common._HALF_GEMM.clear()
        _common._HALF_GEMM.update(saved)


def _ifshampoo_step(steps: int) -> float:
    torch.manual_seed(0)
    model = MLP((784, 64, 10))
    opt = optimizers.build("ifshampoo", model.parameters(), lr=2e-3, batch_size=64, update_every=1)
    x, y = torch.randn(64, 784), torch.randint(0, 10, (64,))

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return timed(step, steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 784])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    probe = _common._cpu_has_half_gemm(torch.bfloat16)
    _common._HALF_GEMM[torch.bfloat16] = False  # `_common.bmm` below: the float32 route
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"native bf16 GEMM: {probe}, threads {torch.get_num_threads()}")
    print(f"{'case':<28}{'native bf16 ms':>16}{'float32 route ms':>18}{'ratio':>8}")
    for n in args.sizes:
        a, b = torch.randn(4, n, n).bfloat16(), torch.randn(4, n, n).bfloat16()
        reps = max(1, 2_000_000 // n**2)
        native, f32 = [], []
        for _ in range(args.rounds):  # alternated: these machines are noisy
            native.append(timed(lambda a=a, b=b: torch.bmm(a, b), reps))
            f32.append(timed(lambda a=a, b=b: _common.bmm(a, b), reps))
        mn, mf = statistics.median(native) * 1e3, statistics.median(f32) * 1e3
        print(f"{f'bmm 4x{n}x{n}':<28}{mn:>16.2f}{mf:>18.2f}{mn / mf:>8.1f}")
    native, f32 = [], []
    for _ in range(args.rounds):
        native.append(ifshampoo_step(True))
        f32.append(ifshampoo_step(False))
    mn, mf = statistics.median(native) * 1e3, statistics.median(f32) * 1e3
    print(f"{'IF-Shampoo step, MLP 784-64':<28}{mn:>16.2f}{mf:>18.2f}{mn / mf:>8.1f}")


if __name__ == "__main__":
    main()
