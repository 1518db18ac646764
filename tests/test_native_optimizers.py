"""Framework optimizers passed to `fit`: optax on JAX; a clear refusal elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

import cfcore


@pytest.fixture(scope="module")
def small():
    ratings = cfcore.synthetic_ratings(60, 40, 1500, seed=3)
    return ratings.split(holdout_fraction=0.1, seed=0)


def _fit(small, backend, optimizer, steps=30):
    train, test = small
    model = cfcore.RegularizedMF(embedding_dim=4, init_stddev=0.1)
    history = model.fit(
        train, test=test, steps=steps, optimizer=optimizer, backend=backend, progress=False
    )
    return model, history


def test_optax_transformation_on_jax(small):
    optax = pytest.importorskip("optax")
    model, history = _fit(
        small, "jax", optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.05))
    )
    assert history["total_loss"].iloc[-1] < history["total_loss"].iloc[0]
    # optax.adam(eps_root=0) is cfcore's Adam: the same trajectory as the pinned spec.
    same, _ = _fit(small, "jax", optax.adam(0.05))
    pinned, _ = _fit(small, "jax", cfcore.optimizers.Adam(0.05))
    np.testing.assert_allclose(same.embeddings["user"], pinned.embeddings["user"], atol=1e-5)


def test_a_model_trained_with_optax_saves(small, tmp_path):
    optax = pytest.importorskip("optax")
    model, _ = _fit(small, "jax", optax.adamw(0.05), steps=10)
    loaded = cfcore.load(model.save(tmp_path / "m.npz"))
    np.testing.assert_array_equal(loaded.embeddings["user"], model.embeddings["user"])
    # The file cannot describe a framework's optimizer object: it records its type only.
    import json

    with np.load(tmp_path / "m.npz") as archive:
        meta = json.loads(archive["metadata"].tobytes().decode())
    assert meta["optimizer"]["native"].startswith("GradientTransformation")


def test_keras_optimizer_on_tf_is_refused_clearly(small):
    # Keras 3's stateless optimizer API does not run on its TensorFlow backend: not supported yet.
    keras = pytest.importorskip("keras")
    with pytest.raises(ValueError, match="none yet on tf"):
        _fit(small, "tf", keras.optimizers.Adam(0.05))


def test_a_framework_optimizer_on_the_wrong_backend_is_refused(small):
    optax = pytest.importorskip("optax")
    with pytest.raises(ValueError, match="optimizer object of the 'tf' backend"):
        _fit(small, "tf", optax.adam(0.05))
