"""Root-free adaptive optimizers (Lin et al., ICML 2024) as torch.optim optimizers.

    from optimizers import IFShampoo
    opt = IFShampoo(model.parameters(), lr=3e-4, batch_size=128)

or by name, with the same keyword vocabulary for every optimizer:

    import optimizers
    opt = optimizers.build("ifshampoo", model.parameters(), lr=3e-4, damping=1e-4)

The classes are imported on first use: the registry (names, vocabularies) loads without torch,
so the API process can describe every optimizer without carrying torch.
"""

from typing import TYPE_CHECKING

from .registry import build, hyperparameters, names

if TYPE_CHECKING:
    from .ifshampoo import IFShampoo
    from .rfrmsprop import RFRMSProp
    from .rfshampoo import RFShampoo
    from .shampoo import Shampoo

_CLASSES = {"IFShampoo": "ifshampoo", "RFRMSProp": "rfrmsprop", "RFShampoo": "rfshampoo",
            "Shampoo": "shampoo"}

__all__ = ["IFShampoo", "RFRMSProp", "RFShampoo", "Shampoo", "build", "hyperparameters", "names"]


def __getattr__(name: str):
    if name in _CLASSES:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_CLASSES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
