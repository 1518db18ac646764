"""Model-level behaviour: fit / continue / evaluate / divergence, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import cfcore
from cfcore import reference as ref
from cfcore.optimizers import SGD, Adagrad


@pytest.fixture(scope="module")
def small():
    """A small synthetic problem with a train/test split."""
    rng = np.random.default_rng(0)
    n_users, n_items, n = 40, 60, 1500
    u = rng.integers(0, n_users, n)
    i = rng.integers(0, n_items, n)
    r = rng.integers(1, 6, n).astype(np.float32)
    return cfcore.Ratings(u, i, r, n_users, n_items).split(holdout_fraction=0.2, seed=0)


def test_history_columns_and_steps(backend, small):
    train, test = small
    model = cfcore.MatrixFactorization(embedding_dim=4, init_stddev=0.5)
    h = model.fit(
        train,
        test=test,
        steps=25,
        optimizer=SGD(1.0),
        backend=backend,
        eval_every=10,
        progress=False,
    )
    assert list(h.columns) == ["step", "train_mse", "test_mse"]
    assert h["step"].tolist() == [0, 10, 20, 25]
    assert h["train_mse"].iloc[-1] < h["train_mse"].iloc[0]
    emb = model.embeddings
    assert emb["user"].shape == (40, 4) and emb["item"].shape == (60, 4)
    assert emb["user"].dtype == np.float32


def test_regularized_history_has_parts_matching_reference(backend, small):
    train, test = small
    model = cfcore.RegularizedMF(
        embedding_dim=4, init_stddev=0.3, regularization_coeff=0.2, gravity_coeff=0.5
    )
    h = model.fit(train, test=test, steps=10, optimizer=SGD(0.5), backend=backend, progress=False)
    assert {"observed_loss", "regularization_loss", "gravity_loss", "total_loss"} <= set(h.columns)
    terms, _ = ref.mf_objective(
        model.spec, model.embeddings, train.users, train.items, train.values
    )
    last = h.iloc[-1]
    for col, key in [
        ("observed_loss", "observed"),
        ("regularization_loss", "regularization"),
        ("gravity_loss", "gravity"),
        ("total_loss", "total"),
    ]:
        assert np.isclose(last[col], terms[key], rtol=1e-5), (col, last[col], terms[key])
    assert np.isclose(last["test_mse"], model.evaluate(test)["mse"], rtol=1e-5)


def test_initial_row_is_the_seeded_init(backend, small):
    train, _ = small
    model = cfcore.MatrixFactorization(embedding_dim=3, init_stddev=0.7)
    h = model.fit(train, steps=1, optimizer=SGD(0.1), backend=backend, seed=5, progress=False)
    init = cfcore.init.init_mf_params(model.spec, 40, 60, seed=5)
    expected, _, _ = ref.sparse_mse(
        init["user"], init["item"], train.users, train.items, train.values
    )
    assert np.isclose(h["train_mse"].iloc[0], expected, rtol=1e-5)


@pytest.mark.parametrize("batch_size", [None, 128])
def test_second_fit_continues(backend, small, batch_size):
    train, test = small
    kw = dict(optimizer=Adagrad(0.3), backend=backend, progress=False, batch_size=batch_size)
    a = cfcore.MatrixFactorization(embedding_dim=4, init_stddev=0.5)
    a.fit(train, steps=30, **kw)
    a.fit(train, steps=20, **kw)
    assert a.step == 50
    assert a.history["step"].tolist() == [0, 10, 20, 30, 40, 50]
    if batch_size is None:  # full batch: two fits are exactly one long fit
        b = cfcore.MatrixFactorization(embedding_dim=4, init_stddev=0.5)
        b.fit(train, steps=50, **kw)
        for k in ("user", "item"):
            np.testing.assert_allclose(a.embeddings[k], b.embeddings[k], rtol=1e-6, atol=1e-6)
    else:  # and the second fit did move the parameters on from the first
        assert a.history["train_mse"].iloc[-1] < a.history["train_mse"].iloc[3]


def test_evaluate_matches_numpy(backend, small):
    train, test = small
    model = cfcore.MatrixFactorization(embedding_dim=4, init_stddev=0.5)
    model.fit(train, steps=5, optimizer=SGD(1.0), backend=backend, progress=False)
    ev = model.evaluate(test)
    e = model.embeddings
    pred = np.sum(e["user"][test.users].astype(np.float64) * e["item"][test.items], axis=1)
    err = pred - test.values
    assert np.isclose(ev["mse"], np.mean(err**2)) and np.isclose(ev["mae"], np.mean(np.abs(err)))
    assert np.isclose(ev["rmse"], np.sqrt(ev["mse"])) and ev["n"] == len(test)


def test_divergence_stops_names_step_and_keeps_finite_params(backend, small):
    train, _ = small
    model = cfcore.MatrixFactorization(embedding_dim=4, init_stddev=0.5)
    with pytest.raises(
        cfcore.TrainingDivergedError, match=r"NaN or infinite at step (\d+)"
    ) as info:
        model.fit(train, steps=200, optimizer=SGD(1e4), backend=backend, progress=False)
    err = info.value
    assert err.step > 0
    emb = model.embeddings
    assert all(np.all(np.isfinite(v)) for v in emb.values())
    assert model.step == err.step - 1
    # The kept parameters are those of step - 1: their loss is finite, one more SGD step is not.
    loss, du, dv = ref.sparse_mse(emb["user"], emb["item"], train.users, train.items, train.values)
    assert np.isfinite(loss)
    nu = emb["user"] - 1e4 * du.astype(np.float32)
    nv = emb["item"] - 1e4 * dv.astype(np.float32)
    with np.errstate(all="ignore"):
        pred = np.sum(nu[train.users].astype(np.float32) * nv[train.items], axis=1)
        assert not np.isfinite(np.mean((pred - train.values) ** 2, dtype=np.float32))


def test_catalog_mismatch_errors(small):
    train, _ = small
    other = cfcore.Ratings([0, 1], [0, 1], [1.0, 2.0], 5, 5)
    model = cfcore.MatrixFactorization(embedding_dim=2)
    with pytest.raises(ValueError, match="share a catalog"):
        model.fit(train, test=other, steps=1, optimizer=SGD(0.1), progress=False)
    model.fit(train, steps=1, optimizer=SGD(0.1), progress=False)
    with pytest.raises(ValueError, match="cannot continue training"):
        model.fit(other, steps=1, optimizer=SGD(0.1), progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=0), "steps must be a positive int"),
        (dict(steps=5, eval_every=0), "eval_every must be a positive int"),
        (dict(steps=5, batch_size=0), "batch_size must be an int in"),
        (dict(steps=5, optimizer="sgd"), "needs a learning_rate"),
        (dict(steps=5, optimizer="rmsprop"), "unknown optimizer"),
    ],
)
def test_bad_fit_arguments(small, kwargs, match):
    train, _ = small
    kwargs = {"optimizer": SGD(0.1), **kwargs}
    with pytest.raises(ValueError, match=match):
        cfcore.MatrixFactorization(embedding_dim=2).fit(train, progress=False, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(embedding_dim=0), "embedding_dim must be a positive int"),
        (dict(embedding_dim=3, init_stddev=-1.0), "init_stddev must be"),
        (dict(embedding_dim=3, mse="sparse"), "mse must be one of"),
    ],
)
def test_bad_model_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cfcore.MatrixFactorization(**kwargs)


def test_bad_optimizer_arguments():
    with pytest.raises(ValueError, match="learning_rate must be a finite number > 0"):
        SGD(learning_rate=float("nan"))
    with pytest.raises(ValueError, match="b1 must be in"):
        cfcore.optimizers.Adam(learning_rate=0.1, b1=1.0)


def test_embeddings_before_fit_error():
    with pytest.raises(RuntimeError, match="call fit"):
        _ = cfcore.MatrixFactorization(embedding_dim=2).embeddings


def test_empty_split_errors(small):
    train, _ = small
    with pytest.raises(cfcore.RatingsError, match="empty"):
        train.subset(np.zeros(len(train), dtype=bool))


def test_chunked_evaluation_equals_whole(backend, small, monkeypatch):
    import cfcore.models.mf as mf

    train, test = small
    spec = cfcore.MFSpec(
        embedding_dim=4, init_stddev=0.5, regularization_coeff=0.1, gravity_coeff=0.5
    )
    params = cfcore.init.init_mf_params(spec, 40, 60, seed=1)
    batch = backend.device_batch(cfcore.Batch.from_ratings(train))
    native = backend.params_from_numpy(params)
    whole = mf.evaluate_terms(backend, spec, native, batch)
    monkeypatch.setattr(mf, "EVAL_CHUNK", 97)  # uneven last chunk
    chunked = mf.evaluate_terms(backend, spec, native, batch)
    assert set(whole) == set(chunked)
    for k in whole:
        assert np.isclose(whole[k], chunked[k], rtol=1e-5), (k, whole[k], chunked[k])
