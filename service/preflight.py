"""Fail fast at start: a wrong database URL or Ray address is named in one line, before the
controller binds its port (instead of a stack trace, or Ray retrying for a minute)."""

from __future__ import annotations

import socket

from .settings import Settings


class ConfigError(RuntimeError):
    pass


def check_database(url: str) -> None:
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from .store import StoreUnavailable, StudyStore

    try:
        StudyStore(url).engine.dispose()
    except (ArgumentError, NoSuchModuleError) as e:
        raise ConfigError(f"the database URL {url!r} (ROOTFREE_DATABASE_URL / --db) is not usable: {e}") from None
    except StoreUnavailable as e:
        raise ConfigError(f"{e} (set ROOTFREE_DATABASE_URL / --db)") from None


def ray_endpoint(address: str) -> tuple[str, int] | None:
    """host, port of a Ray address; None for "auto"/"local" (Ray resolves those itself)."""
    if address in ("auto", "local"):
        return None
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"the Ray address {address!r} (ROOTFREE_RAY_ADDRESS / --ray-address) is not "
                          "HOST:PORT, ray://HOST:PORT or auto")
    return host, int(port)


def check_ray(address: str | None, timeout_s: float = 5.0) -> None:
    if not address:
        return  # a local Ray is started
    endpoint = ray_endpoint(address)
    if endpoint is None:
        return
    try:
        socket.create_connection(endpoint, timeout=timeout_s).close()
    except OSError as e:
        raise ConfigError(f"cannot reach the Ray cluster at {address!r} (ROOTFREE_RAY_ADDRESS / --ray-address): "
                          f"{e.strerror or e}") from None


def preflight(settings: Settings) -> None:
    check_database(settings.database_url)
    if settings.start_runner:
        check_ray(settings.ray_address)
