"""Fold-in by a model's own loss (`cfcore.models.fold_in`), checked against a closed form."""

from __future__ import annotations

import numpy as np
import pytest

import cfcore
from cfcore.models.factor import FactorModel
from cfcore.retrieval import fold_in_solve

from ..conftest import BACKENDS, load_backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_generic_fold_in_reaches_the_least_squares_rows(backend: str) -> None:
    # Plain MF's loss over new rows, the items fixed, is least squares: the generic descent
    # (FactorModel's default fold-in) must land on the exact solve of the same objective.
    load_backend(backend)
    train = cfcore.synthetic_ratings(40, 30, 600, seed=0)
    model = cfcore.MatrixFactorization(embedding_dim=3, init_stddev=0.5)
    model.fit(train, steps=5, optimizer=cfcore.optimizers.SGD(0.1), backend=backend,
              progress=False)  # fmt: skip
    rng = np.random.default_rng(1)
    num = 4
    rows = np.repeat(np.arange(num), 8)
    items = np.concatenate([rng.choice(30, 8, replace=False) for _ in range(num)])
    values = rng.integers(1, 6, len(rows)).astype(np.float32)
    got = FactorModel._fold_in_arrays(model, rows, items, values, num, None, backend)
    exact = fold_in_solve(model.embeddings["item"], rows, items, values, num, 0.0, backend="numpy")
    np.testing.assert_allclose(got, exact, rtol=0, atol=2e-3 * np.abs(exact).max())
    # and it moved: the start (zero rows) is far from it
    assert np.abs(exact).max() > 0.1


def test_generic_fold_in_refuses_the_numpy_backend() -> None:
    model = cfcore.MatrixFactorization(embedding_dim=2)
    model.fit(cfcore.synthetic_ratings(5, 4, 12, seed=0), steps=1,
              optimizer=cfcore.optimizers.SGD(0.1), backend=BACKENDS[0], progress=False)  # fmt: skip
    with pytest.raises(cfcore.NotSupportedError, match="numpy"):
        FactorModel._fold_in_arrays(model, np.array([0]), np.array([1]), np.array([3.0]), 1,
                                    None, "numpy")  # fmt: skip
