"""Fail fast at start: a wrong database URL or Ray address is named in one line, before the
controller binds its port (instead of a stack trace, or Ray retrying for a minute)."""

from __future__ import annotations

import ipaddress
import os
import socket

from service.settings import Settings

PLACEHOLDER = "change-me"  # what .env.example puts where a secret goes
LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


def safe_url(url: str) -> str:
    """A database URL as it may be printed: the password hidden."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not even a URL: show nothing of it
        return "<unparseable URL>"


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_secrets(settings: Settings, environ=os.environ) -> None:
    """Refuses placeholders from .env.example and an unauthenticated API on a network address."""
    from sqlalchemy.engine import make_url

    try:
        password = make_url(settings.database_url).password
    except Exception:  # noqa: BLE001 - check_database names a bad URL
        password = None
    if password == PLACEHOLDER:
        raise ConfigError("ROOTFREE_DATABASE_URL: the database password is still the placeholder from "
                          ".env.example; set a real one")
    for name in ("RAY_AUTH_TOKEN", "POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        if environ.get(name) == PLACEHOLDER:
            raise ConfigError(f"{name} is still the placeholder from .env.example; set a real secret")
    if settings.auth == "none" and not is_loopback(settings.host):
        raise ConfigError(f"ROOTFREE_AUTH=none serves without authentication, which is only allowed on a "
                          f"loopback address (127.0.0.1, ::1, localhost); --host is {settings.host!r}. "
                          "Use tokens (rootfree token create --user NAME) or bind to 127.0.0.1")


class ConfigError(RuntimeError):
    pass


def check_database(url: str) -> None:
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from service.store.engine import MigrationRefused
    from service.store.study_store import StoreUnavailable, StudyStore

    try:
        StudyStore(url).engine.dispose()
    except MigrationRefused as e:
        raise ConfigError(f"the study database cannot be migrated: {e}") from None
    except (ArgumentError, NoSuchModuleError) as e:
        raise ConfigError(f"the database URL {safe_url(url)!r} (ROOTFREE_DATABASE_URL / --db) is not usable: "
                          f"{type(e).__name__}") from None
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
    check_secrets(settings)
    check_database(settings.database_url)
    if settings.start_runner:
        check_ray(settings.ray_address)
