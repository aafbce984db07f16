"""Why a use-case (service/control) refuses a request, without HTTP: the api answers each kind
with its status (service/api/errors.py: 404, 409, 410, 422, 429). A refusal that names a field
is answered in the shape of a validation error, one without as `{"detail": message}`."""

from __future__ import annotations


class Refused(Exception):
    def __init__(self, field: str | None, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.field, self.message = field, message


class NotFound(Refused):
    """No such thing here (or not the caller's)."""

    def __init__(self, message: str):
        super().__init__(None, message)


class Conflict(Refused):
    """The thing's state refuses the action."""


class Gone(Refused):
    """It has ended (or was deleted): nothing more can be done to it."""

    def __init__(self, message: str):
        super().__init__(None, message)


class InvalidField(Refused):
    """A field's value is refused (a request that parsed, but that the use-case cannot take)."""


class OverQuota(Refused):
    """A per-user limit is reached (ask again later)."""
