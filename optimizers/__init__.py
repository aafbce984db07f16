"""Root-free adaptive optimizers (Lin et al., ICML 2024) as torch.optim optimizers.

    from optimizers import IFShampoo
    opt = IFShampoo(model.parameters(), lr=3e-4, batch_size=128)

or by name, with the same keyword vocabulary for every optimizer:

    import optimizers
    opt = optimizers.build("ifshampoo", model.parameters(), lr=3e-4, damping=1e-4)
"""

from .ifshampoo import IFShampoo
from .registry import build, hyperparameters, names
from .rfrmsprop import RFRMSProp
from .rfshampoo import RFShampoo

__all__ = ["IFShampoo", "RFRMSProp", "RFShampoo", "build", "hyperparameters", "names"]
