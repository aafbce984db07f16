"""What to try: the search-space language, the paper's default spaces, the two-stage protocol.

No torch, no Ray, no HTTP, no SQL here (Optuna distributions are the only outside form).

    from search_spaces import SearchSpace, default_space, sample, sample_one, narrow
"""

from .defaults import (
    ACCEPTED,
    SCHEMES,
    accepted_hyperparameters,
    default_space,
    optimizer_names,
    original_scheme_space,
)
from .narrowing import NarrowingError, narrow
from .parameters import (
    Choice,
    Fixed,
    LogUniform,
    OneMinusLogUniform,
    Parameter,
    SearchSpaceError,
    Uniform,
    choice,
    fixed,
    log_uniform,
    one_minus_log_uniform,
    uniform,
)
from .protocol import TwoStageProtocol
from .sampling import fresh_seeds, sample, sample_one
from .space import SearchSpace

__all__ = [
    "ACCEPTED", "Choice", "Fixed", "LogUniform", "NarrowingError", "OneMinusLogUniform",
    "Parameter", "SearchSpace", "SearchSpaceError", "TwoStageProtocol", "Uniform",
    "accepted_hyperparameters", "choice", "default_space", "fixed", "log_uniform", "narrow",
    "one_minus_log_uniform", "optimizer_names", "original_scheme_space", "sample", "sample_one", "uniform",
    "SCHEMES", "fresh_seeds",
]
