"""Bounds on what a request may carry, before any route sees it: bodies over `MAX_BODY_BYTES`
answer 413, and control characters (NUL among them: PostgreSQL refuses NUL in text) in the path
or the query answer 422 naming the parameter. JSON bodies are checked by the schemas
(`service.api.schemas.reject_control_characters`)."""

from __future__ import annotations

import json
import re
import unicodedata
from urllib.parse import parse_qsl, unquote

MAX_BODY_BYTES = 1 << 20  # 1 MiB: a study spec is a few KiB
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_FREE_TEXT = 10_000  # characters of a client's free text (a failure's reason) that are kept
# ANSI escape sequences (colours, cursor moves: a terminal's progress bars) are dropped whole.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0/C1 controls but newline and tab


def has_format_character(text: str) -> bool:
    """Unicode format characters (category Cf: bidi overrides like U+202E, zero-width joiners):
    invisible, and able to make a name display as another (issue 30)."""
    return any(unicodedata.category(c) == "Cf" for c in text)


def clean_text(text: str, limit: int = MAX_FREE_TEXT) -> str:
    """A client's free text (a stderr tail, a traceback) made safe to store and show, rather than
    refused: ANSI sequences dropped, carriage returns as newlines (a progress bar's redraws),
    other control and format characters as U+FFFD, and only its last `limit` characters kept
    (the end of a stderr tail says why)."""
    text = _ANSI.sub("", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _UNSAFE.sub("\ufffd", text)
    text = "".join("\ufffd" if unicodedata.category(c) == "Cf" else c for c in text)
    return text[-limit:]


class InputLimits:
    """A pure ASGI middleware (no per-request task or copy for bodies within the limit)."""

    def __init__(self, app, max_body_bytes: int = MAX_BODY_BYTES):
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        bad = self._bad_text(scope)
        if bad is not None:
            message = "control characters are not allowed"
            return await _answer(send, 422, {"detail": f"{bad}: {message}",
                                             "errors": [{"field": bad, "message": message}]})
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            return await _answer(send, 413, _too_large(self.max_body_bytes))
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        # No (or a wrong) Content-Length: read at most the limit, then replay what was read.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, _replay([message]), send)
            chunks.append(message)
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
            if size > self.max_body_bytes:
                return await _answer(send, 413, _too_large(self.max_body_bytes))
        return await self.app(scope, _replay(chunks, receive), send)

    @staticmethod
    def _bad_text(scope) -> str | None:
        if CONTROL.search(unquote(scope.get("path", ""))):
            return "path"
        query = scope.get("query_string", b"").decode("latin-1")
        for key, value in parse_qsl(query, keep_blank_values=True):
            if CONTROL.search(key) or CONTROL.search(value):
                return f"query.{CONTROL.sub('?', key)}"
        return None


def _too_large(limit: int) -> dict:
    return {"detail": f"body: the request body is larger than {limit} bytes",
            "errors": [{"field": "body", "message": f"larger than {limit} bytes"}]}


def _replay(messages: list, then=None):
    queue = list(messages)

    async def receive():
        if queue:
            return queue.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


async def _answer(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
