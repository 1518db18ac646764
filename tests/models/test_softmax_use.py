"""Using a softmax model (issue 4's softmax parts): save/load, retrieval, fold-in, pictures, CLI.

Expected values are computed here with NumPy from the model's parameters and the catalogue (the
tower written out by hand), never taken from the code under test.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import cfcore
from cfcore import persistence, retrieval, viz
from cfcore.data.user_ratings import UserRatingsError
from cfcore.eval.popularity import evaluate_popularity
from cfcore.models.softmax import SoftmaxModel
from cfcore.optimizers import SGD, Adagrad
from cfcore.testing.retrieval_conformance import assert_top_k_indices

from ..cli.test_cli import assert_fails, assert_ok, invoke
from ..conftest import DATA_DIR, load_backend
from .test_softmax_features import GENRES, toy_dataset

SMALL = {"movie_id": 4, "genre": 2, "year": 2}
METRICS = ("precision@10", "recall@10", "ndcg@10", "map@10", "hit_rate@10")


# ---------------------------------------------------------------------------- data and helpers


def titled_toy(num_users: int = 60, num_items: int = 30, seed: int = 1) -> cfcore.Ratings:
    """The softmax toy data (one user without ratings) with titles, genres and id vocabularies."""
    base = toy_dataset(num_users=num_users, num_items=num_items, seed=seed)
    catalog = base.catalog.copy()
    catalog["title"] = [f"Movie {j} ({1990 + j % 6})" for j in range(num_items)]
    catalog.loc[3, "title"] = "Aladdin (1992)"
    catalog.loc[4, "title"] = "Aladdin and the King of Thieves (1996)"
    catalog.loc[5, "title"] = "Lion King, The (1994)"
    flags = catalog[GENRES].to_numpy(bool)
    names = [[g for g, f in zip(GENRES, row, strict=True) if f] or ["Other"] for row in flags]
    catalog["all_genres"] = ["-".join(n) for n in names]
    catalog["genre"] = [n[0] for n in names]
    rng = np.random.default_rng(seed)
    return cfcore.Ratings(
        base.users,
        base.items,
        rng.integers(1, 6, len(base.users)).astype(np.float32),
        num_users,
        num_items,
        user_ids=101 + np.arange(num_users),
        item_ids=catalog["item_id"].to_numpy(),
        catalog=catalog,
    )


@pytest.fixture(scope="module")
def data() -> cfcore.Ratings:
    return titled_toy()


def train_toy(data, backend: str = "jax", steps: int = 20, **kw) -> SoftmaxModel:
    load_backend(backend)
    model = SoftmaxModel(SMALL, hidden_dims=(4,))
    kw = {"optimizer": Adagrad(0.5), "batch_size": 8, "eval_every": 10, "progress": False} | kw
    model.fit(data, steps=steps, backend=backend, **kw)
    return model


@pytest.fixture(scope="module")
def model(data) -> SoftmaxModel:
    return train_toy(data)


def np_query(model: SoftmaxModel, catalog: pd.DataFrame, items) -> np.ndarray:
    """The tower by hand (float64) for one user who rated the item rows `items`."""
    p = {k: v.astype(np.float64) for k, v in model.embeddings.items()}
    vocab = model.features.vocabularies
    items = sorted(set(int(i) for i in items))
    movie = p["movie_id"][items].mean(axis=0)
    # One genre token per active flag of each rated movie (with repeats), "Other" for none.
    tokens = [g for j in items for g in ([c for c in GENRES if catalog[c].iloc[j]] or ["Other"])]
    genre = np.mean([p["genre"][vocab["genre"].index(g)] for g in tokens], axis=0)
    years = catalog["year"].iloc[items]
    year_tokens = ["<missing>" if pd.isna(y) else str(int(y)) for y in years]
    year = np.mean([p["year"][vocab["year"].index(y)] for y in year_tokens], axis=0)
    x = np.concatenate([movie, genre, year])
    for i in range(len(model.spec.hidden_dims)):  # linear layers (activation None)
        x = x @ (model.spec.hidden_scale * p[f"hidden_{i}"])
    return x


def rated_rows(data: cfcore.Ratings, user_row: int) -> np.ndarray:
    return np.unique(data.items[data.users == user_row])


def excluded(scores: np.ndarray, exclude=()) -> np.ndarray:
    """`scores` as float64 with the `exclude` items at −inf."""
    s = scores.astype(np.float64).copy()
    s[list(exclude)] = -np.inf
    return s


def _rewrite(src: Path, dst: Path, meta_change=None, arrays_change=None) -> Path:
    with np.load(src) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(arrays["metadata"].tobytes().decode())
    if meta_change is not None:
        meta_change(meta)
    if arrays_change is not None:
        arrays_change(arrays)
    arrays["metadata"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(dst, "wb") as f:
        np.savez(f, **arrays)
    return dst


# ---------------------------------------------------------------------------- save / load


def assert_same_softmax(a: SoftmaxModel, b: SoftmaxModel) -> None:
    assert type(b) is SoftmaxModel
    assert a.spec == b.spec and a.step == b.step and a.protocol == b.protocol
    pa, pb = a.params_numpy(), b.params_numpy()
    assert list(pa) == list(pb)
    for name in pa:
        np.testing.assert_array_equal(pa[name], pb[name])  # bit for bit
        assert pb[name].dtype == np.float32
    pd.testing.assert_frame_equal(a.history, b.history)
    pd.testing.assert_frame_equal(a.catalog, b.catalog)
    np.testing.assert_array_equal(a.user_ids, b.user_ids)
    np.testing.assert_array_equal(a.item_ids, b.item_ids)
    assert a.rating_scale == b.rating_scale and a.num_train_ratings == b.num_train_ratings
    fa, fb = a.features, b.features
    assert fa.feature_names == fb.feature_names and fa.vocabularies == fb.vocabularies
    np.testing.assert_array_equal(fa.histories.offsets, fb.histories.offsets)
    np.testing.assert_array_equal(fa.histories.values, fb.histories.values)
    for name in fa.item_tokens:
        np.testing.assert_array_equal(fa.item_tokens[name].offsets, fb.item_tokens[name].offsets)
        np.testing.assert_array_equal(fa.item_tokens[name].values, fb.item_tokens[name].values)


def test_round_trip(model, data, tmp_path: Path):
    path = model.save(tmp_path / "model.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # atomic: no temporary left
    with np.load(path) as archive:
        meta = json.loads(archive["metadata"].tobytes().decode())
    assert meta["format_version"] == 1 and meta["spec"]["kind"] == "softmax"
    loaded = cfcore.load(path)
    assert_same_softmax(model, loaded)
    assert loaded.history["step"].tolist() == [0, 10, 20]
    # The same split is drawn again, with or without the dataset.
    expected = model.evaluate(data)
    assert loaded.evaluate() == expected
    assert loaded.evaluate(data) == expected
    assert loaded.evaluate(k=3) == model.evaluate(data, k=3)
    np.testing.assert_array_equal(loaded.embeddings["item"], model.embeddings["item"])


@pytest.fixture(scope="module")
def ml_model(ml100k) -> SoftmaxModel:
    """The notebook's softmax model, briefly trained on ml-100k with JAX."""
    load_backend("jax")
    model = SoftmaxModel()
    model.fit(
        ml100k, steps=100, optimizer=Adagrad(8.0), backend="jax", eval_every=50, progress=False
    )
    return model


def test_train_on_jax_load_and_evaluate_on_tf(ml_model, ml100k, tmp_path: Path):
    load_backend("tf")
    loaded = cfcore.load(ml_model.save(tmp_path / "model.npz"))
    np.testing.assert_array_equal(loaded.embeddings["item"], ml_model.embeddings["item"])
    on_tf = loaded.evaluate(backend="tf")
    assert on_tf == ml_model.evaluate(ml100k, backend="tf")  # same parameters, same backend
    on_jax = ml_model.evaluate()
    assert on_tf["users"] == on_jax["users"] == 94
    assert on_tf["test_loss"] == pytest.approx(on_jax["test_loss"], rel=1e-5)
    for name in METRICS:  # float32 rounding may at most swap one pair of near-tied movies
        assert on_tf[name] == pytest.approx(on_jax[name], abs=0.011), name
    np.testing.assert_allclose(
        loaded.query_embeddings([0, 5, 942], backend="tf"),
        ml_model.query_embeddings([0, 5, 942], backend="jax"),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize(("backend_name", "protocol"), [("jax", "notebook"), ("tf", "holdout")])
def test_loaded_model_continues_training(data, tmp_path: Path, backend_name, protocol):
    """SGD keeps no optimizer state: 10 steps after loading (on the other backend) equal 10
    more in the same session."""
    model = train_toy(data, backend_name, optimizer=SGD(0.5), protocol=protocol)
    loaded = cfcore.load(model.save(tmp_path / "model.npz"))
    other = "tf" if backend_name == "jax" else "jax"
    load_backend(other)
    loaded.fit(None, steps=10, optimizer=SGD(0.5), backend=other, eval_every=10, progress=False)
    model.fit(
        data, steps=10, optimizer=SGD(0.5), backend=backend_name, eval_every=10, progress=False
    )
    assert loaded.step == model.step == 30 and loaded.protocol == protocol
    assert loaded.history["step"].tolist() == model.history["step"].tolist() == [0, 10, 20, 30]
    for name, value in model.params_numpy().items():
        np.testing.assert_allclose(loaded.params_numpy()[name], value, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.history["test_loss"], model.history["test_loss"], rtol=1e-5)
    with pytest.raises(ValueError, match="cannot continue under"):
        loaded.fit(
            None,
            steps=10,
            optimizer=SGD(0.5),
            protocol="holdout" if protocol == "notebook" else "notebook",
        )


def test_save_without_histories(model, data, tmp_path: Path):
    loaded = cfcore.load(model.save(tmp_path / "m.npz", include_ratings=False))
    assert loaded.rated_items is None
    with pytest.raises(ValueError, match="saved without its training ratings"):
        retrieval.recommend(loaded, 101)
    with pytest.raises(ValueError, match="user 101 has rated no movies.*include_ratings=False"):
        retrieval.recommend(loaded, 101, exclude_rated=False)
    with pytest.raises(ValueError, match="include_ratings=False.*pass the dataset"):
        loaded.evaluate()
    assert loaded.evaluate(data) == model.evaluate(data)  # the dataset brings them back
    pd.testing.assert_frame_equal(
        retrieval.neighbors(loaded, "Lion King"), retrieval.neighbors(model, "Lion King")
    )
    mine = {"Lion King, The (1994)": 5, 107: 2}
    np.testing.assert_array_equal(
        loaded.fold_in(mine, backend="numpy"), model.fold_in(mine, backend="numpy")
    )
    with pytest.raises(ValueError, match="user 101 has rated no movies.*include_ratings=False"):
        retrieval.batch_recommend(loaded, exclude_rated=False)  # not silently zero queries
    (uid,) = loaded.add_users(mine)
    assert uid == 161
    # The new user's movies are known: their query is, the exclusion (no record kept) is not.
    frame = retrieval.recommend(loaded, uid, k=4, exclude_rated=False, backend="numpy")
    q = model.fold_in(mine, backend="numpy")[0].astype(np.float64)
    s = model.embeddings["item"].astype(np.float64) @ q
    assert_top_k_indices(np.asarray(frame["item_id"])[None] - 100, s[None], 4)


def test_mf_file_of_format_version_1_still_loads(tmp_path: Path):
    """An MF file laid out as version 1 was written before the softmax kind: it loads as before,
    and MF files written now carry exactly the same metadata fields."""
    rng = np.random.default_rng(0)
    user, item = rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=(4, 2))
    meta = {
        "format": "cfcore-model",
        "format_version": 1,
        "cfcore_version": "0.1.0",
        "model": "RegularizedMF",
        "spec": {
            "kind": "mf",
            "embedding_dim": 2,
            "init_stddev": 0.1,
            "mse": "gather",
            "regularization_coeff": 0.1,
            "gravity_coeff": 1.0,
        },
        "step": 7,
        "history": {"columns": ["step", "train_mse"], "data": [[0, 2.0], [7, 1.5]]},
        "optimizer": None,
        "num_train_ratings": 5,
        "rating_scale": [1.0, 5.0],
        "shape": [3, 4, 2],
        "has_ratings": False,
    }
    path = tmp_path / "v1.npz"
    with open(path, "wb") as f:
        np.savez_compressed(
            f,
            metadata=np.frombuffer(json.dumps(meta).encode(), np.uint8),
            user_embeddings=user,
            item_embeddings=item.astype(np.float32),
            user_ids=np.array([10, 20, 30]),
            item_ids=np.array(["a", "b", "c", "d"]),
        )
    loaded = cfcore.load(path)
    assert type(loaded) is cfcore.RegularizedMF and loaded.step == 7
    np.testing.assert_array_equal(loaded.embeddings["user"], user)
    assert loaded.history["train_mse"].tolist() == [2.0, 1.5]
    again = loaded.save(tmp_path / "again.npz")
    with np.load(again) as archive:
        assert set(json.loads(archive["metadata"].tobytes().decode())) == set(meta)
        assert set(archive.files) == {
            "metadata",
            "user_embeddings",
            "item_embeddings",
            "user_ids",
            "item_ids",
        }


def _set_param_dtype(arrays):
    arrays["param_0"] = arrays["param_0"].astype(np.float64)


def _break_offsets(arrays):
    arrays["history_offsets"] = arrays["history_offsets"][::-1].copy()


def _bad_item(arrays):
    arrays["history_items"] = arrays["history_items"].copy()
    arrays["history_items"][0] = 30


@pytest.mark.parametrize(
    ("meta_change", "arrays_change", "message"),
    [
        (lambda m: m.update(format_version=2), None, r"format version 2, newer.*\(version 1\)"),
        (lambda m: m["spec"].update(kind="lstm"), None, "holds a model of kind 'lstm'"),
        (lambda m: m.update(model="Other"), None, "holds a 'Other' model of kind 'softmax'"),
        (lambda m: m.update(shape=[60, 30, 5]), None, "recorded query dimension 5"),
        (lambda m: m.update(params=["movie_id"]), None, "are not the spec's"),
        (lambda m: m.update(protocol="leaky"), None, "protocol 'leaky' is not one of"),
        (lambda m: m.pop("split_seed"), None, "the entry or field 'split_seed' is missing"),
        (lambda m: m["spec"].update(hidden_dims=[5]), None, "damaged: ValueError: the query"),
        (lambda m: m.update(token_features=["genre", "year", "x"]), None, "'tokens_offsets_2"),
        (None, _set_param_dtype, r"parameter '\w+' is float64 \(\d+, \d+\), expected float32"),
        (None, _break_offsets, "the rated movies are not 60 rows"),
        (None, _bad_item, "the rated movies hold 30, out of range for 30"),
        (None, lambda a: a.pop("vocab_1"), "'vocab_1"),
    ],
)
def test_damaged_softmax_files(model, tmp_path: Path, meta_change, arrays_change, message):
    src = model.save(tmp_path / "model.npz")
    bad = _rewrite(src, tmp_path / "bad.npz", meta_change, arrays_change)
    with pytest.raises(cfcore.ModelFileError, match=message):
        cfcore.load(bad)


def test_truncated_softmax_file(model, tmp_path: Path):
    data = model.save(tmp_path / "model.npz").read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(cfcore.ModelFileError, match="cut.npz cannot be read"):
        cfcore.load(cut)
    assert persistence.FORMAT_VERSION == 1


# ---------------------------------------------------------------------------- retrieval


@pytest.mark.parametrize("where", ["backend", "numpy", None])
def test_recommend_is_the_tower_over_the_rated_movies(model, data, backend, where):
    be = backend if where == "backend" else where
    user_row = 4  # user id 105
    rated = rated_rows(data, user_row)
    q = np_query(model, data.catalog, rated)
    scores = model.embeddings["item"].astype(np.float64) @ q
    for measure, s in (
        ("dot", scores),
        ("cosine", scores / np.linalg.norm(q) / np.linalg.norm(model.embeddings["item"], axis=1)),
    ):
        frame = retrieval.recommend(model, 105, k=5, measure=measure, backend=be)
        got = np.asarray(frame["item_id"]) - 100
        assert_top_k_indices(got[None], excluded(s, rated)[None], 5, what=measure)
        top = got  # the same items up to float32 near-ties: the rest compares them
        np.testing.assert_allclose(frame["score"], s[top], rtol=1e-5, atol=1e-6)
        assert frame["title"].tolist() == data.catalog["title"].iloc[top].tolist()
    # Without exclusion the rated movies compete too.
    frame = retrieval.recommend(model, 105, k=5, exclude_rated=False, backend=be)
    assert_top_k_indices(np.asarray(frame["item_id"])[None] - 100, scores[None], 5)


def test_batch_recommend_every_user(model, data, backend):
    values, idx = retrieval.batch_recommend(model, k=3, backend=backend)
    assert values.shape == idx.shape == (60, 3)
    for u in (0, 17, 58):
        rated = rated_rows(data, u)
        s = model.embeddings["item"].astype(np.float64) @ np_query(model, data.catalog, rated)
        assert_top_k_indices(idx[u][None], excluded(s, rated)[None], 3, what=f"user {u}")
        top = idx[u]
        np.testing.assert_allclose(values[u], s[top], rtol=1e-5, atol=1e-6)
    # The last user rated nothing: the zero query scores every movie 0 (ties: lowest index).
    np.testing.assert_array_equal(idx[59], [0, 1, 2])
    np.testing.assert_array_equal(values[59], 0.0)


def test_recommend_errors(model):
    with pytest.raises(ValueError, match="user 160 has rated no movies.*fold_in"):
        retrieval.recommend(model, 160)
    with pytest.raises(ValueError, match=r"user id 999 is not among the model's 60 users"):
        retrieval.recommend(model, 999)
    with pytest.raises(ValueError, match="user index 60 is out of range for 60 users"):
        model.query_embeddings([60])


def test_neighbors_use_the_movie_id_table(model, data):
    V = model.embeddings["movie_id"].astype(np.float64)
    with pytest.warns(UserWarning, match="Aladdin and the King of Thieves"):
        frame = retrieval.neighbors(model, "Aladdin", k=4, measure="cosine")
    cos = V @ V[3] / np.linalg.norm(V, axis=1) / np.linalg.norm(V[3])
    assert frame.attrs["query"] == "Aladdin (1992)"
    assert_top_k_indices(np.asarray(frame["item_id"])[None] - 100, cos[None], 4)
    assert frame["item_id"].iloc[0] == 103  # itself first under cosine
    frame = retrieval.neighbors(model, 110, k=3, measure=("norm", 0.5))
    s = V @ V[10] / np.linalg.norm(V, axis=1) ** 0.5
    np.testing.assert_allclose(frame["score"], -np.sort(-s)[:3], rtol=1e-5)


# ---------------------------------------------------------------------------- new users


def test_fold_in_is_the_tower_of_the_new_users_movies(model, data, backend):
    mine = {"Lion King": 5, 103: 4, "Movie 20 (1992)": 1}
    got = model.fold_in(mine, backend=backend)
    assert got.shape == (1, 4) and got.dtype == np.float32
    np.testing.assert_allclose(
        got[0], np_query(model, data.catalog, [5, 3, 20]), rtol=1e-5, atol=1e-6
    )
    # An existing user's movies, folded in, give that user's query embedding.
    rated = rated_rows(data, 7)
    again = model.fold_in({int(100 + j): 3 for j in rated}, backend=backend)
    np.testing.assert_allclose(
        again, model.query_embeddings([7], backend=backend), rtol=1e-5, atol=1e-6
    )
    # Several users at once, from Ratings; a movie rated twice counts once.
    new = cfcore.Ratings(np.array([0, 0, 0, 1]), np.array([5, 3, 5, 9]), np.ones(4), 2, 30)
    two = model.fold_in(new, backend=backend)
    np.testing.assert_allclose(two[0], np_query(model, data.catalog, [5, 3]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(two[1], np_query(model, data.catalog, [9]), rtol=1e-5, atol=1e-6)


def test_fold_in_errors(model):
    with pytest.raises(ValueError, match="reg=0.1: the softmax model has no fold-in regular"):
        model.fold_in({103: 4}, reg=0.1)
    with pytest.raises(UserRatingsError, match="outside the rating scale 1..5"):
        model.fold_in({103: 9})
    with pytest.raises(UserRatingsError, match="no title in the catalog contains 'Zorro'"):
        model.fold_in({"Zorro": 4})
    empty = cfcore.Ratings(np.array([0]), np.array([5]), np.ones(1), 2, 30)
    with pytest.raises(UserRatingsError, match="new user 1 has no ratings"):
        model.fold_in(empty)
    with pytest.raises(RuntimeError, match="call fit"):
        SoftmaxModel(SMALL, hidden_dims=(4,)).fold_in({103: 4})


def test_add_users_recommend_save_and_retrain(data, tmp_path: Path):
    model = train_toy(data)
    before = model.evaluate()
    mine = {"Lion King": 5, 103: 4}
    expected_q = model.fold_in(mine, backend="numpy")[0]
    (uid,) = model.add_users(mine)
    assert uid == 161 and model.num_users == 61 and model.user_ids[-1] == 161
    assert model.num_train_ratings == len(data) + 2
    frame = retrieval.recommend(model, uid, k=5, backend="numpy")
    s = model.embeddings["item"].astype(np.float64) @ expected_q
    got = np.asarray(frame["item_id"])[None] - 100
    assert_top_k_indices(got, excluded(s, [3, 5])[None], 5)
    # The parameters and the split are unchanged: the same test users, the same metrics.
    assert model.evaluate() == before
    with pytest.raises(UserRatingsError, match="user id 161 is already a user"):
        model.add_users({103: 4}, user_ids=[161])
    loaded = cfcore.load(model.save(tmp_path / "m.npz"))
    pd.testing.assert_frame_equal(retrieval.recommend(loaded, 161, k=5, backend="numpy"), frame)
    # Training continues on the model's own features, the new user among the training users.
    loaded.fit(None, steps=10, optimizer=Adagrad(0.5), backend="jax", progress=False)
    assert loaded.step == 30 and loaded.evaluate()["users"] == before["users"]


# ---------------------------------------------------------------------------- pictures


def test_pictures_accept_a_softmax_model(ml_model, ml100k, model, data, tmp_path: Path):
    reg = cfcore.RegularizedMF(embedding_dim=35, init_stddev=0.05)
    reg.fit(ml100k.ratings, steps=10, optimizer=SGD(20.0), backend="jax", progress=False)
    frame = viz.embedding_norms({"reg": reg, "softmax": ml_model}, ml100k.ratings)
    np.testing.assert_allclose(
        frame["softmax"], np.linalg.norm(ml_model.embeddings["movie_id"].astype(np.float64), axis=1)
    )
    assert frame["num_ratings"].sum() == 100_000
    viz.save_figure(viz.embedding_norm_figure([reg, ml_model], ml100k.ratings), tmp_path / "n.png")
    viz.save_chart(viz.embedding_norm_chart(ml_model, ml100k.ratings), tmp_path / "n.html")
    coords = viz.tsne(model, perplexity=5.0, max_iter=250)
    assert coords.shape == (30, 2)
    np.testing.assert_array_equal(
        coords, viz.tsne(model.embeddings["movie_id"], perplexity=5.0, max_iter=250)
    )
    viz.save_chart(viz.tsne_chart(coords, data), tmp_path / "t.html")
    viz.save_figure(viz.tsne_figure(coords, data, genres=GENRES), tmp_path / "t.png")
    assert {p.name for p in tmp_path.iterdir()} == {"n.png", "n.html", "t.html", "t.png"}


# ---------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def softmax_run(ml100k, tmp_path_factory):
    """`cfcore train --model softmax` for 20 steps: the output text and the run folder."""
    load_backend("jax")
    out = tmp_path_factory.mktemp("softmax-run")
    result, text = invoke(
        *("train", "--model", "softmax", "--data-dir", str(DATA_DIR)),
        *("--out", str(out), "--no-progress", "--steps", "20", "--eval-every", "10"),
        *("--backend", "jax"),
    )
    assert_ok(result, text)
    return text, out


def _table_row(text: str, name: str) -> list[float]:
    row = re.search(rf"│ {re.escape(name)} │ ([\d.]+) │ ?([\d.]*) ?│", text)
    assert row is not None, (name, text)
    return [float(x) for x in row.groups() if x]


def test_cli_train_softmax(softmax_run, ml100k):
    text, out = softmax_run
    assert "SoftmaxModel(feature_dims={'movie_id': 35, 'genre': 3, 'year': 2}" in text
    assert "hidden_dims=[35]" in text and "loss='full'" in text
    assert (
        "(943 users, 100000 ratings; holdout protocol), backend jax, Adagrad(learning_rate=8.0"
        in text
    )
    assert "after 20 steps: ranking on 94 test users" in text
    model = cfcore.load(out / "model.npz")
    assert isinstance(model, SoftmaxModel) and model.step == 20 and model.protocol == "holdout"
    got = model.evaluate(k=10)
    baseline = evaluate_popularity(ml100k, k=10, seed=0)
    for name in METRICS:
        ours, popular = _table_row(text, name)
        assert ours == pytest.approx(got[name], abs=1e-4), name
        assert popular == pytest.approx(baseline[name], abs=1e-4), name
    assert _table_row(text, "test loss")[0] == pytest.approx(got["test_loss"], abs=1e-4)
    history = pd.read_csv(out / "history.csv")
    assert list(history.columns) == ["step", "train_loss", "test_loss", *METRICS]
    assert history["step"].tolist() == [0, 10, 20]
    assert history["ndcg@10"].iloc[-1] == pytest.approx(got["ndcg@10"])
    with np.load(out / "embeddings.npz") as emb:
        assert set(emb.files) == {"item", "user", "genre", "year", "hidden_0"}
        np.testing.assert_array_equal(emb["item"], model.embeddings["item"])
        assert emb["item"].shape == (1682, 35) and emb["user"].shape == (943, 35)
        np.testing.assert_array_equal(emb["hidden_0"], model.embeddings["hidden_0"])
        np.testing.assert_allclose(
            emb["user"], model.query_embeddings(backend="numpy"), rtol=1e-5, atol=1e-6
        )
    assert f"wrote {out / 'history.csv'}, {out / 'embeddings.npz'} and {out / 'model.npz'}" in text


def test_cli_recommend_neighbors_and_rate_with_a_softmax_run(softmax_run, tmp_path: Path):
    _, out = softmax_run
    model = cfcore.load(out / "model.npz")
    result, text = invoke("recommend", "--model", str(out), "--user", "1", "-k", "5")
    assert_ok(result, text)
    expected = retrieval.recommend(model, 1, k=5)
    rated = set(np.asarray(model.item_ids)[model.rated_items.row(0)])
    assert not rated & set(expected["item_id"])
    titles = expected["title"].tolist()
    assert "Top 5 for user 1" in text and all(t in text for t in titles)
    assert [text.find(t) for t in titles] == sorted(text.find(t) for t in titles)

    result, text = invoke("neighbors", "Aladdin", "--model", str(out), "--measure", "cosine")
    assert_ok(result, text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        expected = retrieval.neighbors(model, "Aladdin", measure="cosine")
    assert "Nearest neighbours of Aladdin (1992)" in text
    assert all(t in text for t in expected["title"])

    mine = tmp_path / "mine.csv"
    mine.write_text("title,rating\nAladdin (1992),5\nLion King,5\nToy Story (1995),4\n")
    saved = tmp_path / "with-me.npz"
    result, text = invoke(
        *("rate", "--model", str(out), "--ratings", str(mine), "-k", "5"),
        *("--retrain-steps", "10", "--no-progress", "--save-model", str(saved)),
    )
    assert_ok(result, text)
    assert "added you as user 944 with 3 ratings (from the movies you rated, no retraining)" in text
    (uid,) = model.add_users(mine)
    expected = retrieval.recommend(model, uid, k=5)
    assert not {95, 71, 1} & set(expected["item_id"])
    assert all(t in text for t in expected["title"])
    assert "Top 5 for you after 10 more steps" in text
    again = cfcore.load(saved)
    assert again.user_ids[-1] == 944 and again.step == 30
    result, text = invoke("rate", "--model", str(out), "--ratings", str(mine), "--reg", "0.5")
    assert_fails(result, text, "--reg 0.5 applies to matrix factorization's fold-in")

    recs_csv = tmp_path / "r.csv"
    result, text = invoke(
        *("recommend", "--model", str(out), "--all-users", "--out", str(recs_csv)),
        *("-k", "2", "--no-progress"),
    )
    assert_ok(result, text)
    recs = pd.read_csv(recs_csv)
    assert len(recs) == 943 * 2 and recs["user_id"].iloc[0] == 1
    # User 1's two best unrated movies, by NumPy from the saved parameters (a fresh load).
    model = cfcore.load(out / "model.npz")
    q = model.query_embeddings([0], backend="numpy")[0].astype(np.float64)
    s = excluded(model.embeddings["item"].astype(np.float64) @ q, model.rated_items.row(0))
    rows = np.array([np.flatnonzero(model.item_ids == i)[0] for i in recs["item_id"].iloc[:2]])
    assert_top_k_indices(rows[None], s[None], 2)


def test_cli_train_softmax_options_on_tf(ml100k, tmp_path: Path):
    load_backend("tf")
    result, text = invoke(
        *("train", "--model", "softmax", "--data-dir", str(DATA_DIR)),
        *("--out", str(tmp_path), "--no-progress", "--steps", "10", "--eval-every", "5"),
        *("--backend", "tf", "--protocol", "notebook", "--loss", "sampled", "-k", "5"),
        *("--feature-dims", "8,2,2", "--hidden-dims", "16,8", "--activation", "relu"),
        *("--optimizer", "adam", "--lr", "0.01", "--batch-size", "64"),
    )
    assert_ok(result, text)
    assert "notebook protocol), backend tf, Adam(learning_rate=0.01" in text
    model = cfcore.load(tmp_path / "model.npz")
    assert model.spec.hidden_dims == (16, 8) and model.spec.activation == "relu"
    assert dict(model.spec.feature_dims) == {"movie_id": 8, "genre": 2, "year": 2}
    assert model.spec.loss == "sampled" and model.protocol == "notebook"
    assert "precision@5" in text
    assert pd.read_csv(tmp_path / "history.csv")["step"].tolist() == [0, 5, 10]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--fold", "u1"), "for --model softmax use --protocol"),
        (("--dim", "8"), "for --model softmax use --feature-dims and --hidden-dims"),
        (("--feature-dims", "movie_id=x"), "the dimension of 'movie_id' must be an int, got 'x'"),
        (("--feature-dims", "movie_id=4,3"), "--feature-dims expects NAME=DIM pairs"),
        (("--hidden-dims", "5"), "query embedding dimension 5"),
        (("--hidden-dims", "a"), "--hidden-dims expects comma-separated ints"),
        (("--batch-size", "5000"), "batch_size must be an int in [1, 849]"),
        (("--lr", "1e30", "--optimizer", "sgd"), "NaN or infinite at step"),
    ],
)
def test_cli_train_softmax_errors(ml100k, tmp_path: Path, args, message):
    load_backend("jax")
    result, text = invoke(
        *("train", "--model", "softmax", "--data-dir", str(DATA_DIR)),
        *("--out", str(tmp_path), "--no-progress", "--steps", "10", "--backend", "jax", *args),
    )
    assert_fails(result, text, message)
    assert not (tmp_path / "model.npz").exists()


def test_cli_train_help_lists_the_softmax_options():
    result, text = invoke("train", "--help")
    assert result.exit_code == 0, text
    for option in ("--feature-dims", "--hidden-dims", "--activation", "--loss", "--protocol"):
        assert option in text
    assert "softmax" in text and "holdout" in text and "sampled" in text
