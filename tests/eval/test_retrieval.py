"""Scoring, top-k, recommendations, neighbours and fold-in (`cfcore.retrieval`), on both backends.

Expectations are computed here with plain NumPy from the model's embeddings, never taken from the
code under test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import cfcore
from cfcore import reference as ref
from cfcore import retrieval
from cfcore.data import user_ratings
from cfcore.optimizers import SGD
from cfcore.retrieval import RatedItems
from cfcore.testing.retrieval_conformance import RetrievalConformance

from ..conftest import load_backend

TITLES = [
    "Alpha (1990)",
    "Beta Story (1991)",
    "Lion Tale, The (1994)",
    "Gamma (1992)",
    "Alpha Returns (1995)",
    "Delta (1993)",
]


class TestRetrievalConformance(RetrievalConformance):
    """The shipped retrieval suite, once per backend (the `backend` fixture in conftest)."""


def tiny_ratings(seed: int = 0, num_users: int = 30, num_items: int = 24) -> cfcore.Ratings:
    """Ratings with non-trivial vocabularies (ids 101.., 1001..) and a titled catalog."""
    rng = np.random.default_rng(seed)
    n = 400
    titles = [TITLES[j] if j < len(TITLES) else f"Movie {j} ({1980 + j})" for j in range(num_items)]
    catalog = pd.DataFrame(
        {
            "item_id": 1001 + np.arange(num_items),
            "title": titles,
            "all_genres": [("Animation" if j % 3 == 0 else "Drama") for j in range(num_items)],
        }
    )
    frame = pd.DataFrame(
        {
            "user_id": 101 + rng.integers(0, num_users, n),
            "item_id": 1001 + rng.integers(0, num_items, n),
            "rating": rng.integers(1, 6, n).astype(np.float32),
        }
    ).drop_duplicates(["user_id", "item_id"])
    return cfcore.Ratings.from_frame(
        frame,
        user_ids=101 + np.arange(num_users),
        item_ids=catalog["item_id"].to_numpy(),
        catalog=catalog,
    )


def tiny_model(backend: str = "jax", regularized: bool = False) -> cfcore.MatrixFactorization:
    load_backend(backend)
    if regularized:
        model = cfcore.RegularizedMF(
            embedding_dim=4, init_stddev=0.5, regularization_coeff=0.2, gravity_coeff=0.5
        )
    else:
        model = cfcore.MatrixFactorization(embedding_dim=4, init_stddev=0.5)
    model.fit(tiny_ratings(), steps=30, optimizer=SGD(1.0), backend=backend, progress=False)
    return model


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def np_scores(q, v, qp, ip):
    q, v = np.asarray(q, np.float64), np.asarray(v, np.float64)
    nq = np.linalg.norm(q, axis=-1, keepdims=True)
    nv = np.linalg.norm(v, axis=-1)
    return (q @ v.T) / np.where(nq > 0, nq, 1) ** qp / np.where(nv > 0, nv, 1) ** ip


# ---------------------------------------------------------------------------- measures, scores


@pytest.mark.parametrize(
    ("measure", "powers"),
    [
        ("dot", (0.0, 0.0, "dot")),
        ("cosine", (1.0, 1.0, "cosine")),
        ("COSINE ", (1.0, 1.0, "cosine")),
        (("norm", 0.5), (0.0, 0.5, "norm(0.5)")),
        ("norm:2", (0.0, 2.0, "norm(2)")),
    ],
)
def test_parse_measure(measure, powers):
    assert retrieval.parse_measure(measure) == powers


@pytest.mark.parametrize("bad", ["euclid", ("norm",), ("norm", "x"), "norm:", ("dot", 1), 3])
def test_parse_measure_rejects(bad):
    with pytest.raises(ValueError, match="measure|alpha"):
        retrieval.parse_measure(bad)


@pytest.mark.parametrize("measure", ["dot", "cosine", ("norm", 0.5)])
def test_scores_backend_matches_numpy(backend, measure):
    rng = np.random.default_rng(1)
    q = rng.normal(size=(3, 5)).astype(np.float32)
    v = rng.normal(size=(40, 5)).astype(np.float32)
    qp, ip, _ = retrieval.parse_measure(measure)
    expected = np_scores(q, v, qp, ip)
    on_numpy = retrieval.scores(q, v, measure, backend="numpy")
    on_backend = retrieval.scores(q, v, measure, backend=backend)
    assert on_numpy.dtype == on_backend.dtype == np.float32
    np.testing.assert_allclose(on_numpy, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(on_backend, expected, rtol=1e-5, atol=1e-5)
    one = retrieval.scores(q[1], v, measure, backend=backend)
    assert one.shape == (40,)
    np.testing.assert_allclose(one, expected[1], rtol=1e-5, atol=1e-5)


def test_scores_large_problems_go_to_the_default_backend(backend, monkeypatch):
    from cfcore.maths import functional

    calls = []
    real = functional.measure_scores

    def spy(be, *args):
        calls.append(be.name)
        return real(be, *args)

    monkeypatch.setattr(functional, "measure_scores", spy)
    monkeypatch.setenv("CFCORE_BACKEND", backend.name)
    q, v = np.ones((2, 3), np.float32), np.ones((5, 3), np.float32)
    retrieval.scores(q, v)  # 10 scores: NumPy
    assert backend.name not in calls
    monkeypatch.setattr(retrieval, "NUMPY_MAX_SCORES", 4)
    np.testing.assert_allclose(retrieval.scores(q, v), np.full((2, 5), 3.0))
    assert calls[-1] == backend.name


def test_scores_dimension_mismatch():
    with pytest.raises(ValueError, match="d=3 but item embeddings d=4"):
        retrieval.scores(np.ones(3), np.ones((5, 4)))


# ---------------------------------------------------------------------------- rated items, top-k


def test_rated_items_from_ratings_take_and_mask():
    r = tiny_ratings()
    rated = RatedItems.from_ratings(r)
    assert rated.num_rows == r.num_users
    for u in range(r.num_users):
        assert sorted(rated.row(u).tolist()) == sorted(r.items[r.users == u].tolist())
    rows = np.array([5, 0, 5, 29])
    sub = rated.take(rows)
    mask = sub.mask()
    for b, u in enumerate(rows):
        expected = np.zeros(r.num_items, bool)
        expected[r.items[r.users == u]] = True
        np.testing.assert_array_equal(mask[b], expected)
    np.testing.assert_array_equal(sub.mask(1, 3), mask[1:3])


@pytest.mark.parametrize("measure", ["dot", "cosine", ("norm", 0.5)])
def test_batch_top_k_chunks_and_exclusions_match_reference(backend, measure):
    rng = np.random.default_rng(2)
    q = rng.normal(size=(11, 4)).astype(np.float32)
    v = rng.normal(size=(30, 4)).astype(np.float32)
    r = cfcore.Ratings(rng.integers(0, 11, 60), rng.integers(0, 30, 60), np.ones(60), 11, 30)
    rated = RatedItems.from_ratings(r)
    qp, ip, _ = retrieval.parse_measure(measure)
    exp_values, exp_idx = ref.top_k(np_scores(q, v, qp, ip), 7, exclude=rated.mask())
    for be in ("numpy", backend):
        for chunk in (None, 3):
            values, idx = retrieval.batch_top_k(
                q, v, 7, measure=measure, exclude=rated, backend=be, chunk_rows=chunk
            )
            np.testing.assert_array_equal(idx, exp_idx)
            np.testing.assert_allclose(values, exp_values, rtol=1e-5, atol=1e-5)
        dense_values, dense_idx = retrieval.batch_top_k(
            q, v, 7, measure=measure, exclude=rated.mask(), backend=be
        )
        np.testing.assert_array_equal(dense_idx, exp_idx)


@pytest.mark.parametrize("k", [0, -3, 31, 2.0, True])
def test_batch_top_k_bad_k(k):
    with pytest.raises(ValueError, match="k"):
        retrieval.batch_top_k(np.ones((2, 3)), np.ones((30, 3)), k, backend="numpy")


def test_batch_top_k_bad_exclude_shape():
    with pytest.raises(ValueError, match=r"exclude mask has shape \(2, 29\); expected \(2, 30\)"):
        retrieval.batch_top_k(np.ones((2, 3)), np.ones((30, 3)), 2, exclude=np.zeros((2, 29), bool))


# ---------------------------------------------------------------------------- recommend


def test_recommend_frame_ids_titles_and_exclusion(model, backend):
    emb = model.embeddings
    train = model.train_ratings
    u = 7
    uid = int(model.user_ids[u])
    rated = set(train.items[train.users == u].tolist())
    expected = np_scores(emb["user"][u], emb["item"], 1.0, 1.0)
    order = [j for j in np.argsort(-expected, kind="stable") if j not in rated][:5]
    frame = retrieval.recommend(model, uid, k=5, measure="cosine", backend=backend)
    assert list(frame.columns) == ["score", "item_id", "title", "genres"]
    assert frame["item_id"].tolist() == [1001 + j for j in order]
    assert frame["title"].tolist() == [model.catalog["title"][j] for j in order]
    assert frame["genres"].tolist() == [model.catalog["all_genres"][j] for j in order]
    np.testing.assert_allclose(frame["score"], expected[order], rtol=1e-5)
    assert frame.attrs["measure"] == "cosine"
    # Same user by row, by a numeric string, and on NumPy.
    by_row = retrieval.recommend(model, user_index=u, k=5, measure="cosine")
    by_str = retrieval.recommend(model, str(uid), k=5, measure="cosine")
    assert by_row["item_id"].tolist() == by_str["item_id"].tolist() == frame["item_id"].tolist()


def test_recommend_include_rated(model):
    emb = model.embeddings
    frame = retrieval.recommend(model, user_index=3, k=24, exclude_rated=False)
    expected = np.argsort(-np_scores(emb["user"][3], emb["item"], 0, 0), kind="stable")
    assert frame["item_id"].tolist() == (1001 + expected).tolist()


def test_recommend_returns_fewer_rows_when_few_items_are_left(model):
    train = model.train_ratings
    u = int(np.argmax(np.bincount(train.users)))
    n_rated = len(set(train.items[train.users == u].tolist()))
    frame = retrieval.recommend(model, user_index=u, k=24)
    assert len(frame) == 24 - n_rated
    assert np.all(np.isfinite(frame["score"]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"user": 99}, r"user id 99 is not among the model's 30 users \(ids 101..130\)"),
        ({"user": "abc"}, "user id 'abc' is not among"),
        ({"user_index": 30}, "user index 30 is out of range for 30 users"),
        ({"user": 101, "user_index": 0}, "exactly one of user"),
        ({}, "exactly one of user"),
        (
            {"user": 101, "k": 0},
            "k=0 is out of range: it must be between 1 and the catalogue size 24",
        ),
        ({"user": 101, "k": 25}, "k=25 is out of range: .* size 24"),
        ({"user": 101, "measure": "manhattan"}, "unknown similarity measure 'manhattan'"),
    ],
)
def test_recommend_bad_input(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        retrieval.recommend(model, **kwargs)


def test_batch_recommend_matches_single_recommendations(model, backend):
    values, idx = retrieval.batch_recommend(model, k=4, measure=("norm", 0.5), backend=backend)
    assert values.shape == idx.shape == (30, 4)
    for u in (0, 13, 29):
        one = retrieval.recommend(model, user_index=u, k=4, measure=("norm", 0.5))
        assert (1001 + idx[u]).tolist() == one["item_id"].tolist()
        np.testing.assert_allclose(values[u], one["score"], rtol=1e-5)
    sub_values, sub_idx = retrieval.batch_recommend(
        model, [29, 0], k=4, measure=("norm", 0.5), backend=backend, chunk_rows=1
    )
    np.testing.assert_array_equal(sub_idx, idx[[29, 0]])
    with pytest.raises(ValueError, match="user index 30 is out of range for 30 users"):
        retrieval.batch_recommend(model, [30], backend=backend)


# ---------------------------------------------------------------------------- neighbors


def test_neighbors_several_matches_warns_and_lists_them(model, backend):
    with pytest.warns(UserWarning, match=r"2 titles contain 'alpha'; using 'Alpha \(1990\)'"):
        frame = retrieval.neighbors(model, "alpha", k=3, measure="cosine", backend=backend)
    assert frame.attrs["query"] == "Alpha (1990)"
    assert frame.attrs["query_item_id"] == 1001
    assert frame.attrs["other_matches"] == ["Alpha Returns (1995)"]
    v = model.embeddings["item"]
    expected = np.argsort(-np_scores(v[0], v, 1.0, 1.0), kind="stable")[:3]
    assert frame["item_id"].tolist() == (1001 + expected).tolist()
    assert frame["item_id"].iloc[0] == 1001  # under cosine an item is its own nearest
    np.testing.assert_allclose(frame["score"].iloc[0], 1.0, rtol=1e-6)


def test_neighbors_by_id_index_and_single_match(model, recwarn):
    a = retrieval.neighbors(model, "the lion tale", k=4)
    b = retrieval.neighbors(model, 1003, k=4)
    c = retrieval.neighbors(model, item_index=2, k=4)
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
    assert a.attrs["other_matches"] == []
    assert a["item_id"].tolist() == b["item_id"].tolist() == c["item_id"].tolist()
    d = retrieval.neighbors(model, 1003, k=4, exclude_query=True)
    assert 1003 not in d["item_id"].tolist()
    v = model.embeddings["item"]
    expected = np.argsort(-np_scores(v[2], v, 0.0, 0.5), kind="stable")[:4]
    e = retrieval.neighbors(model, 1003, k=4, measure="norm:0.5")
    assert e["item_id"].tolist() == (1001 + expected).tolist()


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("Zorro",), {}, "no title in the catalog contains 'Zorro'"),
        ((5,), {}, r"item id 5 is not among the model's 24 items \(ids 1001..1024\)"),
        (("Alpha (1990)",), {"k": 0}, "k=0 is out of range.*24"),
        (("Alpha (1990)",), {"k": 24, "exclude_query": True}, "k=24 is out of range.*23"),
        ((), {}, "exactly one of title_or_id and item_index"),
    ],
)
def test_neighbors_bad_input(model, args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        retrieval.neighbors(model, *args, **kwargs)


# ---------------------------------------------------------------------------- fold-in


def test_fold_in_chunks_agree(model, backend, monkeypatch):
    r = tiny_ratings(seed=4, num_users=9)
    new = cfcore.Ratings(r.users, r.items, r.values, 9, 24)
    whole = model.fold_in(new, backend=backend)
    monkeypatch.setattr(retrieval, "FOLD_IN_CHUNK", 16 * 5)  # 5 ratings (of d² = 16) per chunk
    chunked = model.fold_in(new, backend=backend)
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)
    reference = model.fold_in(new, backend="numpy")
    np.testing.assert_allclose(whole, reference, rtol=1e-4, atol=1e-5)


def test_fold_in_default_reg_for_plain_mf_is_weighted_ridge(model, backend):
    v = model.embeddings["item"].astype(np.float64)
    items = np.array([0, 3, 5])
    vals = np.array([5.0, 1.0, 4.0])
    got = model.fold_in({1001: 5, 1004: 1, 1006: 4}, backend=backend)
    a = v[items].T @ v[items] + 0.1 * 3 * np.eye(4)
    np.testing.assert_allclose(got[0], np.linalg.solve(a, v[items].T @ vals), rtol=1e-4)


def test_fold_in_default_reg_of_regularized_model_is_a_stationary_point(backend):
    """Folded in with the model's own λr and gravity, the row's gradient of the objective is 0."""
    model = tiny_model(backend.name, regularized=True)
    train = model.train_ratings
    u = 4
    mine = train.users == u
    new = cfcore.Ratings(np.zeros(mine.sum(), int), train.items[mine], train.values[mine], 1, 24)
    folded = model.fold_in(new, backend=backend)[0]
    params = model.embeddings
    params["user"][u] = folded
    _, grads = ref.mf_objective(model.spec, params, train.users, train.items, train.values)
    # Scale: the gradient of the row at the trained (not yet stationary) embedding.
    _, before = ref.mf_objective(
        model.spec, model.embeddings, train.users, train.items, train.values
    )
    assert np.abs(grads["user"][u]).max() < 1e-4 * max(np.abs(before["user"][u]).max(), 1e-3)


def test_fold_in_bad_input(model):
    with pytest.raises(ValueError, match="rating 7 .* outside the rating scale 1..5"):
        model.fold_in({1001: 7})
    with pytest.raises(ValueError, match="new ratings are over 10 items but the model has 24"):
        model.fold_in(cfcore.Ratings([0], [1], [3.0], 1, 10))
    with pytest.raises(ValueError, match="new user 1 has no ratings"):
        model.fold_in(cfcore.Ratings([0, 2], [1, 2], [3.0, 4.0], 3, 24))
    with pytest.raises(ValueError, match="reg must be finite and >= 0"):
        model.fold_in({1001: 3}, reg=-1.0)


def test_add_users_then_recommend_and_retrain(backend):
    model = tiny_model(backend.name)
    before_users = model.embeddings["user"]
    step = model.step
    ids = model.add_users({"Alpha (1990)": 5, 1004: 4, "Delta": 2}, backend=backend)
    assert ids.tolist() == [131]
    emb = model.embeddings
    assert emb["user"].shape == (31, 4)
    np.testing.assert_array_equal(emb["user"][:30], before_users)
    frame = retrieval.recommend(model, 131, k=21)
    assert not {1001, 1004, 1006} & set(frame["item_id"].tolist())
    assert len(frame) == 21
    assert model.train_ratings.num_users == 31
    with pytest.raises(ValueError, match="user id 131 is already a user"):
        model.add_users({1001: 3}, user_ids=[131])
    # Retraining with the new user included continues the step count from the folded-in rows.
    history = model.fit(model.train_ratings, steps=10, optimizer=SGD(1.0), progress=False)
    assert model.step == step + 10
    assert history["step"].iloc[-1] == step + 10
    assert not np.array_equal(model.embeddings["user"][30], emb["user"][30])


def test_add_users_from_frame_with_user_ids(model):
    m = tiny_model()
    frame = pd.DataFrame(
        {"user_id": ["x", "y", "x"], "item_id": [1001, 1002, 1003], "rating": [5, 4, 1]}
    )
    ids = m.add_users(frame)
    assert ids.tolist() == ["x", "y"]
    assert m.user_ids.dtype.kind in "UO"
    assert retrieval.find_user(m, "y") == 31


# ---------------------------------------------------------------------------- behaviour on ml-100k


@pytest.fixture(scope="module")
def ml100k_model(ml100k):
    load_backend("jax")
    train, _ = ml100k.ratings.split(holdout_fraction=0.1, seed=0)
    model = cfcore.RegularizedMF(
        embedding_dim=35, init_stddev=0.05, regularization_coeff=0.1, gravity_coeff=1.0
    )
    model.fit(train, steps=300, optimizer=SGD(20.0), backend="jax", progress=False, eval_every=300)
    return model


DISNEY = [
    "Aladdin (1992)",
    "Lion King",
    "Beauty and the Beast",
    "Snow White",
    "Pinocchio",
    "Cinderella",
    "Jungle Book",
]


def test_existing_user_fold_in_is_least_squares(ml100k_model, backend):
    """With λ → 0 the fold-in of a user's own training ratings is their least-squares fit."""
    model = ml100k_model
    train = model.train_ratings
    v = model.embeddings["item"].astype(np.float64)
    for u in (0, 99):
        mine = train.users == u
        new = cfcore.Ratings(
            np.zeros(mine.sum(), int), train.items[mine], train.values[mine], 1, v.shape[0]
        )
        got = model.fold_in(new, reg=1e-6, backend=backend)[0]
        lstsq = np.linalg.lstsq(
            v[train.items[mine]], train.values[mine].astype(np.float64), rcond=None
        )[0]
        np.testing.assert_allclose(got, lstsq, rtol=0, atol=5e-4 * np.abs(lstsq).max())


def test_disney_fan_gets_animation_and_childrens_films(ml100k_model, backend):
    """A new user who loves Disney animations is recommended other family films by fold-in."""
    model = ml100k_model
    catalog = model.catalog
    family = catalog["all_genres"].str.contains("Animation|Children's").to_numpy()
    mine = user_ratings.read_user_ratings(dict.fromkeys(DISNEY, 5), model=model)
    emb = model.fold_in(mine, backend=backend)[0]
    scores = np_scores(emb, model.embeddings["item"], 0.0, 0.0)
    assert scores[family].mean() > scores[~family].mean() + 0.3
    rated = np.zeros((1, len(catalog)), bool)
    rated[0, mine["item_index"]] = True
    for measure in ("dot", "cosine"):
        _, idx = retrieval.batch_top_k(
            emb[None], model.embeddings["item"], 20, measure=measure, exclude=rated, backend=backend
        )
        # About 8% of the catalog is animation or children's; 55-75% of these 20 picks are.
        assert family[idx[0]].mean() > 3 * family.mean(), catalog["title"][idx[0]].tolist()
