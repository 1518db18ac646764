"""Backend registry: lazy built-ins, entry-point plug-ins, and the selection order.

Selection order: the `backend=` argument (a name or an instance) > the `CFCORE_BACKEND`
environment variable (read at call time) > `set_default_backend()` > "jax". Nothing falls back
silently: an unknown name lists the available ones, and a missing framework names the extra.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from importlib.metadata import entry_points
from typing import Any

ENTRY_POINT_GROUP = "cfcore.backends"
DEFAULT_BACKEND = "jax"

# name -> ("module:attribute", modules that must be importable, pip extra)
_BUILTINS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "jax": ("cfcore_jax:backend", ("jax", "optax"), "jax"),
    "tf": ("cfcore_tf:backend", ("tensorflow",), "tf"),
    "torch": ("cfcore_torch:backend", ("torch",), "torch"),
}
_ALIASES = {"tensorflow": "tf", "jaxlib": "jax"}

_registered: dict[str, Any] = {}  # name -> instance or "module:attr" string
_loaded: dict[str, Any] = {}
_default: str | None = None


class BackendError(ValueError):
    """An unknown backend, or one whose framework is not installed."""


def register_backend(name: str, backend: Any) -> None:
    """Registers a backend under `name`: an instance, or a lazy "module:attribute" string."""
    name = _canonical(name)
    _registered[name] = backend
    _loaded.pop(name, None)


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _canonical(name: str) -> str:
    name = name.strip().lower()
    return _ALIASES.get(name, name)


def known_backends() -> list[str]:
    """Every backend name cfcore knows about, installed or not."""
    return sorted(set(_BUILTINS) | set(_registered) | set(_entry_points()))


def available_backends() -> list[str]:
    """The backends whose framework is importable (checked without importing it)."""
    out = []
    for name in known_backends():
        if name in _BUILTINS and name not in _registered:
            if all(importlib.util.find_spec(m) is not None for m in _BUILTINS[name][1]):
                out.append(name)
        else:
            out.append(name)
    return out


def set_default_backend(name: str | None) -> None:
    """Sets the backend used when neither `backend=` nor `CFCORE_BACKEND` says otherwise."""
    global _default
    if name is not None:
        name = _canonical(name)
        if name not in known_backends():
            raise BackendError(_unknown(name))
    _default = name


def _unknown(name: str) -> str:
    return (
        f"unknown backend {name!r}; available backends: {available_backends()} "
        f"(all known: {known_backends()})"
    )


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    return getattr(obj, attr) if attr else obj


def get_backend(name: Any = None) -> Any:
    """Resolves a backend.

    Args:
        name: a backend instance (returned as is), a name ("jax", "tf", "tensorflow", a plug-in's
            name) or None to use `CFCORE_BACKEND`, then the default set by
            `set_default_backend`, then "jax".

    Returns:
        The backend instance. Only now is its framework imported.

    Raises:
        BackendError: the name is unknown (the message lists the available ones) or the framework
            is not installed (the message names the pip extra).
    """
    if name is not None and not isinstance(name, str):
        return name
    if name is None:
        name = os.environ.get("CFCORE_BACKEND") or _default or DEFAULT_BACKEND
    name = _canonical(name)
    if name in _loaded:
        return _loaded[name]
    if name in _registered:
        target = _registered[name]
        backend = _load(target) if isinstance(target, str) else target
    elif name in _BUILTINS:
        target, modules, extra = _BUILTINS[name]
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing:
            raise BackendError(
                f"backend {name!r} needs {', '.join(missing)}, which is not installed; "
                f"install it with: pip install 'cfcore[{extra}]' "
                f"(available backends now: {available_backends()})"
            )
        backend = _load(target)
    else:
        eps = _entry_points()
        if name not in eps:
            raise BackendError(_unknown(name))
        backend = eps[name].load()
        if isinstance(backend, type):
            backend = backend()
    _loaded[name] = backend
    return backend
