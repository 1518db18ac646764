"""Backend registry: lazy built-ins, plug-ins, the selection order and the plug-in contract.

Selection order: the `backend=` argument (a name or an instance) > the `CFCORE_BACKEND`
environment variable (read at call time) > `set_default_backend()` > "jax". Nothing falls back
silently: an unknown name lists the available ones, and a missing framework names the extra.

Where a backend comes from, for one name (after aliases and case folding):

1. `register_backend(name, ...)`: an instance or a lazy "module:attribute" string. Registering a
   built-in's name replaces the built-in (a `UserWarning` says so): the explicit call wins.
2. The built-ins ("jax", "tf", and "numpy", the float64 NumPy reference backend).
3. An entry point of the group `cfcore.backends` (an instance, or a class called with no
   arguments). An entry point named like a built-in does not shadow it: the built-in wins, the
   entry point is ignored and a `UserWarning` says so.

The plug-in contract, checked when a backend is obtained:

* A plug-in whose module raises on import, or whose class raises when constructed, gives a
  `BackendError` naming the entry point (or the registered string), its distribution and the
  original error (chained as `__cause__`).
* Every backend must have the members of `cfcore.backend.protocol.Backend` (and its `xp` the
  functions of `ArrayNamespace`): `check_backend_members` lists what is missing, and `get_backend`
  raises a `BackendError` listing it. This applies to plug-ins and to instances passed as
  `backend=`; the built-ins (and instances whose `name` is a built-in name) are checked only
  when `_CHECK_BUILTINS` is true.
* A plug-in whose `is_available()` is false is not listed by `available_backends()`, and
  `get_backend` refuses it with a `BackendError`.

`available_backends()` checks a built-in without importing it (`importlib.util.find_spec` of its
framework and of its module). A plug-in has to be loaded to reach its `is_available()` (that
imports the plug-in's module, which should not import its framework; see
docs/development/writing-a-backend.md); one that fails to load is not listed.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import os
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from importlib.metadata import entry_points
from typing import Any

from ..errors import CfcoreError
from .bound import BoundBackend, bind
from .protocol import BACKEND_MEMBERS, XP_FUNCTIONS

ENTRY_POINT_GROUP = "cfcore.backends"
DEFAULT_BACKEND = "jax"

import_guard: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext
"""What a built-in backend's module (and so its framework) is imported inside. The library leaves
the frameworks' start-up logging alone; the command line swaps in a filter of that logging
(`cfcore.cli._quiet`) unless the user asks for it with `-v`."""

_CHECK_BUILTINS = True
"""Whether the built-in backends are checked against the Protocol (switched on once they have
every member)."""

# name -> ("module:attribute", modules that must be importable, pip extra)
_BUILTINS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "jax": ("cfcore_jax:backend", ("jax",), "jax"),
    "tf": ("cfcore_tf:backend", ("tensorflow",), "tf"),
    "torch": ("cfcore_torch:backend", ("torch",), "torch"),
    "numpy": ("cfcore.reference_backend:backend", (), ""),
}
_ALIASES = {"tensorflow": "tf", "jaxlib": "jax"}

_registered: dict[str, Any] = {}  # name -> instance or "module:attr" string
_loaded: dict[str, Any] = {}  # name -> backend that passed the checks
_resolved: dict[str, Any] = {}  # name -> plug-in object loaded (by listing), not yet checked
_default: str | None = None


class BackendError(CfcoreError, ValueError):
    """An unknown backend, one whose framework is not installed, or a plug-in that is broken."""


def check_backend_members(obj: Any) -> list[str]:
    """The members of the backend Protocol that `obj` lacks.

    Args:
        obj: a backend (instance).

    Returns:
        The missing names of `BACKEND_MEMBERS`, in that order, then "xp.<function>" for each
        function of `XP_FUNCTIONS` that `obj.xp` lacks. Empty when `obj` has every member. Only
        presence is checked, not signatures or behaviour (the conformance suites in
        `cfcore.testing` check those). A member defined as a property counts as present without
        being evaluated; `xp`'s functions are checked only when `obj.xp` can be read (a lazy `xp`
        property may import the framework, and fail where the framework is missing).
    """
    missing = [m for m in BACKEND_MEMBERS if not _has(obj, m)]
    if "xp" not in missing:
        try:
            xp = obj.xp
        except Exception:
            return missing
        missing += [f"xp.{f}" for f in XP_FUNCTIONS if not _has(xp, f)]
    return missing


def _has(obj: Any, name: str) -> bool:
    try:
        inspect.getattr_static(obj, name)  # finds properties without running them
        return True
    except AttributeError:
        pass
    try:
        getattr(obj, name)  # e.g. a `__getattr__` that delegates
    except Exception:
        return False
    return True


def register_backend(name: str, backend: Any) -> None:
    """Registers a backend under `name`: an instance, or a lazy "module:attribute" string.

    A registered backend takes precedence over a built-in of the same name (a `UserWarning` says
    so) and over an entry point of the same name. It is checked against the backend Protocol when
    first obtained with `get_backend`.
    """
    name = _canonical(name)
    if name in _BUILTINS:
        warnings.warn(
            f"register_backend({name!r}, ...) replaces the built-in backend {name!r}: "
            f"get_backend({name!r}) now returns the registered backend",
            UserWarning,
            stacklevel=2,
        )
    _registered[name] = backend
    _loaded.pop(name, None)
    _resolved.pop(name, None)


def _dist_name(ep: Any) -> str | None:
    dist = getattr(ep, "dist", None)
    return getattr(dist, "name", None) if dist is not None else None


def _describe_entry_point(ep: Any) -> str:
    value = getattr(ep, "value", None)
    text = f"entry point {ep.name!r}"
    if value:
        text += f" = {value!r}"
    text += f" (group {ENTRY_POINT_GROUP!r}"
    dist = _dist_name(ep)
    text += f", distribution {dist!r})" if dist else ", distribution unknown)"
    return text


def _entry_points() -> dict[str, Any]:
    """The plug-ins' entry points by canonical name; those named like a built-in are dropped."""
    out: dict[str, Any] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        name = _canonical(ep.name)
        if name in _BUILTINS:
            warnings.warn(
                f"{_describe_entry_point(ep)} is named like the built-in backend {name!r}; "
                f"the built-in wins and the entry point is ignored (rename the plug-in, or call "
                f"cfcore.register_backend({name!r}, ...) to replace the built-in explicitly)",
                UserWarning,
                stacklevel=3,
            )
            continue
        out.setdefault(name, ep)
    return out


def _canonical(name: str) -> str:
    name = name.strip().lower()
    return _ALIASES.get(name, name)


def known_backends() -> list[str]:
    """Every backend name cfcore knows about, installed or not."""
    return sorted(set(_BUILTINS) | set(_registered) | set(_entry_points()))


def _find_spec(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a dotted name whose parent is missing
        return False


def _builtin_available(name: str) -> bool:
    target, modules, _ = _BUILTINS[name]
    return all(_find_spec(m) for m in modules) and _find_spec(target.partition(":")[0])


def _plugin_available(name: str, eps: dict[str, Any]) -> bool:
    try:
        backend = _resolve_plugin(name, eps)
    except BackendError:
        return False
    try:
        return bool(backend.is_available())
    except Exception:  # no is_available, or one that raises: not available
        return False


def available_backends() -> list[str]:
    """The backends that can be used here: the names whose `is_available()` is true.

    A built-in is checked without importing it (its framework and module are found with
    `importlib.util.find_spec`). A plug-in is loaded to call its `is_available()`; one whose
    module fails to import is not listed.
    """
    eps = _entry_points()
    out = []
    for name in sorted(set(_BUILTINS) | set(_registered) | set(eps)):
        builtin = name in _BUILTINS and name not in _registered
        if _builtin_available(name) if builtin else _plugin_available(name, eps):
            out.append(name)
    return out


def check_backend_name(name: str) -> str:
    """`name` in canonical form (`"tensorflow"` is `"tf"`), after refusing one that no backend
    answers to. Nothing is imported: whether its framework loads is for `get_backend` to say.

    Raises:
        BackendError: no built-in, registered or plug-in backend has this name.
    """
    canonical = _canonical(name)
    if canonical not in known_backends():
        raise BackendError(_unknown(canonical))
    return canonical


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
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


def _origin(name: str, eps: dict[str, Any] | None = None) -> str:
    """Where the backend `name` comes from, for error messages."""
    if name in _registered:
        target = _registered[name]
        if isinstance(target, str):
            return f"backend {name!r} (registered as {target!r} by register_backend)"
        return f"backend {name!r} (registered by register_backend)"
    if name in _BUILTINS:
        return f"built-in backend {name!r} ({_BUILTINS[name][0]!r})"
    if eps is not None and name in eps:
        return f"backend {name!r} ({_describe_entry_point(eps[name])})"
    return f"backend {name!r}"


def _resolve_plugin(name: str, eps: dict[str, Any]) -> Any:
    """The object of a registered or entry-point plug-in, loaded (and constructed) once."""
    if name in _resolved:
        return _resolved[name]
    if name in _registered:
        target = _registered[name]
        if not isinstance(target, str):
            return target
        load = lambda: _load(target)  # noqa: E731
    else:
        load = eps[name].load
    try:
        backend = load()
    except Exception as e:
        raise BackendError(f"{_origin(name, eps)} failed to import: {type(e).__name__}: {e}") from e
    if isinstance(backend, type):
        try:
            backend = backend()
        except Exception as e:
            raise BackendError(
                f"{_origin(name, eps)} failed to construct {backend.__qualname__}(): "
                f"{type(e).__name__}: {e}"
            ) from e
    _resolved[name] = backend
    return backend


def _is_builtin_instance(obj: Any) -> bool:
    name = getattr(obj, "name", None)
    return isinstance(name, str) and _canonical(name) in _BUILTINS


def _check_members(obj: Any, what: str) -> None:
    missing = check_backend_members(obj)
    if missing:
        raise BackendError(
            f"{what} does not implement the cfcore backend protocol "
            f"(cfcore.backend.protocol.Backend): missing {', '.join(missing)}; "
            f"see docs/development/writing-a-backend.md"
        )


def get_backend(name: Any = None) -> Any:
    """Resolves a backend.

    Args:
        name: a backend instance (checked against the Protocol, then returned as is), a name
            ("jax", "tf", "tensorflow", "numpy", a plug-in's name) or None to use
            `CFCORE_BACKEND`, then the default set by `set_default_backend`, then "jax".

    Returns:
        The backend's operations bound to core's checks and conveniences
        (`cfcore.backend.bound.BoundBackend`). Only now is its framework imported.

    Raises:
        BackendError: the name is unknown (the message lists the available ones), the framework
            is not installed (the message names the pip extra), a plug-in fails to import (the
            message names its entry point and distribution; the import error is the cause), the
            backend lacks members of the Protocol (the message lists them), or a plug-in's
            `is_available()` is false.
    """
    if name is not None and not isinstance(name, str):
        if isinstance(name, BoundBackend):
            return name
        if _CHECK_BUILTINS or not _is_builtin_instance(name):
            _check_members(name, f"backend instance {getattr(name, 'name', name)!r}")
        return bind(name)
    if name is None:
        name = os.environ.get("CFCORE_BACKEND") or _default or DEFAULT_BACKEND
    name = _canonical(name)
    if name in _loaded:
        return _loaded[name]
    if name in _BUILTINS and name not in _registered:
        target, modules, extra = _BUILTINS[name]
        _entry_points()  # warns about entry points that this built-in shadows
        missing = [m for m in modules if not _find_spec(m)]
        if missing:
            raise BackendError(
                f"backend {name!r} needs {', '.join(missing)}, which is not installed; "
                f"install it with: pip install 'cfcore[{extra}]' "
                f"(available backends now: {available_backends()})"
            )
        try:
            with import_guard():
                backend = _load(target)
        except Exception as e:
            raise BackendError(f"{_origin(name)} failed to import: {type(e).__name__}: {e}") from e
        if _CHECK_BUILTINS:
            _check_members(backend, _origin(name))
    else:
        eps = {} if name in _registered else _entry_points()
        if name not in _registered and name not in eps:
            raise BackendError(_unknown(name))
        backend = _resolve_plugin(name, eps)
        _check_members(backend, _origin(name, eps))
        if not backend.is_available():
            raise BackendError(
                f"{_origin(name, eps)} reports that it is not available here "
                f"(its is_available() is false: is its framework installed?); "
                f"available backends now: {available_backends()}"
            )
    _loaded[name] = bind(backend)
    return _loaded[name]
