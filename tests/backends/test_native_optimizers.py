"""Framework optimizers passed to `fit`: optax on JAX, Keras 3 on TensorFlow; a clear refusal
elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

import cfcore


@pytest.fixture(scope="module")
def small():
    ratings = cfcore.synthetic_ratings(60, 40, 1500, seed=3)
    return ratings.split(holdout_fraction=0.1, seed=0)


def _fit(small, backend, optimizer, steps=30, model=None, eval_every=10):
    train, test = small
    model = model or cfcore.RegularizedMF(embedding_dim=4, init_stddev=0.1)
    history = model.fit(
        train,
        test=test,
        steps=steps,
        optimizer=optimizer,
        backend=backend,
        eval_every=eval_every,
        progress=False,
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


def _keras():
    pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("Keras runs on another backend (KERAS_BACKEND)")
    return keras


def test_keras_adam_on_tf_follows_cfcore_adam(small):
    keras = _keras()
    model, history = _fit(small, "tf", keras.optimizers.Adam(0.05))
    assert history["total_loss"].iloc[-1] < history["total_loss"].iloc[0] / 2
    # Keras' Adam adds ε to sqrt(v) before the bias correction of v, cfcore's after it: with a
    # negligible ε both are m̂ / sqrt(v̂) and follow the same trajectory up to float32 rounding
    # (measured: 3e-7 after 30 steps; with ε = 1e-8 on both the gap is 6e-4).
    same, _ = _fit(small, "tf", keras.optimizers.Adam(0.05, epsilon=1e-12))
    pinned, _ = _fit(small, "tf", cfcore.optimizers.Adam(0.05, eps=1e-12))
    for table in ("user", "item"):
        np.testing.assert_allclose(same.embeddings[table], pinned.embeddings[table], atol=1e-5)
    assert np.abs(same.embeddings["user"] - model.embeddings["user"]).max() > 0  # ε is used


def test_keras_schedule_carries_its_step_count(small):
    # The iteration counter travels in the optimizer state, across chunks (eval_every=7) and
    # across calls of fit: a schedule that stops after 10 steps stops there.
    keras = _keras()
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([9], [0.05, 0.0])
    opt = keras.optimizers.SGD(schedule)
    model, _ = _fit(small, "tf", opt, steps=4, eval_every=7)
    model, _ = _fit(small, "tf", opt, steps=26, model=model, eval_every=7)
    pinned, _ = _fit(small, "tf", cfcore.optimizers.SGD(0.05), steps=10, eval_every=7)
    assert model.step == 30
    for table in ("user", "item"):
        np.testing.assert_allclose(model.embeddings[table], pinned.embeddings[table], atol=1e-6)
    # The object passed in is left as it was: fit works on a copy.
    assert int(opt.iterations.numpy()) == 0


def test_keras_optimizer_divergence_is_guarded(small):
    keras = _keras()
    train, _ = small

    def diverge(optimizer):
        model = cfcore.MatrixFactorization(embedding_dim=4, init_stddev=0.5)
        with pytest.raises(cfcore.TrainingDivergedError, match="NaN or infinite at step") as info:
            model.fit(train, steps=200, optimizer=optimizer, backend="tf", progress=False)
        return model, info.value

    model, err = diverge(keras.optimizers.SGD(1e4))
    assert err.step > 0 and model.step == err.step - 1
    assert all(np.all(np.isfinite(v)) for v in model.embeddings.values())
    # Keras' SGD is cfcore's: the guard keeps the same last finite state as with the spec.
    pinned, pinned_err = diverge(cfcore.optimizers.SGD(1e4))
    assert err.step == pinned_err.step
    np.testing.assert_allclose(model.embeddings["user"], pinned.embeddings["user"], rtol=1e-5)


def test_a_model_trained_with_keras_saves(small, tmp_path):
    keras = _keras()
    model, _ = _fit(small, "tf", keras.optimizers.AdamW(0.05, weight_decay=0.01), steps=10)
    loaded = cfcore.load(model.save(tmp_path / "m.npz"))
    np.testing.assert_array_equal(loaded.embeddings["user"], model.embeddings["user"])
    import json

    with np.load(tmp_path / "m.npz") as archive:
        meta = json.loads(archive["metadata"].tobytes().decode())
    assert meta["optimizer"] == {"native": "AdamW"}


def test_a_non_optimizer_on_tf_is_refused(small):
    with pytest.raises(ValueError, match="optimizer object of the 'tf' backend"):
        _fit(small, "tf", object())


def test_a_framework_optimizer_on_the_wrong_backend_is_refused(small):
    optax = pytest.importorskip("optax")
    with pytest.raises(ValueError, match="optimizer object of the 'tf' backend"):
        _fit(small, "tf", optax.adam(0.05))
