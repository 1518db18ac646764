"""The model base class: what a new model writes to add itself, and the file container."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
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


# Every model cfcore registers (not a list: a new model is covered by importing it).
MODELS = tuple(c for c in persistence.MODEL_CLASSES.values() if c.__module__.startswith("cfcore."))


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
        match=r"kind 'toy'.*it reads " + re.escape(str(sorted(persistence.MODEL_KINDS))),
    ):
        cfcore.load(path)


def test_register_model_needs_a_kind():
    class NoKind(Model):
        pass

    with pytest.raises(TypeError, match="NoKind has no file kind"):
        persistence.register_model(NoKind)


def test_models_share_the_base():
    for cls in MODELS:
        assert issubclass(cls, Model)
        assert persistence.MODEL_KINDS[cls.kind][cls.__name__] is cls
    with pytest.raises(RuntimeError, match="MatrixFactorization has no parameters yet"):
        cfcore.MatrixFactorization().embeddings_numpy()


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_constructor_defaults_are_the_specs(cls):
    """The defaults a constructor shows are its spec's (`default_spec`), written once in
    `cfcore.specs`; an untrained model's spec equals that spec."""
    import inspect

    spec = cls.default_spec()
    shown = {
        name: p.default
        for name, p in inspect.signature(cls).parameters.items()
        if p.default is not inspect.Parameter.empty and p.default is not None
    }
    assert shown, cls
    for name, default in shown.items():
        assert getattr(spec, name) == default, (cls.__name__, name)
    if cls is not cfcore.SoftmaxModel:  # its feature_dims default (None) means the notebook's
        assert cls().spec == spec


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_from_spec_is_generic_and_keeps_every_field(cls):
    import dataclasses

    spec = cls().spec
    changed = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    if "init_stddev" in changed:
        changed["init_stddev"] = 0.25
    else:
        changed["item_feature"] = spec.item_feature
        changed["hidden_scale"] = 0.5
    other = type(spec)(**changed)
    fields = {k: v for k, v in other.to_dict().items() if k != "kind"}
    model = cls._from_spec(cls._spec_from_dict(fields))
    assert type(model) is cls and model.spec == other


def test_layouts_are_built_once_per_training_set(monkeypatch):
    from cfcore.models import als, factor

    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return row_blocks(*args, **kwargs)

    row_blocks = als.row_blocks
    monkeypatch.setattr(als, "row_blocks", counting)
    monkeypatch.setattr(factor, "LAYOUTS", factor.LayoutCache(size=2))
    r = cfcore.synthetic_ratings(30, 20, 300, seed=0)
    fit = {"steps": 2, "backend": "numpy", "progress": False}
    first = cfcore.WALS(4).fit(r, **fit)
    assert len(calls) == 2  # the user side's blocks and the item side's
    again = cfcore.WALS(4).fit(r, **fit)  # another model, the same ratings and spec
    assert len(calls) == 2
    pd.testing.assert_frame_equal(first, again)
    cfcore.WALS(4, regularization_coeff=0.3).fit(r, **fit)  # other λ: other blocks
    assert len(calls) == 4
    copy = cfcore.Ratings(r.users, r.items, r.values.copy(), r.num_users, r.num_items)
    cfcore.WALS(4).fit(copy, **fit)  # another object: its own entry (the oldest goes)
    assert len(calls) == 6 and len(factor.LAYOUTS) == 2
    # Ratings keep read-only copies; one made writable and changed in place is seen too.
    copy.values.setflags(write=True)
    copy.values[5] += 1.0
    changed = cfcore.WALS(4).fit(copy, **fit)
    assert len(calls) == 8
    assert changed["train_mse"].iloc[-1] != first["train_mse"].iloc[-1]


def test_fingerprint_sees_values_shapes_and_catalogue():
    from cfcore.models.factor import fingerprint

    r = cfcore.synthetic_ratings(30, 20, 300, seed=0)
    same = cfcore.Ratings(r.users.copy(), r.items.copy(), r.values.copy(), 30, 20)
    assert fingerprint(r) == fingerprint(same)
    bigger = cfcore.Ratings(r.users, r.items, r.values, 31, 20)
    assert fingerprint(bigger) != fingerprint(r)
    same.values.setflags(write=True)
    same.values[-1] += 0.5
    assert fingerprint(same) != fingerprint(r)
