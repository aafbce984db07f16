"""The search-space language: one class per kind of parameter.

Every numeric parameter maps a number ``u`` in [0, 1) to a value through its sampling scale
(linear, log, or log of 1 - value), so random and quasi-random sampling share one code path and
stage-2 narrowing works in the scale the parameter was sampled in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

MAX_CHOICES = 1000


class SearchSpaceError(ValueError):
    """An invalid search space; the message names the parameter and the problem."""


def _number(name: str, what: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SearchSpaceError(f"parameter {name!r}: {what} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise SearchSpaceError(f"parameter {name!r}: {what} must be finite, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Parameter:
    name: str
    kind: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def from_unit(self, u: float) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class _Range(Parameter):
    """A numeric range [low, high] sampled uniformly in ``scale(value)``."""

    low: float = 0.0
    high: float = 1.0
    int: bool = False

    def __post_init__(self) -> None:
        low = _number(self.name, "low", self.low)
        high = _number(self.name, "high", self.high)
        if low >= high:
            raise SearchSpaceError(
                f"parameter {self.name!r}: low ({self.low!r}) must be < high ({self.high!r})"
            )
        self._check_domain(low, high)
        if self.int and (low != round(low) or high != round(high)):
            raise SearchSpaceError(f"parameter {self.name!r}: integer bounds must be integers")

    def _check_domain(self, low: float, high: float) -> None:
        pass

    # sampling scale: subclasses override both directions
    def scale(self, value: float) -> float:
        return value

    def unscale(self, x: float) -> float:
        return x

    def from_unit(self, u: float) -> float | int:
        lo, hi = self.scale(self.low), self.scale(self.high)
        value = self.unscale(lo + u * (hi - lo))
        value = min(max(value, min(self.low, self.high)), max(self.low, self.high))
        return int(round(value)) if self.int else value

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "low": self.low, "high": self.high}
        if self.int:
            d["int"] = True
        return d


@dataclass(frozen=True)
class Uniform(_Range):
    kind: ClassVar[str] = "uniform"


@dataclass(frozen=True)
class LogUniform(_Range):
    kind: ClassVar[str] = "log_uniform"

    def _check_domain(self, low: float, high: float) -> None:
        if low <= 0:
            raise SearchSpaceError(
                f"parameter {self.name!r}: low ({self.low!r}) must be > 0 on a log scale"
            )

    def scale(self, value: float) -> float:
        return math.log(value)

    def unscale(self, x: float) -> float:
        return math.exp(x)


@dataclass(frozen=True)
class OneMinusLogUniform(_Range):
    """For beta-like values near 1: ``1 - value`` is log-uniform (Choi et al. 2019)."""

    kind: ClassVar[str] = "one_minus_log_uniform"

    def _check_domain(self, low: float, high: float) -> None:
        if not 0 <= low < high < 1:
            raise SearchSpaceError(
                f"parameter {self.name!r}: one_minus_log_uniform needs 0 <= low < high < 1, "
                f"got low={self.low!r}, high={self.high!r}"
            )
        if self.int:
            raise SearchSpaceError(f"parameter {self.name!r}: one_minus_log_uniform cannot be int")

    def scale(self, value: float) -> float:
        return math.log(1.0 - value)

    def unscale(self, x: float) -> float:
        return 1.0 - math.exp(x)


@dataclass(frozen=True)
class Choice(Parameter):
    kind: ClassVar[str] = "choice"
    values: tuple = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not isinstance(self.values, tuple | list) or len(self.values) == 0:
            raise SearchSpaceError(f"parameter {self.name!r}: choice needs at least one value")
        if len(self.values) > MAX_CHOICES:
            raise SearchSpaceError(
                f"parameter {self.name!r}: {len(self.values)} choices is more than {MAX_CHOICES}"
            )
        for v in self.values:
            _check_plain(self.name, v)
        object.__setattr__(self, "values", tuple(self.values))

    def from_unit(self, u: float) -> Any:
        return self.values[min(int(u * len(self.values)), len(self.values) - 1)]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "values": list(self.values)}


@dataclass(frozen=True)
class Fixed(Parameter):
    kind: ClassVar[str] = "fixed"
    value: Any = None

    def __post_init__(self) -> None:
        _check_plain(self.name, self.value)

    def from_unit(self, u: float) -> Any:
        return self.value

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value}


def _check_plain(name: str, value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise SearchSpaceError(f"parameter {name!r}: value {value!r} is not finite")
    if not isinstance(value, str | int | float | bool) and value is not None:
        raise SearchSpaceError(
            f"parameter {name!r}: values must be numbers, strings or booleans, got {value!r}"
        )


KINDS: dict[str, type[Parameter]] = {
    cls.kind: cls for cls in (Uniform, LogUniform, OneMinusLogUniform, Choice, Fixed)
}


def parameter_from_dict(name: str, d: Any) -> Parameter:
    if not isinstance(d, dict):
        raise SearchSpaceError(f"parameter {name!r}: expected an object with a 'kind', got {d!r}")
    kind = d.get("kind")
    if kind not in KINDS:
        raise SearchSpaceError(
            f"parameter {name!r}: unknown kind {kind!r}; known: {', '.join(KINDS)}"
        )
    allowed = {"kind", "low", "high", "int"} if issubclass(KINDS[kind], _Range) else (
        {"kind", "values"} if kind == "choice" else {"kind", "value"})
    extra = sorted(set(d) - allowed)
    if extra:
        raise SearchSpaceError(f"parameter {name!r}: unexpected field(s) {extra} for kind {kind!r}")
    try:
        if kind == "choice":
            return Choice(name, values=d["values"])
        if kind == "fixed":
            return Fixed(name, value=d["value"])
        return KINDS[kind](name, low=d["low"], high=d["high"], int=bool(d.get("int", False)))
    except KeyError as e:
        raise SearchSpaceError(f"parameter {name!r}: missing field {e.args[0]!r}") from None


# constructors in the words of the issue: log_uniform(1e-5, 1e-1) etc. (the name is set by the space)
def log_uniform(low: float, high: float, int: bool = False) -> LogUniform:  # noqa: A002
    return LogUniform("", low=low, high=high, int=int)


def uniform(low: float, high: float, int: bool = False) -> Uniform:  # noqa: A002
    return Uniform("", low=low, high=high, int=int)


def one_minus_log_uniform(low: float, high: float) -> OneMinusLogUniform:
    return OneMinusLogUniform("", low=low, high=high)


def choice(values: list) -> Choice:
    return Choice("", values=tuple(values))


def fixed(value: Any) -> Fixed:
    return Fixed("", value=value)
