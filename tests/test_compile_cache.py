"""A hyper-parameter search compiles the training chunk once: a cfcore optimizer's numbers
(learning rate, betas, eps) are read at run time from the optimizer state, and a model's penalty
coefficients (λ, λb, λg) from the training data (`cfcore.train.hyper`), not traced in."""

from __future__ import annotations

import numpy as np
import pytest

import cfcore
from cfcore import get_backend
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


MODELS = {
    "regularized": lambda lam: cfcore.RegularizedMF(
        embedding_dim=4, init_stddev=0.5, regularization_coeff=lam, gravity_coeff=2 * lam
    ),
    "biased": lambda lam: cfcore.BiasedMF(
        embedding_dim=4,
        init_stddev=0.5,
        regularization_coeff=lam,
        bias_regularization_coeff=lam / 2,
        gravity_coeff=lam,
    ),  # fmt: skip
}


def _fit_model(backend: str, model, ratings, batch_size):
    model.fit(
        ratings,
        test=ratings,
        steps=12,
        optimizer=cfcore.optimizers.Adam(0.05),
        batch_size=batch_size,
        eval_every=6,
        backend=backend,
        progress=False,
    )
    return model


@pytest.mark.parametrize("batch_size", [None, 64])
@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_new_coefficients_reuse_the_compiled_chunk_and_are_used(
    backend: str, kind: str, batch_size, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_backend(backend)
    be = get_backend(backend)
    ratings = cfcore.synthetic_ratings(40, 30, 600, seed=0)
    chunks: dict = {}
    monkeypatch.setattr(session_module, "_CHUNKS", chunks)
    monkeypatch.setattr(be, "_compiled", {})
    first = _fit_model(backend, MODELS[kind](0.05), ratings, batch_size)
    compiled, evaluations = dict(chunks), dict(be._compiled)
    second = _fit_model(backend, MODELS[kind](0.4), ratings, batch_size)
    # The same compiled training chunk and evaluation functions served both coefficients.
    assert chunks.keys() == compiled.keys() and len(chunks) == 1
    assert all(chunks[k] is compiled[k] for k in chunks)
    assert be._compiled.keys() == evaluations.keys()
    # A fit of the second coefficients alone, everything compiled afresh: the same parameters
    # and history bit for bit (so the reused programs read the new numbers), not the first's.
    monkeypatch.setattr(session_module, "_CHUNKS", {})
    monkeypatch.setattr(be, "_compiled", {})
    alone = _fit_model(backend, MODELS[kind](0.4), ratings, batch_size)
    got, want, other = second.params_numpy(), alone.params_numpy(), first.params_numpy()
    for table in want:
        np.testing.assert_array_equal(got[table], want[table], err_msg=table)
        assert not np.allclose(got[table], other[table]), table
    np.testing.assert_array_equal(second.history.to_numpy(), alone.history.to_numpy())
    assert not np.allclose(
        second.history["regularization_loss"], first.history["regularization_loss"]
    )
