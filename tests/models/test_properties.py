"""Property-based tests (hypothesis) of the data API, the model file, the losses and fold-in.

Examples are generated, not hand-picked: ids of any hashable type and size, catalogs of any size,
splits and folds of any frame, models of every kind saved and loaded, losses and gradients of
generated shapes and values on every backend against the float64 NumPy oracle, fold-in on
generated item sets. The profile registered in conftest makes them deterministic (derandomized:
the same examples on every run) and small; `HYPOTHESIS_PROFILE=explore` searches at random, wider.
A failing example is printed with a `@reproduce_failure` blob to replay it.

Two properties (large ids kept or refused; fold-in never silently non-finite) failed before the
fixes of issue #11's bugs 1 and 3 and pass since.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, note, settings
from hypothesis import strategies as st

import cfcore
from cfcore import reference as ref
from cfcore.data.movielens import load_movielens
from cfcore.data.ratings import Ratings, RatingsError
from cfcore.maths import objectives
from cfcore.optimizers import SGD
from cfcore.persistence import ModelFileError
from cfcore.specs import MFSpec

from ..conftest import BACKENDS, load_backend
from .test_softmax_features import toy_dataset

# Backends run fewer examples: each new shape is a new trace or compilation (about 0.1-1 s; a
# compiled gradient on JAX or TensorFlow 1-3 s on 2 shared cores; PyTorch runs eagerly).
BACKEND_EXAMPLES = settings(max_examples=12)
GRADIENT_EXAMPLES = {"torch": settings(max_examples=25)}
COMPILED_GRADIENT_EXAMPLES = settings(max_examples=5)

# ---------------------------------------------------------------------------- strategies

INT_IDS = st.integers(-(2**63), 2**63 - 1)
STR_IDS = st.text(max_size=8)
HASHABLE_IDS = {
    "int": INT_IDS,
    "small-int": st.integers(0, 50),
    "str": STR_IDS,
    "int-or-str": st.one_of(st.integers(-(10**12), 10**12), STR_IDS),
    "tuple": st.tuples(st.integers(0, 3), st.text(max_size=2)),
}


@st.composite
def id_columns(draw, n: int, kind: str | None = None) -> list:
    """`n` ids drawn from a small pool of distinct ids of one kind (so that ids repeat)."""
    kind = kind or draw(st.sampled_from(sorted(HASHABLE_IDS)))
    pool = draw(st.lists(HASHABLE_IDS[kind], min_size=1, max_size=max(1, n), unique=True))
    return draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))


@st.composite
def rating_frames(draw, min_size: int = 1, max_size: int = 40, kinds=None) -> pd.DataFrame:
    n = draw(st.integers(min_size, max_size))
    user_kind = draw(st.sampled_from(kinds or sorted(HASHABLE_IDS)))
    item_kind = draw(st.sampled_from(kinds or sorted(HASHABLE_IDS)))
    values = st.floats(-1e6, 1e6, allow_nan=False, width=32)
    return pd.DataFrame(
        {
            "user_id": pd.Series(draw(id_columns(n, user_kind)), dtype=object),
            "item_id": pd.Series(draw(id_columns(n, item_kind)), dtype=object),
            "rating": draw(st.lists(values, min_size=n, max_size=n)),
            "timestamp": np.arange(n, dtype=np.int64),
        }
    )


def same_ids(a, b) -> bool:
    """Element-wise equality of two id sequences, also for tuples and mixed types."""
    a, b = list(a), list(b)
    return len(a) == len(b) and all(
        type(x) is type(y) and x == y for x, y in zip(a, b, strict=True)
    )


def plain(ids) -> list:
    """Ids as Python objects (NumPy scalars unwrapped), for comparing with a frame's column."""
    return [x.item() if isinstance(x, np.generic) else x for x in ids]


# ---------------------------------------------------------------------------- Ratings / from_frame


@given(rating_frames())
def test_from_frame_indices_map_back_to_the_ids(df: pd.DataFrame) -> None:
    r = Ratings.from_frame(df, timestamp_col="timestamp")
    assert len(r) == len(df)
    assert r.users.dtype == np.int32 and r.items.dtype == np.int32
    for col, idx, vocab, size in (
        ("user_id", r.users, r.user_ids, r.num_users),
        ("item_id", r.items, r.item_ids, r.num_items),
    ):
        # The vocabulary holds each distinct id once, every index is inside it, and the index of
        # each rating names its own id.
        assert len(vocab) == size == len(set(df[col]))
        assert 0 <= idx.min() and idx.max() < size
        assert same_ids(plain(vocab[idx]), df[col])
    np.testing.assert_array_equal(r.values, df["rating"].to_numpy(np.float32))
    np.testing.assert_array_equal(r.timestamps, df["timestamp"])


@given(rating_frames(kinds=["int", "small-int", "str"]))
def test_from_frame_vocabulary_is_sorted_for_one_kind_of_id(df: pd.DataFrame) -> None:
    r = Ratings.from_frame(df)
    for vocab in (r.user_ids, r.item_ids):
        assert plain(vocab) == sorted(plain(vocab))


@given(rating_frames(), st.data())
def test_from_frame_with_a_given_vocabulary(df: pd.DataFrame, data) -> None:
    # A vocabulary with extra ids, in any order: indices point into it, sizes are its lengths.
    extra = data.draw(st.lists(st.integers(10**15, 10**16), max_size=5, unique=True))
    vocab = list(dict.fromkeys([*df["user_id"], *extra]))
    vocab = data.draw(st.permutations(vocab))
    vocab_arr = np.empty(len(vocab), dtype=object)
    vocab_arr[:] = vocab
    r = Ratings.from_frame(df, user_ids=vocab_arr)
    assert r.num_users == len(vocab)
    assert same_ids(vocab_arr[r.users], df["user_id"])
    # An id outside the vocabulary is refused, naming it.
    missing = vocab[0]
    smaller = vocab_arr[1:]
    if len(smaller):
        with pytest.raises(RatingsError, match="not in the user vocabulary"):
            Ratings.from_frame(df.assign(user_id=[missing] * len(df)), user_ids=smaller)


@given(
    st.integers(1, 30).flatmap(
        lambda n: st.tuples(
            st.integers(1, 50).flatmap(
                lambda u: st.lists(st.integers(0, u - 1), min_size=n, max_size=n).map(
                    lambda x: (u, x)
                )
            ),
            st.integers(1, 50).flatmap(
                lambda m: st.lists(st.integers(0, m - 1), min_size=n, max_size=n).map(
                    lambda x: (m, x)
                )
            ),
        )
    )
)
def test_ratings_keep_valid_indices_and_refuse_out_of_range(shape) -> None:
    (num_users, users), (num_items, items) = shape
    r = Ratings(np.array(users), np.array(items), np.ones(len(users)), num_users, num_items)
    np.testing.assert_array_equal(r.users, users)
    np.testing.assert_array_equal(r.items, items)
    with pytest.raises(RatingsError, match=f"user index {num_users} is out of range"):
        Ratings(
            np.array([*users, num_users]),
            np.array([*items, 0]),
            np.ones(len(users) + 1),
            num_users,
            num_items,
        )
    with pytest.raises(RatingsError, match="negative"):
        Ratings(
            np.array([*users, -1]),
            np.array([*items, 0]),
            np.ones(len(users) + 1),
            num_users,
            num_items,
        )


@given(st.integers(2**31, 2**62), st.integers(1, 2**20))
def test_large_ids_are_kept_or_refused(user: int, extra: int) -> None:
    try:
        r = Ratings(np.array([user]), np.array([0]), np.array([4.0]), user + extra, 1)
    except (RatingsError, ValueError):
        return  # refusing them with a clear error is fine
    assert int(r.users[0]) == user


# ---------------------------------------------------------------------------- split


@given(rating_frames(min_size=1, max_size=60), st.floats(0.001, 0.999), st.integers(0, 2**32))
def test_split_partitions_the_ratings(df: pd.DataFrame, fraction: float, seed: int) -> None:
    r = Ratings.from_frame(df, timestamp_col="timestamp")
    n = len(r)
    n_test = int(round(fraction * n))
    if n_test in (0, n):
        with pytest.raises(RatingsError, match="leaves an empty"):
            r.split(holdout_fraction=fraction, seed=seed)
        return
    train, test = r.split(holdout_fraction=fraction, seed=seed)
    assert (len(train), len(test)) == (n - n_test, n_test)
    # Every rating lands on exactly one side, unchanged (timestamps are the row numbers here).
    rows = np.concatenate([train.timestamps, test.timestamps])
    np.testing.assert_array_equal(np.sort(rows), np.arange(n))
    for part in (train, test):
        t = part.timestamps
        np.testing.assert_array_equal(part.users, r.users[t])
        np.testing.assert_array_equal(part.items, r.items[t])
        np.testing.assert_array_equal(part.values, r.values[t])
        assert (part.num_users, part.num_items) == (r.num_users, r.num_items)
        assert part.user_ids is r.user_ids and part.item_ids is r.item_ids
    # The same seed gives the same split.
    again, _ = r.split(holdout_fraction=fraction, seed=seed)
    np.testing.assert_array_equal(again.timestamps, train.timestamps)


# ---------------------------------------------------------------------------- MovieLens folds


def _write_100k(folder: Path, user_ids, item_ids, rows, in_test) -> None:
    """A MovieLens-100K-shaped folder: u.data, u.item, u.user and the fold u1 (base/test)."""
    folder.mkdir(parents=True)
    lines = [f"{user_ids[u]}\t{item_ids[i]}\t{v}\t{1000 + k}" for k, (u, i, v) in enumerate(rows)]
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    (folder / "u1.base").write_text(
        "".join(x + "\n" for x, t in zip(lines, in_test, strict=True) if not t)
    )
    (folder / "u1.test").write_text(
        "".join(x + "\n" for x, t in zip(lines, in_test, strict=True) if t)
    )
    genres = "|".join(["0"] * 19)
    items = [f"{i}|Movie {i} (1990)|01-Jan-1990||http://x|{genres}" for i in item_ids]
    (folder / "u.item").write_text("\n".join(items) + "\n", encoding="latin-1")
    users = [f"{u}|30|F|other|0{u % 10}123" for u in user_ids]
    (folder / "u.user").write_text("\n".join(users) + "\n")


@st.composite
def movielens_like(draw):
    user_ids = draw(st.lists(st.integers(1, 10**9), min_size=1, max_size=8, unique=True))
    item_ids = draw(st.lists(st.integers(1, 10**9), min_size=1, max_size=8, unique=True))
    pairs = st.tuples(
        st.integers(0, len(user_ids) - 1), st.integers(0, len(item_ids) - 1), st.integers(1, 5)
    )
    rows = draw(st.lists(pairs, min_size=2, max_size=30))
    in_test = draw(st.lists(st.booleans(), min_size=len(rows), max_size=len(rows)))
    assume(any(in_test) and not all(in_test))
    return user_ids, item_ids, rows, in_test


@given(movielens_like())
def test_fold_parts_are_the_fold_files_over_the_whole_catalog(release) -> None:
    user_ids, item_ids, rows, in_test = release
    with tempfile.TemporaryDirectory() as tmp:
        _write_100k(Path(tmp) / "ml-100k", *release)
        ml = load_movielens("100k", data_dir=Path(tmp), download=False)
        train, test = ml.fold("u1")
    assert sorted(plain(ml.ratings.user_ids)) == sorted(user_ids)
    assert sorted(plain(ml.ratings.item_ids)) == sorted(item_ids)
    for part, wanted in ((train, False), (test, True)):
        assert (part.num_users, part.num_items) == (len(user_ids), len(item_ids))
        expected = [
            (user_ids[u], item_ids[i], float(v))
            for (u, i, v), t in zip(rows, in_test, strict=True)
            if t == wanted
        ]
        got = list(
            zip(
                plain(part.user_ids[part.users]),
                plain(part.item_ids[part.items]),
                part.values.astype(float).tolist(),
                strict=True,
            )
        )
        assert got == expected


# ---------------------------------------------------------------------------- save -> load


def _fit(model, ratings, steps: int = 2):
    load_backend("torch")  # eager: a new shape costs no compilation
    model.fit(
        ratings, steps=steps, optimizer=SGD(0.05), backend="torch", progress=False, eval_every=1
    )
    return model


def _assert_same_mf(a, b) -> None:
    assert type(a) is type(b) and a.spec == b.spec and a.step == b.step
    for k in ("user", "item"):
        assert b.embeddings[k].dtype == np.float32
        np.testing.assert_array_equal(
            a.embeddings[k].view(np.uint32), b.embeddings[k].view(np.uint32)
        )
    pd.testing.assert_frame_equal(a.history, b.history)
    assert same_ids(plain(a.user_ids), plain(b.user_ids))
    assert same_ids(plain(a.item_ids), plain(b.item_ids))
    assert a.rating_scale == b.rating_scale and a.num_train_ratings == b.num_train_ratings


@st.composite
def mf_models(draw):
    df = draw(rating_frames(max_size=25, kinds=["int", "str", "small-int"]))
    regularized = draw(st.booleans())
    dim = draw(st.integers(1, 4))
    mse = draw(st.sampled_from(["gather", "dense"]))
    if regularized:
        model = cfcore.RegularizedMF(
            embedding_dim=dim,
            init_stddev=0.5,
            regularization_coeff=draw(st.floats(0, 2)),
            gravity_coeff=draw(st.floats(0, 2)),
            mse=mse,
        )
    else:
        model = cfcore.MatrixFactorization(embedding_dim=dim, init_stddev=0.5, mse=mse)
    return model, Ratings.from_frame(df.assign(rating=df["rating"] / 1e6))


@given(mf_models(), st.booleans())
def test_mf_models_round_trip_bit_for_bit(model_and_data, include_ratings: bool) -> None:
    model, ratings = model_and_data
    _fit(model, ratings)
    with tempfile.TemporaryDirectory() as tmp:
        loaded = cfcore.load(model.save(Path(tmp) / "m.npz", include_ratings=include_ratings))
    _assert_same_mf(model, loaded)
    if include_ratings:
        for f in ("users", "items", "values"):
            np.testing.assert_array_equal(
                getattr(model.train_ratings, f), getattr(loaded.train_ratings, f)
            )
    else:
        assert loaded.train_ratings is None


@given(rating_frames(max_size=10, kinds=["int-or-str", "tuple"]))
def test_ids_that_cannot_be_stored_are_refused_by_name(df: pd.DataFrame) -> None:
    # Mixed or tuple ids: the file keeps numbers or strings only; saving says so, or round-trips.
    ratings = Ratings.from_frame(df.assign(rating=1.0))
    model = _fit(cfcore.MatrixFactorization(embedding_dim=2), ratings, steps=1)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = model.save(Path(tmp) / "m.npz")
        except ModelFileError as exc:
            assert "vocabulary" in str(exc) and "all numbers or all strings" in str(exc)
            assert not any(Path(tmp).iterdir())  # nothing half-written is left behind
            return
        _assert_same_mf(model, cfcore.load(path))


@st.composite
def softmax_setups(draw):
    num_users = draw(st.integers(3, 12))
    num_items = draw(st.integers(12, 20))  # toy_dataset rates up to 11 items per user
    seed = draw(st.integers(0, 1000))
    dims = {"movie_id": draw(st.integers(1, 4)), "genre": draw(st.integers(1, 3)), "year": 1}
    hidden = (*draw(st.lists(st.integers(1, 4), max_size=1)), dims["movie_id"])
    activation = draw(st.sampled_from([None, "relu", "tanh"]))
    protocol = draw(st.sampled_from(["holdout", "notebook"]))
    return num_users, num_items, seed, dims, hidden, activation, protocol


@given(softmax_setups(), st.booleans())
def test_softmax_model_round_trips_bit_for_bit(setup, include_ratings: bool) -> None:
    num_users, num_items, seed, dims, hidden, activation, protocol = setup
    data = toy_dataset(num_users=num_users, num_items=num_items, seed=seed)
    model = cfcore.SoftmaxModel(dims, hidden_dims=hidden, activation=activation)
    load_backend("torch")
    model.fit(
        data,
        steps=2,
        optimizer=SGD(0.1),
        backend="torch",
        progress=False,
        protocol=protocol,
        eval_every=1,
        k=min(3, num_items),
        batch_size=1,  # 3 users leave a single training user
    )
    with tempfile.TemporaryDirectory() as tmp:
        loaded = cfcore.load(model.save(Path(tmp) / "s.npz", include_ratings=include_ratings))
    assert type(loaded) is cfcore.SoftmaxModel and loaded.spec == model.spec
    assert loaded.step == model.step and loaded.protocol == model.protocol
    a, b = model.params_numpy(), loaded.params_numpy()
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k].view(np.uint32), b[k].view(np.uint32))
    pd.testing.assert_frame_equal(model.history, loaded.history)
    assert same_ids(plain(model.item_ids), plain(loaded.item_ids))
    # The loaded model computes the same query embeddings for every user it knows.
    if include_ratings:
        np.testing.assert_array_equal(
            model.user_embeddings(backend="numpy"), loaded.user_embeddings(backend="numpy")
        )


# ---------------------------------------------------------------------------- losses vs the oracle


@st.composite
def mf_problems(draw):
    num_users, num_items = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    d, n = draw(st.integers(1, 6)), draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    scale = draw(st.sampled_from([1e-3, 0.1, 1.0, 3.0]))
    params = {
        "user": (scale * rng.standard_normal((num_users, d))).astype(np.float32),
        "item": (scale * rng.standard_normal((num_items, d))).astype(np.float32),
    }
    users = rng.integers(0, num_users, n).astype(np.int32)
    items = rng.integers(0, num_items, n).astype(np.int32)
    values = rng.uniform(-5, 5, n).astype(np.float32)
    spec = MFSpec(
        embedding_dim=d,
        mse=draw(st.sampled_from(["gather", "dense"])),
        regularization_coeff=draw(st.sampled_from([0.0, 0.1, 2.5])),
        gravity_coeff=draw(st.sampled_from([0.0, 1.0, 3.0])),
    )
    return spec, params, users, items, values


def _magnitudes(spec, params, users, items, values):
    """The oracle on |U|, |V|, |r|: a bound on the size of every term that float32 rounds."""
    a = {k: np.abs(v) for k, v in params.items()}
    U, V = a["user"].astype(np.float64), a["item"].astype(np.float64)
    e = np.einsum("kd,kd->k", U[users], V[items]) + np.abs(values)
    n = len(values)
    loss = float(np.mean(e**2)) + spec.regularization_coeff * ref.l2_penalty(U, V)[0]
    loss += spec.gravity_coeff * ref.gravity(U, V)[0]
    dU, dV = np.zeros_like(U), np.zeros_like(V)
    np.add.at(dU, users, (2.0 / n) * e[:, None] * V[items])
    np.add.at(dV, items, (2.0 / n) * e[:, None] * U[users])
    _, rU, rV = ref.l2_penalty(U, V)
    _, gU, gV = ref.gravity(U, V)
    lr, lg = spec.regularization_coeff, spec.gravity_coeff
    return loss, {"user": dU + lr * rU + lg * gU, "item": dV + lr * rV + lg * gV}


@pytest.mark.parametrize("name", BACKENDS)
def test_loss_and_gradients_match_the_float64_oracle(name: str) -> None:
    be = load_backend(name)

    @GRADIENT_EXAMPLES.get(name, COMPILED_GRADIENT_EXAMPLES)
    @given(mf_problems())
    def check(problem) -> None:
        spec, params, users, items, values = problem
        batch = {"users": users, "items": items, "values": values}
        grad = be.value_and_grad(objectives.mf_loss(be, spec))
        native = {k: be.asarray(v) for k, v in batch.items()}
        (value, terms), grads = grad(be.params_from_numpy(params), native)
        expected, ref_grads = ref.mf_objective(spec, params, users, items, values)
        bound, bound_grads = _magnitudes(spec, params, users, items, values)
        note(f"{spec}, loss {float(be.to_numpy(value))} vs {expected['total']}")
        # float32 rounding: a few ulps of the largest term that enters each result.
        assert abs(float(be.to_numpy(value)) - expected["total"]) <= 1e-5 * bound
        for k in ("user", "item"):
            got = be.to_numpy(grads[k])
            assert got.dtype == np.float32 and got.shape == params[k].shape
            tol = 1e-5 * float(np.max(bound_grads[k])) + 1e-30
            np.testing.assert_allclose(got, ref_grads[k], rtol=0, atol=tol, err_msg=k)
        # The parts the history records, too.
        for part in ("observed", "total"):
            assert abs(float(be.to_numpy(terms[part])) - expected[part]) <= 1e-5 * bound

    check()


# ---------------------------------------------------------------------------- fold-in


@pytest.fixture(scope="module")
def folding_model() -> cfcore.MatrixFactorization:
    """A trained MF model over 9 items (d = 3), ratings 1..5."""
    rng = np.random.default_rng(3)
    n = 60
    ratings = Ratings(rng.integers(0, 12, n), rng.integers(0, 9, n), rng.integers(1, 6, n), 12, 9)
    ratings = Ratings(
        np.r_[ratings.users, 0, 0], np.r_[ratings.items, 0, 1], np.r_[ratings.values, 1, 5], 12, 9
    )
    return _fit(cfcore.MatrixFactorization(embedding_dim=3, init_stddev=0.5), ratings, steps=5)


@st.composite
def new_users(draw, num_items: int = 9):
    """A few new users, each with a set of distinct items and ratings in 1..5."""
    per_user = st.lists(st.integers(0, num_items - 1), min_size=1, max_size=num_items, unique=True)
    item_sets = draw(st.lists(per_user, min_size=1, max_size=4))
    rows = np.concatenate([np.full(len(s), b) for b, s in enumerate(item_sets)])
    items = np.concatenate([np.asarray(s) for s in item_sets])
    values = np.asarray(draw(st.lists(st.integers(1, 5), min_size=len(rows), max_size=len(rows))))
    reg = draw(st.floats(0.01, 20))
    return Ratings(rows, items, values.astype(float), len(item_sets), num_items), reg


def _closed_form(item_emb, ratings, reg) -> np.ndarray:
    V = item_emb.astype(np.float64)
    out = np.zeros((ratings.num_users, V.shape[1]))
    for b in range(ratings.num_users):
        mine = ratings.users == b
        Vs, r = V[ratings.items[mine]], ratings.values[mine].astype(np.float64)
        out[b] = np.linalg.solve(Vs.T @ Vs + reg * np.eye(V.shape[1]), Vs.T @ r)
    return out


@pytest.mark.parametrize("name", [*BACKENDS, "numpy"])
def test_fold_in_solves_the_regularized_least_squares(name: str, folding_model) -> None:
    if name != "numpy":
        load_backend(name)
    V = folding_model.embeddings["item"]

    @BACKEND_EXAMPLES
    @given(new_users())
    def check(case) -> None:
        ratings, reg = case
        got = folding_model.fold_in(ratings, reg=reg, backend=name)
        expected = _closed_form(V, ratings, reg)
        assert got.dtype == np.float32 and got.shape == expected.shape
        # float32 solve: error grows with the condition number, at most ~(|V|² + λ)/λ here.
        cond = (np.linalg.norm(V, 2) ** 2 + reg) / reg
        tol = 1e-6 * cond * (np.abs(expected).max() + 1.0)
        np.testing.assert_allclose(got, expected, rtol=0, atol=tol)
        # Each user alone gives the same row (users are independent), in any order of ratings.
        b = ratings.num_users - 1
        mine = np.flatnonzero(ratings.users == b)[::-1]
        alone = Ratings(np.zeros(len(mine), int), ratings.items[mine], ratings.values[mine], 1, 9)
        np.testing.assert_allclose(
            folding_model.fold_in(alone, reg=reg, backend=name)[0], got[b], rtol=0, atol=tol
        )

    check()


def test_fold_in_never_returns_non_finite_silently(folding_model) -> None:
    # Fewer ratings than dimensions and no regularization: the system is singular. A clear
    # error or a warning is fine; NaN or infinite embeddings handed back in silence are not.
    @given(st.lists(st.integers(0, 8), min_size=1, max_size=2, unique=True), st.integers(1, 5))
    def check(items, value) -> None:
        n = len(items)
        ratings = Ratings(np.zeros(n, int), np.asarray(items), np.full(n, float(value)), 1, 9)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                got = folding_model.fold_in(ratings, reg=0.0, backend="numpy")
            except ValueError:
                return
        assert np.isfinite(got).all() or caught, got

    check()
