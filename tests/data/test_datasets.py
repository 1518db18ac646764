"""MovieLens loaders, read against the real releases (read-only) in the tests' data folder
(`tests/_support/data_source.py`: a local copy, else downloaded once into the cache).

Every test runs with `CFCORE_DATA_DIR` pointing into its own `tmp_path` and with `pooch.retrieve`
replaced, so nothing here touches the network, the user's cache or the shared data folder.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import platformdirs
import pooch
import pytest

from cfcore.data.movielens import FOLDS_100K, DatasetError, MovieLens, load_movielens
from cfcore.data.ratings import Ratings

from ..conftest import DATA_DIR as DATA

ML100K = DATA / "ml-100k"
LATEST = DATA / "ml-latest-small"
URL_100K = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
KEY_100K = ("u.data", "u.item", "u.user")
KEY_LATEST = ("ratings.csv", "movies.csv")

# The fixtures find or download the release, else skip (fail in CI) saying how to point at a copy.
needs_100k = pytest.mark.usefixtures("ml100k_files")
needs_latest = pytest.mark.usefixtures("latest_files")


# ---------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache per test, and a `pooch.retrieve` that fails the test if it is called."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CFCORE_DATA_DIR", str(cache))

    def no_download(*args: object, **kwargs: object) -> str:
        raise AssertionError(f"unexpected download: {args} {kwargs}")

    monkeypatch.setattr(pooch, "retrieve", no_download)
    return cache


@pytest.fixture(scope="module")
def ml(ml100k_files: Path) -> MovieLens:
    return load_movielens("100k", DATA, download=False)


@pytest.fixture(scope="module")
def latest(latest_files: Path) -> MovieLens:
    return load_movielens("latest-small", DATA, download=False)


def raw_rows(path: Path, delimiter: str, encoding: str = "ascii") -> list[list[str]]:
    with open(path, newline="", encoding=encoding) as f:
        return list(csv.reader(f, delimiter=delimiter))


def make_zip(
    dest: Path,
    src: Path = ML100K,
    names: tuple[str, ...] = KEY_100K,
    prefix: str = "ml-100k/",
    replace: dict[str, bytes] | None = None,
    compression: int = zipfile.ZIP_DEFLATED,
) -> Path:
    """Zips files of a release as GroupLens does (`ml-100k/u.data`, ...), optionally altered."""
    replace = replace or {}
    with zipfile.ZipFile(dest, "w", compression=compression, compresslevel=1) as zf:
        for name in names:
            data = replace.get(name, (src / name).read_bytes())
            zf.writestr(prefix + name, data)
    return dest


def fake_retrieve(monkeypatch: pytest.MonkeyPatch, payload: Path) -> list[dict]:
    """Makes `pooch.retrieve` copy `payload` where it is asked to download; returns the calls."""
    calls: list[dict] = []

    def retrieve(url: str, known_hash: str | None = None, **kwargs: object) -> str:
        calls.append({"url": url, **kwargs})
        out = Path(str(kwargs["path"])) / str(kwargs["fname"])
        out.write_bytes(payload.read_bytes())
        return str(out)

    monkeypatch.setattr(pooch, "retrieve", retrieve)
    return calls


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


# ---------------------------------------------------------------------------- MovieLens 100K


@needs_100k
def test_100k_sizes_and_dtypes(ml: MovieLens) -> None:
    r = ml.ratings
    assert isinstance(r, Ratings)
    assert (len(r), r.num_users, r.num_items) == (100_000, 943, 1682)
    assert r.users.dtype == np.int32 and r.items.dtype == np.int32
    assert r.values.dtype == np.float32 and r.timestamps.dtype == np.int64
    assert set(np.unique(r.values)) == {1.0, 2.0, 3.0, 4.0, 5.0}
    # 100K ids are 1..N, so index = id - 1 for both users and items.
    np.testing.assert_array_equal(r.user_ids, np.arange(1, 944))
    np.testing.assert_array_equal(r.item_ids, np.arange(1, 1683))
    assert r.catalog is ml.items
    assert ml.name == "100k" and ml.path == ML100K


@needs_100k
def test_100k_ratings_match_raw_file(ml: MovieLens) -> None:
    rows = raw_rows(ML100K / "u.data", "\t")
    assert len(rows) == 100_000
    r = ml.ratings
    for i in [0, 1, 2, 3, 12_345, 99_999]:
        user, item, rating, ts = (int(x) for x in rows[i])
        assert r.user_ids[r.users[i]] == user and r.users[i] == user - 1
        assert r.item_ids[r.items[i]] == item and r.items[i] == item - 1
        assert r.values[i] == rating and r.timestamps[i] == ts
    assert (r.users[0], r.items[0], r.values[0]) == (195, 241, 3.0)  # "196 242 3 881250949"


@needs_100k
def test_100k_items(ml: MovieLens) -> None:
    items = ml.items
    assert len(items) == 1682 and list(items.index) == list(range(1682))
    assert ml.genres == [
        "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
        "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
        "Romance", "Sci-Fi", "Thriller", "War", "Western",
    ]  # fmt: skip
    assert list(items.columns) == ["item_id", "title", "year", *ml.genres, "all_genres", "genre"]
    raw = raw_rows(ML100K / "u.item", "|", encoding="latin-1")
    for i in [0, 1, 266, 1681]:
        assert items.at[i, "item_id"] == int(raw[i][0])
        assert items.at[i, "title"] == raw[i][1]
        assert [int(x) for x in raw[i][5:]] == items.loc[i, ml.genres].tolist()
    assert items.at[0, "title"] == "Toy Story (1995)" and items.at[0, "year"] == 1995
    assert str(items["year"].dtype) == "Int64"
    assert pd.isna(items.at[266, "year"])  # movie 267 "unknown" has no release date
    assert items["year"].notna().sum() == 1681


@needs_100k
def test_100k_latin1_titles(ml: MovieLens) -> None:
    raw = raw_rows(ML100K / "u.item", "|", encoding="latin-1")
    accented = [(int(row[0]), row[1]) for row in raw if not row[1].isascii()]
    assert accented, "u.item should hold accented titles"
    for movie_id, title in accented:
        assert ml.items.at[movie_id - 1, "title"] == title
    assert "Misérables, Les (1995)" in set(ml.items["title"])


@needs_100k
def test_genre_labels_are_consistent(ml: MovieLens) -> None:
    flags = ml.items[ml.genres].to_numpy()
    assert set(np.unique(flags)) <= {0, 1}
    for row, all_genres, genre in zip(
        flags, ml.items["all_genres"], ml.items["genre"], strict=True
    ):
        active = [g for g, f in zip(ml.genres, row, strict=True) if f]
        assert all_genres == ("-".join(active) if active else "Other")
        assert genre in active if active else genre == "Other"
    assert ml.items.at[0, "all_genres"] == "Animation-Children's-Comedy"


@needs_100k
def test_genre_draw_follows_the_seed(ml: MovieLens) -> None:
    again = load_movielens("100k", DATA, genre_seed=0)
    other = load_movielens("100k", DATA, genre_seed=1)
    assert again.items["genre"].tolist() == ml.items["genre"].tolist()
    # About 900 movies have several genres: another seed changes some of their labels.
    changed = (other.items["genre"] != ml.items["genre"]).sum()
    assert changed > 100
    assert other.items["all_genres"].tolist() == ml.items["all_genres"].tolist()
    # Every active genre gets drawn for some multi-genre movie, not always the first one.
    multi = ml.items[ml.items["all_genres"].str.contains("-")]
    first = multi["all_genres"].str.split("-").str[0]
    assert (multi["genre"] != first).mean() > 0.3


@needs_100k
def test_100k_users(ml: MovieLens) -> None:
    users = ml.users
    assert list(users.columns) == ["user_id", "age", "sex", "occupation", "zip_code"]
    assert len(users) == 943 and users["user_id"].tolist() == list(range(1, 944))
    raw = raw_rows(ML100K / "u.user", "|")
    for i in [0, 942]:
        assert [str(v) for v in users.iloc[i]] == raw[i]
    # Zip codes stay strings: some are not numbers and leading zeros must survive.
    assert not users["zip_code"].str.isdigit().all()
    assert users["zip_code"].str.startswith("0").any()


@needs_100k
def test_ratings_frame(ml: MovieLens) -> None:
    frame = ml.ratings_frame()
    assert len(frame) == 100_000
    assert list(frame.columns[:4]) == ["user_id", "item_id", "rating", "timestamp"]
    assert {"title", "year", "genre", "all_genres", "age", "occupation", *ml.genres} <= set(frame)
    first = frame.iloc[0]
    assert (first["user_id"], first["item_id"], first["rating"]) == (196, 242, 3.0)
    assert first["title"] == ml.items.at[241, "title"]
    assert first["occupation"] == ml.users.at[195, "occupation"]
    # Same content as a plain merge on the original ids.
    merged = frame[["user_id", "item_id"]].merge(ml.users, on="user_id", how="left")
    assert (merged["age"].to_numpy() == frame["age"].to_numpy()).all()


@needs_100k
def test_load_is_fast() -> None:
    import time

    start = time.perf_counter()
    load_movielens("100k", ML100K)
    assert time.perf_counter() - start < 2.0


# ---------------------------------------------------------------------------- folds


@needs_100k
def test_fold_u1_sizes(ml: MovieLens) -> None:
    train, test = ml.fold("u1")
    assert (len(train), len(test)) == (80_000, 20_000)
    for part in (train, test):
        assert (part.num_users, part.num_items) == (943, 1682)
        np.testing.assert_array_equal(part.item_ids, ml.ratings.item_ids)
        np.testing.assert_array_equal(part.user_ids, ml.ratings.user_ids)
        assert part.timestamps is not None and part.catalog is ml.items
    raw = raw_rows(ML100K / "u1.test", "\t")[0]
    assert (test.users[0] + 1, test.items[0] + 1, test.values[0], test.timestamps[0]) == tuple(
        int(x) for x in raw
    )


@needs_100k
def test_folds_u1_to_u5_tests_partition_the_data(ml: MovieLens) -> None:
    def keys(r: Ratings) -> np.ndarray:
        return r.users.astype(np.int64) * 10_000 + r.items

    all_keys = keys(ml.ratings)
    tests = []
    for name in ["u1", "u2", "u3", "u4", "u5"]:
        train, test = ml.fold(name)
        assert len(train) + len(test) == 100_000
        assert np.intersect1d(keys(train), keys(test)).size == 0
        tests.append(keys(test))
    np.testing.assert_array_equal(np.sort(np.concatenate(tests)), np.sort(all_keys))


@needs_100k
@pytest.mark.parametrize("name", ["ua", "ub"])
def test_fold_ua_ub_hold_ten_per_user(ml: MovieLens, name: str) -> None:
    train, test = ml.fold(name)
    assert (len(train), len(test)) == (90_570, 9_430)
    assert set(Counter(test.users.tolist()).values()) == {10}
    assert len(set(test.users.tolist())) == 943
    assert (test.num_users, test.num_items) == (943, 1682)


@needs_100k
def test_fold_errors(ml: MovieLens, latest: MovieLens) -> None:
    with pytest.raises(ValueError, match="'u6'.*u1, u2, u3, u4, u5, ua, ub"):
        ml.fold("u6")
    assert FOLDS_100K == ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
    with pytest.raises(ValueError, match="only for MovieLens 100k"):
        latest.fold("u1")


@needs_100k
def test_missing_fold_file_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    for name in [*KEY_100K, "u1.base"]:  # u1.test left out
        (folder / name).symlink_to(ML100K / name)
    ml = load_movielens("100k", folder)
    with pytest.raises(DatasetError, match=r"u1\.test"):
        ml.fold("u1")


# ---------------------------------------------------------------------------- ml-latest-small


@needs_latest
def test_latest_small(latest: MovieLens) -> None:
    r = latest.ratings
    assert (len(r), r.num_users, r.num_items) == (100_836, 610, 9742)
    assert r.values.dtype == np.float32
    assert set(np.unique(r.values)) == set(np.arange(1, 11) / 2)
    assert np.unique(r.items).size == 9724  # 18 movies of the catalog are never rated
    assert latest.name == "latest-small" and latest.path == LATEST
    # The first data row is "1,1,4.0,964982703".
    assert (r.user_ids[r.users[0]], r.item_ids[r.items[0]], r.values[0]) == (1, 1, 4.0)
    assert r.timestamps[0] == 964982703
    assert latest.users["user_id"].tolist() == sorted(set(latest.users["user_id"]))
    assert list(latest.users.columns) == ["user_id"] and len(latest.users) == 610


@needs_latest
def test_latest_small_items(latest: MovieLens) -> None:
    items = latest.items
    assert len(items) == 9742 and items["item_id"].is_monotonic_increasing
    np.testing.assert_array_equal(latest.ratings.item_ids, items["item_id"].to_numpy())
    assert "(no genres listed)" not in latest.genres and "IMAX" in latest.genres
    assert list(items.columns) == [
        "item_id",
        "title",
        "year",
        *latest.genres,
        "all_genres",
        "genre",
    ]
    raw = {int(row[0]): row for row in raw_rows(LATEST / "movies.csv", ",", "utf-8")[1:]}
    none = [mid for mid, row in raw.items() if row[2] == "(no genres listed)"]
    assert none
    by_id = items.set_index("item_id")
    assert (by_id.loc[none, "all_genres"] == "Other").all()
    assert (by_id.loc[none, "genre"] == "Other").all()
    assert (by_id.loc[none, latest.genres].to_numpy() == 0).all()
    assert by_id.at[1, "title"] == "Toy Story (1995)" and by_id.at[1, "year"] == 1995
    assert by_id.at[1, "all_genres"] == "Adventure-Animation-Children-Comedy-Fantasy"
    for mid in [1, 2, 193609]:
        assert by_id.at[mid, "title"] == raw[mid][1]
        assert set(by_id.at[mid, "all_genres"].split("-")) == set(raw[mid][2].split("|"))
    # A dozen titles carry no year.
    assert 0 < items["year"].isna().sum() < 20


# ---------------------------------------------------------------------------- where data comes from


@needs_100k
@pytest.mark.parametrize("where", ["release folder", "parent folder", "zip", "zip without folder"])
def test_explicit_data_dir(tmp_path: Path, where: str) -> None:
    if where == "release folder":
        data_dir = ML100K
    elif where == "parent folder":
        data_dir = DATA
    else:
        prefix = "ml-100k/" if where == "zip" else ""
        data_dir = make_zip(tmp_path / "copy.zip", prefix=prefix)
    ml = load_movielens("ml-100k", data_dir, download=False)
    assert (len(ml.ratings), ml.ratings.num_items) == (100_000, 1682)
    assert ml.items.at[0, "title"] == "Toy Story (1995)"
    assert not (tmp_path / "cache").exists()  # an explicit path is read in place


@needs_100k
def test_folds_from_a_zip(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "ml-100k.zip", names=(*KEY_100K, "ua.base", "ua.test"))
    ml = load_movielens("100k", path)
    assert [len(part) for part in ml.fold("ua")] == [90_570, 9_430]
    with pytest.raises(DatasetError, match=r"u1\.base"):
        ml.fold("u1")


@needs_100k
def test_explicit_data_dir_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_movielens("100k", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="u.data"):
        load_movielens("100k", tmp_path)  # an empty folder
    not_zip = tmp_path / "notes.txt"
    not_zip.write_text("hello")
    with pytest.raises(DatasetError, match="not a valid zip"):
        load_movielens("100k", not_zip)
    assert not_zip.exists()  # a user's file is never deleted
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ["u.data", "u.item"]:
        (partial / name).symlink_to(ML100K / name)
    with pytest.raises(DatasetError, match=r"u\.user"):
        load_movielens("100k", partial)


@needs_100k
def test_cache_dir_env_is_used_without_download(isolated: Path) -> None:
    isolated.mkdir()
    (isolated / "ml-100k").symlink_to(ML100K)
    ml = load_movielens("100k")  # pooch.retrieve raises if called
    assert ml.path == isolated / "ml-100k"
    assert len(ml.ratings) == 100_000


@needs_latest
def test_cache_dir_env_latest_small(isolated: Path) -> None:
    isolated.mkdir()
    (isolated / "ml-latest-small").symlink_to(LATEST)
    assert len(load_movielens("ml-latest-small").ratings) == 100_836


@needs_100k
def test_default_cache_is_platformdirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CFCORE_DATA_DIR")
    default = tmp_path / "user-cache"
    default.mkdir()
    (default / "ml-100k").symlink_to(ML100K)
    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda appname: str(default))
    assert load_movielens("100k").path == default / "ml-100k"


# ---------------------------------------------------------------------------- downloads (faked)


@needs_100k
def test_download_good_zip(tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_retrieve(monkeypatch, make_zip(tmp_path / "good.zip"))
    ml = load_movielens("100k")
    assert [c["url"] for c in calls] == [URL_100K]
    assert Path(str(calls[0]["path"])) == isolated
    assert ml.path == isolated / "ml-100k"
    assert len(ml.ratings) == 100_000
    # Only the verified release folder is left: no zip, no temporary folder.
    assert leftovers(isolated) == ["ml-100k"]
    assert sorted(p.name for p in ml.path.iterdir()) == sorted(KEY_100K)
    # The next load reads the cache.
    monkeypatch.setattr(pooch, "retrieve", lambda *a, **k: pytest.fail("downloaded twice"))
    assert len(load_movielens("100k").ratings) == 100_000


@needs_latest
def test_download_latest_small(
    tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = make_zip(
        tmp_path / "good.zip", src=LATEST, names=KEY_LATEST, prefix="ml-latest-small/"
    )
    calls = fake_retrieve(monkeypatch, payload)
    ml = load_movielens("latest-small")
    assert calls[0]["url"] == "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"
    assert (len(ml.ratings), ml.ratings.num_items) == (100_836, 9742)
    assert leftovers(isolated) == ["ml-latest-small"]


def _truncated(name: str) -> dict[str, bytes]:
    return {name: (ML100K / name).read_bytes()[:-1000]}


def _flipped(name: str) -> dict[str, bytes]:
    data = bytearray((ML100K / name).read_bytes())
    data[len(data) // 2] ^= 0x01  # "3" <-> "2" and the like: still a plausible file
    return {name: bytes(data)}


@needs_100k
@pytest.mark.parametrize(
    ("replace", "bad"),
    [
        (lambda: _truncated("u.data"), "u.data"),
        (lambda: _flipped("u.data"), "u.data"),
        (lambda: _flipped("u.item"), "u.item"),
        (lambda: _truncated("u.user"), "u.user"),
    ],
    ids=["u.data truncated", "u.data flipped", "u.item flipped", "u.user truncated"],
)
def test_download_checksum_mismatch(
    tmp_path: Path,
    isolated: Path,
    monkeypatch: pytest.MonkeyPatch,
    replace,
    bad: str,
) -> None:
    # `replace` is built lazily so that collection does not read the data folder.
    fake_retrieve(monkeypatch, make_zip(tmp_path / "bad.zip", replace=replace()))
    with pytest.raises(DatasetError) as info:
        load_movielens("100k")
    message = str(info.value)
    assert "checksum" in message and f"ml-100k/{bad}" in message
    assert "corrupt or partial" in message and "removed" in message and "retry" in message
    assert leftovers(isolated) == []


@needs_100k
def test_download_missing_file(
    tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_retrieve(monkeypatch, make_zip(tmp_path / "bad.zip", names=("u.data", "u.item")))
    with pytest.raises(DatasetError, match=r"no ml-100k/u\.user"):
        load_movielens("100k")
    assert leftovers(isolated) == []


def _corrupt_zip(tmp_path: Path, how: str) -> Path:
    if how == "not a zip":
        path = tmp_path / "page.html"
        path.write_text("<html>Service unavailable</html>")
        return path
    good = make_zip(tmp_path / "good.zip", compression=zipfile.ZIP_STORED).read_bytes()
    path = tmp_path / "bad.zip"
    if how == "cut in half":
        path.write_bytes(good[: len(good) // 2])
    else:  # one byte flipped inside u.data (stored first, the bulk of the zip): a CRC error
        data = bytearray(good)
        data[len(data) // 3] ^= 0xFF
        path.write_bytes(bytes(data))
    return path


@needs_100k
@pytest.mark.parametrize("how", ["not a zip", "cut in half", "byte flipped"])
def test_download_corrupt_zip(
    tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    fake_retrieve(monkeypatch, _corrupt_zip(tmp_path, how))
    with pytest.raises(DatasetError, match="corrupt or partial.*removed.*retry"):
        load_movielens("100k")
    assert leftovers(isolated) == []


def test_download_network_failure(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> str:
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(pooch, "retrieve", offline)
    with pytest.raises(DatasetError) as info:
        load_movielens("100k")
    message = str(info.value)
    assert URL_100K in message and "CFCORE_DATA_DIR" in message
    assert "Name or service not known" in message
    assert not (isolated / "ml-100k").exists()


def test_offline_without_copy(isolated: Path) -> None:
    isolated.mkdir()
    with pytest.raises(DatasetError) as info:
        load_movielens("100k", download=False)
    message = str(info.value)
    assert URL_100K in message and "CFCORE_DATA_DIR" in message
    assert str(isolated / "ml-100k") in message
    assert leftovers(isolated) == []


def test_unknown_name() -> None:
    with pytest.raises(ValueError, match="'2m'.*'100k'.*'1m'.*'25m'.*'latest-small'"):
        load_movielens("2m")


def test_dataset_error_is_an_os_error() -> None:
    assert issubclass(DatasetError, OSError)


def test_zip_of_another_release_is_rejected(tmp_path: Path) -> None:
    # A zip of an unrelated release is rejected by name, without extracting anything.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-latest-small/ratings.csv", "userId,movieId,rating,timestamp\n")
    path = tmp_path / "other.zip"
    path.write_bytes(buf.getvalue())
    with pytest.raises(DatasetError, match=r"holds no u\.data"):
        load_movielens("100k", path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.zip"]
