"""The backend registry: names, aliases, the selection order, plug-ins and missing frameworks."""

from __future__ import annotations

import collections
import importlib
import types
from typing import Any

import pytest

import cfcore
from cfcore import BackendError, _registry
from cfcore._registry import ENTRY_POINT_GROUP, known_backends

from .conftest import BACKENDS, load_backend


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch: pytest.MonkeyPatch):
    """Each test sees no CFCORE_BACKEND, no default, and gets the registry back as it found it."""
    monkeypatch.delenv("CFCORE_BACKEND", raising=False)
    registered, loaded, default = (
        dict(_registry._registered),
        dict(_registry._loaded),
        _registry._default,
    )
    yield
    cfcore.set_default_backend(None)
    _registry._default = default
    for d, before in ((_registry._registered, registered), (_registry._loaded, loaded)):
        d.clear()
        d.update(before)


def _one_tf_backend():
    load_backend("jax")
    return load_backend("tf")


# ---------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", BACKENDS)
def test_builtin_backends_available(name: str) -> None:
    assert name in known_backends()
    be = load_backend(name)  # skips (or fails in CI) if the framework is missing
    assert name in cfcore.available_backends()
    assert cfcore.get_backend(name) is be
    assert be.name == name


def test_both_builtins_available_here() -> None:
    for name in BACKENDS:
        load_backend(name)
    assert {"jax", "tf"} <= set(cfcore.available_backends())
    assert cfcore.available_backends() == sorted(cfcore.available_backends())


def test_tensorflow_alias() -> None:
    tf_be = _one_tf_backend()
    assert cfcore.get_backend("tensorflow") is tf_be
    assert cfcore.get_backend("TensorFlow") is tf_be
    assert cfcore.get_backend(" tf ") is tf_be
    assert tf_be.name == "tf"


def test_case_insensitive() -> None:
    jax_be = load_backend("jax")
    assert cfcore.get_backend("JAX") is jax_be
    assert cfcore.get_backend("Jax") is jax_be
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
    assert cfcore.get_backend() is tf_be
    monkeypatch.setenv("CFCORE_BACKEND", "jax")
    assert cfcore.get_backend() is jax_be
    monkeypatch.setenv("CFCORE_BACKEND", "TensorFlow")
    assert cfcore.get_backend() is tf_be


def test_env_unknown_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFCORE_BACKEND", "mxnet")
    with pytest.raises(BackendError, match=r"unknown backend 'mxnet'; available backends: \["):
        cfcore.get_backend()


def test_explicit_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    tf_be, jax_be = _one_tf_backend(), load_backend("jax")
    monkeypatch.setenv("CFCORE_BACKEND", "tf")
    assert cfcore.get_backend("jax") is jax_be
    monkeypatch.setenv("CFCORE_BACKEND", "jax")
    assert cfcore.get_backend("tf") is tf_be
    # Even an invalid environment value does not matter when the argument decides.
    monkeypatch.setenv("CFCORE_BACKEND", "nope")
    assert cfcore.get_backend("jax") is jax_be


def test_default_when_nothing_set() -> None:
    jax_be = load_backend("jax")
    assert _registry.DEFAULT_BACKEND == "jax"
    assert cfcore.get_backend() is jax_be
    assert cfcore.get_backend(None) is jax_be


def test_empty_env_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    jax_be = load_backend("jax")
    monkeypatch.setenv("CFCORE_BACKEND", "")
    assert cfcore.get_backend() is jax_be


def test_set_default_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    tf_be, jax_be = _one_tf_backend(), load_backend("jax")
    try:
        cfcore.set_default_backend("tensorflow")
        assert cfcore.get_backend() is tf_be  # env unset: the default decides
        monkeypatch.setenv("CFCORE_BACKEND", "jax")
        assert cfcore.get_backend() is jax_be  # env beats the default
        monkeypatch.delenv("CFCORE_BACKEND")
        assert cfcore.get_backend() is tf_be
        assert cfcore.get_backend("jax") is jax_be  # the argument beats the default
        cfcore.set_default_backend(None)
        assert cfcore.get_backend() is jax_be
    finally:
        cfcore.set_default_backend(None)


def test_set_default_backend_unknown() -> None:
    with pytest.raises(BackendError, match=r"unknown backend 'nope'; available backends: \["):
        cfcore.set_default_backend("nope")
    assert _registry._default is None


def test_instance_passed_through() -> None:
    sentinel = object()
    assert cfcore.get_backend(sentinel) is sentinel
    jax_be = load_backend("jax")
    assert cfcore.get_backend(jax_be) is jax_be


# ---------------------------------------------------------------------------- registration


def test_register_instance() -> None:
    mine = types.SimpleNamespace(name="mine")
    try:
        cfcore.register_backend("mine", mine)
        assert cfcore.get_backend("mine") is mine
        assert "mine" in known_backends()
        assert "mine" in cfcore.available_backends()
        # Re-registering replaces the cached one.
        other = types.SimpleNamespace(name="mine2")
        cfcore.register_backend("mine", other)
        assert cfcore.get_backend("mine") is other
    finally:
        _registry._registered.pop("mine", None)
        _registry._loaded.pop("mine", None)
    with pytest.raises(BackendError, match="unknown backend 'mine'"):
        cfcore.get_backend("mine")


def test_register_lazy_target() -> None:
    try:
        cfcore.register_backend("lazy", "collections:OrderedDict")
        assert "lazy" not in _registry._loaded  # nothing imported until asked for
        assert cfcore.get_backend("lazy") is collections.OrderedDict
    finally:
        _registry._registered.pop("lazy", None)
        _registry._loaded.pop("lazy", None)


def test_register_mixed_case_name() -> None:
    mine = object()
    try:
        cfcore.register_backend("Mine", mine)
        assert cfcore.get_backend("Mine") is mine
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


def test_missing_optax(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "importlib", _without("optax"))
    monkeypatch.delitem(_registry._loaded, "jax", raising=False)
    assert "jax" not in cfcore.available_backends()
    with pytest.raises(BackendError) as info:
        cfcore.get_backend("jax")
    msg = str(info.value)
    assert "backend 'jax' needs optax, which is not installed" in msg
    assert "pip install 'cfcore[jax]'" in msg


# ---------------------------------------------------------------------------- entry-point plug-ins


class FakeBackend:
    name = "fake"
    made = 0

    def __init__(self) -> None:
        type(self).made += 1


class FakeEntryPoint:
    def __init__(self, name: str, target: Any) -> None:
        self.name, self.target, self.loads = name, target, 0

    def load(self) -> Any:
        self.loads += 1
        return self.target


def _plugins(monkeypatch: pytest.MonkeyPatch, *eps: FakeEntryPoint) -> list[str]:
    groups: list[str] = []

    def entry_points(*, group: str):
        groups.append(group)
        return list(eps) if group == ENTRY_POINT_GROUP else []

    monkeypatch.setattr(_registry, "entry_points", entry_points)
    return groups


def test_entry_point_plugin_class(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = FakeEntryPoint("fake", FakeBackend)
    groups = _plugins(monkeypatch, ep)
    try:
        assert "fake" in known_backends()
        assert "fake" in cfcore.available_backends()
        assert ep.loads == 0  # listing a plug-in does not load it
        assert set(groups) == {"cfcore.backends"}
        be = cfcore.get_backend("fake")
        assert isinstance(be, FakeBackend)
        assert cfcore.get_backend("FAKE") is be  # cached, one instance
        assert ep.loads == 1
    finally:
        _registry._loaded.pop("fake", None)


def test_entry_point_plugin_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    instance = types.SimpleNamespace(name="inst")
    _plugins(monkeypatch, FakeEntryPoint("inst", instance))
    try:
        assert cfcore.get_backend("inst") is instance
    finally:
        _registry._loaded.pop("inst", None)


def test_entry_point_plugin_listed_in_unknown_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _plugins(monkeypatch, FakeEntryPoint("fake", FakeBackend))
    with pytest.raises(BackendError) as info:
        cfcore.get_backend("nope")
    assert "'fake'" in str(info.value)


# ---------------------------------------------------------------------------- through the model API


def test_fit_with_unknown_backend() -> None:
    ratings = cfcore.Ratings([0, 1, 2], [0, 1, 0], [1.0, 2.0, 3.0], 3, 2)
    model = cfcore.MatrixFactorization(embedding_dim=2)
    with pytest.raises(BackendError, match=r"unknown backend 'nope'; available backends: \["):
        model.fit(ratings, steps=1, optimizer=cfcore.optimizers.SGD(1.0), backend="nope")
    assert model.step == 0
    with pytest.raises(RuntimeError, match="call fit"):
        model.embeddings  # noqa: B018
