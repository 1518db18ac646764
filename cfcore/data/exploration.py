"""Statistics of a ratings set: per-user and per-item counts and means, slices, top tables.

The tables behind the charts of the course notebook's section I ("Exploring the MovieLens data"),
computed with pandas and NumPy only. Every function takes `cfcore.Ratings` (or a dataset holding
them, such as `cfcore.datasets.load_movielens(...)`) plus, where needed, the user or item frame.

Example:
    >>> import cfcore
    >>> ml = cfcore.datasets.load_movielens("100k")
    >>> top_rated(ml.ratings, k=3, min_count=20)[["title", "rating_count", "rating_mean"]]
                               title  rating_count  rating_mean
    rank
    1          Close Shave, A (1995)           112     4.491071
    2        Schindler's List (1993)           298     4.466443
    3     Wrong Trousers, The (1993)           118     4.466102
    >>> slice_by_occupation(ml.ratings, ml.users).loc["doctor", ["users", "ratings"]].tolist()
    [7, 540]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..backend.checks import check_k
from ..errors import ArgumentValueError
from .ratings import Ratings, as_ratings

__all__ = [
    "check_genres",
    "genre_names",
    "item_stats",
    "most_rated",
    "slice_by_genre",
    "slice_by_occupation",
    "summary",
    "to_markdown",
    "top_rated",
    "user_stats",
]


def _ratings(data: Any) -> Ratings:
    return as_ratings(data, "ratings")


def _counts_means(
    index: np.ndarray, values: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Number and mean of the ratings of each of `size` rows; the mean is NaN for no ratings."""
    count = np.bincount(index, minlength=size).astype(np.int64)
    total = np.bincount(index, weights=values.astype(np.float64), minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return count, mean


def _check_frame(frame: pd.DataFrame | None, size: int, what: str, plural: str) -> None:
    if frame is not None and len(frame) != size:
        raise ArgumentValueError(
            f"the {what} frame has {len(frame)} rows but the ratings have {size} {plural}; "
            f"row i must describe {what} index i"
        )


def user_stats(ratings: Any, users: pd.DataFrame | None = None) -> pd.DataFrame:
    """Number of ratings and mean rating of every user of the catalog.

    Args:
        ratings: `Ratings` over N users (or a dataset holding them).
        users: optional user frame with N rows, row u describing user index u (e.g.
            `MovieLens.users`, with `occupation`); its columns are appended.

    Returns:
        A frame with N rows: `user` (index), `rating_count` (int64), `rating_mean` (float64, NaN
        for a user without ratings), then the columns of `users`.
    """
    r = _ratings(ratings)
    _check_frame(users, r.num_users, "user", "users")
    count, mean = _counts_means(r.users, r.values, r.num_users)
    out = pd.DataFrame({"user": np.arange(r.num_users), "rating_count": count, "rating_mean": mean})
    if users is not None:
        extra = users.drop(columns=[c for c in out.columns if c in users.columns])
        out = pd.concat([out, extra.reset_index(drop=True)], axis=1)
    return out


def item_stats(ratings: Any, items: pd.DataFrame | None = None) -> pd.DataFrame:
    """Number of ratings and mean rating of every item of the catalog.

    Args:
        ratings: `Ratings` over M items (or a dataset holding them).
        items: optional item frame with M rows; defaults to `ratings.catalog` (title, genres ...).

    Returns:
        A frame with M rows: `item` (index), `rating_count` (int64), `rating_mean` (float64, NaN
        for an item nobody rated), then the columns of the item frame.
    """
    r = _ratings(ratings)
    items = r.catalog if items is None else items
    _check_frame(items, r.num_items, "item", "items")
    count, mean = _counts_means(r.items, r.values, r.num_items)
    out = pd.DataFrame({"item": np.arange(r.num_items), "rating_count": count, "rating_mean": mean})
    if items is not None:
        extra = items.drop(columns=[c for c in out.columns if c in items.columns])
        out = pd.concat([out, extra.reset_index(drop=True)], axis=1)
    return out


def _table_columns(stats: pd.DataFrame) -> list[str]:
    # All of a movie's genres, when known, rather than the single one drawn at random.
    genre = "all_genres" if "all_genres" in stats else "genre"
    cols = [c for c in ("item", "item_id", "title", genre) if c in stats]
    return cols + ["rating_count", "rating_mean"]


def most_rated(ratings: Any, k: int = 10, *, items: pd.DataFrame | None = None) -> pd.DataFrame:
    """The `k` items with the most ratings (ties: lower item index first).

    Args:
        ratings: `Ratings` (or a dataset holding them).
        k: number of rows, at least 1.
        items: optional item frame (defaults to the catalog) giving `title` and `genre`.

    Returns:
        Up to `k` rows with `item` (index), and when known `item_id`, `title` and `all_genres` (else
        `genre`), then `rating_count` and `rating_mean`; most rated first, indexed 1..k (the rank).
    """
    check_k(k)
    stats = item_stats(ratings, items)
    order = np.lexsort((stats["item"].to_numpy(), -stats["rating_count"].to_numpy()))
    return _ranked(stats.iloc[order[:k]][_table_columns(stats)])


def top_rated(
    ratings: Any, k: int = 10, *, min_count: int = 20, items: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The `k` items with the highest mean rating among those with at least `min_count` ratings.

    The count filter keeps items rated by one enthusiast (mean 5.0) out of the table, as the
    notebook's `rating count > 20` does.

    Args:
        ratings: `Ratings` (or a dataset holding them).
        k: number of rows, at least 1.
        min_count: minimum number of ratings an item needs, at least 1.
        items: optional item frame (defaults to the catalog) giving `title` and `genre`.

    Returns:
        Up to `k` rows with the columns of `most_rated`, best mean first; ties go to the item with
        more ratings, then to the lower index. Indexed 1..k (the rank).
    """
    check_k(k)
    if not isinstance(min_count, int | np.integer) or isinstance(min_count, bool) or min_count < 1:
        raise ArgumentValueError(f"min_count must be a positive int, got {min_count!r}")
    stats = item_stats(ratings, items)
    stats = stats[stats["rating_count"] >= min_count]
    if stats.empty:
        raise ArgumentValueError(
            f"no item has at least min_count={min_count} ratings; lower min_count"
        )
    order = np.lexsort(
        (
            stats["item"].to_numpy(),
            -stats["rating_count"].to_numpy(),
            -stats["rating_mean"].to_numpy(),
        )
    )
    return _ranked(stats.iloc[order[:k]][_table_columns(stats)])


def _ranked(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.reset_index(drop=True)
    frame.index = pd.RangeIndex(1, len(frame) + 1, name="rank")
    return frame


def _group_table(
    group_of_rating: np.ndarray, values: np.ndarray, members: pd.Series, member_name: str
) -> pd.DataFrame:
    """Members, ratings, ratings per member and mean rating of each group (rating-weighted mean)."""
    by_rating = (
        pd.DataFrame({"group": group_of_rating, "rating": values.astype(np.float64)})
        .groupby("group", sort=True)["rating"]
        .agg(["count", "mean"])
    )
    table = pd.DataFrame({member_name: members})
    table["ratings"] = by_rating["count"].reindex(table.index).fillna(0).astype(np.int64)
    table["ratings_per_" + member_name.rstrip("s")] = table["ratings"] / table[member_name]
    table["mean_rating"] = by_rating["mean"].reindex(table.index)
    return table


def slice_by_occupation(ratings: Any, users: pd.DataFrame) -> pd.DataFrame:
    """Ratings of each occupation (MovieLens 100K users have one each).

    Args:
        ratings: `Ratings` over N users (or a dataset holding them).
        users: user frame with N rows and an `occupation` column (`MovieLens.users`).

    Returns:
        A frame indexed by occupation (sorted by name): `users` (how many), `ratings` (how many
        they gave), `ratings_per_user`, and `mean_rating` (mean of all their ratings).
    """
    r = _ratings(ratings)
    _check_frame(users, r.num_users, "user", "users")
    if "occupation" not in users:
        raise ArgumentValueError(
            f"the user frame has no 'occupation' column (it has {list(users.columns)}); "
            "only MovieLens 100K records occupations"
        )
    occupation = users["occupation"].astype(str).to_numpy()
    members = pd.Series(occupation).value_counts().sort_index()
    table = _group_table(occupation[r.users], r.values, members, "users")
    table.index.name = "occupation"
    return table


def genre_names(items: pd.DataFrame) -> list[str]:
    """The genre flag columns of an item frame: the 0/1 columns other than ids and counts."""
    skip = {"item", "item_id", "year", "rating_count", "rating_mean"}
    out = []
    for c in items.columns:
        if c in skip or not pd.api.types.is_integer_dtype(items[c]):
            continue
        if items[c].isin((0, 1)).all():
            out.append(str(c))
    return out


def check_genres(genres: Sequence[str] | None, valid: Sequence[str]) -> list[str]:
    """Returns `genres` (all `valid` if None) after checking every name is one of `valid`."""
    if genres is None:
        return list(valid)
    if isinstance(genres, str):
        genres = [genres]
    genres = list(genres)
    unknown = [g for g in genres if g not in valid]
    if unknown:
        raise ArgumentValueError(
            f"unknown genre(s) {unknown}; valid genres are: {', '.join(map(str, valid))}"
        )
    if not genres:
        raise ArgumentValueError("genres is empty: name at least one genre, or pass None for all")
    return genres


def slice_by_genre(
    ratings: Any,
    items: pd.DataFrame | None = None,
    genres: Sequence[str] | None = None,
    *,
    multi: bool = True,
) -> pd.DataFrame:
    """Ratings of the movies of each genre.

    Args:
        ratings: `Ratings` over M items (or a dataset holding them).
        items: item frame with M rows (defaults to the catalog): 0/1 genre columns when `multi`,
            a `genre` column otherwise.
        genres: genres to report (default: all); an unknown name is an error listing the valid ones.
        multi: if True, a movie counts in every genre it has (the genre flags); if False, in its
            single `genre` label (the notebook's random draw among its genres).

    Returns:
        A frame indexed by genre, in the order of `genres` (default: flag column order, or sorted
        labels): `movies`, `ratings`, `ratings_per_movie`, `mean_rating` (over all the ratings of
        the genre's movies; NaN if none was rated).
    """
    r = _ratings(ratings)
    items = r.catalog if items is None else items
    if items is None:
        raise ArgumentValueError("the ratings have no catalog: pass the item frame as items=")
    _check_frame(items, r.num_items, "item", "items")
    if multi:
        valid = genre_names(items)
        if not valid:
            raise ArgumentValueError(
                f"the item frame has no 0/1 genre columns (it has {list(items.columns)})"
            )
        chosen = check_genres(genres, valid)
        rows = {}
        for g in chosen:
            flag = items[g].to_numpy().astype(bool)
            rows[g] = _one_group(flag, r)
        table = pd.DataFrame.from_dict(rows, orient="index")
    else:
        if "genre" not in items:
            raise ArgumentValueError(
                f"the item frame has no 'genre' column (it has {list(items.columns)})"
            )
        label = items["genre"].astype(str).to_numpy()
        chosen = check_genres(genres, sorted(set(label)))
        table = pd.DataFrame.from_dict(
            {g: _one_group(label == g, r) for g in chosen}, orient="index"
        )
    table.index.name = "genre"
    return table


def _one_group(member: np.ndarray, r: Ratings) -> dict[str, float]:
    in_group = member[r.items]
    n = int(in_group.sum())
    movies = int(member.sum())
    return {
        "movies": movies,
        "ratings": n,
        "ratings_per_movie": n / movies if movies else np.nan,
        "mean_rating": float(r.values[in_group].astype(np.float64).mean()) if n else np.nan,
    }


def summary(ratings: Any) -> dict[str, float]:
    """Sizes of the ratings set: users, items, ratings, density, mean rating, rated users/items."""
    r = _ratings(ratings)
    return {
        "users": r.num_users,
        "items": r.num_items,
        "ratings": len(r),
        "density": len(r) / (r.num_users * r.num_items),
        "mean_rating": float(r.values.astype(np.float64).mean()),
        "users_with_ratings": int(np.unique(r.users).size),
        "items_with_ratings": int(np.unique(r.items).size),
    }


def to_markdown(frame: pd.DataFrame, *, floatfmt: str = ".3f") -> str:
    """A GitHub markdown table of `frame` (index included when named), without `tabulate`."""
    df = frame.reset_index() if frame.index.name is not None else frame

    def cell(v: Any) -> str:
        if isinstance(v, float | np.floating):
            return "" if np.isnan(v) else format(v, floatfmt)
        return str(v).replace("|", "\\|")

    header = [str(c) for c in df.columns]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
    ]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"
