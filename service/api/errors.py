"""Errors a client can act on, in the same JSON shape as request validation errors:
``{"detail": "field: message", "errors": [{"field", "message"}]}``; and the answer to a
use-case's refusal (service/domain/refusals.py), the one place its kinds get their status."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from service.domain.refusals import Conflict, Gone, InvalidField, NotFound, OverQuota, Refused

STATUS = {NotFound: 404, Conflict: 409, Gone: 410, InvalidField: 422, OverQuota: 429}


class ApiError(Exception):
    def __init__(self, status: int, field: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(f"{field}: {message}")
        self.status, self.field, self.message, self.headers = status, field, message, headers

    def body(self) -> dict:
        return {"detail": f"{self.field}: {self.message}",
                "errors": [{"field": self.field, "message": self.message}]}


def refusal_status(exc: Refused) -> int:
    status = next((status for kind, status in STATUS.items() if isinstance(exc, kind)), None)
    if status is None:  # a kind without a status here: say so (a bare StopIteration surfaced as a RuntimeError)
        raise TypeError(f"{type(exc).__name__} is a refusal with no HTTP status (service/api/errors.py STATUS)")
    return status


def refusal_response(exc: Refused) -> JSONResponse:
    """A refusal naming a field answers as `ApiError`; one without as `HTTPException` does."""
    status = refusal_status(exc)
    if exc.field is None:
        return JSONResponse(status_code=status, content={"detail": exc.message})
    return JSONResponse(status_code=status, content=ApiError(status, exc.field, exc.message).body())
