"""Issue 11: the eight edge bugs and the weak classes of errors, each with a test that failed before."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest

import cfcore
from cfcore.errors import ArgumentTypeError, ArgumentValueError, FileAccessError
from cfcore.io.atomic import atomic_write
from cfcore.optimizers import SGD
from cfcore.retrieval import recommend

from ..conftest import DATA_DIR, load_backend


def small_ratings(n_users: int = 30, n_items: int = 20, seed: int = 0) -> cfcore.Ratings:
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), 6)
    items = rng.integers(0, n_items, size=len(users))
    values = rng.integers(1, 6, size=len(users)).astype(np.float32)
    return cfcore.Ratings(users, items, values, n_users, n_items)


@pytest.fixture(scope="module")
def trained() -> cfcore.MatrixFactorization:
    load_backend("jax")
    m = cfcore.MatrixFactorization(embedding_dim=4, init_stddev=0.5)
    m.fit(small_ratings(), steps=5, optimizer=SGD(1.0), backend="jax", progress=False)
    return m


def fresh(trained: cfcore.MatrixFactorization, tmp_path: Path) -> cfcore.MatrixFactorization:
    """A copy of the trained model (add_users changes its model)."""
    return cfcore.load(trained.save(tmp_path / "copy.npz"))


# ---------------------------------------------------------------------------- bug 1: int32 ids


def test_ids_beyond_int32_are_refused_not_narrowed():
    # Before: users came back as [3] (2**32 + 3 narrowed to int32).
    with pytest.raises(cfcore.RatingsError, match=r"num_users=4294967301 .* int32"):
        cfcore.Ratings(np.array([2**32 + 3]), [0], [4.0], num_users=2**32 + 5, num_items=5)


def test_largest_int32_catalog_is_accepted():
    r = cfcore.Ratings(np.array([2**31 - 1]), [0], [4.0], num_users=2**31, num_items=1)
    assert r.users.tolist() == [2**31 - 1]


# ---------------------------------------------------------------------------- bug 3: fold-in


def test_fold_in_reg0_one_rating_is_refused(trained):
    # Before: [nan nan nan nan] silently.
    with pytest.raises(ValueError, match=r"reg=0 .* 1 distinct item.*d=4.*singular"):
        trained.fold_in({0: 4.0}, reg=0, backend="numpy")


def test_fold_in_non_finite_result_is_refused(trained):
    # A finite but singular-looking input still cannot come back as NaN: item embeddings with
    # an infinite row make the solve non-finite.
    v = trained.embeddings_numpy()["item"].copy()
    v[0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite embeddings"):
        cfcore.retrieval.fold_in_solve(v, [0, 0], [0, 1], [4.0, 3.0], 1, 1.0, backend="numpy")


def test_recommend_for_a_nan_user_is_an_error(trained, tmp_path):
    m = fresh(trained, tmp_path)
    m._params["user"][3] = np.nan  # a model holding a NaN row (e.g. a bad fold-in, before)
    with pytest.raises(ValueError, match="user row 3 is NaN or infinite"):
        recommend(m, user_index=3, k=5, backend="numpy")


def test_recommend_warns_about_nan_items(trained, tmp_path):
    m = fresh(trained, tmp_path)
    m._params["item"][2] = np.nan
    with pytest.warns(RuntimeWarning, match="1 of 20 item embeddings are NaN"):
        out = recommend(m, user_index=0, k=5, exclude_rated=False, backend="numpy")
    assert 2 not in out.attrs["item_index"]


# ---------------------------------------------------------------------------- bug 4: vocabulary


def test_add_users_string_id_on_integer_vocabulary_keeps_integer_lookups(trained, tmp_path):
    # Before: the vocabulary silently became strings and recommend(model, 0) failed.
    m = fresh(trained, tmp_path)
    with pytest.warns(UserWarning, match=r"\['alice'\] are strings .* becomes strings"):
        m.add_users({0: 4.0, 1: 3.0, 2: 5.0}, user_ids=["alice"], backend="numpy")
    assert m.user_ids[-1] == "alice"
    assert len(recommend(m, 0, k=3, backend="numpy")) == 3
    assert recommend(m, 7, k=3, backend="numpy").attrs["user_index"] == 7
    assert recommend(m, "alice", k=3, backend="numpy").attrs["user_index"] == 30
    assert cfcore.load(m.save(tmp_path / "after.npz")).user_ids[30] == "alice"


def test_add_users_string_id_clashing_with_a_number_is_refused(trained, tmp_path):
    m = fresh(trained, tmp_path)
    with pytest.raises(cfcore.UserRatingsError, match="user id '5' is already a user"):
        m.add_users({0: 4.0, 1: 3.0, 2: 5.0}, user_ids=["5"], backend="numpy")


def test_add_users_integer_id_keeps_the_integer_vocabulary(trained, tmp_path):
    m = fresh(trained, tmp_path)
    m.add_users({0: 4.0, 1: 3.0, 2: 5.0}, user_ids=[np.int32(1000)], backend="numpy")
    assert m.user_ids.dtype.kind == "i"
    assert len(recommend(m, 1000, k=3, backend="numpy")) == 3
    assert len(recommend(m, 0, k=3, backend="numpy")) == 3


# ---------------------------------------------------------------------------- bug 5: device indices


def _native(be, x, dtype):
    return be.asarray(np.asarray(x), dtype)


@pytest.mark.parametrize("bad", [7, -1])
@pytest.mark.parametrize("method", ["gather", "dense"])
def test_out_of_range_device_indices_give_nan_on_every_backend(backend, bad, method):
    u = np.ones((4, 3), np.float32)
    users = _native(backend, [0, bad], "int32")
    items = _native(backend, [0, 1], "int32")
    ratings = _native(backend, [1.0, 2.0], "float32")
    loss = backend.sparse_mse(u, u, users, items, ratings, method=method)
    assert np.isnan(float(backend.to_numpy(loss)))
    good = backend.sparse_mse(
        u, u, _native(backend, [0, 1], "int32"), items, ratings, method=method
    )
    assert float(backend.to_numpy(good)) == pytest.approx(2.5)


def test_out_of_range_device_labels_give_nan_on_every_backend(backend):
    q = np.ones((4, 3), np.float32)
    labels = _native(backend, [0, 1, 2, 9], "int32")
    assert np.isnan(float(backend.to_numpy(backend.softmax_cross_entropy(q, q, labels))))
    assert np.isnan(float(backend.to_numpy(backend.sampled_softmax_loss(q, q, labels))))
    pred = backend.predict({"user": q, "item": q}, _native(backend, [0, 9], "int32"), [1, 1])
    out = backend.to_numpy(pred)
    assert out[0] == pytest.approx(3.0) and np.isnan(out[1])


def test_out_of_range_host_indices_are_an_error_in_predict(backend):
    q = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="user index 9 is out of range for 4 users"):
        backend.predict({"user": q, "item": q}, [0, 9], [1, 1])


# ---------------------------------------------------------------------------- bug 6: file mode


def test_saved_files_get_the_umask_default_mode(trained, tmp_path):
    old = os.umask(0o022)
    try:
        path = trained.save(tmp_path / "m.npz")
        other = atomic_write(tmp_path / "t.txt", lambda p: p.write_text("x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644  # before: 0o600
    assert stat.S_IMODE(os.stat(other).st_mode) == 0o644


# ---------------------------------------------------------------------------- files


def test_stale_temporaries_are_removed_on_the_next_save(trained, tmp_path):
    path = tmp_path / "m.npz"
    dead = tmp_path / ".m.npz.999999999.abcd1234.tmp"  # a writer killed mid-save (pid not running)
    old_style = tmp_path / ".m.npz.k2j3h4.tmp"  # mkstemp name of an older cfcore, 2 hours old
    unrelated = tmp_path / ".other.npz.999999999.abcd1234.tmp"
    for p in (dead, old_style, unrelated):
        p.write_bytes(b"partial")
    os.utime(old_style, (os.path.getmtime(old_style) - 7200,) * 2)
    trained.save(path)
    assert not dead.exists() and not old_style.exists()
    assert unrelated.exists()  # another path's temporaries are not touched
    assert cfcore.load(path).step == trained.step


def test_live_writer_temporary_is_kept(trained, tmp_path):
    live = tmp_path / f".m.npz.{os.getppid()}.abcd1234.tmp"  # pid of a running process
    live.write_bytes(b"in progress")
    trained.save(tmp_path / "m.npz")
    assert live.exists()


def test_atomic_write_fsyncs_before_replace(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(
        os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1]
    )
    atomic_write(tmp_path / "f.txt", lambda p: p.write_text("hello"))
    assert calls[:2] == ["fsync", "replace"]  # the data is on disk before the rename
    assert calls[2:] == ["fsync"]  # and the folder after it


@pytest.mark.parametrize(
    "make_path, match",
    [
        (lambda d: "", "output path is empty"),
        (lambda d: str(d / "a\0b.npz"), "NUL byte"),
        (lambda d: d, "is a folder"),
        (lambda d: d / "afile" / "m.npz", "afile is a file, not a folder"),
        (lambda d: d / "afile" / "sub" / "m.npz", "afile is a file, not a folder"),
    ],
)
def test_save_to_impossible_paths_is_a_clear_error(trained, tmp_path, make_path, match):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileAccessError, match=match):
        trained.save(make_path(tmp_path))
    assert isinstance(FileAccessError("x"), OSError | cfcore.CfcoreError)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_model_is_not_called_damaged(trained, tmp_path):
    path = trained.save(tmp_path / "m.npz")
    os.chmod(path, 0)
    try:
        with pytest.raises(FileAccessError, match="permission denied"):
            cfcore.load(path)
    finally:
        os.chmod(path, 0o644)


def test_unreadable_model_permission_error_is_distinct(trained, tmp_path, monkeypatch):
    # As root os.access says yes: simulate the kernel's refusal instead.
    path = trained.save(tmp_path / "m.npz")
    monkeypatch.setattr(os, "access", lambda p, mode: False)
    with pytest.raises(FileAccessError, match="permission denied") as info:
        cfcore.load(path)
    assert "damaged" not in str(info.value)


def _crafted_npz(path: Path, members: dict[str, tuple[tuple[int, ...], str]]) -> None:
    """An .npz whose members declare huge shapes but hold only zeros (compresses to ~nothing)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, (shape, dtype) in members.items():
            header = {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape}
            with zf.open(name + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_1_0(f, header)
                chunk = bytes(1 << 20)
                left = int(np.prod(shape)) * np.dtype(dtype).itemsize
                while left > 0:
                    f.write(chunk[: min(left, len(chunk))])
                    left -= len(chunk)


def test_crafted_npz_is_refused_from_declared_sizes(trained, tmp_path, monkeypatch):
    path = trained.save(tmp_path / "m.npz")
    arrays = dict(np.load(path))
    meta = arrays.pop("metadata")
    out = tmp_path / "crafted.npz"
    # 64 MiB of user embeddings (declared and stored as zeros), for a model of 30 users.
    _crafted_npz(out, {"user_embeddings": ((1 << 22, 4), "<f4")})
    with zipfile.ZipFile(out, "a") as zf:
        for k, v in {"metadata": meta, **arrays}.items():
            if k != "user_embeddings":
                with zf.open(k + ".npy", "w") as f:
                    np.lib.format.write_array(f, v)
    assert out.stat().st_size < 1 << 20  # under 1 MiB on disk
    loaded = []
    real = np.lib.format.read_array
    monkeypatch.setattr(
        np.lib.format, "read_array", lambda *a, **k: loaded.append(1) or real(*a, **k)
    )
    with pytest.raises(cfcore.ModelFileError, match=r"'user_embeddings' declares \(4194304, 4\)"):
        cfcore.load(out)
    assert len(loaded) <= 1  # at most the small metadata was inflated


def test_npz_beyond_memory_is_refused_before_reading(trained, tmp_path, monkeypatch):
    path = trained.save(tmp_path / "m.npz")
    monkeypatch.setenv("CFCORE_MEMORY_LIMIT", "1K")
    with pytest.raises(
        cfcore.ResourceLimitError, match=r"reading .*m.npz .* more than CFCORE_MEMORY_LIMIT"
    ):
        cfcore.load(path)


# ---------------------------------------------------------------------------- types and resources


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda r: r.split(holdout_fraction="0.1"), "holdout_fraction must be strictly between 0"),
        (lambda r: r.split(seed="0"), "seed must be an int >= 0, got '0' \\(str\\)"),
        (
            lambda r: cfcore.MatrixFactorization(3, init_stddev="0.1"),
            "init_stddev must be a finite",
        ),
        (lambda r: SGD("10"), "learning_rate must be a finite number > 0, got '10' \\(str\\)"),
        (lambda r: SGD(True), "learning_rate .* got True \\(bool\\)"),
        (
            lambda r: cfcore.MatrixFactorization(True),
            "embedding_dim must be a positive int, got True",
        ),
        (
            lambda r: cfcore.MatrixFactorization(4.0),
            "embedding_dim must be a positive int, got 4.0",
        ),
        (lambda r: cfcore.optimizers.Adam(0.1, b1="0.9"), "b1 must be in \\[0, 1\\)"),
        (lambda r: cfcore.RegularizedMF(3, gravity_coeff=None), "gravity_coeff .* got None"),
    ],
)
def test_wrong_types_name_the_argument(call, match):
    with pytest.raises(ArgumentTypeError, match=match) as info:
        call(small_ratings())
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


def test_numpy_integers_accepted_consistently():
    m = cfcore.MatrixFactorization(np.int64(4), init_stddev=np.float32(0.5))
    assert m.spec.embedding_dim == 4 and type(m.spec.embedding_dim) is int
    assert cfcore.optimizers.SGD(np.int64(2)).learning_rate == 2.0
    spec = cfcore.specs.SoftmaxSpec({"movie_id": np.int32(3)}, hidden_dims=(np.int64(3),))
    assert spec.hidden_dims == (3,) and spec.to_dict()["feature_dims"] == {"movie_id": 3}
    train, _ = small_ratings().split(holdout_fraction=np.float64(0.2), seed=np.int64(1))
    assert len(train) == 144


def test_wrong_values_are_value_errors():
    with pytest.raises(ArgumentValueError, match="embedding_dim must be a positive int, got 0"):
        cfcore.MatrixFactorization(0)
    with pytest.raises(ArgumentValueError, match="learning_rate must be a finite number > 0"):
        SGD(float("inf"))


def test_fit_wrong_step_types(trained):
    for kwargs, match in [
        (dict(steps="10"), "steps must be a positive int, got '10'"),
        (dict(steps=True), "steps must be a positive int, got True"),
        (dict(steps=5, batch_size=True), "batch_size must be an int in"),
        (dict(steps=5, seed=1.5), "seed must be an int >= 0, got 1.5"),
    ]:
        m = cfcore.MatrixFactorization(3)
        with pytest.raises(ArgumentTypeError, match=match):
            m.fit(small_ratings(), optimizer=SGD(1.0), backend="jax", progress=False, **kwargs)


def test_predict_with_scalars(trained):
    one = trained.predict(0, 1)
    both = trained.predict([0], [1])
    np.testing.assert_array_equal(one, both)


def test_huge_embedding_dim_refused_before_allocating():
    m = cfcore.MatrixFactorization(embedding_dim=10**9)
    with pytest.raises(
        cfcore.ResourceLimitError, match=r"embedding_dim=1000000000 .* TiB.*lower embedding_dim"
    ) as info:
        m.fit(small_ratings(1000, 2000), steps=1, optimizer=SGD(1.0), backend="jax", progress=False)
    assert info.value.nbytes > 10**13 and isinstance(info.value, MemoryError)
    assert m.step == 0


def test_dense_mse_too_big_is_refused(monkeypatch):
    monkeypatch.setenv("CFCORE_MEMORY_LIMIT", "2K")
    m = cfcore.MatrixFactorization(embedding_dim=1, mse="dense")
    with pytest.raises(cfcore.ResourceLimitError, match=r'mse="dense" .* use mse="gather"'):
        m.fit(small_ratings(), steps=1, optimizer=SGD(1.0), backend="jax", progress=False)


def test_training_state_too_big_is_refused(monkeypatch):
    # 50 x 4 float32 per table = 800 B of parameters; Adam keeps 8 copies: 6.4 KB.
    monkeypatch.setenv("CFCORE_MEMORY_LIMIT", "5K")
    r = small_ratings(n_users=30, n_items=20)
    cfcore.MatrixFactorization(4).fit(r, steps=1, optimizer=SGD(1.0), backend="jax", progress=False)
    with pytest.raises(cfcore.ResourceLimitError, match=r"training .*8 copies.*Adam two"):
        cfcore.MatrixFactorization(4).fit(
            r, steps=1, optimizer=cfcore.optimizers.Adam(0.1), backend="jax", progress=False
        )


# ---------------------------------------------------------------------------- errors


def test_every_cfcore_error_is_a_cfcore_error_and_keeps_its_builtin_base():
    pairs = {
        cfcore.RatingsError: ValueError,
        cfcore.DatasetError: OSError,
        cfcore.BackendError: ValueError,
        cfcore.ModelFileError: ValueError,
        cfcore.TrainingDivergedError: FloatingPointError,
        cfcore.UserRatingsError: ValueError,
        cfcore.ResourceLimitError: MemoryError,
        cfcore.FileAccessError: OSError,
        cfcore.ArgumentValueError: ValueError,
        cfcore.ArgumentTypeError: TypeError,
        cfcore.NotSupportedError: NotImplementedError,
        cfcore.NotFittedError: RuntimeError,
        cfcore.NumericalError: FloatingPointError,
        cfcore.MissingDependencyError: ImportError,
    }
    for cls, base in pairs.items():
        assert issubclass(cls, cfcore.CfcoreError) and issubclass(cls, base), cls


def test_backend_of_wrong_type_is_a_backend_error():
    with pytest.raises(cfcore.BackendError, match="backend instance 123 does not implement"):
        cfcore.MatrixFactorization(3).fit(
            small_ratings(), steps=1, optimizer=SGD(1.0), backend=123, progress=False
        )


# ---------------------------------------------------------------------------- data files


def _copy_100k(tmp_path: Path, mutate) -> Path:
    src = DATA_DIR / "ml-100k"
    if not (src / "u.data").exists():
        pytest.skip(f"MovieLens copy not found under {DATA_DIR}")
    dst = tmp_path / "ml-100k"
    dst.mkdir()
    for name in ("u.item", "u.user"):
        (dst / name).write_bytes((src / name).read_bytes())
    lines = (src / "u.data").read_text().splitlines()
    (dst / "u.data").write_text("\n".join(mutate(lines)) + "\n")
    return dst


@pytest.mark.parametrize(
    "mutate, match",
    [
        (
            lambda L: L[:2] + ["196\tabc\t3\t881250949"] + L[2:],
            r"line 3: item_id is 'abc', not an integer",
        ),
        (lambda L: L[:4] + [L[4] + "\t7"] + L[5:], r"line 5 has 5 fields, expected 4"),
        (lambda L: [x + "\t7" for x in L], r"line 1 has 5 fields, expected 4"),
        (lambda L: L[:6] + ["196\t242\tNA\t881250949"] + L[6:], r"line 7: rating is missing"),
        (lambda L: L[:6] + ["196\t242"] + L[6:], r"line 7 has 2 fields"),
    ],
    ids=["malformed", "extra-column-one-line", "extra-column-every-line", "NA", "short-line"],
)
def test_malformed_data_file_names_file_and_line(tmp_path, mutate, match):
    folder = _copy_100k(tmp_path, mutate)
    with pytest.raises(cfcore.DatasetError, match=r"ml-100k/u\.data, " + match):
        cfcore.datasets.load_movielens("100k", data_dir=folder)


def test_dataset_name_that_is_a_missing_path():
    with pytest.raises(ValueError, match="looks like a path .*no such folder or zip"):
        cfcore.datasets.load_movielens("/nonexistent/ml-100k")


def test_frame_read_error_without_a_line_is_still_named(tmp_path):
    folder = _copy_100k(tmp_path, lambda L: L)
    (folder / "u.data").write_bytes(b"\x00\x01\x02")
    with pytest.raises(cfcore.DatasetError, match=r"u\.data"):
        cfcore.datasets.load_movielens("100k", data_dir=folder)


def test_first_bad_line_with_header_and_quotes():
    from cfcore.data.csv_check import first_bad_line

    text = 'movieId,title,genres\n1,"Toy Story, The (1995)",Comedy\nx,"B",Drama\n'
    assert first_bad_line(text, dtype={"movieId": np.int64}) == (
        "line 3: movieId is 'x', not an integer: 'x,\"B\",Drama'"
    )
    assert first_bad_line(text.replace("x,", "2,"), dtype={"movieId": np.int64}) is None


# ---------------------------------------------------------------------------- command line


def _cli(*args: str):
    import re

    from typer.testing import CliRunner

    from cfcore.cli import app

    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "FORCE_COLOR": None})
    return result, " ".join(re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.output).split())


def _assert_clean_failure(result, text: str, *needles: str) -> None:
    assert result.exit_code == 1, text
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in text and "error:" in text
    for needle in needles:
        assert needle in text, f"{needle!r} not in {text!r}"


def _train_args(out: Path) -> list[str]:
    if not (DATA_DIR / "ml-100k" / "u.data").exists():
        pytest.skip(f"MovieLens copy not found under {DATA_DIR}")
    return ["train", "--model", "mf", "--data-dir", str(DATA_DIR), "--out", str(out),
            "--no-progress", "--steps", "2", "--dim", "2", "--backend", "jax"]  # fmt: skip


def test_train_out_onto_a_file_fails_before_training(tmp_path, monkeypatch):
    target = tmp_path / "a_file"
    target.write_text("x")
    fitted = []
    monkeypatch.setattr(
        cfcore.MatrixFactorization, "fit", lambda *a, **k: fitted.append(1) or pd_never()
    )
    result, text = _cli(*_train_args(target))
    _assert_clean_failure(result, text, "a_file is a file, not a folder")
    assert not fitted  # refused before any training


def pd_never():  # pragma: no cover - fit is never reached in the test above
    raise AssertionError("fit must not run")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_train_out_in_a_read_only_folder_fails_before_training(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    try:
        result, text = _cli(*_train_args(ro / "run"))
    finally:
        os.chmod(ro, 0o755)
    _assert_clean_failure(result, text, "permission denied")


def test_train_never_loses_the_model_to_an_output_error(tmp_path, monkeypatch):
    import cfcore.cli.train as cli_train

    out = tmp_path / "run"
    real = cli_train._write_files
    calls = []

    def flaky(folder, *args):
        calls.append(folder)
        if folder == out:  # the disk fills up after training
            raise OSError(28, "No space left on device")
        return real(folder, *args)

    monkeypatch.setattr(cli_train, "_write_files", flaky)
    result, text = _cli(*_train_args(out))
    _assert_clean_failure(result, text, "could not write the run to", "No space left on device")
    rescue = calls[-1]
    assert rescue != out and "The trained model was saved to" in text
    assert cfcore.load(rescue / "model.npz").step == 2


def test_plot_truncated_embeddings_is_a_clear_error(tmp_path):
    path = tmp_path / "embeddings.npz"
    np.savez(path, user=np.ones((5, 2), np.float32), item=np.ones((7, 2), np.float32))
    path.write_bytes(path.read_bytes()[:-40])  # truncated: before, a BadZipFile traceback
    result, text = _cli("plot", "--embeddings", str(path), "--out", str(tmp_path / "p"))
    _assert_clean_failure(result, text, "embeddings.npz", "not a valid .npz archive")


def test_train_dataset_that_is_a_missing_path(tmp_path):
    result, text = _cli("train", "--dataset", "/nonexistent", "--out", str(tmp_path))
    _assert_clean_failure(result, text, "no such folder or zip: '/nonexistent'")
