"""`BiasedMF.sample_posterior`: Gibbs-sampled biased ALS, its draws and its averaged model.

One sweep given its noise is checked against the float64 oracle on every backend by the ALS
conformance suite (`test_biased_gibbs_sweep`); here: the draws' distribution, the averaged model,
bad input.
"""

from __future__ import annotations

import numpy as np
import pytest

import cfcore
from cfcore.models import biased, posterior
from cfcore.specs import BiasedMFSpec
from cfcore.testing.als_conformance import als_problem
from cfcore.train.placement import Placement


def _row_system(spec, r, params, mean, row):
    """The ALS system `(A, b)` of user `row` with the items fixed, written out (float64)."""
    d = spec.embedding_dim
    sel = r.users == row
    f = np.concatenate([params["item"][r.items[sel]], np.ones((sel.sum(), 1))], 1)
    f = f.astype(np.float64)
    y = r.values[sel] - mean - params["item_bias"][r.items[sel]].astype(np.float64)
    c = np.full(d + 1, spec.regularization_coeff)
    c[-1] = spec.bias_regularization_coeff
    a = f.T @ f + len(r) / r.num_users * np.diag(c)
    return a, f.T @ y


def test_user_draws_follow_the_row_posterior():
    """Drawn with the items fixed, a user row `[u, b_u]` is N(A⁻¹ b, (α A)⁻¹), `A x = b` its ALS
    system: the mean and covariance of 4,000 draws (float64 reference backend) match."""
    be = cfcore.get_backend("numpy")
    r = als_problem()
    spec = BiasedMFSpec(2, init_stddev=0.5, regularization_coeff=0.3,
                        bias_regularization_coeff=0.1, solver="cholesky")  # fmt: skip
    params = biased.init_biased_params(spec, r.num_users, r.num_items, 0)
    params["item_bias"] = np.random.default_rng(1).normal(0, 0.3, r.num_items).astype(np.float32)
    mean = float(np.mean(r.values))
    alpha = 3.0
    host = biased.biased_blocks(spec, r, mean)
    row_reg = {
        "by_user": np.full(r.num_users, len(r) / r.num_users),
        "by_item": np.full(r.num_items, len(r) / r.num_items),
    }
    place = Placement(be)
    data, state = place.data(host), place.params(params)
    users, _ = posterior.gibbs_halves(be, spec)
    rng = np.random.default_rng(0)
    draws = np.array([
        np.append(*(np.asarray(be.to_numpy(new[k]))[[0, 7]] for k in ("user", "user_bias")))
        for new in (
            users(state, data, place.data(posterior.draw_noise(rng, host, row_reg, spec, alpha)))
            for _ in range(4000)
        )
    ])  # fmt: skip
    # Rows 0 and 7 of the table: [u_0 (2), u_7 (2), b_0, b_7].
    for row, cols in ((0, [0, 1, 4]), (7, [2, 3, 5])):
        a, b = _row_system(spec, r, params, mean, row)
        # Whitened by the posterior's precision factor, the draws are N(0, I): with 4,000 of
        # them a variance's standard error is √(2/4000) ≈ 0.022 and a covariance's ≈ 0.016.
        white = (draws[:, cols] - np.linalg.solve(a, b)) @ np.linalg.cholesky(alpha * a)
        assert np.all(np.abs(white.mean(0)) < 4.5 / np.sqrt(len(white))), (row, white.mean(0))
        np.testing.assert_allclose(np.cov(white.T), np.eye(3), atol=0.09)
    # Different rows are drawn independently.
    assert abs(np.corrcoef(draws[:, 0], draws[:, 2])[0, 1]) < 0.06


@pytest.fixture(scope="module")
def fitted():
    r = cfcore.synthetic_ratings(60, 40, 900, seed=2)
    model = cfcore.BiasedMF(embedding_dim=3, regularization_coeff=0.2)
    model.fit(r, steps=3, solver="als", backend="jax", progress=False)
    return r, model


def test_the_averaged_model_predicts_the_mean_of_its_draws(fitted):
    r, model = fitted
    train, test = r.split(0.2, seed=1)
    before = {k: v.copy() for k, v in model.params_numpy().items()}
    post = model.sample_posterior(r, samples=5, burn_in=2, noise_precision=4.0,
                                  test=test, backend="jax", seed=3, progress=False)  # fmt: skip
    assert isinstance(post, cfcore.BiasedMF)
    assert post.spec.embedding_dim == 3 * 5
    assert post.embeddings["user"].shape == (60, 15) and post.embeddings["item"].shape == (40, 15)
    # The history's MSEs are those of the running average of the draws' predictions (float64 on
    # the host); the returned model's own predictions give the same numbers.
    h = post.history
    assert h["sweep"].tolist() == list(range(1, 8))
    assert h["kept"].tolist() == [0, 0, 1, 2, 3, 4, 5]
    for ratings, col in ((r, "train_mse"), (test, "test_mse")):
        pred = post.predict(ratings.users, ratings.items).astype(np.float64)
        mse = float(np.mean((pred - ratings.values) ** 2))
        assert mse == pytest.approx(h[col].iloc[-1], rel=1e-5)
    # The source model is left as it was.
    for k, v in model.params_numpy().items():
        np.testing.assert_array_equal(v, before[k])
    # Same seed, same draws; another seed, others.
    again = model.sample_posterior(r, samples=5, burn_in=2, noise_precision=4.0,
                                   backend="jax", seed=3, progress=False)  # fmt: skip
    np.testing.assert_array_equal(again.embeddings["user"], post.embeddings["user"])
    other = model.sample_posterior(r, samples=5, burn_in=2, noise_precision=4.0,
                                   backend="jax", seed=4, progress=False)  # fmt: skip
    assert not np.allclose(other.embeddings["user"], post.embeddings["user"])


def test_a_thinned_chain_keeps_every_t_th_draw(fitted):
    r, model = fitted
    common = {"burn_in": 1, "noise_precision": 4.0, "backend": "jax", "seed": 5, "progress": False}
    every = model.sample_posterior(r, samples=6, thin=1, **common)
    thinned = model.sample_posterior(r, samples=3, thin=2, **common)
    assert thinned.history["sweep"].tolist() == every.history["sweep"].tolist() == list(range(1, 8))
    assert thinned.history["kept"].tolist() == [0, 0, 1, 1, 2, 2, 3]
    # The same chain (same seed): the thinned model holds draws 2, 4 and 6 of the full one.
    d = model.spec.embedding_dim
    for k in ("user", "item"):
        full = every.embeddings[k] * np.sqrt(6)
        want = np.concatenate([full[:, j * d : (j + 1) * d] for j in (1, 3, 5)], axis=1)
        np.testing.assert_allclose(thinned.embeddings[k] * np.sqrt(3), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="thin must be a positive int, got 0"):
        model.sample_posterior(r, samples=2, thin=0, backend="jax", progress=False)


def test_the_averaged_model_saves_and_loads(fitted, tmp_path):
    r, model = fitted
    post = model.sample_posterior(r, samples=2, burn_in=0, backend="jax", progress=False)
    loaded = cfcore.load(post.save(tmp_path / "post.npz"))
    np.testing.assert_array_equal(loaded.predict(r.users, r.items), post.predict(r.users, r.items))


@pytest.mark.slow  # TensorFlow compiles the sweep
def test_backends_draw_the_same_chain(fitted):
    """The noise is drawn on the host: JAX and TensorFlow follow the same chain (float32)."""
    r, model = fitted
    got = {
        be: model.sample_posterior(r, samples=3, burn_in=1, backend=be, seed=0, progress=False)
        for be in ("jax", "tf")
    }
    for k in ("user", "item", "user_bias", "item_bias"):
        a, b = got["jax"].embeddings[k], got["tf"].embeddings[k]
        assert np.max(np.abs(a - b)) <= 1e-4 * np.max(np.abs(a)), k


def test_an_unfitted_model_starts_from_its_initial_values():
    r = cfcore.synthetic_ratings(30, 20, 300, seed=0)
    model = cfcore.BiasedMF(embedding_dim=2)
    post = model.sample_posterior(r, samples=2, burn_in=1, backend="jax", progress=False)
    assert post.global_mean == pytest.approx(float(np.mean(r.values)))
    assert post.spec.embedding_dim == 4
    assert not model._has_params()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"samples": 0}, "samples must be a positive int, got 0"),
        ({"samples": 2.5}, "samples must be a positive int, got 2.5"),
        ({"burn_in": -1}, "burn_in must be an int >= 0, got -1"),
        ({"noise_precision": 0.0}, r"noise_precision must be a finite number > 0, got 0.0"),
        ({"noise_precision": float("nan")}, r"noise_precision must be a finite number > 0"),
    ],
)
def test_bad_arguments_are_refused(fitted, kwargs, match):
    r, model = fitted
    with pytest.raises(ValueError, match=match):
        model.sample_posterior(r, backend="jax", progress=False, **kwargs)


def test_gravity_is_refused():
    r = cfcore.synthetic_ratings(30, 20, 300, seed=0)
    model = cfcore.BiasedMF(embedding_dim=2, gravity_coeff=0.5)
    with pytest.raises(ValueError, match="gravity_coeff=0, got 0.5"):
        model.sample_posterior(r, samples=2, backend="jax", progress=False)


def test_other_ratings_are_refused(fitted):
    _, model = fitted
    other = cfcore.synthetic_ratings(61, 40, 900, seed=2)
    with pytest.raises(ValueError, match="60 users x 40 items"):
        model.sample_posterior(other, samples=2, backend="jax", progress=False)
