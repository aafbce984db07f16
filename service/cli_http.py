"""How the `rootfree` client commands talk to the API: the token they send (--token, else
ROOTFREE_TOKEN, else the per-user token file) and how an error answer ends the command."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx


def token_file() -> Path:
    """The per-user file the client commands read a token from (written 0600 by --save)."""
    base = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return base / "rootfree" / "token"


def save_token(token: str, path: Path | None = None) -> Path:
    path = path or token_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    return path


def resolve_token(explicit: str | None) -> str | None:
    """--token, else ROOTFREE_TOKEN, else the per-user token file."""
    if explicit:
        return explicit
    if os.environ.get("ROOTFREE_TOKEN"):
        return os.environ["ROOTFREE_TOKEN"]
    try:
        return token_file().read_text().strip() or None
    except OSError:
        return None


AUTH: dict[str, str] = {}  # the Authorization header the client commands send (set by main)


def use_token(token: str | None) -> None:
    AUTH.clear()
    if token:
        AUTH["Authorization"] = f"Bearer {token}"


def check(r: httpx.Response) -> dict:
    """The answer's JSON; an error answer exits with its status and detail."""
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail")
        except ValueError:
            detail = r.text
        sys.exit(f"error {r.status_code}: {detail}")
    return r.json()


def check_text(r: httpx.Response) -> str:
    if r.status_code >= 400:
        check(r)
    return r.text
