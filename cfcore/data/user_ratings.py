"""Your own ratings: reading them from a CSV (or a frame), finding titles, checking the scale.

A ratings CSV has a header and one row per movie: a `rating` column, and an id column
(`item_id`, `movie_id`, `movieId` or `id`: the ORIGINAL ids of the dataset) and/or a `title`
column. Headers are matched case-insensitively. On each row the id wins when both are filled;
a row with an empty rating is skipped (so a list of titles can be rated partly, as the course
notebook's spreadsheet). For example::

    title,rating
    Aladdin,5
    Lion King,5
    Toy Story (1995),4
    item_id,rating         # or ids
    1,4

Titles are resolved by `resolve_title`: an exact title (case-insensitive, with or without the
year, "The Lion King" matching "Lion King, The (1994)"), else the only title that contains the
text; a text that several titles contain is an error listing them (add the year to choose).

Example (a CSV file or a `model=` works the same as the text and catalog here):
    >>> import io, cfcore
    >>> from cfcore.data.user_ratings import read_user_ratings
    >>> ml = cfcore.datasets.load_movielens("100k")
    >>> text = io.StringIO("title,rating\\nAladdin (1992),5\\nLion King,5\\nToy Story (1995),4\\n")
    >>> mine = read_user_ratings(text, catalog=ml.items)
    >>> mine[["item_id", "title", "rating"]]
       item_id                  title  rating
    0       95         Aladdin (1992)     5.0
    1       71  Lion King, The (1994)     5.0
    2        1       Toy Story (1995)     4.0

    With a fitted model, `model.add_users(mine)` then makes `cfcore.retrieval.recommend` serve
    this new user (see `cfcore.retrieval`).
"""

from __future__ import annotations

import csv
import io
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from ..errors import CfcoreError
from .bounded import (
    FILE_LIMIT_ENV,
    MAX_FIELD_CHARS,
    bounded,
    check_size,
    file_budget,
    shorten,
    too_large,
)
from .csv_check import first_bad_line

ID_COLUMNS = ("item_id", "movie_id", "movieid", "itemid", "id")
TITLE_COLUMNS = ("title", "movie", "name")
RATING_COLUMN = "rating"
USER_COLUMN = "user_id"

_YEAR = re.compile(r"\s*\((\d{4})(?:[-–]\d{4})?\)\s*$")
_ARTICLES = ("the", "a", "an", "les", "la", "le", "il", "el", "das", "der", "die")
_ARTICLE = re.compile(rf"^(.*),\s*({'|'.join(_ARTICLES)})$")
_SPACES = re.compile(r"\s+")


class UserRatingsError(CfcoreError, ValueError):
    """A user's ratings are malformed: missing columns, unknown titles or ids, bad ratings."""


# ---------------------------------------------------------------------------- titles


def _split_year(title: str) -> tuple[str, str]:
    t = _SPACES.sub(" ", str(title)).strip().lower()
    m = _YEAR.search(t)
    return (t[: m.start()].strip(), m.group(0).strip()) if m else (t, "")


def normalize_title(title: str) -> str:
    """Lower-case, with a trailing article moved to the front (the year stays at the end).

    "Lion King, The (1994)" -> "the lion king (1994)".
    """
    t, year = _split_year(title)
    m = _ARTICLE.match(t)
    if m:
        t = f"{m.group(2)} {m.group(1)}"
    return f"{t} {year}" if year else t


def _title_key(title: str) -> str:
    """Normalized, without year and leading article: "Jungle Book" names "Jungle Book, The"."""
    t = _split_year(normalize_title(title))[0]
    first, _, rest = t.partition(" ")
    return rest if rest and first in _ARTICLES else t


def _titles(catalog: pd.DataFrame | None) -> list[str]:
    if catalog is None or "title" not in catalog.columns:
        raise UserRatingsError("no catalog of titles is available to search: give item ids instead")
    return catalog["title"].astype(str).tolist()


def search_titles(catalog: pd.DataFrame, query: str) -> np.ndarray:
    """Rows of the catalog whose title contains `query`, in catalog order.

    The match is case-insensitive and literal (no regular expressions), against the title as
    written and against `normalize_title` of it ("the lion king" finds "Lion King, The (1994)").

    Args:
        catalog: a frame with a `title` column, one row per item.
        query: the text to look for.

    Returns:
        int64 `[hits]` row indices.
    """
    titles = _titles(catalog)
    q = _SPACES.sub(" ", str(query)).strip().lower()
    if not q:
        raise UserRatingsError("the title to search for is empty")
    nq = normalize_title(q)
    raw = pd.Series(titles).str.lower()
    norm = pd.Series([normalize_title(t) for t in titles])
    hit = raw.str.contains(q, regex=False) | norm.str.contains(nq, regex=False)
    return np.flatnonzero(hit.to_numpy())


def resolve_title(catalog: pd.DataFrame, query: str) -> int:
    """The one catalog row that `query` names.

    An exact title first (case-insensitive; "The X (1994)" for "X, The (1994)"; then without
    year and leading article), else the only title containing the text.

    Raises:
        UserRatingsError: no title matches, or several do (the message lists them).
    """
    titles = _titles(catalog)
    hits = search_titles(catalog, query)
    if len(hits) == 0:
        raise UserRatingsError(f"no title in the catalog contains {query!r}")
    if len(hits) == 1:
        return int(hits[0])
    q = _SPACES.sub(" ", str(query)).strip().lower()
    exact = [i for i in hits if titles[i].lower() == q]
    if not exact:
        exact = [i for i in hits if normalize_title(titles[i]) == normalize_title(q)]
    if not exact:
        exact = [i for i in hits if _title_key(titles[i]) == _title_key(q)]
    if len(exact) == 1:
        return int(exact[0])
    candidates = exact or list(hits)
    shown = "; ".join(titles[i] for i in candidates[:10])
    more = f" and {len(candidates) - 10} more" if len(candidates) > 10 else ""
    raise UserRatingsError(
        f"{len(candidates)} titles match {query!r}: {shown}{more}. Give the full title with its "
        "year, or the item id"
    )


# ---------------------------------------------------------------------------- ratings


def check_rating(value: Any, scale: tuple[float, float] | None, where: str) -> float:
    """`value` as a float inside `scale` (inclusive), else a `UserRatingsError` naming `where`."""
    try:
        r = float(value)
    except (TypeError, ValueError):
        raise UserRatingsError(f"rating {value!r} {where} is not a number") from None
    if not np.isfinite(r):
        raise UserRatingsError(f"rating {value!r} {where} is not a finite number")
    if scale is not None and not scale[0] <= r <= scale[1]:
        raise UserRatingsError(
            f"rating {r:g} {where} is outside the rating scale {scale[0]:g}..{scale[1]:g}"
        )
    return r


def _find_column(columns: list[str], names: tuple[str, ...]) -> str | None:
    lower = {c.strip().lower(): c for c in columns}
    for name in names:
        if name in lower:
            return lower[name]
    return None


def _lookup_id(vocab: np.ndarray, raw: Any, where: str) -> int:
    key: Any = raw
    if vocab.dtype.kind in "iu":
        try:
            f = float(str(raw).strip())
        except ValueError:
            raise UserRatingsError(f"item id {raw!r} {where} is not a number") from None
        if not (np.isfinite(f) and f == round(f)):
            raise UserRatingsError(f"item id {raw!r} {where} is not an integer")
        key = int(f)
    elif vocab.dtype.kind == "f":
        key = float(str(raw).strip())
    else:
        key = str(raw).strip()
    hits = np.flatnonzero(vocab == key)
    if len(hits) == 0:
        span = f" (ids {vocab.min()}..{vocab.max()})" if vocab.dtype.kind in "iu" else ""
        raise UserRatingsError(
            f"item id {raw!r} {where} is not in the catalog of {len(vocab)} items{span}"
        )
    return int(hits[0])


def read_user_ratings(
    source: Any,
    *,
    model: Any = None,
    catalog: pd.DataFrame | None = None,
    item_ids: Any = None,
    scale: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """Reads a user's ratings and resolves each row to an item of the catalog.

    Args:
        source: a CSV path, a file-like object with CSV text, a frame, or a mapping
            `{item id or title: rating}`.
        model: take `catalog`, `item_ids` and `scale` (its `rating_scale`) from this model;
            the explicit arguments override it.
        catalog: items frame with a `title` column (needed for titles).
        item_ids: `[M]` original item ids (default: `catalog["item_id"]`, else 0..M-1).
        scale: `(lowest, highest)` allowed rating, inclusive; None accepts any finite number.

    Returns:
        A frame with one row per rating, in input order: `item_id` (original id), `item_index`
        (row of the item), `title` (with a catalog), `rating` (float32), and `user_id` when the
        input has that column (several users in one file).

    Raises:
        UserRatingsError: missing columns, an unknown title or id, an ambiguous title, a rating
            that is not a number or is outside the scale, an item rated twice by one user, or
            no ratings at all.
    """
    if model is not None:
        catalog = model.catalog if catalog is None else catalog
        if item_ids is None:
            item_ids = model.item_ids
            if item_ids is None:
                item_ids = np.arange(model.embeddings_numpy()["item"].shape[0])
        scale = model.rating_scale if scale is None else scale
    if item_ids is None:
        if catalog is not None and "item_id" in catalog.columns:
            item_ids = catalog["item_id"].to_numpy()
        elif catalog is not None:
            item_ids = np.arange(len(catalog))
        else:
            raise UserRatingsError(
                "give a model, a catalog or item_ids to resolve the items against"
            )
    vocab = np.asarray(item_ids)
    frame, what = _as_frame(source)
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    rating_col = _find_column(columns, (RATING_COLUMN,))
    id_col = _find_column(columns, ID_COLUMNS)
    title_col = _find_column(columns, TITLE_COLUMNS)
    user_col = _find_column(columns, (USER_COLUMN,))
    if rating_col is None or (id_col is None and title_col is None):
        missing = [] if rating_col else ["'rating'"]
        if id_col is None and title_col is None:
            missing.append("an item column ('item_id', 'movie_id', 'movieId' or 'id') or 'title'")
        raise UserRatingsError(f"{what} lacks {' and '.join(missing)}; its columns are {columns}")
    rows: list[dict[str, Any]] = []
    seen: dict[tuple[Any, int], int] = {}
    titles = None if catalog is None or "title" not in catalog.columns else _titles(catalog)
    for pos, rec in enumerate(frame.to_dict("records"), start=1):
        where = f"on row {pos} of {what}"
        rating = rec[rating_col]
        if _blank(rating):
            continue  # an unrated line, as in the notebook's spreadsheet
        r = check_rating(rating, scale, where)
        if id_col is not None and not _blank(rec[id_col]):
            i = _lookup_id(vocab, rec[id_col], where)
        elif title_col is not None and not _blank(rec[title_col]):
            if catalog is None:
                raise UserRatingsError(
                    f"cannot look up the title {rec[title_col]!r} {where}: no catalog"
                )
            try:
                i = resolve_title(catalog, str(rec[title_col]))
            except UserRatingsError as err:
                raise UserRatingsError(f"{err} ({where})") from None
        else:
            raise UserRatingsError(
                f"row {pos} of {what} names no item (its id and title are empty)"
            )
        user = None if user_col is None else rec[user_col]
        key = (user, i)
        if key in seen:
            name = titles[i] if titles is not None else vocab[i]
            raise UserRatingsError(
                f"{name!r} is rated twice in {what} (rows {seen[key]} and {pos}); keep one rating"
            )
        seen[key] = pos
        row: dict[str, Any] = {"item_id": vocab[i], "item_index": i}
        if titles is not None:
            row["title"] = titles[i]
        row["rating"] = r
        if user_col is not None:
            row["user_id"] = user
        rows.append(row)
    if not rows:
        raise UserRatingsError(f"{what} holds no ratings (every rating cell is empty)")
    out = pd.DataFrame(rows)
    out["rating"] = out["rating"].astype(np.float32)
    out["item_index"] = out["item_index"].astype(np.int64)
    return out


def _blank(x: Any) -> bool:
    if x is None:
        return True
    if isinstance(x, float) and np.isnan(x):
        return True
    return isinstance(x, str) and not x.strip()


def _as_frame(source: Any) -> tuple[pd.DataFrame, str]:
    if isinstance(source, pd.DataFrame):
        return source.copy(), "the ratings frame"
    if isinstance(source, Mapping):
        recs = [
            {"title": k, "rating": v} if isinstance(k, str) else {"item_id": k, "rating": v}
            for k, v in source.items()
        ]
        frame = pd.DataFrame(recs, columns=["item_id", "title", "rating"])
        return frame.astype(object), "the ratings mapping"
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise UserRatingsError(f"ratings file {path} does not exist")
        check_size(path, _user_limit(), UserRatingsError)
        with open(path, "rb") as f:
            return _read_csv(f, str(path)), str(path)
    if isinstance(source, io.IOBase) or hasattr(source, "read"):
        # Read whole (within the limit) to parse it twice if it is refused: a stream may not seek.
        limit = _user_limit()
        data = source.read(limit[0] + 1)
        if isinstance(data, str):
            data = data.encode("utf-8")
        if len(data) > limit[0]:
            raise UserRatingsError(too_large("the ratings CSV", *limit, "holds more than"))
        return _read_csv(io.BytesIO(data), "the ratings"), "the ratings CSV"
    raise UserRatingsError(
        f"ratings must be a CSV path, a file object, a frame or a mapping, got {type(source).__name__}"
    )


# A user's ratings file holds at most thousands of lines: anything far larger is a mistake.
USER_FILE_BYTES = 64 << 20


def _user_limit() -> tuple[int, str]:
    """The most bytes read of a user's ratings: `$CFCORE_DATA_FILE_LIMIT`, else 64 MiB."""
    if os.environ.get(FILE_LIMIT_ENV):
        return file_budget(None)
    return USER_FILE_BYTES, "the limit for a ratings file"


def _read_csv(f: IO[bytes], what: str) -> pd.DataFrame:
    """A user's CSV as strings, read within `USER_FILE_BYTES` and `bounded.MAX_LINE_BYTES`.

    Raises:
        UserRatingsError: the file is over a limit, or does not parse as CSV (naming the first
            bad line where one can be found).
    """
    start = f.tell()
    try:
        frame = pd.read_csv(
            bounded(f, what, _user_limit(), UserRatingsError),
            dtype=str,
            keep_default_na=False,
            skipinitialspace=True,
        )
    except pd.errors.EmptyDataError as err:
        raise UserRatingsError(f"cannot read {what} as CSV: it is empty (no header line)") from err
    except (ValueError, OverflowError, csv.Error) as err:  # ParserError, UnicodeDecodeError, ...
        raise _unreadable(f, start, what, err) from err
    # With more fields than the header on the first row, pandas makes the extras an index.
    extra = not isinstance(frame.index, pd.RangeIndex)
    if extra or any(frame[c].str.len().max() > MAX_FIELD_CHARS for c in frame if len(frame)):
        raise _unreadable(f, start, what, None)
    return frame


def _unreadable(f: IO[bytes], start: int, what: str, err: Exception | None) -> UserRatingsError:
    f.seek(start)
    bad = first_bad_line(io.BufferedReader(bounded(f, what, _user_limit(), UserRatingsError)))
    detail = bad if bad is not None else shorten(str(err))
    return UserRatingsError(f"cannot read {what} as CSV: {detail}")


def write_user_ratings(path: str | os.PathLike[str], ratings: pd.DataFrame) -> Path:
    """Writes ratings (as `read_user_ratings` returns them) to a CSV that it reads back, atomically."""
    from ..io.atomic import atomic_write

    cols = [c for c in ("user_id", "item_id", "title", "rating") if c in ratings.columns]
    return atomic_write(path, lambda p: ratings[cols].to_csv(p, index=False))


# ---------------------------------------------------------------------------- fold-in input


def fold_in_arrays(
    ratings: Any, model: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray | None]:
    """Turns the new users' ratings accepted by `model.fold_in` into index arrays.

    Args:
        ratings: a `cfcore.Ratings` over the model's items (its users are the new users
            0..B-1), or anything `read_user_ratings` reads (a frame, a CSV, a mapping), one
            user, or several with a `user_id` column.
        model: the model (catalog, item vocabulary, rating scale).

    Returns:
        `(rows [n], items [n], values [n], B, user ids [B] or None)`: user ids come from a
        `user_id` column, in order of first appearance.
    """
    from .ratings import Ratings

    m = model.embeddings_numpy()["item"].shape[0]
    scale = model.rating_scale
    if isinstance(ratings, Ratings):
        if ratings.num_items != m:
            raise UserRatingsError(
                f"the new ratings are over {ratings.num_items} items but the model has {m} items"
            )
        values = ratings.values
        if scale is not None:
            bad = (values < scale[0]) | (values > scale[1])
            if bad.any():
                j = int(np.argmax(bad))
                check_rating(values[j], scale, f"at position {j} (item index {ratings.items[j]})")
        return (
            ratings.users.astype(np.int64),
            ratings.items.astype(np.int64),
            values.astype(np.float32),
            ratings.num_users,
            None,
        )
    frame = read_user_ratings(ratings, model=model)
    if USER_COLUMN in frame.columns:
        codes, uniques = pd.factorize(frame[USER_COLUMN], sort=False)
        rows, num, ids = codes.astype(np.int64), len(uniques), np.asarray(uniques)
    else:
        rows, num, ids = np.zeros(len(frame), np.int64), 1, None
    return rows, frame["item_index"].to_numpy(), frame["rating"].to_numpy(), num, ids


def new_user_ids(
    old_ids: np.ndarray, num: int, user_ids: Any = None, frame_ids: Any = None
) -> np.ndarray:
    """Original ids for `num` users being added to a model whose users have `old_ids`.

    Explicit `user_ids` win, then the ids read from the ratings frame (`frame_ids`); otherwise
    numeric vocabularies continue after their largest id and others get "new-0", "new-1", ...

    Returns:
        `[num]` ids, none of them already in `old_ids`.
    """
    if user_ids is None:
        user_ids = frame_ids
    if user_ids is None:
        if old_ids.dtype.kind in "iu":
            start = int(old_ids.max()) + 1 if len(old_ids) else 0
            user_ids = np.arange(start, start + num, dtype=old_ids.dtype)
        else:
            user_ids = np.array([f"new-{j}" for j in range(num)])
    user_ids = np.asarray(user_ids)
    if user_ids.shape != (num,):
        raise UserRatingsError(f"user_ids has shape {user_ids.shape}; expected ({num},)")
    old_kind, new_kind = _id_kind(old_ids), _id_kind(user_ids)
    compare_with, mixed = old_ids, False
    if len(old_ids) and {old_kind, new_kind} == {"numbers", "strings"}:
        # One vocabulary holds one kind of id: with string ids added to numeric ones (or the
        # reverse) every id becomes a string. Lookups by number still find them ("42" is found
        # by 42), but the change of dtype is worth a word.
        mixed = True
        user_ids, compare_with = user_ids.astype(str), old_ids.astype(str)
    elif old_kind == "numbers" and new_kind == "numbers" and len(old_ids):
        user_ids = user_ids.astype(np.result_type(old_ids.dtype, user_ids.dtype))
    clash = np.isin(user_ids, compare_with)
    if clash.any():
        raise UserRatingsError(
            f"user id {user_ids[clash][0].item()!r} is already a user of this model"
        )
    if mixed:
        warnings.warn(
            f"the new user ids {user_ids[:3].tolist()!r} are {new_kind} and this model's are "
            f"{old_kind} (e.g. {old_ids[:3].tolist()!r}): the user vocabulary becomes strings "
            "(recommend(model, 42) still finds the user '42'). Give "
            f"{old_kind} user_ids to keep it {old_kind}",
            UserWarning,
            stacklevel=3,
        )
    return user_ids


def _id_kind(ids: np.ndarray) -> str:
    """ "numbers", "strings" or "other ids": the kind of an id vocabulary, for mixing checks."""
    if ids.dtype.kind in "iuf":
        return "numbers"
    if ids.dtype.kind == "U" or (ids.dtype.kind == "O" and all(isinstance(x, str) for x in ids)):
        return "strings"
    if ids.dtype.kind == "O" and all(
        isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool)
        for x in ids
    ):
        return "numbers"
    return "other ids"
