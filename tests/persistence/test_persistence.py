"""`model.save` / `cfcore.load`: round trips, cross-backend serving, continuing, bad files."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import cfcore
from cfcore import persistence, retrieval
from cfcore.optimizers import SGD

from ..conftest import load_backend
from ..eval.test_retrieval import tiny_model, tiny_ratings


@pytest.fixture(scope="module")
def reg_model():
    return tiny_model("jax", regularized=True)


def assert_same_model(a, b) -> None:
    assert type(a) is type(b)
    assert a.spec == b.spec
    assert a.step == b.step
    for k in ("user", "item"):
        np.testing.assert_array_equal(a.embeddings[k], b.embeddings[k])  # bit for bit
        assert b.embeddings[k].dtype == np.float32
    pd.testing.assert_frame_equal(a.history, b.history)
    pd.testing.assert_frame_equal(a.catalog, b.catalog)
    np.testing.assert_array_equal(a.user_ids, b.user_ids)
    np.testing.assert_array_equal(a.item_ids, b.item_ids)
    assert a.rating_scale == b.rating_scale
    assert a.num_train_ratings == b.num_train_ratings
    for f in ("users", "items", "values"):
        np.testing.assert_array_equal(getattr(a.train_ratings, f), getattr(b.train_ratings, f))


def test_round_trip(reg_model, tmp_path: Path):
    path = reg_model.save(tmp_path / "model.npz")
    assert path == tmp_path / "model.npz"
    loaded = cfcore.load(path)
    assert isinstance(loaded, cfcore.RegularizedMF)
    assert_same_model(reg_model, loaded)
    assert loaded.history["step"].tolist() == [0, 10, 20, 30]
    # Nothing but the model file is left in the folder (the temporary file was renamed).
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_round_trip_plain_mf_without_catalog_and_string_ids(tmp_path: Path):
    load_backend("jax")
    frame = pd.DataFrame(
        {"user": ["ann", "bob", "ann", "cy"], "item": ["x", "y", "y", "z"], "r": [1.0, 2, 3, 4]}
    )
    ratings = cfcore.Ratings.from_frame(frame, "user", "item", "r")
    model = cfcore.MatrixFactorization(embedding_dim=2, init_stddev=0.5, mse="dense")
    model.fit(ratings, steps=3, optimizer=SGD(0.1), backend="jax", progress=False)
    loaded = cfcore.load(model.save(tmp_path / "m.cfmodel"))
    assert type(loaded) is cfcore.MatrixFactorization
    assert loaded.spec.mse == "dense"
    assert loaded.catalog is None
    assert loaded.user_ids.tolist() == ["ann", "bob", "cy"]
    np.testing.assert_array_equal(loaded.embeddings["item"], model.embeddings["item"])
    frame = retrieval.recommend(loaded, "bob", k=3, exclude_rated=False)
    assert sorted(frame["item_id"]) == ["x", "y", "z"]


def test_train_on_jax_serve_on_tf(tmp_path: Path):
    load_backend("jax")
    tf = load_backend("tf")
    model = tiny_model("jax")
    loaded = cfcore.load(model.save(tmp_path / "model.npz"))
    exact = retrieval.recommend(model, 105, k=8, backend="numpy")
    again = retrieval.recommend(loaded, 105, k=8, backend="numpy")
    pd.testing.assert_frame_equal(exact, again)  # same embeddings: the same NumPy scores
    jax_values, jax_idx = retrieval.batch_recommend(model, k=8, backend="jax")
    tf_values, tf_idx = retrieval.batch_recommend(loaded, k=8, backend=tf)
    np.testing.assert_array_equal(tf_idx, jax_idx)
    np.testing.assert_allclose(tf_values, jax_values, rtol=1e-6, atol=1e-6)
    new = {1002: 5, 1003: 1, 1010: 4}
    np.testing.assert_allclose(
        loaded.fold_in(new, backend=tf), model.fold_in(new, backend="jax"), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("backend_name", ["jax", "tf"])
def test_loaded_model_continues_training(tmp_path: Path, backend_name):
    """SGD has no optimizer state: 10 more steps after loading equal 10 more in one session."""
    load_backend(backend_name)
    train = tiny_ratings()
    model = cfcore.RegularizedMF(
        embedding_dim=4, init_stddev=0.5, regularization_coeff=0.2, gravity_coeff=0.5
    )
    model.fit(train, steps=20, optimizer=SGD(1.0), backend=backend_name, progress=False)
    loaded = cfcore.load(model.save(tmp_path / "model.npz"))
    other = "tf" if backend_name == "jax" else "jax"
    load_backend(other)
    loaded.fit(train, steps=10, optimizer=SGD(1.0), backend=other, progress=False)
    model.fit(train, steps=10, optimizer=SGD(1.0), backend=backend_name, progress=False)
    assert loaded.step == model.step == 30
    assert loaded.history["step"].tolist() == model.history["step"].tolist() == [0, 10, 20, 30]
    for k in ("user", "item"):
        np.testing.assert_allclose(loaded.embeddings[k], model.embeddings[k], rtol=1e-5, atol=1e-6)


def test_save_without_ratings(reg_model, tmp_path: Path):
    loaded = cfcore.load(reg_model.save(tmp_path / "m.npz", include_ratings=False))
    assert loaded.train_ratings is None and loaded.rated_items is None
    assert loaded.rating_scale == reg_model.rating_scale  # still checks new ratings
    with pytest.raises(ValueError, match="saved without its training ratings.*exclude_rated=False"):
        retrieval.recommend(loaded, 101)
    assert len(retrieval.recommend(loaded, 101, k=3, exclude_rated=False)) == 3
    # The default fold-in λ of a regularized model still knows |Ω|.
    np.testing.assert_allclose(
        loaded.fold_in({1001: 4}, backend="numpy"), reg_model.fold_in({1001: 4}, backend="numpy")
    )


def test_save_after_adding_users(tmp_path: Path):
    model = tiny_model("jax")
    (uid,) = model.add_users({1001: 5, 1002: 4})
    loaded = cfcore.load(model.save(tmp_path / "m.npz"))
    assert loaded.user_ids[-1] == uid
    frame = retrieval.recommend(loaded, uid, k=5)
    assert not {1001, 1002} & set(frame["item_id"])


def test_failed_write_keeps_the_old_file(reg_model, tmp_path: Path, monkeypatch):
    path = reg_model.save(tmp_path / "model.npz")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(OSError, match="disk full"):
        reg_model.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


# ---------------------------------------------------------------------------- bad files


def _rewrite_metadata(src: Path, dst: Path, change) -> Path:
    with np.load(src) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(arrays["metadata"].tobytes().decode())
    change(meta)
    arrays["metadata"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(dst, "wb") as f:
        np.savez(f, **arrays)
    return dst


def test_newer_format_version_is_refused(reg_model, tmp_path: Path):
    src = reg_model.save(tmp_path / "model.npz")
    newer = _rewrite_metadata(
        src, tmp_path / "newer.npz", lambda m: m.update(format_version=99, cfcore_version="9.0")
    )
    with pytest.raises(
        cfcore.ModelFileError,
        match=r"format version 99, newer than this cfcore supports \(version 1\).*cfcore 9.0",
    ):
        cfcore.load(newer)
    assert persistence.FORMAT_VERSION == 1


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("missing.npz", None, "does not exist"),
        ("text.npz", lambda p: p.write_text("hello"), "not a valid .npz archive"),
        ("random.npz", lambda p: p.write_bytes(bytes(range(256)) * 8), "not a valid .npz archive"),
        (
            "embeddings.npz",
            lambda p: np.savez(p, user=np.ones((2, 2)), item=np.ones((3, 2))),
            r"not a cfcore model file \(it has no 'metadata' entry; its arrays are \['item', 'user'\]\)",
        ),
        ("single.npy", lambda p: np.save(open(p, "wb"), np.ones(3)), "single array"),
    ],
)
def test_foreign_files(tmp_path: Path, name, make, message):
    path = tmp_path / name
    if make is not None:
        make(path)
    with pytest.raises(cfcore.ModelFileError, match=message):
        cfcore.load(path)


def test_truncated_file(reg_model, tmp_path: Path):
    data = reg_model.save(tmp_path / "model.npz").read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(cfcore.ModelFileError, match="cut.npz cannot be read.*truncated"):
        cfcore.load(cut)


def test_corrupted_member(reg_model, tmp_path: Path):
    """A flipped byte inside the compressed embeddings: zip's CRC check catches it."""
    path = reg_model.save(tmp_path / "model.npz")
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("user_embeddings.npy")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0xFF
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(cfcore.ModelFileError, match="bad.npz is damaged"):
        cfcore.load(bad)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(format="something-else"), "its format is 'something-else'"),
        (lambda m: m.update(format_version="1"), "format_version '1' is not a positive int"),
        (lambda m: m.update(shape=[3, 3, 4]), "do not match the recorded shape"),
        (lambda m: m.pop("spec"), "damaged: the entry or field 'spec' is missing"),
        (lambda m: m.update(model="SoftmaxModel"), "holds a 'SoftmaxModel' model"),
        (lambda m: m["spec"].update(embedding_dim=-1), "damaged: ValueError: embedding_dim"),
    ],
)
def test_damaged_metadata(reg_model, tmp_path: Path, change, message):
    src = reg_model.save(tmp_path / "model.npz")
    bad = _rewrite_metadata(src, tmp_path / "bad.npz", change)
    with pytest.raises(cfcore.ModelFileError, match=message):
        cfcore.load(bad)


def test_metadata_not_json(reg_model, tmp_path: Path):
    src = reg_model.save(tmp_path / "model.npz")
    with np.load(src) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["metadata"] = np.frombuffer(b"{not json", np.uint8)
    bad = tmp_path / "bad.npz"
    with open(bad, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(cfcore.ModelFileError, match="metadata is not valid JSON"):
        cfcore.load(bad)
