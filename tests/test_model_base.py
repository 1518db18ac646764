"""The model base class: what a new model writes to add itself, and the file container."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import cfcore
from cfcore import persistence
from cfcore.models.base import Model


class _Spec:
    """A spec with one field, as a model of another kind would have."""

    def __init__(self, width: int) -> None:
        self.width = width

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "toy", "width": self.width}


class ToyModel(Model):
    """The smallest model: one parameter table, its own file entry, nothing else."""

    kind = "toy"

    def __init__(self, width: int = 2) -> None:
        super().__init__()
        self.spec = _Spec(width)

    @classmethod
    def _spec_from_dict(cls, fields: dict[str, Any]) -> _Spec:
        return _Spec(**fields)

    @classmethod
    def _from_spec(cls, spec: _Spec) -> ToyModel:
        return cls(spec.width)

    def _own_state(self, include_ratings: bool) -> tuple[dict, dict]:
        table = self.params_numpy()["table"]
        return {"shape": [len(table), 0, self.spec.width]}, {"table": table}

    def _restore_own(self, reader, meta, shape) -> None:
        table = np.asarray(reader["table"])
        if table.shape != (shape[0], shape[2]):
            raise reader.damaged(f"table of shape {table.shape}, expected {shape[0::2]}")
        self._params = {"table": table}


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(persistence.MODEL_KINDS, "toy", {})
    monkeypatch.setitem(persistence.MODEL_CLASSES, "ToyModel", ToyModel)
    persistence.register_model(ToyModel)
    return ToyModel


def test_a_new_model_saves_and_loads_through_the_base(registered, tmp_path: Path):
    model = registered(width=3)
    model._detach({"table": np.arange(12, dtype=np.float32).reshape(4, 3)})
    model.user_ids = np.array(["a", "b", "c", "d"])
    loaded = cfcore.load(model.save(tmp_path / "toy.npz"))
    assert type(loaded) is ToyModel and loaded.spec.width == 3
    np.testing.assert_array_equal(loaded.embeddings["table"], model.embeddings["table"])
    assert list(loaded.user_ids) == ["a", "b", "c", "d"]
    assert loaded.step == 0 and loaded.history.empty


def test_unregistered_kind_is_refused_with_the_known_kinds(tmp_path: Path, monkeypatch):
    model = ToyModel(width=1)
    model._detach({"table": np.ones((2, 1), np.float32)})
    path = model.save(tmp_path / "toy.npz")
    with pytest.raises(
        cfcore.ModelFileError,
        match=r"kind 'toy'.*it reads \['biased', 'ials', 'mf', 'softmax', 'wals'\]",
    ):
        cfcore.load(path)


def test_register_model_needs_a_kind():
    class NoKind(Model):
        pass

    with pytest.raises(TypeError, match="NoKind has no file kind"):
        persistence.register_model(NoKind)


def test_models_share_the_base():
    for cls in (
        cfcore.MatrixFactorization,
        cfcore.RegularizedMF,
        cfcore.SoftmaxModel,
        cfcore.WALS,
        cfcore.IALS,
        cfcore.BiasedMF,
    ):
        assert issubclass(cls, Model)
        assert persistence.MODEL_KINDS[cls.kind][cls.__name__] is cls
    with pytest.raises(RuntimeError, match="MatrixFactorization has no parameters yet"):
        cfcore.MatrixFactorization().embeddings_numpy()
