"""MovieLens 1M, 10M, 20M, 25M and latest, read from small fake releases in each real file layout.

The full releases are far too big for tests (and cannot be downloaded here), so each test writes a
tiny release into `tmp_path` with the files, separators, headers, encodings and folder names
GroupLens uses, and checks what the loader makes of it against the values written. Nothing here
touches the network: `pooch.retrieve` is replaced as in `test_datasets.py`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pooch
import pytest

from cfcore.data import movielens
from cfcore.data.movielens import DatasetError, guess_release, load_movielens, release_name

# name -> (folder inside the zip, zip name on the GroupLens server)
LAYOUT = {
    "1m": ("ml-1m", "ml-1m.zip"),
    "10m": ("ml-10M100K", "ml-10m.zip"),
    "20m": ("ml-20m", "ml-20m.zip"),
    "25m": ("ml-25m", "ml-25m.zip"),
    "latest": ("ml-latest", "ml-latest.zip"),
}
RELEASES = tuple(LAYOUT)
BASE_URL = "https://files.grouplens.org/datasets/movielens/"

# Movies of the fake catalog: (id, title, genres). Ids have gaps as in the real files; titles
# carry commas, colons, accents, a year range, trailing spaces and no year at all.
MOVIES = [
    (1, "Toy Story (1995)", "Adventure|Animation|Children|Comedy|Fantasy"),
    (2, "Jumanji (1995)", "Adventure|Children|Fantasy"),
    (11, "American President, The (1995)", "Comedy|Drama|Romance"),
    (29, "City of Lost Children, The (Cité des enfants perdus, La) (1995)", "Adventure|Drama"),
    (260, "Star Wars: Episode IV - A New Hope (1977)", "Action|Adventure|Sci-Fi"),
    (3010, "Rosetta (1999)", "Drama"),
    (5000, "Some Series (2006–2007)", "Comedy|IMAX"),
    (7000, "Misérables, Les (1995)", "Drama|War"),
    (9000, "Untitled Short", "(no genres listed)"),
    (12345, "Trailing Space (2010) ", "Horror"),
    (193609, "Never Rated (2018)", "Documentary"),  # nobody rates it: still in the catalog
]
RATED_MOVIES = [m[0] for m in MOVIES if m[0] != 193609]
OCCUPATION_NAMES = {0: "other", 4: "college/grad student", 12: "programmer", 20: "writer"}


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache per test, and a `pooch.retrieve` that fails the test if it is called."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CFCORE_DATA_DIR", str(cache))

    def no_download(*args: object, **kwargs: object) -> str:
        raise AssertionError(f"unexpected download: {args} {kwargs}")

    monkeypatch.setattr(pooch, "retrieve", no_download)
    return cache


def fake_ratings(name: str, seed: int = 0) -> pd.DataFrame:
    """Distinct (user, movie) pairs with ratings on the release's scale and timestamps."""
    rng = np.random.default_rng(seed)
    users = np.array([1, 2, 3, 5, 8, 13, 21, 34, 55, 71567])
    pairs = [(u, m) for u in users for m in RATED_MOVIES if rng.random() < 0.5]
    # Every user and every rated movie occurs at least once.
    pairs += [(u, RATED_MOVIES[j % len(RATED_MOVIES)]) for j, u in enumerate(users)]
    pairs += [(users[j % len(users)], m) for j, m in enumerate(RATED_MOVIES)]
    frame = pd.DataFrame(sorted(set(pairs)), columns=["user_id", "item_id"])
    half_stars = name != "1m"  # 1M has whole stars only
    steps = rng.integers(1 if half_stars else 2, 11, len(frame))
    frame["rating"] = (steps / 2 if half_stars else steps // 2).astype(np.float32)
    frame["timestamp"] = rng.integers(800_000_000, 1_600_000_000, len(frame))
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # file order


def fake_users() -> pd.DataFrame:
    users = np.array([1, 2, 3, 5, 8, 13, 21, 34, 55, 71567])
    return pd.DataFrame(
        {
            "user_id": users,
            "sex": ["F", "M"] * 5,
            "age": [1, 18, 25, 35, 45, 50, 56, 18, 25, 35],
            "occupation": [0, 4, 12, 20, 0, 4, 12, 20, 0, 4],
            "zip_code": ["48067", "02460", "55117", "98107-4019", "T8H1N", "1", "2", "3", "4", "5"],
        }
    )


def _num(x: float) -> str:
    return f"{x:g}" if x != int(x) else str(int(x))


def written_title(name: str, title: str) -> str:
    # Latin-1 has no en dash: 1M's year ranges (if it had any) would use a hyphen.
    return title.replace("–", "-") if name == "1m" else title


def _genres_1m(genres: str) -> str:
    return genres.replace("Children", "Children's")


def write_release(root: Path, name: str, ratings: pd.DataFrame) -> Path:
    """Writes a fake `name` release in its real layout under `root / folder`; returns the folder."""
    folder = root / LAYOUT[name][0]
    folder.mkdir(parents=True)
    if name in ("1m", "10m"):
        lines = [
            f"{r.user_id}::{r.item_id}::{_num(r.rating)}::{r.timestamp}"
            for r in ratings.itertuples()
        ]
        (folder / "ratings.dat").write_text("\n".join(lines) + "\n", encoding="ascii")
        # 1M's genre names differ a little ("Children's"); the loader takes them as written.
        movies = [
            f"{mid}::{written_title(name, title)}::{_genres_1m(genres) if name == '1m' else genres}"
            for mid, title, genres in MOVIES
        ]
        # 1M is Latin-1; 10M is written as UTF-8 here (the loader reads either).
        encoding = "latin-1" if name == "1m" else "utf-8"
        (folder / "movies.dat").write_bytes(("\n".join(movies) + "\n").encode(encoding))
        if name == "1m":
            users = [
                f"{u.user_id}::{u.sex}::{u.age}::{u.occupation}::{u.zip_code}"
                for u in fake_users().itertuples()
            ]
            (folder / "users.dat").write_text("\n".join(users) + "\n", encoding="ascii")
            (folder / "README").write_text("SUMMARY\n", encoding="ascii")
        else:
            (folder / "tags.dat").write_text("15::4973::excellent!::1215184630\n")
        return folder
    out = ratings.rename(columns={"user_id": "userId", "item_id": "movieId"})
    out["rating"] = out["rating"].map(lambda v: f"{v:.1f}")
    out.to_csv(folder / "ratings.csv", index=False)
    pd.DataFrame(MOVIES, columns=["movieId", "title", "genres"]).to_csv(
        folder / "movies.csv", index=False
    )
    (folder / "tags.csv").write_text("userId,movieId,tag,timestamp\n2,60756,funny,1445714994\n")
    (folder / "links.csv").write_text("movieId,imdbId,tmdbId\n1,0114709,862\n")
    return folder


def zip_release(folder: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(folder.iterdir()):
            zf.write(file, f"{folder.name}/{file.name}")
    return dest


def fake_counts(monkeypatch: pytest.MonkeyPatch, name: str, ratings: pd.DataFrame) -> None:
    """Makes the release expect the fake's counts (the real ones are millions of ratings)."""
    release = movielens._RELEASES[name]
    if release.counts is None:
        return
    counts = movielens._Counts(
        ratings=len(ratings),
        users=ratings["user_id"].nunique(),
        rated=ratings["item_id"].nunique(),
        movies=len(MOVIES),
    )
    monkeypatch.setitem(movielens._RELEASES, name, dataclasses.replace(release, counts=counts))


def check_loaded(ml: movielens.MovieLens, name: str, ratings: pd.DataFrame) -> None:
    """The loaded release holds exactly the ratings and movies written."""
    r = ml.ratings
    assert ml.name == name
    assert (len(r), r.num_items) == (len(ratings), len(MOVIES))
    assert r.users.dtype == np.int32 and r.values.dtype == np.float32
    assert r.timestamps.dtype == np.int64
    got = pd.DataFrame(
        {
            "user_id": np.asarray(r.user_ids)[r.users],
            "item_id": np.asarray(r.item_ids)[r.items],
            "rating": r.values,
            "timestamp": r.timestamps,
        }
    )
    # Ratings keep the file's order.
    pd.testing.assert_frame_equal(got, ratings, check_dtype=False)
    np.testing.assert_array_equal(r.item_ids, sorted(m[0] for m in MOVIES))
    np.testing.assert_array_equal(r.user_ids, np.unique(ratings["user_id"]))
    items = ml.items.set_index("item_id")
    for mid, title, genres in MOVIES:
        assert items.at[mid, "title"] == written_title(name, title)
        active = {g for g in ml.genres if items.at[mid, g] == 1}
        written = {g.replace("Children's", "Children") for g in genres.split("|")}
        assert {g.replace("Children's", "Children") for g in active} == written - {
            "(no genres listed)"
        }
    assert items.at[1, "year"] == 1995 and items.at[5000, "year"] == 2006
    assert items.at[12345, "year"] == 2010 and pd.isna(items.at[9000, "year"])
    assert items.at[9000, "all_genres"] == "Other" and items.at[9000, "genre"] == "Other"
    assert items.at[7000, "title"] == "Misérables, Les (1995)"  # accents decoded
    assert "(no genres listed)" not in ml.genres and "IMAX" in ml.genres
    assert r.catalog is ml.items
    frame = ml.ratings_frame()
    assert len(frame) == len(ratings) and "title" in frame.columns


# ---------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("name", RELEASES)
@pytest.mark.parametrize("where", ["release folder", "parent folder", "zip", "cache"])
def test_fake_release_loads(
    name: str, where: str, tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ratings = fake_ratings(name)
    fake_counts(monkeypatch, name, ratings)
    if where == "cache":
        write_release(isolated, name, ratings)
        ml = load_movielens(name, download=False)
        assert ml.path == isolated / LAYOUT[name][0]
    else:
        folder = write_release(tmp_path / "data", name, ratings)
        data_dir = {
            "release folder": folder,
            "parent folder": folder.parent,
            "zip": zip_release(folder, tmp_path / LAYOUT[name][1]),
        }[where]
        ml = load_movielens(f"ml-{name}", data_dir, download=False)
        assert ml.path == (folder if where == "parent folder" else data_dir)
    check_loaded(ml, name, ratings)


def test_1m_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ratings = fake_ratings("1m")
    fake_counts(monkeypatch, "1m", ratings)
    ml = load_movielens("1m", write_release(tmp_path, "1m", ratings))
    written = fake_users()
    assert list(ml.users.columns) == ["user_id", "age", "sex", "occupation", "zip_code"]
    np.testing.assert_array_equal(ml.users["user_id"], written["user_id"])
    np.testing.assert_array_equal(ml.users["age"], written["age"])
    np.testing.assert_array_equal(ml.users["sex"], written["sex"])
    assert ml.users["occupation"].tolist() == [OCCUPATION_NAMES[c] for c in written["occupation"]]
    # Zip codes stay strings: leading zeros, ZIP+4 and Canadian codes intact.
    assert ml.users["zip_code"].tolist()[:5] == ["48067", "02460", "55117", "98107-4019", "T8H1N"]
    assert "Children's" in ml.genres  # 1M's own genre names
    assert set(np.unique(ml.ratings.values)) <= {1.0, 2.0, 3.0, 4.0, 5.0}


@pytest.mark.parametrize("name", ["10m", "20m", "latest"])
def test_users_without_a_user_file_are_those_who_rated(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ratings = fake_ratings(name)
    fake_counts(monkeypatch, name, ratings)
    ml = load_movielens(name, write_release(tmp_path, name, ratings))
    assert list(ml.users.columns) == ["user_id"]
    np.testing.assert_array_equal(ml.users["user_id"], np.unique(ratings["user_id"]))
    assert 0.5 in set(np.unique(ml.ratings.values))  # half stars from 10M on


@pytest.mark.parametrize("alias", ["10M100K", "ml-10M100K", " ML-10m "])
def test_10m_aliases(alias: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ratings = fake_ratings("10m")
    fake_counts(monkeypatch, "10m", ratings)
    assert load_movielens(alias, write_release(tmp_path, "10m", ratings)).name == "10m"


# ---------------------------------------------------------------------------- verification


@pytest.mark.parametrize("name", ["1m", "10m", "20m", "25m"])
def test_counts_are_checked_against_the_readme(name: str, tmp_path: Path) -> None:
    folder = write_release(tmp_path, name, fake_ratings(name))
    expected = movielens._RELEASES[name].counts
    with pytest.raises(DatasetError, match=f"{expected.ratings:,} ratings") as info:
        load_movielens(name, folder)
    assert "verify=False" in str(info.value) and str(folder) in str(info.value)
    ml = load_movielens(name, folder, verify=False)
    assert len(ml.ratings) == len(fake_ratings(name))


def test_one_missing_rating_fails_the_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ratings = fake_ratings("20m")
    fake_counts(monkeypatch, "20m", ratings)
    folder = write_release(tmp_path, "20m", ratings.iloc[:-1])
    with pytest.raises(DatasetError, match=f"has {len(ratings) - 1} ratings"):
        load_movielens("20m", folder)


def test_latest_has_no_counts_to_check(tmp_path: Path) -> None:
    # ml-latest is regenerated over time: any size loads, only the structure is checked.
    ratings = fake_ratings("latest").iloc[:7]
    ml = load_movielens("latest", write_release(tmp_path, "latest", ratings))
    assert len(ml.ratings) == 7


def test_stated_counts_of_the_readmes() -> None:
    # The figures the releases' READMEs (and every paper using them) state, written out once
    # more here so that a typo in the loader's table cannot pass unnoticed.
    stated = {
        "1m": (1_000_209, 6_040, 3_706, 3_883),
        "10m": (10_000_054, 69_878, 10_677, 10_681),
        "20m": (20_000_263, 138_493, 26_744, 27_278),
        "25m": (25_000_095, 162_541, 59_047, 62_423),
    }
    for name, numbers in stated.items():
        c = movielens._RELEASES[name].counts
        assert (c.ratings, c.users, c.rated, c.movies) == numbers, name
    assert movielens._RELEASES["latest"].counts is None


# ---------------------------------------------------------------------------- downloads (faked)


def fake_retrieve(monkeypatch: pytest.MonkeyPatch, payload: Path) -> list[dict]:
    calls: list[dict] = []

    def retrieve(url: str, known_hash: str | None = None, **kwargs: object) -> str:
        calls.append({"url": url, **kwargs})
        out = Path(str(kwargs["path"])) / str(kwargs["fname"])
        out.write_bytes(payload.read_bytes())
        return str(out)

    monkeypatch.setattr(pooch, "retrieve", retrieve)
    return calls


def _digest(path: Path, algorithm: str) -> str:
    return hashlib.new(algorithm, path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", RELEASES)
def test_download_verifies_the_pinned_zip_hash(
    name: str, tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ratings = fake_ratings(name)
    fake_counts(monkeypatch, name, ratings)
    payload = zip_release(write_release(tmp_path / "src", name, ratings), tmp_path / "fake.zip")
    calls = fake_retrieve(monkeypatch, payload)
    release = movielens._RELEASES[name]
    folder, zip_name = LAYOUT[name]
    if release.zip_hash is not None:
        # The fake zip is not GroupLens' zip: the pinned hash rejects it and nothing is left.
        with pytest.raises(DatasetError, match="of the zip is"):
            load_movielens(name)
        assert calls[0]["url"] == BASE_URL + zip_name
        assert sorted(p.name for p in isolated.iterdir()) == []
        # With the fake's own hash pinned (same algorithm), the download goes through.
        algorithm = release.zip_hash.partition(":")[0]
        pinned = f"{algorithm}:{_digest(payload, algorithm)}"
        monkeypatch.setitem(
            movielens._RELEASES, name, dataclasses.replace(release, zip_hash=pinned)
        )
    ml = load_movielens(name)
    assert calls[-1]["url"] == BASE_URL + zip_name and calls[-1]["fname"] == zip_name
    assert ml.path == isolated / folder
    assert sorted(p.name for p in isolated.iterdir()) == [folder]  # no zip, no temp folder
    check_loaded(ml, name, ratings)
    # The next load reads the cache.
    monkeypatch.setattr(pooch, "retrieve", lambda *a, **k: pytest.fail("downloaded twice"))
    assert len(load_movielens(name).ratings) == len(ratings)


def test_pinned_zip_hashes() -> None:
    # SHA-256 where TensorFlow Datasets pins one (1m, 20m, 25m), GroupLens' MD5 for 10m, none
    # for latest (it changes): well-formed hex of the right length.
    kinds = {name: movielens._RELEASES[name].zip_hash for name in RELEASES}
    assert kinds["latest"] is None
    for name, pinned in kinds.items():
        if pinned is None:
            continue
        algorithm, _, digest = pinned.partition(":")
        assert algorithm == ("md5" if name == "10m" else "sha256"), name
        assert len(digest) == hashlib.new(algorithm).digest_size * 2
        int(digest, 16)


# ---------------------------------------------------------------------------- wrong input


def test_folder_of_another_release_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ratings = fake_ratings("20m")
    folder = write_release(tmp_path, "20m", ratings)  # ml-20m/ratings.csv
    with pytest.raises(DatasetError, match=r"holds MovieLens 20m \(ml-20m\), not 25m"):
        load_movielens("25m", folder)
    with pytest.raises(DatasetError, match=r"not latest"):
        load_movielens("latest", zip_release(folder, tmp_path / "x.zip"))


def test_malformed_movies_dat(tmp_path: Path) -> None:
    folder = write_release(tmp_path, "1m", fake_ratings("1m"))
    text = (folder / "movies.dat").read_bytes().decode("latin-1")
    (folder / "movies.dat").write_bytes(
        text.replace("2::Jumanji (1995)::", "2::Jumanji (1995)|").encode("latin-1")
    )
    with pytest.raises(DatasetError, match=r"movies\.dat .*line 2.*MovieID::Title::Genres"):
        load_movielens("1m", folder, verify=False)


def test_malformed_ratings(tmp_path: Path) -> None:
    folder = write_release(tmp_path, "10m", fake_ratings("10m"))
    with open(folder / "ratings.dat", "a") as f:
        f.write("7::1::four::978300760\n")
    # The file, the line and the bad value are named.
    with pytest.raises(DatasetError, match=r"ratings\.dat, line 50: .*'four'"):
        load_movielens("10m", folder, verify=False)
    folder = write_release(tmp_path / "b", "25m", fake_ratings("25m"))
    (folder / "ratings.csv").write_text("userId,movieId,score\n1,1,4.0\n")
    with pytest.raises(DatasetError, match=r"ratings\.csv cannot be parsed: .*'rating'"):
        load_movielens("25m", folder, verify=False)


def test_bad_occupation_code(tmp_path: Path) -> None:
    folder = write_release(tmp_path, "1m", fake_ratings("1m"))
    text = (folder / "users.dat").read_text()
    (folder / "users.dat").write_text(text.replace("1::F::1::0::", "1::F::1::21::"))
    with pytest.raises(DatasetError, match="occupation code 21"):
        load_movielens("1m", folder, verify=False)


def test_missing_users_dat(tmp_path: Path) -> None:
    folder = write_release(tmp_path, "1m", fake_ratings("1m"))
    (folder / "users.dat").unlink()
    with pytest.raises(DatasetError, match=r"users\.dat"):
        load_movielens("1m", folder, verify=False)


def test_offline_without_copy_names_the_zip(isolated: Path) -> None:
    with pytest.raises(DatasetError) as info:
        load_movielens("10m", download=False)
    message = str(info.value)
    assert BASE_URL + "ml-10m.zip" in message and str(isolated / "ml-10M100K") in message


# ---------------------------------------------------------------------------- the real copy


def test_real_latest_small_read_as_latest(tmp_path: Path, latest_files: Path) -> None:
    # ml-latest has the same layout as ml-latest-small: the real files, in an ml-latest folder,
    # load as "latest" exactly as they do as "latest-small".
    folder = tmp_path / "ml-latest"
    folder.mkdir()
    for name in ("ratings.csv", "movies.csv"):
        (folder / name).symlink_to(latest_files / name)
    latest = load_movielens("latest", tmp_path)
    small = load_movielens("latest-small", latest_files)
    assert latest.name == "latest" and small.name == "latest-small"
    assert (len(latest.ratings), latest.ratings.num_users, latest.ratings.num_items) == (
        100_836,
        610,
        9_742,
    )
    np.testing.assert_array_equal(latest.ratings.values, small.ratings.values)
    pd.testing.assert_frame_equal(latest.items, small.items)
    # The real folder is refused under the other name.
    with pytest.raises(DatasetError, match="holds MovieLens latest-small"):
        load_movielens("latest", latest_files)


# ---------------------------------------------------------------------------- guessing (CLI)


@pytest.mark.parametrize("name", RELEASES)
def test_guess_release_by_folder(name: str, tmp_path: Path) -> None:
    folder = write_release(tmp_path / "data", name, fake_ratings(name))
    assert release_name(f"ml-{name}") == name
    assert guess_release(folder) == name
    assert guess_release(folder.parent) == name
    assert guess_release(zip_release(folder, tmp_path / "any-name.zip")) == name


def test_guess_release_by_files(tmp_path: Path) -> None:
    # A folder whose name says nothing: the files decide (ratings.csv defaults to latest-small).
    for name, expected in [("1m", "1m"), ("10m", "10m"), ("25m", "latest-small")]:
        folder = write_release(tmp_path / name, name, fake_ratings(name))
        renamed = folder.rename(folder.parent / "copy")
        assert guess_release(renamed) == expected
    with pytest.raises(DatasetError, match="holds no MovieLens release"):
        guess_release(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        guess_release(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown MovieLens dataset 'ml-2m'"):
        release_name("ml-2m")


def test_cli_dataset_option_takes_every_release(
    tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cfcore.cli._common import load_dataset

    ratings = fake_ratings("10m")
    fake_counts(monkeypatch, "10m", ratings)
    folder = write_release(tmp_path, "10m", ratings)
    assert load_dataset(str(folder), None).name == "10m"  # a path: guessed
    assert load_dataset("10m", tmp_path).name == "10m"  # a name, with --data-dir
    write_release(isolated, "10m", ratings)
    assert load_dataset("ml-10M100K", None).path == isolated / "ml-10M100K"  # from the cache
