"""SearchSpace: hyperparameter name -> Parameter, with its JSON/YAML/Optuna forms."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from .parameters import (
    Choice,
    Fixed,
    LogUniform,
    OneMinusLogUniform,
    Parameter,
    SearchSpaceError,
    Uniform,
    parameter_from_dict,
)

MAX_PARAMETERS = 100


class SearchSpace(Mapping[str, Parameter]):
    """An immutable mapping of hyperparameter names to parameters.

    ``notes`` carries human-readable remarks (e.g. why narrowing widened a bound); it is not part
    of the space's identity and is not serialised by ``to_dict``.
    """

    def __init__(self, parameters: Mapping[str, Parameter], notes: list[str] | None = None):
        if len(parameters) > MAX_PARAMETERS:
            raise SearchSpaceError(
                f"a search space has at most {MAX_PARAMETERS} parameters, got {len(parameters)}"
            )
        params = {}
        for name, p in parameters.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise SearchSpaceError(f"parameter name {name!r} is not a valid keyword name")
            if not isinstance(p, Parameter):
                raise SearchSpaceError(f"parameter {name!r}: {p!r} is not a Parameter")
            params[name] = p if p.name == name else dataclasses.replace(p, name=name)
        self._params = dict(sorted(params.items()))
        self.notes = list(notes or [])

    # Mapping protocol
    def __getitem__(self, name: str) -> Parameter:
        return self._params[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self._params == other._params

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def __repr__(self) -> str:
        return f"SearchSpace({self.to_dict()!r})"

    def validate_for(self, accepted: set[str] | tuple[str, ...], optimizer: str) -> SearchSpace:
        """Raises SearchSpaceError when a name is not a keyword of `optimizer`."""
        unknown = sorted(set(self) - set(accepted))
        if unknown:
            raise SearchSpaceError(
                f"parameter {unknown[0]!r}: not a hyperparameter of optimizer {optimizer!r} "
                f"(it accepts: {', '.join(sorted(accepted))})"
            )
        return self

    # ------------------------------------------------------------------ forms
    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: p.to_dict() for name, p in self._params.items()}

    @classmethod
    def from_dict(cls, d: Any) -> SearchSpace:
        if not isinstance(d, Mapping):
            raise SearchSpaceError(f"a search space is an object of parameters, got {d!r}")
        return cls({name: parameter_from_dict(name, spec) for name, spec in d.items()})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SearchSpace:
        return cls.from_dict(json.loads(text))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=True)

    @classmethod
    def from_yaml(cls, text: str) -> SearchSpace:
        return cls.from_dict(yaml.safe_load(text))

    def to_optuna(self) -> dict[str, Any]:
        """Optuna distributions. Optuna has no 1-minus-log scale: such a parameter becomes a
        linear FloatDistribution over the same values; ``optuna_kinds`` restores it."""
        import optuna.distributions as od

        out: dict[str, Any] = {}
        for name, p in self._params.items():
            if isinstance(p, Fixed | Choice):
                out[name] = od.CategoricalDistribution(
                    [p.value] if isinstance(p, Fixed) else list(p.values))
            elif p.int:
                out[name] = od.IntDistribution(int(p.low), int(p.high),
                                               log=isinstance(p, LogUniform))
            else:
                out[name] = od.FloatDistribution(p.low, p.high, log=isinstance(p, LogUniform))
        return out

    def optuna_kinds(self) -> dict[str, str]:
        """The kinds Optuna's distributions cannot express (pass to ``from_optuna``)."""
        return {n: p.kind for n, p in self._params.items() if isinstance(p, OneMinusLogUniform | Fixed)}

    @classmethod
    def from_optuna(cls, distributions: Mapping[str, Any],
                    kinds: Mapping[str, str] | None = None) -> SearchSpace:
        import optuna.distributions as od

        kinds = kinds or {}
        params: dict[str, Parameter] = {}
        for name, dist in distributions.items():
            if isinstance(dist, od.CategoricalDistribution):
                choices = tuple(dist.choices)
                params[name] = (Fixed(name, value=choices[0]) if kinds.get(name) == "fixed"
                                else Choice(name, values=choices))
            elif kinds.get(name) == "one_minus_log_uniform":
                params[name] = OneMinusLogUniform(name, low=dist.low, high=dist.high)
            else:
                is_int = isinstance(dist, od.IntDistribution)
                klass = LogUniform if dist.log else Uniform
                params[name] = klass(name, low=dist.low, high=dist.high, int=is_int)
        return cls(params)
