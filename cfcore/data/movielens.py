"""MovieLens loaders: every GroupLens release, from disk or the web.

Releases and their files (each parsed into the same `MovieLens` structure):

| name | folder | ratings file | movies | users |
|---|---|---|---|---|
| `"100k"` | `ml-100k/` | `u.data` (tab-separated) | `u.item` (`|`, Latin-1) | `u.user` |
| `"1m"` | `ml-1m/` | `ratings.dat` (`::`) | `movies.dat` (`::`, Latin-1) | `users.dat` |
| `"10m"` | `ml-10M100K/` (zip `ml-10m.zip`) | `ratings.dat` (`::`) | `movies.dat` (`::`) | (ids only) |
| `"20m"`, `"25m"`, `"latest"`, `"latest-small"` | `ml-<name>/` | `ratings.csv` | `movies.csv` | (ids only) |

Example:
    >>> ml = load_movielens("100k")
    >>> ml.ratings
    Ratings(n=100000, num_users=943, num_items=1682, values in [1, 5])
    >>> train, test = ml.fold("u1")
    >>> len(train), len(test)
    (80000, 20000)
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ArgumentValueError, FileAccessError
from ._download import DATA_DIR_ENV, DatasetError, cache_dir, download_release
from .bounded import MAX_FIELD_CHARS, BoundedReader, bounded, file_budget, shorten, too_large
from .csv_check import first_bad_line
from .ratings import Ratings, RatingsError

__all__ = [
    "FOLDS_100K",
    "DatasetError",
    "MovieLens",
    "guess_release",
    "load_movielens",
    "release_name",
]

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
class _Counts:
    """What a release's README states (and the ratings file holds), to check a copy against."""

    ratings: int  # rating rows
    users: int  # distinct users who rated
    rated: int  # distinct movies rated
    movies: int  # rows of the movie file: the catalog


@dataclass(frozen=True)
class _Release:
    name: str
    folder: str  # the folder inside the zip, and in the cache
    key_file: str  # the file whose presence marks a folder as holding the release
    layout: str  # the parser: "100k", "1m", "10m" (`::`-separated) or "csv" (20M and later)
    # SHA-256 of files of the release, checked after a download (as in shared/data PROVENANCE.md).
    checksums: dict[str, str] = field(default_factory=dict)
    # "sha256:<hex>" or "md5:<hex>" of the zip GroupLens serves, checked before it is extracted.
    zip_hash: str | None = None
    counts: _Counts | None = None  # None: not checked (see _RELEASES)
    zip_name: str | None = None  # the zip's name on the server when it differs from `folder`

    @property
    def url(self) -> str:
        return _URL.format(folder=self.zip_name or self.folder)

    @property
    def sizes(self) -> dict[str, int]:
        """Size in bytes of each file of the release: what `bounded.file_budget` lets be read."""
        return _SIZES.get(self.name, {})


# Where the pinned numbers come from:
# * counts: each release's README (ratings, users, catalog movies) and, for the distinct users
#   and movies found in the ratings file, the figures every paper on these releases repeats
#   (ml-1m: 3,706 movies rated out of 3,883; ml-10m: 69,878 users rated, the README's 71,567
#   counting those who only tagged, and 10,677 movies out of 10,681; ml-20m: 26,744 of 27,278;
#   ml-25m: 59,047 of 62,423). 100k and latest-small have none: their files are checked one by
#   one after a download, and small synthetic copies of them are loaded by name (tests, demos).
# * zip_hash: no release could be downloaded where this was written (no internet), so nothing
#   here was computed by us. The SHA-256 of ml-1m, ml-20m and ml-25m are TensorFlow Datasets'
#   pins (tensorflow/datasets, tensorflow_datasets/url_checksums/movielens.txt, commit
#   1c076ac3c19c8ea83e1d1a75e0623c9a699e0d7c, with sizes 5,917,549, 198,702,078 and
#   261,978,986 bytes). ml-10m has no SHA-256 we can trust: its pin is the MD5 GroupLens
#   publishes beside the zip (ml-10m.zip.md5), as repeated by several independent projects.
#   ml-latest is regenerated from time to time and has no fixed checksum.
# * checksums: the per-file SHA-256 of 100k and latest-small, from shared/data PROVENANCE.md.
_RELEASES = {
    "100k": _Release(
        "100k",
        "ml-100k",
        "u.data",
        "100k",
        {
            "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
            "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
            "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
        },
    ),
    "1m": _Release(
        "1m",
        "ml-1m",
        "ratings.dat",
        "1m",
        zip_hash="sha256:a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        counts=_Counts(ratings=1_000_209, users=6_040, rated=3_706, movies=3_883),
    ),
    "10m": _Release(
        "10m",
        "ml-10M100K",
        "ratings.dat",
        "10m",
        zip_hash="md5:ce571fd55effeba0271552578f2648bd",
        counts=_Counts(ratings=10_000_054, users=69_878, rated=10_677, movies=10_681),
        zip_name="ml-10m",
    ),
    "20m": _Release(
        "20m",
        "ml-20m",
        "ratings.csv",
        "csv",
        zip_hash="sha256:96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
        counts=_Counts(ratings=20_000_263, users=138_493, rated=26_744, movies=27_278),
    ),
    "25m": _Release(
        "25m",
        "ml-25m",
        "ratings.csv",
        "csv",
        zip_hash="sha256:8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
        counts=_Counts(ratings=25_000_095, users=162_541, rated=59_047, movies=62_423),
    ),
    "latest": _Release("latest", "ml-latest", "ratings.csv", "csv"),
    "latest-small": _Release(
        "latest-small",
        "ml-latest-small",
        "ratings.csv",
        "csv",
        {
            "ratings.csv": "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646",
            "movies.csv": "5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07",
        },
    ),
}
# The files' sizes in bytes, from which each file's read budget is derived (1.5 times plus 1 MiB,
# `bounded.file_budget`): a file over it is refused before or while it is read, so that a small
# crafted zip cannot inflate into gigabytes. 100k and latest-small: the real files in
# shared/data (exact). 1m, 10m, 20m, 25m: the sizes of the files in GroupLens' zips as published
# (not measured here: none could be downloaded; the margin covers a small error). latest is
# regenerated over time: its figures are ceilings with room to grow (its 2023 ratings.csv is
# about 0.9 GB). A file not listed (README, ...) gets `bounded.UNKNOWN_FILE_BYTES`.
_FOLDS_100K_SIZES = {
    "u1.base": 1_586_544, "u1.test": 392_629, "u2.base": 1_583_948, "u2.test": 395_225,
    "u3.base": 1_582_546, "u3.test": 396_627, "u4.base": 1_581_878, "u4.test": 397_295,
    "u5.base": 1_581_776, "u5.test": 397_397, "ua.base": 1_792_501, "ua.test": 186_672,
    "ub.base": 1_792_476, "ub.test": 186_697,
}  # fmt: skip
_SIZES: dict[str, dict[str, int]] = {
    "100k": {"u.data": 1_979_173, "u.item": 236_344, "u.user": 22_628, **_FOLDS_100K_SIZES},
    "1m": {"ratings.dat": 24_594_131, "movies.dat": 171_308, "users.dat": 134_368},
    "10m": {"ratings.dat": 265_105_635, "movies.dat": 522_197, "tags.dat": 3_584_119},
    "20m": {
        "ratings.csv": 533_444_411, "movies.csv": 1_397_542, "tags.csv": 16_603_996,
        "links.csv": 570_090, "genome-scores.csv": 323_544_381, "genome-tags.csv": 18_103,
    },
    "25m": {
        "ratings.csv": 678_260_987, "movies.csv": 3_038_099, "tags.csv": 38_810_332,
        "links.csv": 1_368_578, "genome-scores.csv": 435_164_157, "genome-tags.csv": 18_103,
    },
    "latest": {
        "ratings.csv": 1_200_000_000, "movies.csv": 8_000_000, "tags.csv": 120_000_000,
        "links.csv": 4_000_000, "genome-scores.csv": 800_000_000, "genome-tags.csv": 100_000,
    },
    "latest-small": {
        "ratings.csv": 2_483_723, "movies.csv": 494_431, "tags.csv": 118_660,
        "links.csv": 197_979,
    },
}  # fmt: skip
# Other spellings of release names (after lower-casing and dropping "ml-").
_ALIASES = {"10m100k": "10m"}


@dataclass(frozen=True)
class _Format:
    """How a release file is laid out: what the strict parse and the line scan check.

    Attributes:
        sep: the field separator as written (`"::"` in `.dat` files).
        columns: the columns in file order, named as the release's README does (user-facing;
            for a file with a header, the header it must have).
        header: the first line is a header, which must name `columns`.
        types: numpy dtype of the typed columns.
        required: columns that must have a value on every line.
        scale: the rating scale of the release, checked on `rating`.
        encoding: the file's encoding.
        quoting: fields may be quoted (`"a, b"`); off for files of numbers, so that a stray quote
            cannot make one field of the rest of the file.
        keep: the columns returned (None: all).
    """

    sep: str
    columns: tuple[str, ...]
    header: bool = False
    types: dict[str, Any] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    scale: _Scale | None = None
    encoding: str = "utf-8"
    quoting: bool = True
    keep: tuple[str, ...] | None = None


@dataclass(frozen=True)
class _Scale:
    """A release's rating scale: whole stars 1-5 (100K, 1M) or half stars 0.5-5 (10M on)."""

    text: str
    halves: bool

    def ok(self, values: np.ndarray) -> np.ndarray:
        """`[n]` bools: which of `values` `[n]` are on the scale."""
        steps = values * 2 if self.halves else values
        low = 1
        high = 10 if self.halves else 5
        return (steps == np.round(steps)) & (steps >= low) & (steps <= high)

    def check(self, text: str) -> str | None:
        """What is wrong with one rating as written, or None (for the line scan)."""
        try:
            with np.errstate(over="ignore"):  # beyond float32: inf, as pandas reads it
                value = np.float32(float(text))
        except ValueError:
            return None  # reported by the type check
        if self.ok(np.asarray([value]))[0]:
            return None
        return f"is {shorten(text)}, outside the release's rating scale ({self.text})"


_WHOLE_STARS = _Scale("whole stars 1 to 5", halves=False)
_HALF_STARS = _Scale("0.5 to 5 in half stars", halves=True)


@dataclass(frozen=True)
class _Files:
    """The files of one release, in a folder (`zip_prefix` None) or inside a zip read in memory.

    Every file is read through `bounded.BoundedReader`: at most its budget (from `sizes`, the
    release's file sizes), with lines of at most `bounded.MAX_LINE_BYTES`.
    """

    path: Path
    zip_prefix: str | None = None
    sizes: dict[str, int] = field(default_factory=dict)

    def read_csv(self, name: str, fmt: _Format, **kwargs: Any) -> pd.DataFrame:
        """Reads one file of the release with `pandas.read_csv`, streamed, and parses it strictly.

        Args:
            name: the file's name in the release.
            fmt: its layout.
            kwargs: further arguments of `pandas.read_csv` (`keep_default_na`, ...).

        Returns:
            A frame with the columns `fmt.keep` (or all of `fmt.columns`).

        Raises:
            DatasetError: the file is missing, over its budget, or a line is malformed (not
                valid text, the wrong number of fields, a missing value in `required`, a value not
                of its column's type or off the rating scale), naming the file and the line.
        """
        if fmt.header:
            self._check_header(name, fmt)
        dat = len(fmt.sep) > 1
        if dat:
            # `::` files are read with `:` as the separator by pandas' C parser (the Python
            # parser, the only one that takes `::`, is many times slower on 10M rows): every
            # other field is then the empty one between two colons, read as a category (cheap)
            # and checked to be empty.
            names = [f"_{j}" for j in range(2 * len(fmt.columns) - 1)]
            dtype: dict[str, Any] = {f"_{2 * j + 1}": "category" for j in range(len(names) // 2)}
            dtype |= {f"_{2 * j}": fmt.types.get(c, str) for j, c in enumerate(fmt.columns)}
            kwargs |= {"sep": ":", "header": None, "names": names, "dtype": dtype}
        else:
            kwargs |= {
                "sep": fmt.sep,
                "header": 0 if fmt.header else None,
                "names": None if fmt.header else list(fmt.columns),
                "dtype": {c: fmt.types.get(c, str) for c in fmt.columns},
            }
        if not fmt.quoting:
            kwargs["quoting"] = csv.QUOTE_NONE
        try:
            # A value beyond float32 or int64 ends in a refusal naming its line: no warning.
            with self.open(name) as f, np.errstate(over="ignore", invalid="ignore"):
                frame = pd.read_csv(f, encoding=fmt.encoding, **kwargs)
        except pd.errors.EmptyDataError as exc:
            raise DatasetError(f"{self._where(name)} holds no data (it is empty)") from exc
        except (ValueError, OverflowError, csv.Error) as exc:  # ParserError is a ValueError
            raise self._malformed(name, fmt, exc) from exc
        if dat:
            separators = frame.iloc[:, 1::2]
            if any(set(separators[c].cat.categories) - {""} for c in separators.columns):
                raise self._malformed(name, fmt, None)
            frame = frame.iloc[:, 0::2].set_axis(list(fmt.columns), axis=1)
        if frame.empty:
            raise DatasetError(f"{self._where(name)} holds no data (no line of values)")
        if not self._sound(frame, fmt):
            raise self._malformed(name, fmt, None)
        return frame[list(fmt.keep)] if fmt.keep is not None else frame

    @staticmethod
    def _sound(frame: pd.DataFrame, fmt: _Format) -> bool:
        """Whether a parsed frame passes the checks pandas does not make."""
        # With more fields than names on the first row, pandas makes the extras an index.
        if not isinstance(frame.index, pd.RangeIndex) or list(frame.columns) != list(fmt.columns):
            return False
        for col, dtype in frame.dtypes.items():
            if dtype.kind in "iub":  # pandas refuses a missing value in these itself
                continue
            required = col in fmt.required
            if dtype.kind == "f":
                if required and np.isnan(frame[col].to_numpy()).any():
                    return False
                continue
            # Strings: plain Python over them, many times faster than pandas' `.str` here.
            values = frame[col].to_numpy(dtype=object, na_value="")
            if required and not all(v.strip() for v in values):
                return False
            if max(map(len, values), default=0) > MAX_FIELD_CHARS:
                return False
        if fmt.scale is not None:
            return bool(fmt.scale.ok(frame["rating"].to_numpy()).all())
        return True

    def _check_header(self, name: str, fmt: _Format) -> None:
        with self.open(name) as f:
            line = io.BufferedReader(f).readline()
        line = line.decode(fmt.encoding, errors="replace").rstrip("\r\n")
        if not line.strip():
            raise DatasetError(f"{self._where(name)} is empty: it has no header line")
        found = next(csv.reader([line], delimiter=fmt.sep))
        if found != list(fmt.columns):
            raise DatasetError(
                f"{self._where(name)} cannot be parsed: its header (line 1) is {shorten(line)}, "
                f"expected the columns {', '.join(repr(c) for c in fmt.columns)}"
            )

    def read_bytes(self, name: str) -> bytes:
        """The content of one file of the release (from the folder, or the zip), within budget."""
        with self.open(name) as f:
            return f.read()

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[BoundedReader]:
        """One file of the release, as a binary stream bounded by the file's budget.

        Raises:
            DatasetError: the file is missing, declares more than its budget (checked before
                reading), delivers more (checked while reading: a header can lie) or has a line
                over `MAX_LINE_BYTES`; or the zip is corrupt.
        """
        where = self._where(name)
        limit = file_budget(self.sizes.get(name))
        if self.zip_prefix is None:
            file = self.path / name
            if not file.is_file():
                raise DatasetError(
                    f"{file} is missing: the release folder {self.path} lacks {name}"
                )
            size = file.stat().st_size
            if size > limit[0]:
                raise DatasetError(too_large(where, *limit, f"is {size:,} bytes, more than"))
            try:
                f = open(file, "rb")  # noqa: SIM115 (closed below; the yield is inside)
            except PermissionError as exc:
                raise FileAccessError(f"cannot read {file}: permission denied") from exc
            with f:
                yield bounded(f, where, limit, DatasetError)
            return
        member = self.zip_prefix + name
        try:
            with zipfile.ZipFile(self.path) as zf:
                try:
                    info = zf.getinfo(member)
                except KeyError:
                    raise DatasetError(f"{member} is missing from the zip {self.path}") from None
                if info.file_size > limit[0]:
                    verb = f"declares {info.file_size:,} bytes, more than"
                    raise DatasetError(too_large(where, *limit, verb))
                with zf.open(info) as f:
                    yield bounded(f, where, limit, DatasetError)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise DatasetError(f"the zip {self.path} is corrupt ({exc})") from exc

    def _where(self, name: str) -> str:
        if self.zip_prefix is None:
            return str(self.path / name)
        return f"{self.path}:{self.zip_prefix}{name}"

    def _malformed(self, name: str, fmt: _Format, exc: Exception | None) -> DatasetError:
        """The error for a file that failed to parse: the first bad line, found by a new scan."""
        with self.open(name) as f:
            bad = first_bad_line(
                io.BufferedReader(f, 1 << 20),
                sep=fmt.sep,
                names=None if fmt.header else list(fmt.columns),
                dtype=fmt.types,
                required=fmt.required,
                checks={"rating": fmt.scale.check} if fmt.scale is not None else None,
                encoding=fmt.encoding,
                quoting=fmt.quoting,
            )
        if bad is not None:
            return DatasetError(f"{self._where(name)}, {bad}")
        # Nothing found line by line: say what the parser said, without its internal names
        # (the `_4` of a `::` file read with `:` is the third field).
        detail = "its values are not what the release holds" if exc is None else str(exc)
        detail = re.sub(r"\b_(\d+)\b", lambda m: _dat_column(fmt, int(m.group(1))), detail)
        return DatasetError(f"{self._where(name)} cannot be parsed: {shorten(detail)}")


def _dat_column(fmt: _Format, j: int) -> str:
    """The user-facing name of column `_j` of a `::` file read with `:` as the separator."""
    if j % 2 or j // 2 >= len(fmt.columns):
        return "a '::' separator"
    return fmt.columns[j // 2]


@dataclass(frozen=True, eq=False)
class MovieLens:
    """A loaded MovieLens release.

    Attributes:
        name: the release: `"100k"`, `"1m"`, `"10m"`, `"20m"`, `"25m"`, `"latest"` or
            `"latest-small"`.
        path: the folder (or zip) read.
        items: catalog frame with `M` rows, row `i` describing item index `i`: `item_id` (original
            movie id), `title`, `year` (nullable `Int64`), one 0/1 column per genre, `all_genres`
            (active genres joined by `"-"`, `"Other"` if none) and `genre` (one active genre drawn
            at random, `"Other"` if none).
        users: frame with `N` rows, row `u` describing user index `u`: `user_id` (original id);
            for 100K also `age`, `sex`, `occupation` and `zip_code`; for 1M the same columns,
            where `age` is the lower bound of the user's age group (1 for "under 18", 18, 25,
            35, 45, 50, 56 for "56+") and `occupation` the name of the release's code. The
            other releases have no user file: their users are those who rated.
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
            raise ArgumentValueError(
                f"canonical folds exist only for MovieLens 100k, not {self.name!r}; "
                "use ratings.split(...) for a random split"
            )
        if name not in FOLDS_100K:
            raise ArgumentValueError(
                f"unknown fold {name!r}; valid folds are {', '.join(FOLDS_100K)}"
            )
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
    verify: bool = True,
) -> MovieLens:
    """Loads a MovieLens release, downloading and caching it if needed.

    Where the files come from, in order:

    1. `data_dir`, if given: a folder holding the release's files (`u.data`, `ratings.dat` or
       `ratings.csv`, ...), a folder holding the release folder (`ml-100k/`, `ml-1m/`,
       `ml-10M100K/`, `ml-20m/`, ...), or a zip of the release as GroupLens serves it (read in
       memory). It is read as is and never triggers a download: a wrong path is an error.
    2. The cache folder, `$CFCORE_DATA_DIR` or else the user's cache folder, if it holds the
       release folder.
    3. A download from GroupLens (`https://files.grouplens.org/datasets/movielens/<zip>`) into
       the cache folder (if `download`), verified by the checksum pinned for the release (the
       zip's SHA-256, or GroupLens' MD5 for 10M, or the SHA-256 of the files for 100K and
       latest-small; ml-latest changes over time and has none).

    Every release is parsed into the same structure: ratings with timestamps over the whole
    catalog of the movie file, items with `title`, `year`, genre flags and the two genre labels,
    users with their original ids (and demographics where the release has them: 100K, 1M).

    Args:
        name: `"100k"`, `"1m"`, `"10m"`, `"20m"`, `"25m"`, `"latest"` or `"latest-small"`,
            with or without the `"ml-"` prefix (`"ml-10M100K"` is the 10M folder's name).
        data_dir: optional explicit location of the release (folder or zip).
        download: whether a release missing from the cache may be downloaded.
        genre_seed: seed of `numpy.random.default_rng` drawing each item's single `genre`.
        verify: for 1M, 10M, 20M and 25M, check the numbers of ratings, users who rated, movies
            rated and catalog movies against those the release's README states; pass False to
            load a copy that was trimmed or altered on purpose. (ml-latest changes over time;
            100K and latest-small are checked file by file when downloaded, and small synthetic
            copies of them are loaded on purpose.) Every file is parsed strictly either way: the
            release's fields on every line, ratings on its scale (whole stars 1-5 for 100K and
            1M, 0.5-5 in half stars from 10M on).

    Returns:
        The loaded `MovieLens`. Sizes (ratings; users; movies rated / in the catalog):
        100K 100,000; 943; 1,682 / 1,682. 1M 1,000,209; 6,040; 3,706 / 3,883.
        10M 10,000,054; 69,878; 10,677 / 10,681. 20M 20,000,263; 138,493; 26,744 / 27,278.
        25M 25,000,095; 162,541; 59,047 / 62,423. latest-small 100,836; 610; 9,724 / 9,742.

    Raises:
        ValueError: `name` is not a known release.
        DatasetError: the release is not where it was looked for and cannot be downloaded, a
            download was corrupt, a file of the release is missing, over its byte budget (see
            `cfcore.data.bounded`; `$CFCORE_DATA_FILE_LIMIT` overrides) or malformed (naming the
            file and line), or (with `verify`) its counts differ from the README's.
    """
    release = _release(name)
    files = _locate(release, data_dir, download)
    loader = _LOADERS[release.layout]
    items, users, ratings, genres = loader(files, genre_seed)
    if verify and release.counts is not None:
        _verify_counts(release, files, ratings, items)
    try:
        indexed = Ratings.from_frame(
            ratings,
            timestamp_col="timestamp",
            user_ids=users["user_id"].to_numpy(),
            item_ids=items["item_id"].to_numpy(),
            catalog=items,
        )
    except RatingsError as err:  # files that parse, but disagree with each other
        raise DatasetError(
            f"the files of MovieLens {release.name} at {files.path} disagree: {err} (a rating "
            "of a movie the movie file lacks, or a user listed twice)"
        ) from err
    return MovieLens(
        name=release.name,
        path=files.path,
        items=items,
        users=users,
        ratings=indexed,
        genres=genres,
        _files=files,
    )


def _verify_counts(
    release: _Release, files: _Files, ratings: pd.DataFrame, items: pd.DataFrame
) -> None:
    expected = release.counts
    assert expected is not None
    found = _Counts(
        ratings=len(ratings),
        users=int(ratings["user_id"].nunique()),
        rated=int(ratings["item_id"].nunique()),
        movies=len(items),
    )
    if found != expected:

        def show(c: _Counts) -> str:
            return (
                f"{c.ratings:,} ratings by {c.users:,} users of {c.rated:,} movies "
                f"(catalog {c.movies:,})"
            )

        raise DatasetError(
            f"the copy of MovieLens {release.name} at {files.path} has {show(found)}, but the "
            f"release's README states {show(expected)}: it is incomplete, altered or another "
            "release. Remove it to download a fresh copy, or pass verify=False to load it anyway."
        )


# ---------------------------------------------------------------------------- locating the files


def release_name(name: str) -> str:
    """The canonical name of a release (`"ml-10M100K"` -> `"10m"`).

    Raises:
        ValueError: `name` is not a known release; the message lists the valid names.
    """
    return _release(name).name


def guess_release(path: str | os.PathLike[str]) -> str:
    """The release a folder or zip most likely holds, for `load_movielens(name, path)`.

    By folder names first (`ml-1m/`, `ml-10M100K/`, ...: the path itself, a folder in it, or a
    folder inside the zip), else by the files: `u.data` is 100K, `ratings.dat` 1M (with
    `users.dat`) or 10M, and `ratings.csv`, shared by 20M, 25M and both latest, latest-small.

    Raises:
        DatasetError: the path holds no release.
    """
    path = Path(path).expanduser()
    by_folder = {r.folder: r.name for r in _RELEASES.values()}
    if path.is_file():
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile as exc:
            raise DatasetError(f"{path} is a file but not a valid zip ({exc})") from exc
        folders = {n.split("/")[-2] for n in names if "/" in n}
        files = {n.rsplit("/", 1)[-1] for n in names}
    elif path.is_dir():
        if path.name in by_folder:
            return by_folder[path.name]
        folders = {p.name for p in path.iterdir() if p.is_dir()}
        files = {p.name for p in path.iterdir() if p.is_file()}
    else:
        raise DatasetError(f"{path} does not exist")
    for release in _RELEASES.values():
        if release.folder in folders:
            return release.name
    if "u.data" in files:
        return "100k"
    if "ratings.dat" in files:
        return "1m" if "users.dat" in files else "10m"
    if "ratings.csv" in files:
        return "latest-small"
    raise DatasetError(
        f"{path} holds no MovieLens release: no release folder ({', '.join(by_folder)}) and no "
        "u.data, ratings.dat or ratings.csv"
    )


def _release(name: str) -> _Release:
    key = str(name).strip().lower().removeprefix("ml-")
    key = _ALIASES.get(key, key)
    if key not in _RELEASES:
        valid = ", ".join(f"{k!r} (or 'ml-{k}')" for k in _RELEASES)
        hint = ""
        if any(c in str(name) for c in "/\\") or str(name).endswith(".zip"):
            where = "it exists" if Path(name).expanduser().exists() else "no such folder or zip"
            hint = f"; {name!r} looks like a path ({where}): pass a location as data_dir="
        raise ArgumentValueError(
            f"unknown MovieLens dataset {name!r}; valid names are {valid}{hint}"
        )
    return _RELEASES[key]


def _locate(release: _Release, data_dir: str | os.PathLike[str] | None, download: bool) -> _Files:
    if data_dir is not None:
        return _explicit(release, Path(data_dir).expanduser())
    root = cache_dir()
    if (root / release.folder).is_dir():
        return _Files(root / release.folder, sizes=release.sizes)
    if not download:
        raise DatasetError(
            f"MovieLens {release.name} is not in {root / release.folder} and download=False. "
            f"Download {release.url} and unzip it into a folder, then set {DATA_DIR_ENV} to that "
            f"folder (it must hold {release.folder}/) or pass data_dir=; or allow download=True."
        )
    path = download_release(
        release.url,
        release.folder,
        release.checksums,
        root,
        zip_hash=release.zip_hash,
        sizes=release.sizes,
    )
    return _Files(path, sizes=release.sizes)


def _explicit(release: _Release, path: Path) -> _Files:
    if path.is_file():
        return _Files(path, _zip_prefix(release, path), release.sizes)
    if (path / release.key_file).is_file():
        _not_another_release(release, path.name, path)
        return _Files(path, sizes=release.sizes)
    if (path / release.folder).is_dir():
        return _Files(path / release.folder, sizes=release.sizes)
    what = "does not exist" if not path.exists() else "is not a folder or zip of the release"
    raise DatasetError(
        f"data_dir {path} {what}: expected a folder holding {release.key_file}, a folder holding "
        f"{release.folder}/, or a zip of it ({release.url})"
    )


def _not_another_release(release: _Release, folder: str, path: Path) -> None:
    """Refuses a folder named as another release that has the same key file.

    20M, 25M, latest and latest-small all hold a `ratings.csv`: only the folder's name tells a
    copy of one from a copy of another before it is parsed.
    """
    for other in _RELEASES.values():
        if other is not release and folder == other.folder:
            raise DatasetError(
                f"{path} holds MovieLens {other.name} ({other.folder}), not {release.name} "
                f"({release.folder}); load it with load_movielens({other.name!r}, ...)"
            )


def _zip_prefix(release: _Release, path: Path) -> str:
    """The folder, inside the zip, that holds the release files (`"ml-100k/"` or `""`)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except zipfile.BadZipFile as exc:
        raise DatasetError(f"data_dir {path} is a file but not a valid zip ({exc})") from exc
    key = release.key_file
    found = [n for n in names if n == key or n.endswith("/" + key)]
    if not found:
        raise DatasetError(f"the zip {path} holds no {key} (expected {release.folder}/{key})")
    # The release's own folder first, then the shallowest.
    own = release.folder + "/" + key
    prefix = min(found, key=lambda n: (not n.endswith(own), len(n)))[: -len(key)]
    _not_another_release(release, Path(prefix).name, path)
    return prefix


# ---------------------------------------------------------------------------- parsing

_RATINGS_100K = _Format(
    "\t",
    ("user_id", "item_id", "rating", "timestamp"),
    types={**_RATINGS_100K_COLS, "timestamp": np.int64},
    required=("user_id", "item_id", "rating", "timestamp"),
    scale=_WHOLE_STARS,
    quoting=False,
)
_ITEMS_100K = _Format(
    "|",
    ("item_id", "title", "release_date", "video_release_date", "imdb_url", *_GENRES_100K),
    types={"item_id": np.int64} | dict.fromkeys(_GENRES_100K, np.int64),
    required=("item_id", *_GENRES_100K),
    encoding="latin-1",  # u.item has accented titles in Latin-1, not UTF-8
    keep=("item_id", "title", "release_date", *_GENRES_100K),
)
# Zip codes are strings: some are Canadian ("T8H1N") and leading zeros matter.
_USERS_100K = _Format(
    "|",
    ("user_id", "age", "sex", "occupation", "zip_code"),
    types={"user_id": np.int64, "age": np.int64},
    required=("user_id", "age", "sex", "occupation", "zip_code"),
)
_RATINGS_CSV = _Format(
    ",",
    ("userId", "movieId", "rating", "timestamp"),
    header=True,
    types={"userId": np.int64, "movieId": np.int64, "rating": np.float32, "timestamp": np.int64},
    required=("userId", "movieId", "rating", "timestamp"),
    scale=_HALF_STARS,
    quoting=False,
)
_MOVIES_CSV = _Format(
    ",",
    ("movieId", "title", "genres"),
    header=True,
    types={"movieId": np.int64},
    required=("movieId",),
)


def _ratings_dat(scale: _Scale) -> _Format:
    """`ratings.dat` of 1M and 10M: `UserID::MovieID::Rating::Timestamp`."""
    return _Format(
        "::",
        ("user_id", "item_id", "rating", "timestamp"),
        types={
            "user_id": np.int64,
            "item_id": np.int64,
            "rating": np.float32,
            "timestamp": np.int64,
        },
        required=("user_id", "item_id", "rating", "timestamp"),
        scale=scale,
        quoting=False,
    )


_USERS_1M = _Format(
    "::",
    ("user_id", "sex", "age", "occupation", "zip_code"),
    types={"user_id": np.int64, "age": np.int64, "occupation": np.int64},
    required=("user_id", "sex", "age", "occupation", "zip_code"),
    quoting=False,
)


def _read_100k_ratings(files: _Files, name: str) -> pd.DataFrame:
    return files.read_csv(name, _RATINGS_100K)


def _load_100k(
    files: _Files, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    ratings = _read_100k_ratings(files, "u.data")
    movies = files.read_csv("u.item", _ITEMS_100K).sort_values("item_id", ignore_index=True)
    # Dates look like "01-Jan-1995"; one movie has none, hence the nullable Int64.
    year = pd.to_numeric(movies["release_date"].str[-4:], errors="coerce").astype("Int64")
    items = _catalog(movies, year, movies[_GENRES_100K], seed)
    users = files.read_csv("u.user", _USERS_100K).sort_values("user_id", ignore_index=True)
    return items, users, ratings, list(_GENRES_100K)


def _load_csv(
    files: _Files, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    """20M, 25M, latest and latest-small: `ratings.csv` and `movies.csv`, UTF-8 with a header."""
    ratings = files.read_csv("ratings.csv", _RATINGS_CSV)
    ratings = ratings.rename(columns={"userId": "user_id", "movieId": "item_id"})
    movies = files.read_csv(
        "movies.csv",
        _MOVIES_CSV,
        keep_default_na=False,  # a movie titled "NaN" stays a title
    ).rename(columns={"movieId": "item_id"})
    items, genres = _movie_items(movies, seed, files._where("movies.csv"))
    users = pd.DataFrame({"user_id": np.unique(ratings["user_id"].to_numpy())})
    return items, users, ratings, genres


# The occupation codes of ml-1m's users.dat, as its README lists them.
_OCCUPATIONS_1M = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip


def _load_1m(
    files: _Files, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    """1M: `ratings.dat`, `movies.dat` and `users.dat`, fields separated by `::`."""
    items, ratings, genres = _load_dat_ratings_movies(files, seed, _WHOLE_STARS)
    users = files.read_csv("users.dat", _USERS_1M, keep_default_na=False)
    codes = users["occupation"].to_numpy()
    bad = (codes < 0) | (codes >= len(_OCCUPATIONS_1M))
    if bad.any():
        raise DatasetError(
            f"users.dat of {files.path} has occupation code {codes[bad][0]} (user "
            f"{users['user_id'].to_numpy()[bad][0]}); the release defines codes 0.."
            f"{len(_OCCUPATIONS_1M) - 1}"
        )
    users["occupation"] = np.asarray(_OCCUPATIONS_1M, dtype=object)[codes]
    users = users[["user_id", "age", "sex", "occupation", "zip_code"]]
    return items, users.sort_values("user_id", ignore_index=True), ratings, genres


def _load_10m(
    files: _Files, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    """10M: `ratings.dat` and `movies.dat` (`::`); no user file (`tags.dat` is not read)."""
    items, ratings, genres = _load_dat_ratings_movies(files, seed, _HALF_STARS)
    users = pd.DataFrame({"user_id": np.unique(ratings["user_id"].to_numpy())})
    return items, users, ratings, genres


def _load_dat_ratings_movies(
    files: _Files, seed: int, scale: _Scale
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    ratings = files.read_csv("ratings.dat", _ratings_dat(scale), keep_default_na=False)
    movies = _read_dat_movies(files)
    items, genres = _movie_items(movies, seed, files._where("movies.dat"))
    return items, ratings, genres


def _read_dat_movies(files: _Files) -> pd.DataFrame:
    """`movies.dat` (`id::title::genres`): split by hand, titles may hold single colons.

    1M's file is Latin-1; a file that is valid UTF-8 is read as UTF-8.
    """
    raw = files.read_bytes("movies.dat")  # at most its budget (about 1 MB)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    rows = []
    where = f"movies.dat of {files.path}"
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("::")
        if len(fields) != 3 or not fields[0].strip().isdigit():
            raise DatasetError(
                f"{where}, line {number}, is malformed: {shorten(line)}; "
                "expected 'MovieID::Title::Genres'"
            )
        if max(len(fields[1]), len(fields[2])) > MAX_FIELD_CHARS:
            raise DatasetError(
                f"{where}, line {number}: a title or genre list of more than "
                f"{MAX_FIELD_CHARS:,} characters: {shorten(line)}"
            )
        rows.append((int(fields[0]), fields[1], fields[2]))
    if not rows:
        raise DatasetError(f"movies.dat of {files.path} lists no movies")
    return pd.DataFrame(rows, columns=["item_id", "title", "genres"])


def _movie_items(movies: pd.DataFrame, seed: int, where: str) -> tuple[pd.DataFrame, list[str]]:
    """Items frame and genre names from `item_id`, `title` and `genres` (`"A|B"`)."""
    movies = movies.sort_values("item_id", ignore_index=True)
    dupes = movies["item_id"].duplicated()
    if dupes.any():
        raise DatasetError(f"{where}: movie id {movies['item_id'][dupes].iloc[0]} is listed twice")
    # Titles end with "(1995)", a few with a range "(2006–2007)", some with trailing spaces
    # and a few with no year at all.
    year = movies["title"].str.extract(r"\((\d{4})(?:[-–]\d{4})?\)\s*$", expand=False)
    year = pd.to_numeric(year, errors="coerce").astype("Int64")
    flags = (
        movies["genres"]
        .str.get_dummies(sep="|")
        .drop(columns="(no genres listed)", errors="ignore")
    )
    return _catalog(movies, year, flags, seed), list(flags.columns)


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


_LOADERS = {"100k": _load_100k, "1m": _load_1m, "10m": _load_10m, "csv": _load_csv}
