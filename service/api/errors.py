"""Errors a client can act on, in the same JSON shape as request validation errors:
``{"detail": "field: message", "errors": [{"field", "message"}]}``."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, field: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(f"{field}: {message}")
        self.status, self.field, self.message, self.headers = status, field, message, headers

    def body(self) -> dict:
        return {"detail": f"{self.field}: {self.message}",
                "errors": [{"field": self.field, "message": self.message}]}
