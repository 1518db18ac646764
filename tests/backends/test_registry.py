"""The backend registry: names, aliases, the selection order, plug-ins and missing frameworks."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import re
import sys
import textwrap
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import cfcore
import cfcore.backend
from cfcore import BackendError
from cfcore.backend import registry as _registry
from cfcore.backend.protocol import BACKEND_MEMBERS, XP_FUNCTIONS
from cfcore.backend.protocol import Backend as BackendProtocol
from cfcore.backend.registry import ENTRY_POINT_GROUP, check_backend_members, known_backends
from cfcore.testing import BackendMembersConformance

from ..conftest import BACKENDS, load_backend


def _raw(backend):
    """The operations under a bound backend (`get_backend` binds them to core's checks)."""
    return getattr(backend, "ops", backend)


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch: pytest.MonkeyPatch):
    """Each test sees no CFCORE_BACKEND, no default, and gets the registry back as it found it."""
    monkeypatch.delenv("CFCORE_BACKEND", raising=False)
    saved = [(d, dict(d)) for d in (_registry._registered, _registry._loaded, _registry._resolved)]
    default = _registry._default
    yield
    cfcore.set_default_backend(None)
    _registry._default = default
    for d, before in saved:
        d.clear()
        d.update(before)


def make_backend(name: str = "fake", *, available: bool = True, drop: tuple[str, ...] = ()):
    """An object with every member of the backend Protocol (stubs), less the names in `drop`."""

    def stub(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    xp = types.SimpleNamespace(**{f: stub for f in XP_FUNCTIONS if f"xp.{f}" not in drop})
    members: dict[str, Any] = {m: stub for m in BACKEND_MEMBERS}
    members.update(name=name, xp=xp, is_available=lambda: available)
    return types.SimpleNamespace(**{k: v for k, v in members.items() if k not in drop})


@pytest.fixture
def plugin_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Writes plug-in modules into a folder on sys.path; forgets them afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def write(module: str, source: str) -> str:
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        written.append(module)
        return module

    yield write
    for module in written:
        sys.modules.pop(module, None)


def _one_tf_backend():
    load_backend("jax")
    return load_backend("tf")


# ---------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", BACKENDS)
def test_builtin_backends_available(name: str) -> None:
    assert name in known_backends()
    be = load_backend(name)  # skips (or fails in CI) if the framework is missing
    assert name in cfcore.available_backends()
    assert _raw(cfcore.get_backend(name)) is _raw(be)
    assert be.name == name


def test_both_builtins_available_here() -> None:
    for name in BACKENDS:
        load_backend(name)
    assert {"jax", "tf"} <= set(cfcore.available_backends())
    assert cfcore.available_backends() == sorted(cfcore.available_backends())


def test_tensorflow_alias() -> None:
    tf_be = _one_tf_backend()
    assert _raw(cfcore.get_backend("tensorflow")) is _raw(tf_be)
    assert _raw(cfcore.get_backend("TensorFlow")) is _raw(tf_be)
    assert _raw(cfcore.get_backend(" tf ")) is _raw(tf_be)
    assert tf_be.name == "tf"


def test_case_insensitive() -> None:
    jax_be = load_backend("jax")
    assert _raw(cfcore.get_backend("JAX")) is _raw(jax_be)
    assert _raw(cfcore.get_backend("Jax")) is _raw(jax_be)
    assert jax_be.name == "jax"


def test_unknown_backend_lists_available() -> None:
    with pytest.raises(BackendError) as info:
        cfcore.get_backend("nope")
    msg = str(info.value)
    assert "unknown backend 'nope'" in msg
    assert f"available backends: {cfcore.available_backends()}" in msg
    for name in cfcore.available_backends():
        assert repr(name) in msg
    assert isinstance(info.value, ValueError)  # BackendError is a ValueError


# ---------------------------------------------------------------------------- selection order


def test_env_selects_backend_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    tf_be, jax_be = _one_tf_backend(), load_backend("jax")
    monkeypatch.setenv("CFCORE_BACKEND", "tf")
    assert _raw(cfcore.get_backend()) is _raw(tf_be)
    monkeypatch.setenv("CFCORE_BACKEND", "jax")
    assert _raw(cfcore.get_backend()) is _raw(jax_be)
    monkeypatch.setenv("CFCORE_BACKEND", "TensorFlow")
    assert _raw(cfcore.get_backend()) is _raw(tf_be)


def test_env_unknown_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFCORE_BACKEND", "mxnet")
    with pytest.raises(BackendError, match=r"unknown backend 'mxnet'; available backends: \["):
        cfcore.get_backend()


def test_explicit_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    tf_be, jax_be = _one_tf_backend(), load_backend("jax")
    monkeypatch.setenv("CFCORE_BACKEND", "tf")
    assert _raw(cfcore.get_backend("jax")) is _raw(jax_be)
    monkeypatch.setenv("CFCORE_BACKEND", "jax")
    assert _raw(cfcore.get_backend("tf")) is _raw(tf_be)
    # Even an invalid environment value does not matter when the argument decides.
    monkeypatch.setenv("CFCORE_BACKEND", "nope")
    assert _raw(cfcore.get_backend("jax")) is _raw(jax_be)


def test_default_when_nothing_set() -> None:
    jax_be = load_backend("jax")
    assert _registry.DEFAULT_BACKEND == "jax"
    assert _raw(cfcore.get_backend()) is _raw(jax_be)
    assert _raw(cfcore.get_backend(None)) is _raw(jax_be)


def test_empty_env_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    jax_be = load_backend("jax")
    monkeypatch.setenv("CFCORE_BACKEND", "")
    assert _raw(cfcore.get_backend()) is _raw(jax_be)


def test_set_default_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    tf_be, jax_be = _one_tf_backend(), load_backend("jax")
    try:
        cfcore.set_default_backend("tensorflow")
        assert _raw(cfcore.get_backend()) is _raw(tf_be)  # env unset: the default decides
        monkeypatch.setenv("CFCORE_BACKEND", "jax")
        assert _raw(cfcore.get_backend()) is _raw(jax_be)  # env beats the default
        monkeypatch.delenv("CFCORE_BACKEND")
        assert _raw(cfcore.get_backend()) is _raw(tf_be)
        assert _raw(cfcore.get_backend("jax")) is _raw(jax_be)  # the argument beats the default
        cfcore.set_default_backend(None)
        assert _raw(cfcore.get_backend()) is _raw(jax_be)
    finally:
        cfcore.set_default_backend(None)


def test_set_default_backend_unknown() -> None:
    with pytest.raises(BackendError, match=r"unknown backend 'nope'; available backends: \["):
        cfcore.set_default_backend("nope")
    assert _registry._default is None


def test_instance_passed_through() -> None:
    mine = make_backend("mine")
    assert cfcore.get_backend(mine).ops is mine
    jax_be = load_backend("jax")
    assert _raw(cfcore.get_backend(jax_be)) is _raw(jax_be)


# ---------------------------------------------------------------------------- registration


def test_register_instance() -> None:
    mine = make_backend("mine")
    try:
        cfcore.register_backend("mine", mine)
        assert cfcore.get_backend("mine").ops is mine
        assert "mine" in known_backends()
        assert "mine" in cfcore.available_backends()
        # Re-registering replaces the cached one.
        other = make_backend("mine2")
        cfcore.register_backend("mine", other)
        assert cfcore.get_backend("mine").ops is other
    finally:
        _registry._registered.pop("mine", None)
        _registry._loaded.pop("mine", None)
    with pytest.raises(BackendError, match="unknown backend 'mine'"):
        cfcore.get_backend("mine")


def test_register_lazy_target(plugin_modules) -> None:
    plugin_modules(
        "cfcore_lazy_plugin",
        "from tests.backends.test_registry import make_backend\nbackend = make_backend('lazy')\n",
    )
    try:
        cfcore.register_backend("lazy", "cfcore_lazy_plugin:backend")
        assert "lazy" not in _registry._loaded  # nothing imported until asked for
        assert "cfcore_lazy_plugin" not in sys.modules
        be = cfcore.get_backend("lazy")
        assert _raw(be) is sys.modules["cfcore_lazy_plugin"].backend
        assert be.name == "lazy"
    finally:
        _registry._registered.pop("lazy", None)
        _registry._loaded.pop("lazy", None)


def test_register_mixed_case_name() -> None:
    mine = make_backend("mine")
    try:
        cfcore.register_backend("Mine", mine)
        assert cfcore.get_backend("Mine").ops is mine
    finally:
        _registry._registered.pop("Mine", None)
        _registry._registered.pop("mine", None)
        _registry._loaded.pop("mine", None)


# ---------------------------------------------------------------------------- missing framework


def _without(*missing: str):
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any):
        if name.split(".")[0] in missing:
            return None
        return real(name, *args, **kwargs)

    # Only the registry's view of importlib changes; the rest of the process is untouched.
    return types.SimpleNamespace(
        util=types.SimpleNamespace(find_spec=find_spec), import_module=importlib.import_module
    )


def test_missing_tensorflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "importlib", _without("tensorflow"))
    monkeypatch.delitem(_registry._loaded, "tf", raising=False)
    assert "tf" not in cfcore.available_backends()
    assert "tf" in known_backends()
    for name in ("tf", "tensorflow"):
        with pytest.raises(BackendError) as info:
            cfcore.get_backend(name)
        msg = str(info.value)
        assert "backend 'tf' needs tensorflow, which is not installed" in msg
        assert "pip install 'cfcore[tf]'" in msg
        assert f"available backends now: {cfcore.available_backends()}" in msg
        assert "'tf'" not in msg.split("available backends now:")[1]


def test_missing_tensorflow_through_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "importlib", _without("tensorflow"))
    monkeypatch.delitem(_registry._loaded, "tf", raising=False)
    monkeypatch.setenv("CFCORE_BACKEND", "tf")
    with pytest.raises(BackendError, match=r"pip install 'cfcore\[tf\]'"):
        cfcore.get_backend()


def test_missing_jax(monkeypatch: pytest.MonkeyPatch) -> None:
    # optax is needed only for optax optimizers now: jax itself is what the backend requires.
    monkeypatch.setattr(_registry, "importlib", _without("jax"))
    monkeypatch.delitem(_registry._loaded, "jax", raising=False)
    assert "jax" not in cfcore.available_backends()
    with pytest.raises(BackendError) as info:
        cfcore.get_backend("jax")
    msg = str(info.value)
    assert "backend 'jax' needs jax, which is not installed" in msg
    assert "pip install 'cfcore[jax]'" in msg


# ---------------------------------------------------------------------------- entry-point plug-ins


class FakeBackend:
    made = 0

    def __init__(self) -> None:
        type(self).made += 1
        vars(self).update(vars(make_backend("fake")))


class FakeEntryPoint:
    """Stands for an `importlib.metadata.EntryPoint`: a target object, or a "module:attr" string
    loaded as `EntryPoint.load` does."""

    def __init__(self, name: str, target: Any, dist: str | None = "cfcore-fake") -> None:
        self.name, self.target, self.loads = name, target, 0
        self.value = target if isinstance(target, str) else f"fake_module:{name}"
        self.dist = types.SimpleNamespace(name=dist) if dist else None

    def load(self) -> Any:
        self.loads += 1
        if isinstance(self.target, str):
            module, _, attr = self.target.partition(":")
            return getattr(importlib.import_module(module), attr)
        return self.target


def _plugins(monkeypatch: pytest.MonkeyPatch, *eps: Any) -> list[str]:
    groups: list[str] = []

    def entry_points(*, group: str):
        groups.append(group)
        return list(eps) if group == ENTRY_POINT_GROUP else []

    monkeypatch.setattr(_registry, "entry_points", entry_points)
    return groups


def test_entry_point_plugin_class(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeBackend.made = 0
    ep = FakeEntryPoint("fake", FakeBackend)
    groups = _plugins(monkeypatch, ep)
    assert "fake" in known_backends()
    assert ep.loads == 0  # knowing a plug-in's name does not load it
    # Listing loads it (to ask its is_available()), once; get_backend reuses that instance.
    assert "fake" in cfcore.available_backends()
    assert "fake" in cfcore.available_backends()
    assert ep.loads == 1 and FakeBackend.made == 1
    assert set(groups) == {"cfcore.backends"}
    be = cfcore.get_backend("fake")
    assert isinstance(_raw(be), FakeBackend)
    assert _raw(cfcore.get_backend("FAKE")) is _raw(be)  # cached, one instance
    assert ep.loads == 1 and FakeBackend.made == 1


def test_entry_point_plugin_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    instance = make_backend("inst")
    _plugins(monkeypatch, FakeEntryPoint("inst", instance))
    assert cfcore.get_backend("inst").ops is instance


def test_entry_point_plugin_listed_in_unknown_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _plugins(monkeypatch, FakeEntryPoint("fake", FakeBackend))
    with pytest.raises(BackendError) as info:
        cfcore.get_backend("nope")
    assert "'fake'" in str(info.value)


def test_entry_point_name_case_folded(monkeypatch: pytest.MonkeyPatch) -> None:
    instance = make_backend("mixed")
    _plugins(monkeypatch, FakeEntryPoint("MixedCase", instance))
    assert "mixedcase" in cfcore.available_backends()
    assert cfcore.get_backend("MixedCase").ops is instance


# ---------------------------------------------------------------------------- the move


# ---------------------------------------------------------------------------- import failures

BROKEN = """
import cfcore_no_such_framework_xyz  # the framework is not installed
backend = None
"""


def test_entry_point_import_failure_names_entry_point_and_distribution(
    monkeypatch: pytest.MonkeyPatch, plugin_modules
) -> None:
    plugin_modules("cfcore_broken_plugin", BROKEN)
    ep = FakeEntryPoint("broken", "cfcore_broken_plugin:backend", dist="cfcore-broken")
    _plugins(monkeypatch, ep)
    with pytest.raises(BackendError) as info:
        cfcore.get_backend("broken")
    msg = str(info.value)
    assert "entry point 'broken' = 'cfcore_broken_plugin:backend'" in msg
    assert "group 'cfcore.backends'" in msg
    assert "distribution 'cfcore-broken'" in msg
    assert "ModuleNotFoundError" in msg and "cfcore_no_such_framework_xyz" in msg
    assert isinstance(info.value.__cause__, ModuleNotFoundError)  # chained with `from`
    assert "broken" not in _registry._loaded
    # Known, but not listed: a plug-in that fails to import is not available.
    assert "broken" in known_backends()
    assert "broken" not in cfcore.available_backends()


def test_real_entry_point_without_distribution(
    monkeypatch: pytest.MonkeyPatch, plugin_modules
) -> None:
    plugin_modules("cfcore_broken_plugin2", "raise RuntimeError('plug-in exploded')\n")
    ep = importlib.metadata.EntryPoint(
        name="broken2", value="cfcore_broken_plugin2:backend", group=ENTRY_POINT_GROUP
    )
    _plugins(monkeypatch, ep)
    with pytest.raises(BackendError) as info:
        cfcore.get_backend("broken2")
    msg = str(info.value)
    assert "entry point 'broken2' = 'cfcore_broken_plugin2:backend'" in msg
    assert "distribution unknown" in msg
    assert "RuntimeError: plug-in exploded" in msg
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "broken2" not in cfcore.available_backends()


def test_registered_string_import_failure(plugin_modules) -> None:
    plugin_modules("cfcore_broken_plugin3", BROKEN)
    cfcore.register_backend("broken3", "cfcore_broken_plugin3:backend")
    with pytest.raises(BackendError) as info:
        cfcore.get_backend("broken3")
    msg = str(info.value)
    assert "registered as 'cfcore_broken_plugin3:backend' by register_backend" in msg
    assert "ModuleNotFoundError" in msg
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    assert "broken3" not in cfcore.available_backends()


def test_entry_point_missing_attribute(monkeypatch: pytest.MonkeyPatch, plugin_modules) -> None:
    plugin_modules("cfcore_noattr_plugin", "x = 1\n")
    _plugins(monkeypatch, FakeEntryPoint("noattr", "cfcore_noattr_plugin:backend"))
    with pytest.raises(BackendError, match="entry point 'noattr'.*AttributeError") as info:
        cfcore.get_backend("noattr")
    assert isinstance(info.value.__cause__, AttributeError)


def test_entry_point_class_that_fails_to_construct(monkeypatch: pytest.MonkeyPatch) -> None:
    class Exploding:
        def __init__(self) -> None:
            raise OSError("no device")

    _plugins(monkeypatch, FakeEntryPoint("exploding", Exploding))
    with pytest.raises(
        BackendError, match=r"failed to construct .*Exploding\(\).*no device"
    ) as info:
        cfcore.get_backend("exploding")
    assert isinstance(info.value.__cause__, OSError)
    assert "exploding" not in cfcore.available_backends()


# ---------------------------------------------------------------------------- availability

GHOST = """
import importlib.util

from tests.backends.test_registry import make_backend

# Found, never imported: the plug-in module itself does not import its framework.
backend = make_backend(
    "ghost", available=importlib.util.find_spec("cfcore_no_such_framework_xyz") is not None
)
"""


def test_plugin_listed_only_when_is_available(
    monkeypatch: pytest.MonkeyPatch, plugin_modules
) -> None:
    plugin_modules("cfcore_ghost_plugin", GHOST)
    ready = make_backend("ready")
    _plugins(
        monkeypatch,
        FakeEntryPoint("ghost", "cfcore_ghost_plugin:backend"),
        FakeEntryPoint("ready", ready),
    )
    cfcore.register_backend("away", make_backend("away", available=False))
    cfcore.register_backend("here", make_backend("here", available=True))
    available = cfcore.available_backends()
    assert {"ready", "here"} <= set(available)
    assert not {"ghost", "away"} & set(available)
    assert {"ghost", "away", "ready", "here"} <= set(known_backends())
    for name in ("ghost", "away"):
        with pytest.raises(BackendError, match=rf"backend '{name}' .*is_available\(\) is false"):
            cfcore.get_backend(name)


def test_plugin_whose_is_available_raises_is_not_listed() -> None:
    be = make_backend("flaky")
    be.is_available = lambda: 1 / 0
    cfcore.register_backend("flaky", be)
    assert "flaky" not in cfcore.available_backends()


def test_numpy_reference_is_a_builtin_needing_no_framework() -> None:
    assert _registry._BUILTINS["numpy"] == ("cfcore.reference_backend:backend", (), "")
    assert "numpy" in known_backends()
    found = importlib.util.find_spec("cfcore.reference_backend") is not None
    assert ("numpy" in cfcore.available_backends()) == found


def test_builtin_without_framework_listed_without_import(
    monkeypatch: pytest.MonkeyPatch, plugin_modules
) -> None:
    plugin_modules(
        "cfcore_fake_builtin",
        "from tests.backends.test_registry import make_backend\nbackend = make_backend('fakebuiltin')\n",
    )
    monkeypatch.setitem(_registry._BUILTINS, "fakebuiltin", ("cfcore_fake_builtin:backend", (), ""))
    assert "fakebuiltin" in cfcore.available_backends()
    assert "cfcore_fake_builtin" not in sys.modules  # found, not imported
    assert (
        _raw(cfcore.get_backend("fakebuiltin")) is _raw(sys.modules)["cfcore_fake_builtin"].backend
    )


def test_builtin_whose_module_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        _registry._BUILTINS, "notyet", ("cfcore.no_such_backend_module:backend", (), "")
    )
    monkeypatch.setitem(_registry._BUILTINS, "nopkg", ("cfcore_no_such_pkg.sub:backend", (), ""))
    available = cfcore.available_backends()  # does not fail
    assert "notyet" not in available and "nopkg" not in available
    with pytest.raises(
        BackendError, match="built-in backend 'notyet'.*ModuleNotFoundError"
    ) as info:
        cfcore.get_backend("notyet")
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


# ---------------------------------------------------------------------------- the member check


def test_check_backend_members() -> None:
    assert check_backend_members(make_backend()) == []
    assert check_backend_members(make_backend(drop=("solve", "name"))) == ["name", "solve"]
    assert check_backend_members(make_backend(drop=("xp.take", "top_k"))) == ["top_k", "xp.take"]
    assert check_backend_members(make_backend(drop=("xp",))) == ["xp"]
    assert check_backend_members(object()) == list(BACKEND_MEMBERS)
    assert len(BACKEND_MEMBERS) == 16  # pair_layout, native_optimizer, sync: optional


def test_check_backend_members_lazy_and_delegated() -> None:
    class Lazy:
        @property
        def xp(self):
            raise ImportError("framework missing")  # a lazy xp, where the framework is missing

    be = Lazy()
    vars(be).update({k: v for k, v in vars(make_backend()).items() if k != "xp"})
    assert check_backend_members(be) == []  # present; its functions cannot be checked here
    del be.solve
    assert check_backend_members(be) == ["solve"]

    class Delegating:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

    assert check_backend_members(Delegating(make_backend())) == []
    assert check_backend_members(Delegating(make_backend(drop=("xp.log",)))) == ["xp.log"]


def test_incomplete_plugin_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _plugins(monkeypatch, FakeEntryPoint("partial", make_backend("partial", drop=("solve",))))
    with pytest.raises(BackendError) as info:
        cfcore.get_backend("partial")
    msg = str(info.value)
    assert "entry point 'partial'" in msg and "distribution 'cfcore-fake'" in msg
    assert "missing solve" in msg
    assert "partial" not in _registry._loaded


def test_incomplete_registered_backend_refused() -> None:
    cfcore.register_backend("partial", make_backend("partial", drop=("xp.where", "compile")))
    with pytest.raises(BackendError, match=r"backend 'partial'.*missing compile, xp\.where"):
        cfcore.get_backend("partial")


def test_incomplete_instance_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BackendError, match="missing name, xp, is_available"):
        cfcore.get_backend(object())
    with pytest.raises(BackendError, match=r"backend instance 'mine'.*missing top_k"):
        cfcore.get_backend(make_backend("mine", drop=("top_k",)))
    # An instance named like a built-in follows the built-ins' switch.
    monkeypatch.setattr(_registry, "_CHECK_BUILTINS", False)
    partial_jax = make_backend("JAX", drop=("top_k",))
    assert _raw(cfcore.get_backend(partial_jax)) is _raw(partial_jax)
    monkeypatch.setattr(_registry, "_CHECK_BUILTINS", True)
    with pytest.raises(BackendError, match="missing top_k"):
        cfcore.get_backend(partial_jax)


def test_builtins_checked_only_when_switched_on(
    monkeypatch: pytest.MonkeyPatch, plugin_modules
) -> None:
    assert _registry._CHECK_BUILTINS is True  # every built-in implements the Protocol
    monkeypatch.setattr(_registry, "_CHECK_BUILTINS", False)
    plugin_modules(
        "cfcore_partial_builtin",
        "from tests.backends.test_registry import make_backend\n"
        "backend = make_backend('oldbuiltin', drop=('solve',))\n",
    )
    monkeypatch.setitem(
        _registry._BUILTINS, "oldbuiltin", ("cfcore_partial_builtin:backend", (), "")
    )
    be = cfcore.get_backend("oldbuiltin")
    assert _raw(be) is sys.modules["cfcore_partial_builtin"].backend
    _registry._loaded.pop("oldbuiltin")
    monkeypatch.setattr(_registry, "_CHECK_BUILTINS", True)
    with pytest.raises(BackendError, match=r"built-in backend 'oldbuiltin'.*missing solve"):
        cfcore.get_backend("oldbuiltin")


class TestMembersConformanceOnCompleteFake(BackendMembersConformance):
    @pytest.fixture
    def backend(self):
        return make_backend("complete")


def test_members_conformance_fails_on_incomplete_backend() -> None:
    suite = BackendMembersConformance()
    with pytest.raises(AssertionError, match=r"lacks \['to_numpy', 'xp.exp'\]"):
        suite.test_has_every_protocol_member(make_backend(drop=("to_numpy", "xp.exp")))


# ---------------------------------------------------------------------------- name collisions


def test_register_builtin_name_wins_with_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    mine = make_backend("jax")
    with pytest.warns(UserWarning, match=r"replaces the built-in backend 'jax'"):
        cfcore.register_backend("jax", mine)
    assert _raw(cfcore.get_backend("jax")) is _raw(mine)
    assert _raw(cfcore.get_backend()) is _raw(mine)
    with pytest.warns(UserWarning, match=r"replaces the built-in backend 'tf'"):
        cfcore.register_backend("TensorFlow", make_backend("tf"))


def test_register_other_name_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfcore.register_backend("mine", make_backend("mine"))


def test_entry_point_does_not_shadow_builtin(
    monkeypatch: pytest.MonkeyPatch, plugin_modules
) -> None:
    plugin_modules(
        "cfcore_fake_builtin2",
        "from tests.backends.test_registry import make_backend\nbackend = make_backend('fakebuiltin')\n",
    )
    monkeypatch.setitem(
        _registry._BUILTINS, "fakebuiltin", ("cfcore_fake_builtin2:backend", (), "")
    )
    impostor = FakeEntryPoint("FakeBuiltin", make_backend("impostor"), dist="cfcore-impostor")
    _plugins(monkeypatch, impostor)
    with pytest.warns(UserWarning) as record:
        be = cfcore.get_backend("fakebuiltin")
    assert _raw(be) is sys.modules["cfcore_fake_builtin2"].backend  # the built-in wins
    assert impostor.loads == 0
    msg = str(record[0].message)
    assert "entry point 'FakeBuiltin'" in msg and "distribution 'cfcore-impostor'" in msg
    assert "built-in backend 'fakebuiltin'" in msg and "the built-in wins" in msg
    with pytest.warns(UserWarning, match="the built-in wins"):
        assert known_backends().count("fakebuiltin") == 1


def test_entry_point_named_like_jax_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    impostor = FakeEntryPoint("jaxlib", make_backend("impostor"))  # an alias of "jax"
    _plugins(monkeypatch, impostor)
    with pytest.warns(UserWarning, match=r"named like the built-in backend 'jax'.*built-in wins"):
        cfcore.available_backends()
    assert impostor.loads == 0


# ---------------------------------------------------------------------------- the guide


GUIDE = Path(__file__).resolve().parents[2] / "docs" / "development" / "writing-a-backend.md"


def _guide_block(first_line: str) -> str:
    blocks = re.findall(r"```(?:python|toml)\n(.*?)```", GUIDE.read_text(), flags=re.S)
    found = [b for b in blocks if b.splitlines()[0].strip() == first_line]
    assert len(found) == 1, f"no single block starting with {first_line!r} in {GUIDE}"
    return found[0]


def test_guide_skeleton_has_every_member_with_the_protocol_signatures(
    plugin_modules,
) -> None:
    source = _guide_block("# src/cfcore_mybackend/__init__.py")
    plugin_modules("cfcore_mybackend", source)
    module = importlib.import_module("cfcore_mybackend")
    backend = module.backend
    assert check_backend_members(backend) == []
    assert backend.is_available() is False  # its framework ("mylib") is not installed here
    for member in BACKEND_MEMBERS:
        expected = getattr(BackendProtocol, member, None)
        if not callable(expected):
            continue
        got = inspect.signature(getattr(type(backend), member))
        want = inspect.signature(expected)
        assert list(got.parameters) == list(want.parameters), member
        assert [p.default for p in got.parameters.values()] == [
            p.default for p in want.parameters.values()
        ], member


def test_guide_pyproject_declares_the_entry_point() -> None:
    toml = _guide_block("# pyproject.toml")
    assert f'[project.entry-points."{ENTRY_POINT_GROUP}"]' in toml
    assert 'mybackend = "cfcore_mybackend:backend"' in toml


def test_guide_tests_use_every_shipped_suite() -> None:
    import cfcore.testing

    tests = _guide_block("# tests/test_conformance.py")
    for suite in (
        "BackendConformance",
        "SoftmaxConformance",
        "RetrievalConformance",
        "BackendMembersConformance",
        "CrossBackendConformance",
        "SoftmaxCrossBackend",
    ):
        assert hasattr(cfcore.testing, suite)
        assert re.search(rf"class \w+\({suite}\)", tests), suite
    for fixture in ("backend", "backend_pair", "trajectory_data", "softmax_dataset"):
        assert f"def {fixture}(" in tests, fixture
    assert 'get_backend("numpy")' in tests


# ---------------------------------------------------------------------------- through the model API


def test_fit_with_unknown_backend() -> None:
    ratings = cfcore.Ratings([0, 1, 2], [0, 1, 0], [1.0, 2.0, 3.0], 3, 2)
    model = cfcore.MatrixFactorization(embedding_dim=2)
    with pytest.raises(BackendError, match=r"unknown backend 'nope'; available backends: \["):
        model.fit(ratings, steps=1, optimizer=cfcore.optimizers.SGD(1.0), backend="nope")
    assert model.step == 0
    with pytest.raises(RuntimeError, match="call fit"):
        model.embeddings  # noqa: B018


def test_plugin_with_only_the_required_members_trains_and_folds_in() -> None:
    # A third-party backend need not offer any optional capability (`pair_layout`,
    # `native_optimizer`, `sync`, `compile_map`, ...): core falls back on the required members.
    pytest.importorskip("torch")
    framework = cfcore.get_backend("torch").ops  # its required members only, as a plug-in's
    plugin = types.SimpleNamespace(**{m: getattr(framework, m) for m in BACKEND_MEMBERS})
    plugin.name = "required_only"
    assert check_backend_members(plugin) == []
    assert not any(hasattr(plugin, m) for m in cfcore.backend.OPTIONAL_MEMBERS)
    cfcore.register_backend("required_only", plugin)
    ids = np.array([0, 1, 2, 0]), np.array([0, 1, 0, 1])
    ratings = cfcore.Ratings(*ids, np.array([1.0, 2.0, 3.0, 4.0]), 3, 2)
    mf, wals = cfcore.MatrixFactorization(embedding_dim=2), cfcore.WALS(embedding_dim=2)
    sgd = cfcore.optimizers.SGD(0.1)
    mf.fit(ratings, steps=2, optimizer=sgd, backend="required_only", progress=False)
    wals.fit(ratings, steps=2, backend="required_only", progress=False)
    for model in (mf, wals):
        assert np.isfinite(model.predict(np.array([0, 1]), np.array([1, 0]))).all()
        assert np.isfinite(model.fold_in(ratings)).all()
    be = cfcore.get_backend("required_only")
    assert be.pair_layout([0, 1], [0, 1], 3, 2) is None
    assert be.native_optimizer(object()) is None
    tree = {"a": be.asarray(np.ones(2))}
    assert be.sync(tree) is tree
