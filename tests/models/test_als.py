"""WALS, iALS and BiasedMF through the model API: descent, agreement with SGD, history, fold-in,
retrieval, files, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import cfcore
from cfcore import reference as ref
from cfcore.models.als import ials_blocks, ials_halves, wals_blocks, wals_halves
from cfcore.models.biased import biased_blocks, biased_halves, init_biased_params
from cfcore.train.placement import Placement

from ..conftest import load_backend

REGULARIZED_COLUMNS = [
    "step",
    "train_mse",
    "test_mse",
    "observed_loss",
    "regularization_loss",
    "gravity_loss",
    "total_loss",
]


@pytest.fixture(scope="module")
def ratings():
    return cfcore.synthetic_ratings(40, 30, 600, seed=5)


def _host(be, params):
    return {k: np.asarray(be.to_numpy(v), np.float64) for k, v in params.items()}


# ---------------------------------------------------------------------------- descent


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
@pytest.mark.parametrize("name", ["numpy", "jax"])
def test_each_half_sweep_lowers_the_objective(name, solver, ratings):
    """After every half-sweep (users, then items) the objective, computed by the float64 oracle,
    is no higher than before: the exact solve minimises it over the rows, CG's steps too."""
    be = cfcore.get_backend("numpy") if name == "numpy" else load_backend(name)
    place = Placement(be)
    r = ratings
    n, m = r.num_users, r.num_items
    tol = 1e-12 if name == "numpy" else 1e-6
    implicit = r.to_implicit(threshold=3.5)

    cases = []
    spec = cfcore.WALS(3, init_stddev=0.5, gravity_coeff=0.5, solver=solver).spec
    cases.append(
        (
            wals_halves(be, spec),
            wals_blocks(spec, r),
            cfcore.init.init_mf_params(spec, n, m, 0),
            lambda p, s=spec: ref.mf_objective(s.objective, p, r.users, r.items, r.values)[0][
                "total"
            ],
        )
    )
    spec_i = cfcore.IALS(3, unobserved_weight=0.3, confidence=0.5, solver=solver).spec
    cases.append(
        (
            ials_halves(be, spec_i),
            ials_blocks(spec_i, implicit),
            cfcore.init.init_mf_params(spec_i, n, m, 0),
            lambda p, s=spec_i: ref.ials_objective(
                s, p, implicit.users, implicit.items, implicit.values
            )["total"],
        )
    )
    spec_b = cfcore.BiasedMF(3, gravity_coeff=0.2, solver=solver).spec
    mean = float(np.mean(r.values))
    cases.append(
        (
            biased_halves(be, spec_b),
            biased_blocks(spec_b, r, mean),
            init_biased_params(spec_b, n, m, 0),
            lambda p, s=spec_b: ref.biased_mf_objective(s, p, r.users, r.items, r.values, mean)[
                "total"
            ],
        )
    )
    for (users, items), data, params, objective in cases:
        data = place.data(data)
        p = place.params(params)
        values = [objective(_host(be, p))]
        for _ in range(3):
            for half in (users, items):
                p = half(p, data)
                values.append(objective(_host(be, p)))
        assert all(b <= a + tol * abs(a) for a, b in zip(values, values[1:], strict=False)), values
        assert values[-1] < 0.6 * values[0]


def test_wals_and_sgd_reach_the_same_objective():
    """The regularized objective minimised by WALS sweeps and by full-batch SGD: same value."""
    r = cfcore.synthetic_ratings(30, 20, 300, seed=4)
    kw = {"embedding_dim": 3, "init_stddev": 0.5, "regularization_coeff": 0.3, "gravity_coeff": 0.5}
    wals = cfcore.WALS(**kw).fit(r, steps=100, backend="jax", progress=False, eval_every=50)
    sgd = cfcore.RegularizedMF(**kw).fit(
        r, steps=5000, optimizer=cfcore.optimizers.SGD(0.5), backend="jax", progress=False,
        eval_every=2500,
    )  # fmt: skip
    assert wals["total_loss"].iloc[-1] == pytest.approx(sgd["total_loss"].iloc[-1], rel=1e-5)
    assert wals["total_loss"].iloc[-1] < 0.25 * wals["total_loss"].iloc[0]


def test_biased_als_and_gradient_reach_the_same_objective():
    r = cfcore.synthetic_ratings(30, 20, 300, seed=4)
    kw = {"embedding_dim": 3, "init_stddev": 0.3, "regularization_coeff": 0.3,
          "bias_regularization_coeff": 0.05, "gravity_coeff": 0.2}  # fmt: skip
    als = cfcore.BiasedMF(**kw).fit(r, steps=150, backend="jax", progress=False, eval_every=50)
    sgd = cfcore.BiasedMF(**kw).fit(
        r, steps=6000, optimizer=cfcore.optimizers.SGD(0.5), backend="jax", progress=False,
        eval_every=3000,
    )  # fmt: skip
    assert als["total_loss"].iloc[-1] == pytest.approx(sgd["total_loss"].iloc[-1], rel=1e-4)


# ---------------------------------------------------------------------------- history, progress


def test_wals_history_rows_per_sweep(ratings):
    train, test = ratings.split(0.1, seed=0)
    # By default one row after the last sweep (besides step 0); eval_every=1 follows each sweep.
    default = cfcore.WALS(3, gravity_coeff=0.5).fit(train, steps=3, backend="jax", progress=False)
    assert default["step"].tolist() == [0, 3]
    model = cfcore.WALS(3, gravity_coeff=0.5)
    h = model.fit(train, test=test, steps=3, backend="jax", progress=False, eval_every=1)
    assert list(h.columns) == REGULARIZED_COLUMNS
    assert h["step"].tolist() == [0, 1, 2, 3] and model.step == 3
    # The same sweeps, whatever the rows: the last row's loss agrees.
    assert default["total_loss"].iloc[-1] == pytest.approx(h["total_loss"].iloc[-1], rel=1e-5)
    # The recorded parts are the objective's, by the oracle, at the recorded parameters.
    terms, _ = ref.mf_objective(
        model.spec.objective, model.params_numpy(), train.users, train.items, train.values
    )
    last = h.iloc[-1]
    for part in ("observed", "regularization", "gravity", "total"):
        key = "observed_loss" if part == "observed" else f"{part}_loss"
        assert last[key] == pytest.approx(terms[part], rel=1e-5)
    # A second fit continues the step count and the history.
    h2 = model.fit(train, steps=2, backend="jax", progress=False, eval_every=2)
    assert h2["step"].tolist() == [0, 1, 2, 3, 5]
    # Same columns as RegularizedMF's history.
    reg = cfcore.RegularizedMF(3).fit(
        train, test=test, steps=1, optimizer=cfcore.optimizers.SGD(1.0), backend="jax",
        progress=False, eval_every=1,
    )  # fmt: skip
    assert list(reg.columns) == list(h.columns)


def test_progress_bar_per_sweep(ratings, capsys):
    cfcore.WALS(2).fit(ratings, steps=2, backend="jax", progress=True)
    err = capsys.readouterr()
    assert "total_loss=" in err.out + err.err


def test_ials_and_biased_history(ratings):
    h = cfcore.IALS(3).fit(ratings.to_implicit(threshold=3.5), steps=2, backend="jax",
                           progress=False, eval_every=1)  # fmt: skip
    assert list(h.columns) == [
        "step", "observed_loss", "unobserved_loss", "regularization_loss", "total_loss",
    ]  # fmt: skip
    assert h["step"].tolist() == [0, 1, 2]
    assert h["total_loss"].is_monotonic_decreasing
    train, test = ratings.split(0.1, seed=0)
    hb = cfcore.BiasedMF(3).fit(train, test=test, steps=2, backend="jax", progress=False)
    assert hb["step"].tolist() == [0, 2]
    assert list(hb.columns) == [
        "step", "train_mse", "test_mse", "observed_loss", "regularization_loss",
        "bias_regularization_loss", "gravity_loss", "total_loss",
    ]  # fmt: skip


# ---------------------------------------------------------------------------- predictions


def test_biased_predictions_and_evaluation(ratings):
    train, test = ratings.split(0.1, seed=0)
    model = cfcore.BiasedMF(3, regularization_coeff=0.2)
    model.fit(train, test=test, steps=5, backend="jax", progress=False)
    p = model.params_numpy()
    assert model.global_mean == pytest.approx(float(np.mean(train.values, dtype=np.float64)))
    want = (
        model.global_mean
        + p["user_bias"][test.users]
        + p["item_bias"][test.items]
        + np.einsum("nd,nd->n", p["user"][test.users], p["item"][test.items])
    )
    np.testing.assert_allclose(model.predict(test.users, test.items), want, rtol=1e-6)
    ev = model.evaluate(test)
    assert ev["mse"] == pytest.approx(np.mean((want - test.values) ** 2), rel=1e-5)
    assert ev["mse"] == pytest.approx(model.history["test_mse"].iloc[-1], rel=1e-4)


def test_biased_recommend_ranks_by_the_prediction(ratings):
    model = cfcore.BiasedMF(3, regularization_coeff=0.2)
    model.fit(ratings, steps=3, backend="jax", progress=False)
    top = cfcore.retrieval.recommend(model, user_index=4, k=5, backend="numpy")
    unrated = np.setdiff1d(np.arange(ratings.num_items), ratings.items[ratings.users == 4])
    pred = model.predict(np.full(len(unrated), 4), unrated)
    best = unrated[np.argsort(-pred, kind="stable")[:5]]
    assert top.attrs["item_index"] == best.tolist()
    # Scores are the prediction less μ + b_u.
    shift = model.global_mean + model.params_numpy()["user_bias"][4]
    np.testing.assert_allclose(top["score"], np.sort(pred)[::-1][:5] - shift, rtol=1e-5)


def test_ials_recommend_and_neighbours(ratings):
    implicit = ratings.to_implicit(threshold=3.5)
    ials = cfcore.IALS(3, unobserved_weight=0.3)
    ials.fit(implicit, steps=3, backend="jax", progress=False)
    top = cfcore.retrieval.recommend(ials, user_index=2, k=4)
    assert not set(top.attrs["item_index"]) & set(implicit.items[implicit.users == 2].tolist())
    scores = ials.params_numpy()["user"][2] @ ials.params_numpy()["item"].T
    scores[implicit.items[implicit.users == 2]] = -np.inf
    assert top.attrs["item_index"] == np.argsort(-scores, kind="stable")[:4].tolist()
    near = cfcore.retrieval.neighbors(ials, item_index=0, k=3, measure="cosine")
    assert near.attrs["item_index"][0] == 0
    # iALS scores rank items, they are not ratings: it has no rating metrics to call.
    assert not hasattr(ials, "evaluate") and not isinstance(ials, cfcore.MatrixFactorization)


# ---------------------------------------------------------------------------- new users, files


def test_add_users_appends_folded_in_rows(ratings):
    for model, data in (
        (cfcore.WALS(3), ratings),
        (cfcore.BiasedMF(3), ratings),
        (cfcore.IALS(3), ratings.to_implicit(threshold=3.5)),
    ):
        model.fit(data, steps=2, backend="jax", progress=False)
        new = cfcore.Ratings([0, 0, 0, 1], [1, 2, 3, 4], [1.0, 1.0, 1.0, 1.0], 2, data.num_items)
        folded = model.fold_in(new, backend="numpy")
        ids = model.add_users(new, backend="numpy")
        assert len(ids) == 2 and model.params_numpy()["user"].shape[0] == data.num_users + 2
        np.testing.assert_allclose(model.params_numpy()["user"][-2:], folded, rtol=1e-6)
        if isinstance(model, cfcore.BiasedMF):
            assert model.params_numpy()["user_bias"].shape == (data.num_users + 2,)
        top = cfcore.retrieval.recommend(model, user_index=data.num_users, k=3)
        assert not {1, 2, 3} & set(top.attrs["item_index"])


@pytest.mark.parametrize("cls", [cfcore.WALS, cfcore.IALS, cfcore.BiasedMF])
def test_save_load_across_backends(cls, ratings, tmp_path):
    data = ratings.to_implicit(threshold=3.5) if cls is cfcore.IALS else ratings
    model = cls(3, solver="cg")
    model.fit(data, steps=2, backend="jax", progress=False)
    loaded = cfcore.load(model.save(tmp_path / "m.npz"))
    assert type(loaded) is cls and loaded.spec == model.spec and loaded.step == 2
    pd.testing.assert_frame_equal(loaded.history, model.history, check_dtype=False)
    for k, v in model.params_numpy().items():
        np.testing.assert_array_equal(loaded.params_numpy()[k], v)
    if cls is cfcore.BiasedMF:
        assert loaded.global_mean == model.global_mean
        np.testing.assert_array_equal(loaded.predict([0, 1], [2, 3]), model.predict([0, 1], [2, 3]))
    # Read back and continued on another backend: the same sweep as on the first.
    torch_be = load_backend("torch")
    loaded.fit(data, steps=1, backend=torch_be, progress=False)
    model.fit(data, steps=1, backend="jax", progress=False)
    for k, v in model.params_numpy().items():
        np.testing.assert_allclose(loaded.params_numpy()[k], v, rtol=1e-4, atol=1e-5)
    assert loaded.step == 3
    top = cfcore.retrieval.recommend(loaded, user_index=0, k=3, backend=torch_be)
    assert len(top) == 3


# ---------------------------------------------------------------------------- inputs


def test_to_implicit(ratings):
    r = cfcore.Ratings([0, 0, 1, 1, 1], [2, 2, 0, 1, 2], [5.0, 4.0, 3.0, 4.5, 2.0], 2, 3)
    pos = r.to_implicit(threshold=3.5)
    assert (pos.users.tolist(), pos.items.tolist(), pos.values.tolist()) == (
        [0, 1], [2, 1], [1.0, 1.0],
    )  # fmt: skip
    counts = r.to_implicit(counts=True)
    assert counts.values.tolist() == [9.0, 3.0, 4.5, 2.0] and (
        counts.num_users,
        counts.num_items,
    ) == (2, 3)
    with pytest.raises(cfcore.RatingsError, match="no rating is above the threshold 9"):
        r.to_implicit(threshold=9)


def test_repeated_pairs_checked_once_per_ratings_and_again_when_changed():
    pos = cfcore.Ratings([0, 1, 1, 2], [1, 0, 2, 2], [1.0] * 4, 3, 3)
    model = cfcore.IALS(2)
    model.fit(pos, steps=1, backend="numpy", progress=False)
    model.fit(pos, steps=1, backend="numpy", progress=False)  # the cached check
    # The same object with its arrays changed in place (a repeated pair now): checked again.
    items = pos.items
    items.flags.writeable = True
    items[2] = 0  # user 1's pairs (1, 0), (1, 2) become (1, 0) twice
    with pytest.raises(ValueError, match="repeat pairs"):
        model.fit(pos, steps=1, backend="numpy", progress=False)


def test_bad_inputs(ratings):
    with pytest.raises(ValueError, match="solver must be one of"):
        cfcore.WALS(3, solver="qr")
    with pytest.raises(ValueError, match="regularization_coeff must be a finite number > 0"):
        cfcore.WALS(3, regularization_coeff=0.0)
    with pytest.raises(ValueError, match="cg_steps must be a positive int"):
        cfcore.IALS(3, cg_steps=0)
    with pytest.raises(ValueError, match="repeat pairs"):
        dup = cfcore.Ratings([0, 0], [1, 1], [1.0, 1.0], 2, 2)
        cfcore.IALS(2).fit(dup, steps=1, backend="numpy", progress=False)
    b = cfcore.BiasedMF(2)
    with pytest.raises(ValueError, match="needs an optimizer"):
        b.fit(ratings, steps=1, solver="gradient")
    with pytest.raises(ValueError, match="takes no optimizer"):
        b.fit(ratings, steps=1, solver="als", optimizer=cfcore.optimizers.SGD(1.0))
    with pytest.raises(ValueError, match="steps must be a positive int"):
        cfcore.WALS(2).fit(ratings, steps=0)


def test_unregularized_rows_checked_once_per_ratings_and_spec(monkeypatch):
    from cfcore.models import als

    calls = []
    check = als._unregularized
    monkeypatch.setattr(als, "_unregularized", lambda *a: calls.append(1) or check(*a))
    pos = cfcore.Ratings([0, 1, 1, 2], [1, 0, 2, 2], [1.0] * 4, 3, 3)
    model = cfcore.IALS(2, unobserved_weight=0.0)
    model.fit(pos, steps=1, backend="numpy", progress=False)
    model.fit(pos, steps=1, backend="numpy", progress=False)  # the cached check
    assert len(calls) == 1
    cfcore.IALS(2, unobserved_weight=0.5).fit(pos, steps=1, backend="numpy", progress=False)
    assert len(calls) == 2  # another spec: its own check
    # The same object with its arrays changed in place (item 1 without positives now).
    items = pos.items
    items.flags.writeable = True
    items[0] = 0  # (0, 1) becomes (0, 0)
    with pytest.raises(ValueError, match=r"item 1\b.*no positives"):
        model.fit(pos, steps=1, backend="numpy", progress=False)
    assert len(calls) == 3
