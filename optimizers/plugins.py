"""Plugins from Python entry points, for optimizers and workloads alike (as pytest and Optuna's
integrations are found): `PluginRegistry` is one entry-point group's registry — its built-ins, then
the installed plugins that pass its check, loaded once per process. A plugin that fails to import,
hangs in its import (``ROOTFREE_PLUGIN_IMPORT_TIMEOUT_S``), is not the right kind, is named unlike
its entry point or clashes with a built-in is refused, logged and listed, never raised: one broken
package must not take the service or a trial process down. Standard library only (no torch)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("rootfree.plugins")
DEFAULT_IMPORT_TIMEOUT_S = 30.0  # ROOTFREE_PLUGIN_IMPORT_TIMEOUT_S


def entry_points(group: str):
    """The installed entry points of `group` (a seam: tests substitute their own)."""
    from importlib.metadata import entry_points as installed

    return list(installed(group=group))


def import_timeout_s() -> float:
    """ROOTFREE_PLUGIN_IMPORT_TIMEOUT_S (default 30): the longest one plugin's import may take."""
    try:
        value = float(os.environ.get("ROOTFREE_PLUGIN_IMPORT_TIMEOUT_S", DEFAULT_IMPORT_TIMEOUT_S))
    except ValueError:
        return DEFAULT_IMPORT_TIMEOUT_S
    return value if value > 0 else DEFAULT_IMPORT_TIMEOUT_S


def _load_within(ep, kind: type, limit_s: float) -> Any:
    """`ep.load()` (and the factory call of a factory entry point) in a daemon thread, waited for
    `limit_s`: a plugin whose import hangs (a network mount, a lock) raises TimeoutError and is
    refused like a broken one, and the process goes on starting (issue 30). The hung thread is
    left behind; an import cannot be interrupted from outside."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            obj = ep.load()
            out["obj"] = obj() if not isinstance(obj, kind) and callable(obj) else obj
        except BaseException as e:  # noqa: BLE001 - handed to the caller, which decides
            out["error"] = e

    thread = threading.Thread(target=run, name=f"rootfree-plugin-import-{ep.name}", daemon=True)
    thread.start()
    thread.join(limit_s)
    if thread.is_alive():
        raise TimeoutError(ep.name)
    if "error" in out:
        raise out["error"]
    return out["obj"]


def load_entry_points(group: str, kind: type, builtin: frozenset[str]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Imports every entry point of `group`: {name: (object, "module:attr")} and the errors, each
    ``{"name", "source", "error"}``. A plugin that fails to import, is not a `kind`, is named unlike
    its entry point or clashes with a built-in (or an earlier plugin) is refused and logged, never
    raised: one broken package must not take the service or a trial process down."""
    loaded: dict[str, Any] = {}
    errors: list[dict[str, str]] = []

    def refuse(name: str, source: str, error: str) -> None:
        errors.append({"name": name, "source": source, "error": error[:500]})
        log.error("plugin %r (%s, entry point group %s) refused: %s", name, source, group, error)

    limit_s = import_timeout_s()
    for ep in entry_points(group):
        source = f"{ep.value}" + (f" ({ep.dist.name})" if getattr(ep, "dist", None) else "")
        try:
            obj = _load_within(ep, kind, limit_s)
        except TimeoutError:
            refuse(ep.name, source, f"import did not finish within {limit_s:g} s "
                                    "(ROOTFREE_PLUGIN_IMPORT_TIMEOUT_S): it hangs")
            continue
        except BaseException as e:  # noqa: BLE001 - anything a plugin's import raises, even SystemExit
            if isinstance(e, KeyboardInterrupt):
                raise
            refuse(ep.name, source, f"import failed: {type(e).__name__}: {e}")
            continue
        if not isinstance(obj, kind):
            refuse(ep.name, source, f"is a {type(obj).__name__}, not a {kind.__name__}")
        elif obj.name != ep.name:
            refuse(ep.name, source, f"the entry point is named {ep.name!r} but the plugin calls itself {obj.name!r}")
        elif obj.name in builtin:
            refuse(ep.name, source, f"the name {obj.name!r} clashes with a built-in {group.split('.')[-1][:-1]}; "
                                    "rename the plugin")
        elif obj.name in loaded:
            refuse(ep.name, source, f"the name {obj.name!r} is already taken by another plugin")
        else:
            loaded[obj.name] = (obj, ep.value)
    return loaded, errors


class PluginRegistry:
    """One entry-point group's registry. `entries` is the registry itself (name -> what callers
    look up), starting with the built-ins; `check(plugin)` returns a problem or None; `admit(plugin,
    "module:attr")` returns (the plugin as kept, its registry entry)."""

    def __init__(self, group: str, kind: type, entries: dict[str, Any], *,
                 check: Callable[[Any], str | None], admit: Callable[[Any, str], tuple[Any, Any]], what: str):
        self.group, self.kind, self.entries, self.what = group, kind, entries, what
        self.builtin = frozenset(entries)
        self.check, self.admit = check, admit
        self.loaded = False
        self.plugins: dict[str, Any] = {}
        self.errors: list[dict[str, str]] = []

    def load(self, reload: bool = False) -> dict[str, Any]:
        """The plugins (name -> plugin as kept), loading them on the first call (or on `reload`)."""
        if self.loaded and not reload:
            return self.plugins
        for name in [n for n in self.entries if n not in self.builtin]:
            del self.entries[name]
        loaded, errors = load_entry_points(self.group, self.kind, self.builtin)
        plugins: dict[str, Any] = {}
        for name, (obj, path) in loaded.items():
            problem = self.check(obj)
            if problem:
                errors.append({"name": name, "source": path, "error": problem})
                log.error("%s plugin %r (%s) refused: %s", self.what, name, path, problem)
                continue
            plugins[name], self.entries[name] = self.admit(obj, path)
        self.plugins, self.errors, self.loaded = plugins, errors, True
        return plugins

    def names(self) -> list[str]:
        """Built-ins, then the installed plugins."""
        self.load()
        return list(self.entries)

    def get(self, name: str) -> Any:
        self.load()
        try:
            return self.entries[name]
        except KeyError:
            raise ValueError(f"Unknown {self.what} {name!r}; known: {', '.join(self.entries)}") from None

    def refused(self) -> list[dict[str, str]]:
        """The plugins refused in this process, each ``{"name", "source", "error"}``."""
        self.load()
        return list(self.errors)
