"""A hyper-parameter search compiles the training chunk once: a cfcore optimizer's numbers
(learning rate, betas, eps) are read at run time from the optimizer state, not traced in."""

from __future__ import annotations

import numpy as np
import pytest

import cfcore
from cfcore.train import session as session_module

from .conftest import BACKENDS, require_backend

OPTIMIZERS = {
    "sgd": lambda lr: cfcore.optimizers.SGD(lr),
    "adagrad": lambda lr: cfcore.optimizers.Adagrad(lr, eps=1e-6),
    "adam": lambda lr: cfcore.optimizers.Adam(lr / 10, b1=0.8),
}


def _fit(backend: str, optimizer, ratings) -> dict[str, np.ndarray]:
    model = cfcore.RegularizedMF(embedding_dim=4, init_stddev=0.5)
    model.fit(
        ratings,
        steps=12,
        optimizer=optimizer,
        batch_size=64,
        eval_every=6,
        backend=backend,
        progress=False,
    )
    return model.params_numpy()


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_new_learning_rate_reuses_the_compiled_chunk_and_is_used(
    backend: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_backend(backend)
    ratings = cfcore.synthetic_ratings(40, 30, 600, seed=0)
    make = OPTIMIZERS[name]
    chunks: dict = {}
    monkeypatch.setattr(session_module, "_CHUNKS", chunks)
    first = _fit(backend, make(0.5), ratings)
    compiled = dict(chunks)
    assert len(compiled) == 1
    second = _fit(backend, make(0.1), ratings)
    # One chunk for both learning rates, the very same compiled function.
    assert chunks.keys() == compiled.keys()
    assert all(chunks[k] is compiled[k] for k in chunks)
    # ... and the second fit used its own learning rate: it equals a fit of that rate alone,
    # compiled afresh, bit for bit, and differs from the first.
    monkeypatch.setattr(session_module, "_CHUNKS", {})
    alone = _fit(backend, make(0.1), ratings)
    for table in ("user", "item"):
        np.testing.assert_array_equal(second[table], alone[table], err_msg=table)
        assert not np.allclose(second[table], first[table]), table
