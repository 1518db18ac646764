"""Peers in `cfcore experiment`: models that cfcore does not train, behind a small adapter.

An adapter is a class (anywhere: cfcore imports it by its "module:Class" name and never ships
one) with:

* `kind`: a class attribute, `"ratings"` (scored by RMSE, MSE, MAE on held-out ratings) or
  `"positives"` (scored by the strong-generalization protocol of `cfcore.eval.implicit`);
* `__init__(**params)`: its hyper-parameters, the names a search space may give (it should
  refuse a bad value with an exception);
* `fit(train, *, seed)`: trains on a `cfcore.Ratings` (ratings; for "positives", the
  training users' positives, every value 1.0);
* `predict(users, items) -> [n]` (kind "ratings"): the predicted ratings of index pairs;
* `scores(fold_in) -> [B, M]` (kind "positives"): the scores of every training item for a chunk
  of held-out users from their fold-in items (a `cfcore.retrieval.RatedItems`; higher is
  better, as `cfcore.eval.implicit.Scorer`).

Example:
    >>> import numpy as np
    >>> class Mean:
    ...     kind = "ratings"
    ...     def __init__(self, shift: float = 0.0):
    ...         self.shift = shift
    ...     def fit(self, train, *, seed):
    ...         self.mean = float(np.mean(train.values)) + self.shift
    ...     def predict(self, users, items):
    ...         return np.full(len(users), self.mean)
    >>> peer = resolve_peer(Mean, where="example")
    >>> peer.name, peer.implicit, peer.arguments
    ('Mean', False, ('shift',))
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
import time
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..errors import ArgumentValueError
from .runner import Family, Metric, PointResult, RunSettings, Validation
from .space import Point

KINDS = {"ratings": "predict", "positives": "scores"}
"""An adapter's `kind` and the method that scores it."""


def load_adapter(spec: str, where: str, base: Path | None = None) -> type:
    """The class named by `"package.module:Class"` or `"path/to/file.py:Class"` (a relative path
    is taken from `base`, then from the working folder).

    Raises:
        ArgumentValueError: a malformed name, a module or class that cannot be found (naming
            `where`, e.g. the config file and key).
    """
    module_name, sep, class_name = spec.rpartition(":")
    if not sep or not module_name or not class_name.isidentifier():
        raise ArgumentValueError(f"{where}: adapter {spec!r} is not 'module:Class'")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            candidates = [path] if path.is_absolute() else [(base or Path()) / path, path]
            found = next((p for p in candidates if p.is_file()), None)
            if found is None:
                raise ArgumentValueError(f"{where}: no adapter file {module_name!r}")
            loaded = importlib.util.spec_from_file_location(found.stem, found)
            assert loaded is not None and loaded.loader is not None
            module = importlib.util.module_from_spec(loaded)
            loaded.loader.exec_module(module)
        else:
            if str(Path.cwd()) not in sys.path and "" not in sys.path:
                # `cfcore` (the console script) does not put the working folder on the path,
                # where `benchmarks.experiment_peers` lives when run from a checkout.
                sys.path.append(str(Path.cwd()))
            module = importlib.import_module(module_name)
    except ImportError as err:
        raise ArgumentValueError(f"{where}: cannot import adapter {spec!r}: {err}") from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise ArgumentValueError(f"{where}: {module_name} has no class {class_name!r}")
    return cls


def resolve_peer(cls: type, where: str) -> Family:
    """The `Family` `tune` searches for an adapter class (see the module docstring).

    Raises:
        ArgumentValueError: no `kind`, an unknown one, or a missing `fit` or scoring method.
    """
    kind = getattr(cls, "kind", None)
    if kind not in KINDS:
        raise ArgumentValueError(
            f"{where}: adapter {cls.__name__} must declare kind = 'ratings' or 'positives', "
            f"got {kind!r}"
        )
    for method in ("fit", KINDS[kind]):
        if not callable(getattr(cls, method, None)):
            raise ArgumentValueError(f"{where}: adapter {cls.__name__} has no {method}() method")
    params = inspect.signature(cls.__init__).parameters
    arguments = tuple(
        p.name for p in params.values() if p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD
    )
    # `trains_by="sweeps"`: no optimizer is searched or recorded for a peer.
    return Family(cast(Any, cls), cls.__name__, kind == "positives", "sweeps", arguments, {})


class Scored:
    """An adapter seen as `tune`'s validation scoring and `evaluate_strong_generalization` see
    a cfcore model: `evaluate(ratings)` for ratings, a scorer (`__call__`) for positives."""

    def __init__(self, adapter: Any) -> None:
        self.adapter = adapter

    def evaluate(self, ratings: Any) -> dict[str, float]:
        """`{"mse", "rmse", "mae", "n"}` of the adapter's predictions of `ratings`."""
        pred = np.asarray(self.adapter.predict(ratings.users, ratings.items), np.float64)
        err = pred - np.asarray(ratings.values, np.float64)
        mse = float(np.mean(err**2))
        return {"mse": mse, "rmse": math.sqrt(mse), "mae": float(np.mean(np.abs(err))),
                "n": len(err)}  # fmt: skip

    def __call__(self, fold_in: Any) -> np.ndarray:
        return np.asarray(self.adapter.scores(fold_in))


def run_peer_point(
    family: Family, point: Point, validation: Validation, metric: Metric, settings: RunSettings
) -> PointResult:
    """One point of an adapter (`runner.run_points`'s `run_point`): built, fit once and scored;
    a point whose fit raises an arithmetic error or scores a non-finite metric is "diverged"."""
    start = time.perf_counter()
    value, status = math.nan, "ok"
    try:
        adapter = family.cls(**point)
        adapter.fit(validation.train, seed=settings.seed)  # pyright: ignore[reportAttributeAccessIssue]
        value = float(validation.score(Scored(adapter)))
    except (ArithmeticError, np.linalg.LinAlgError):
        status = "diverged"
    if not math.isfinite(value):
        status = "diverged"
    return PointResult(dict(point), value, 1, 1, time.perf_counter() - start, status)
