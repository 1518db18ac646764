"""MovieLens loaders: 100K (with its canonical folds) and latest-small, from disk or the web.

Example:
    >>> ml = load_movielens("100k")
    >>> ml.ratings
    Ratings(n=100000, num_users=943, num_items=1682, values in [1, 5])
    >>> train, test = ml.fold("u1")
    >>> len(train), len(test)
    (80000, 20000)
"""

from __future__ import annotations

import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._download import DATA_DIR_ENV, DatasetError, cache_dir, download_release
from .ratings import Ratings

__all__ = ["FOLDS_100K", "DatasetError", "MovieLens", "load_movielens"]

_URL = "https://files.grouplens.org/datasets/movielens/{folder}.zip"

# The genre flags of u.item, in file order (they are the names listed in u.genre).
_GENRES_100K = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
]  # fmt: skip

FOLDS_100K = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
"""Canonical train/test folds of MovieLens 100K (files `<fold>.base` and `<fold>.test`)."""

_NO_GENRE = "Other"
_RATINGS_100K_COLS = {"user_id": np.int64, "item_id": np.int64, "rating": np.float32}


@dataclass(frozen=True)
class _Release:
    name: str
    folder: str
    key_file: str  # the file whose presence marks a folder as holding the release
    checksums: dict[str, str]  # SHA-256 of files of the release, as in shared/data PROVENANCE.md

    @property
    def url(self) -> str:
        return _URL.format(folder=self.folder)


_RELEASES = {
    "100k": _Release(
        "100k",
        "ml-100k",
        "u.data",
        {
            "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
            "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
            "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
        },
    ),
    "latest-small": _Release(
        "latest-small",
        "ml-latest-small",
        "ratings.csv",
        {
            "ratings.csv": "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646",
            "movies.csv": "5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07",
        },
    ),
}


@dataclass(frozen=True)
class _Files:
    """The files of one release, in a folder (`zip_prefix` None) or inside a zip read in memory."""

    path: Path
    zip_prefix: str | None = None

    def read_csv(self, name: str, **kwargs: Any) -> pd.DataFrame:
        if self.zip_prefix is None:
            file = self.path / name
            if not file.is_file():
                raise DatasetError(
                    f"{file} is missing: the release folder {self.path} lacks {name}"
                )
            return pd.read_csv(file, **kwargs)
        member = self.zip_prefix + name
        try:
            with zipfile.ZipFile(self.path) as zf:
                try:
                    info = zf.getinfo(member)
                except KeyError:
                    raise DatasetError(f"{member} is missing from the zip {self.path}") from None
                with zf.open(info) as f:
                    return pd.read_csv(f, **kwargs)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise DatasetError(f"the zip {self.path} is corrupt ({exc})") from exc


@dataclass(frozen=True, eq=False)
class MovieLens:
    """A loaded MovieLens release.

    Attributes:
        name: `"100k"` or `"latest-small"`.
        path: the folder (or zip) read.
        items: catalog frame with `M` rows, row `i` describing item index `i`: `item_id` (original
            movie id), `title`, `year` (nullable `Int64`), one 0/1 column per genre, `all_genres`
            (active genres joined by `"-"`, `"Other"` if none) and `genre` (one active genre drawn
            at random, `"Other"` if none).
        users: frame with `N` rows, row `u` describing user index `u`: `user_id` (original id);
            for 100K also `age`, `sex`, `occupation` and `zip_code`.
        ratings: all ratings over the whole catalog, with timestamps, vocabularies and `items` as
            catalog.
        genres: the names of the genre columns of `items`, in column order.
    """

    name: str
    path: Path
    items: pd.DataFrame = field(repr=False)
    users: pd.DataFrame = field(repr=False)
    ratings: Ratings
    genres: list[str] = field(repr=False)
    _files: _Files = field(repr=False)

    def ratings_frame(self) -> pd.DataFrame:
        """The ratings with original ids, joined with the item and user columns.

        Returns:
            A frame with one row per rating, in the order of `ratings`: `user_id`, `item_id`,
            `rating`, `timestamp`, then the columns of `items` and of `users`.
        """
        r = self.ratings
        frame = pd.DataFrame(
            {
                "user_id": np.asarray(r.user_ids)[r.users],
                "item_id": np.asarray(r.item_ids)[r.items],
                "rating": r.values,
                "timestamp": r.timestamps,
            }
        )
        # Row lookups by index instead of merges: the indices are already the row numbers.
        items = self.items.drop(columns="item_id").iloc[r.items].reset_index(drop=True)
        users = self.users.drop(columns="user_id").iloc[r.users].reset_index(drop=True)
        return pd.concat([frame, items, users], axis=1)

    def fold(self, name: str) -> tuple[Ratings, Ratings]:
        """One of the canonical train/test folds of MovieLens 100K.

        Args:
            name: one of `"u1"` .. `"u5"` (5-fold cross-validation, 80,000/20,000 ratings) or
                `"ua"`, `"ub"` (10 test ratings per user, 90,570/9,430).

        Returns:
            `(train, test)`, both over the full catalog (943 users, 1,682 items), with the same
            vocabularies as `ratings`.

        Raises:
            ValueError: the fold name is unknown, or the release is not 100K.
            DatasetError: the fold's file is missing.
        """
        if self.name != "100k":
            raise ValueError(
                f"canonical folds exist only for MovieLens 100k, not {self.name!r}; "
                "use ratings.split(...) for a random split"
            )
        if name not in FOLDS_100K:
            raise ValueError(f"unknown fold {name!r}; valid folds are {', '.join(FOLDS_100K)}")
        train, test = (
            _read_100k_ratings(self._files, f"{name}.{part}") for part in ("base", "test")
        )
        return self._over_catalog(train), self._over_catalog(test)

    def _over_catalog(self, frame: pd.DataFrame) -> Ratings:
        return Ratings.from_frame(
            frame,
            timestamp_col="timestamp",
            user_ids=self.ratings.user_ids,
            item_ids=self.ratings.item_ids,
            catalog=self.items,
        )


def load_movielens(
    name: str = "100k",
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    *,
    genre_seed: int = 0,
) -> MovieLens:
    """Loads a MovieLens release, downloading and caching it if needed.

    Where the files come from, in order:

    1. `data_dir`, if given: a folder holding the release's files (`u.data`, ...), a folder holding
       the release folder (`ml-100k/`), or a zip of the release (read in memory). It is read as is
       and never triggers a download: a wrong path is an error.
    2. The cache folder, `$CFCORE_DATA_DIR` or else the user's cache folder, if it holds the
       release folder (`ml-100k/` or `ml-latest-small/`).
    3. A download from GroupLens into the cache folder (if `download`), verified by SHA-256.

    Args:
        name: `"100k"` (or `"ml-100k"`) or `"latest-small"` (or `"ml-latest-small"`).
        data_dir: optional explicit location of the release (folder or zip).
        download: whether a release missing from the cache may be downloaded.
        genre_seed: seed of `numpy.random.default_rng` drawing each item's single `genre`.

    Returns:
        The loaded `MovieLens`: 100K has 100,000 ratings of 1,682 items by 943 users;
        latest-small 100,836 ratings over a catalog of 9,742 movies (9,724 rated) by 610 users.

    Raises:
        ValueError: `name` is not a known release.
        DatasetError: the release is not where it was looked for and cannot be downloaded, or a
            download was corrupt, or a file of the release is missing.
    """
    release = _release(name)
    files = _locate(release, data_dir, download)
    if release.name == "100k":
        items, users, ratings, genres = _load_100k(files, genre_seed)
    else:
        items, users, ratings, genres = _load_latest_small(files, genre_seed)
    return MovieLens(
        name=release.name,
        path=files.path,
        items=items,
        users=users,
        ratings=Ratings.from_frame(
            ratings,
            timestamp_col="timestamp",
            user_ids=users["user_id"].to_numpy(),
            item_ids=items["item_id"].to_numpy(),
            catalog=items,
        ),
        genres=genres,
        _files=files,
    )


# ---------------------------------------------------------------------------- locating the files


def _release(name: str) -> _Release:
    key = str(name).removeprefix("ml-")
    if key not in _RELEASES:
        valid = ", ".join(f"{k!r} (or 'ml-{k}')" for k in _RELEASES)
        raise ValueError(f"unknown MovieLens dataset {name!r}; valid names are {valid}")
    return _RELEASES[key]


def _locate(release: _Release, data_dir: str | os.PathLike[str] | None, download: bool) -> _Files:
    if data_dir is not None:
        return _explicit(release, Path(data_dir).expanduser())
    root = cache_dir()
    if (root / release.folder).is_dir():
        return _Files(root / release.folder)
    if not download:
        raise DatasetError(
            f"MovieLens {release.name} is not in {root / release.folder} and download=False. "
            f"Download {release.url} and unzip it into a folder, then set {DATA_DIR_ENV} to that "
            f"folder (it must hold {release.folder}/) or pass data_dir=; or allow download=True."
        )
    return _Files(download_release(release.url, release.folder, release.checksums, root))


def _explicit(release: _Release, path: Path) -> _Files:
    if path.is_file():
        return _Files(path, _zip_prefix(release, path))
    if (path / release.key_file).is_file():
        return _Files(path)
    if (path / release.folder).is_dir():
        return _Files(path / release.folder)
    what = "does not exist" if not path.exists() else "is not a folder or zip of the release"
    raise DatasetError(
        f"data_dir {path} {what}: expected a folder holding {release.key_file}, a folder holding "
        f"{release.folder}/, or a zip of it ({release.url})"
    )


def _zip_prefix(release: _Release, path: Path) -> str:
    """The folder, inside the zip, that holds the release files (`"ml-100k/"` or `""`)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except zipfile.BadZipFile as exc:
        raise DatasetError(f"data_dir {path} is a file but not a valid zip ({exc})") from exc
    key = release.key_file
    found = sorted((n for n in names if n == key or n.endswith("/" + key)), key=len)
    if not found:
        raise DatasetError(f"the zip {path} holds no {key} (expected {release.folder}/{key})")
    return found[0][: -len(key)]


# ---------------------------------------------------------------------------- parsing


def _read_100k_ratings(files: _Files, name: str) -> pd.DataFrame:
    return files.read_csv(
        name,
        sep="\t",
        header=None,
        names=[*_RATINGS_100K_COLS, "timestamp"],
        dtype={**_RATINGS_100K_COLS, "timestamp": np.int64},
    )


def _load_100k(
    files: _Files, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    ratings = _read_100k_ratings(files, "u.data")
    head = ["item_id", "title", "release_date", "video_release_date", "imdb_url"]
    movies = files.read_csv(
        "u.item",
        sep="|",
        header=None,
        names=head + _GENRES_100K,
        dtype={"item_id": np.int64, "title": str, "release_date": str}
        | dict.fromkeys(_GENRES_100K, np.int64),
        usecols=["item_id", "title", "release_date", *_GENRES_100K],
        encoding="latin-1",  # u.item has accented titles in Latin-1, not UTF-8
    ).sort_values("item_id", ignore_index=True)
    # Dates look like "01-Jan-1995"; one movie has none, hence the nullable Int64.
    year = pd.to_numeric(movies["release_date"].str[-4:], errors="coerce").astype("Int64")
    items = _catalog(movies, year, movies[_GENRES_100K], seed)
    users = files.read_csv(
        "u.user",
        sep="|",
        header=None,
        names=["user_id", "age", "sex", "occupation", "zip_code"],
        # Zip codes are strings: some are Canadian ("T8H1N") and leading zeros matter.
        dtype={
            "user_id": np.int64,
            "age": np.int64,
            "sex": str,
            "occupation": str,
            "zip_code": str,
        },
    ).sort_values("user_id", ignore_index=True)
    return items, users, ratings, list(_GENRES_100K)


def _load_latest_small(
    files: _Files, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    ratings = files.read_csv(
        "ratings.csv",
        dtype={
            "userId": np.int64,
            "movieId": np.int64,
            "rating": np.float32,
            "timestamp": np.int64,
        },
    ).rename(columns={"userId": "user_id", "movieId": "item_id"})
    movies = files.read_csv(
        "movies.csv", dtype={"movieId": np.int64, "title": str, "genres": str}
    ).sort_values("movieId", ignore_index=True)
    movies = movies.rename(columns={"movieId": "item_id"})
    # Titles end with "(1995)", a few with a range "(2006–2007)" and a dozen with no year at all.
    year = movies["title"].str.extract(r"\((\d{4})(?:[-–]\d{4})?\)\s*$", expand=False)
    year = pd.to_numeric(year, errors="coerce").astype("Int64")
    flags = (
        movies["genres"]
        .str.get_dummies(sep="|")
        .drop(columns="(no genres listed)", errors="ignore")
    )
    items = _catalog(movies, year, flags, seed)
    users = pd.DataFrame({"user_id": np.unique(ratings["user_id"].to_numpy())})
    return items, users, ratings, list(flags.columns)


def _catalog(movies: pd.DataFrame, year: pd.Series, flags: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The items frame: ids, titles, years, genre flags and the two genre labels of the notebook.

    Args:
        movies: frame with `item_id` and `title`, shape `[M, ...]`, in item index order.
        year: release years, shape `[M]`.
        flags: 0/1 genre columns, shape `[M, G]`.
        seed: seed of the generator drawing `genre`.
    """
    active = flags.to_numpy(dtype=bool)
    names = np.asarray(flags.columns, dtype=object)
    count = active.sum(axis=1)
    # One draw per item in index order (also for items without a genre), so that a seed gives
    # the same labels whatever the genres of other items; the k-th active genre is the first
    # column where the running count of active flags exceeds k.
    k = np.random.default_rng(seed).integers(0, np.maximum(count, 1))
    picked = names[np.argmax(np.cumsum(active, axis=1) > k[:, None], axis=1)]
    genre = np.where(count > 0, picked, _NO_GENRE)
    all_genres = ["-".join(names[row]) or _NO_GENRE for row in active]
    items = pd.DataFrame({"item_id": movies["item_id"], "title": movies["title"], "year": year})
    return pd.concat(
        [
            items,
            flags.astype(np.int64).reset_index(drop=True),
            pd.DataFrame({"all_genres": all_genres, "genre": genre}).astype(str),
        ],
        axis=1,
    )
