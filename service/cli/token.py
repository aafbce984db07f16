"""The token the `rootfree` client commands send: --token, else ROOTFREE_TOKEN, else the per-user
token file (`rootfree token create --save` writes it). No HTTP here: the commands talk to the API
through service/client/."""

from __future__ import annotations

import os
from pathlib import Path


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
