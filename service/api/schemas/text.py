"""Plain text in every body a client sends: the one control/format-character check, the base model
that applies it, and the helpers that name a nested validation error's field."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError, model_validator

from service.api.limits import CONTROL, clean_text, has_format_character
from service.domain.spec import EarlyStopping


def reject_control_characters(value: Any, path: str = "") -> None:
    """Raises ValueError naming the first string (key or value) with a control character or a
    Unicode format character (category Cf: U+202E and the other bidi overrides would make a name
    display as another in tables and logs)."""
    if isinstance(value, str):
        if CONTROL.search(value):
            raise ValueError(f"{path or 'body'}: control characters (NUL, newline, ...) are not allowed")
        if has_format_character(value):
            raise ValueError(f"{path or 'body'}: Unicode format characters (bidi overrides such as U+202E, "
                             "zero-width characters) are not allowed")
    elif isinstance(value, dict):
        for k, v in value.items():
            where = f"{path}.{k}" if path else str(k)
            if isinstance(k, str) and (CONTROL.search(k) or has_format_character(k)):
                raise ValueError(f"{path or 'body'}: a key contains control or Unicode format characters")
            reject_control_characters(v, where)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            reject_control_characters(v, f"{path}[{i}]")


class PlainText(BaseModel):
    """A body a client sends: every string in it, keys too, is plain text (the one check; 422 naming
    the first offending field), except the `free_text` fields (a failure's stderr tail), which are
    sanitised and capped instead of refused. Bodies with early-stopping settings check them here too."""

    checks_early_stopping: ClassVar[bool] = False
    free_text: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _no_control_characters(cls, data: Any) -> Any:
        if isinstance(data, dict) and cls.free_text:
            free = {k: clean_text(v).strip() for k in cls.free_text if isinstance(v := data.get(k), str)}
            reject_control_characters({k: v for k, v in data.items() if k not in free})
            data = {**data, **free}
        else:
            reject_control_characters(data)
        if cls.checks_early_stopping:
            check_early_stopping(data)
        return data


def first_error(e: ValidationError) -> tuple[str, str]:
    """(field, message) of a validation error's first problem, the field as a dotted path (a
    model-level ValueError("field: message") names its field in the message)."""
    err = e.errors()[0]
    field = ".".join(str(p) for p in err["loc"])
    message = err["msg"].removeprefix("Value error, ")
    if not field and ": " in message:
        field, message = message.split(": ", 1)
    return field, message


def check_early_stopping(data: Any) -> None:
    """A study's or a suite's early-stopping settings, checked before the nested model is: their 422
    names `early_stopping`, as it always did (an unknown key is named where it sits,
    protocol.early_stopping, by the model itself)."""
    protocol = data.get("protocol") if isinstance(data, dict) else None
    es = protocol.get("early_stopping") if isinstance(protocol, dict) else None
    if isinstance(es, dict) and set(es) <= set(EarlyStopping.model_fields) and (problem := EarlyStopping.problem(es)):
        raise ValueError(f"early_stopping: {problem}")
