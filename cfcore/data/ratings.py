"""The `Ratings` container: observed (user, item, rating) triples over a fixed catalog."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ArgumentTypeError, CfcoreError
from ..validate import check_float, check_int

MAX_INDEX = int(np.iinfo(np.int32).max)
"""The largest user or item index: indices are int32 on every backend."""


class RatingsError(CfcoreError, ValueError):
    """Raised when ratings are malformed (bad ids, non-finite values, mismatched lengths)."""


@dataclass(frozen=True, eq=False)
class Ratings:
    """Observed ratings of a catalog of `num_users` users and `num_items` items.

    Indices are 0-based and contiguous. `num_users` and `num_items` describe the whole catalog, not
    only the ids that occur: a split keeps them, so a model trained on a split has one row per user
    and item of the catalog.

    Attributes:
        users: int32 array of shape `[n]`, user index of each rating.
        items: int32 array of shape `[n]`, item index of each rating.
        values: float32 array of shape `[n]`, the ratings.
        num_users: number of users in the catalog (N).
        num_items: number of items in the catalog (M).
        timestamps: optional int64 array of shape `[n]` (seconds since the epoch).
        user_ids: optional array of shape `[N]`: the original id of each user index.
        item_ids: optional array of shape `[M]`: the original id of each item index.
        catalog: optional item metadata frame with one row per item index (title, genres, ...).
    """

    users: np.ndarray
    items: np.ndarray
    values: np.ndarray
    num_users: int
    num_items: int
    timestamps: np.ndarray | None = None
    user_ids: np.ndarray | None = field(default=None, repr=False)
    item_ids: np.ndarray | None = field(default=None, repr=False)
    catalog: pd.DataFrame | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        users = _as_index_array(self.users, "users")
        items = _as_index_array(self.items, "items")
        values = np.asarray(self.values)
        if values.ndim != 1:
            raise RatingsError(f"values must be 1-D, got shape {values.shape}")
        if not np.issubdtype(values.dtype, np.number) or np.issubdtype(
            values.dtype, np.complexfloating
        ):
            raise RatingsError(f"values must be real numbers, got dtype {values.dtype}")
        values = values.astype(np.float32)
        n = len(values)
        lengths = {"users": len(users), "items": len(items), "values": n}
        timestamps = self.timestamps
        if timestamps is not None:
            timestamps = np.array(timestamps, dtype=np.int64)
            timestamps.setflags(write=False)
            lengths["timestamps"] = len(timestamps)
        if len(set(lengths.values())) != 1:
            raise RatingsError(
                "users, items and values must have the same length, got "
                + ", ".join(f"{k}={v}" for k, v in lengths.items())
            )
        if n == 0:
            raise RatingsError("the ratings set is empty: at least one rating is needed")
        for name in ("num_users", "num_items"):
            v = getattr(self, name)
            if not isinstance(v, int | np.integer) or isinstance(v, bool | np.bool_):
                raise RatingsError(f"{name} must be an int, got {v!r} ({type(v).__name__})")
        num_users, num_items = int(self.num_users), int(self.num_items)
        if num_users <= 0 or num_items <= 0:
            raise RatingsError(
                f"num_users and num_items must be positive, got {num_users} and {num_items}"
            )
        for name, size in (("num_users", num_users), ("num_items", num_items)):
            # Indices are int32 on every backend: a larger catalog would wrap around when narrowed.
            if size > MAX_INDEX + 1:
                raise RatingsError(
                    f"{name}={size} is more than cfcore supports: indices are int32, so a "
                    f"catalog holds at most {MAX_INDEX + 1} users and {MAX_INDEX + 1} items"
                )
        _check_range(users, num_users, "user")
        _check_range(items, num_items, "item")
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.argmax(bad))
            raise RatingsError(
                f"{int(bad.sum())} rating(s) are NaN or infinite; the first is {values[i]} at "
                f"position {i} (user {users[i]}, item {items[i]}). Drop or impute them first."
            )
        if self.user_ids is not None and len(self.user_ids) != num_users:
            raise RatingsError(f"user_ids has {len(self.user_ids)} entries for {num_users} users")
        if self.item_ids is not None and len(self.item_ids) != num_items:
            raise RatingsError(f"item_ids has {len(self.item_ids)} entries for {num_items} items")
        if self.catalog is not None and len(self.catalog) != num_items:
            raise RatingsError(f"catalog has {len(self.catalog)} rows for {num_items} items")
        # Range is checked on int64 before narrowing so that huge ids cannot wrap around.
        users, items = (
            users.astype(np.int32),
            items.astype(np.int32),
        )  # copies: the caller keeps theirs
        for name, arr in (("users", users), ("items", items), ("values", values)):
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "timestamps", timestamps)
        object.__setattr__(self, "num_users", num_users)
        object.__setattr__(self, "num_items", num_items)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        user_col: str = "user_id",
        item_col: str = "item_id",
        rating_col: str = "rating",
        *,
        timestamp_col: str | None = None,
        user_ids: Any = None,
        item_ids: Any = None,
        catalog: pd.DataFrame | None = None,
    ) -> Ratings:
        """Builds ratings from a frame with arbitrary user and item ids.

        Ids are mapped to 0-based indices in sorted order of the distinct ids; the vocabularies are
        kept in `user_ids` / `item_ids`. Pass `user_ids` / `item_ids` to fix the vocabulary (for
        example the whole catalog, including items nobody rated); an id outside it is an error.

        Args:
            df: one row per rating.
            user_col: column holding user ids.
            item_col: column holding item ids.
            rating_col: column holding the ratings.
            timestamp_col: optional column of timestamps (seconds).
            user_ids: optional vocabulary of user ids, shape `[N]`.
            item_ids: optional vocabulary of item ids, shape `[M]`.
            catalog: optional item metadata, one row per entry of the item vocabulary.

        Returns:
            A `Ratings` with `num_users = len(user vocabulary)` and `num_items = len(item vocabulary)`.
        """
        missing = [c for c in (user_col, item_col, rating_col, timestamp_col) if c and c not in df]
        if missing:
            raise RatingsError(f"column(s) {missing} not in the frame; it has {list(df.columns)}")
        if len(df) == 0:
            raise RatingsError("the ratings frame is empty")
        users, user_vocab = _encode(df[user_col], user_ids, "user")
        items, item_vocab = _encode(df[item_col], item_ids, "item")
        raw = df[rating_col]
        numeric = pd.to_numeric(raw, errors="coerce")
        not_numbers = numeric.isna() & raw.notna()
        if not_numbers.any():
            pos = int(np.argmax(not_numbers.to_numpy()))
            raise RatingsError(
                f"rating column {rating_col!r} holds a non-numeric value {raw.iloc[pos]!r} at row {pos}"
            )
        values = numeric.to_numpy(dtype=np.float64)
        ts = None if timestamp_col is None else df[timestamp_col].to_numpy()
        return cls(
            users=users,
            items=items,
            values=values,
            num_users=len(user_vocab),
            num_items=len(item_vocab),
            timestamps=ts,
            user_ids=user_vocab,
            item_ids=item_vocab,
            catalog=catalog,
        )

    # ------------------------------------------------------------------ views

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        return (
            f"Ratings(n={len(self)}, num_users={self.num_users}, num_items={self.num_items}, "
            f"values in [{self.values.min():g}, {self.values.max():g}])"
            if len(self)
            else f"Ratings(n=0, num_users={self.num_users}, num_items={self.num_items})"
        )

    def subset(self, index: np.ndarray) -> Ratings:
        """Returns the ratings at `index` (a boolean mask or integer positions), same catalog."""
        index = np.asarray(index)
        return Ratings(
            users=self.users[index],
            items=self.items[index],
            values=self.values[index],
            num_users=self.num_users,
            num_items=self.num_items,
            timestamps=None if self.timestamps is None else self.timestamps[index],
            user_ids=self.user_ids,
            item_ids=self.item_ids,
            catalog=self.catalog,
        )

    def split(self, holdout_fraction: float = 0.1, seed: int = 0) -> tuple[Ratings, Ratings]:
        """Splits the ratings at random into train and test, as the course notebook does.

        The test set is `round(holdout_fraction * n)` ratings drawn without replacement with
        `numpy.random.default_rng(seed)`; the same seed gives the same split on every machine.
        Both parts keep the catalog sizes.

        Args:
            holdout_fraction: fraction of ratings in the test set, strictly between 0 and 1.
            seed: seed of the generator.

        Returns:
            `(train, test)`.
        """
        holdout_fraction = check_float(
            "holdout_fraction",
            holdout_fraction,
            exclusive_minimum=0.0,
            exclusive_maximum=1.0,
            expected="strictly between 0 and 1",
        )
        seed = check_int("seed", seed, minimum=0)
        n = len(self)
        n_test = int(round(holdout_fraction * n))
        if n_test in (0, n):
            raise RatingsError(
                f"holdout_fraction={holdout_fraction} of {n} ratings leaves an empty "
                f"{'test' if n_test == 0 else 'train'} set"
            )
        rng = np.random.default_rng(seed)
        test_mask = np.zeros(n, dtype=bool)
        test_mask[rng.choice(n, size=n_test, replace=False)] = True
        return self.subset(~test_mask), self.subset(test_mask)

    def to_implicit(self, threshold: float | None = None, *, counts: bool = False) -> Ratings:
        """The positives of these ratings, for implicit-feedback models (`cfcore.IALS`).

        Keeps the ratings strictly above `threshold` (all of them for None), and merges repeated
        (user, item) pairs into one, in (user, item) order. The catalog, vocabularies and
        catalogue are kept.

        Args:
            threshold: keep ratings `> threshold` (e.g. 3.5 for MovieLens: 4 and 5 stars).
            counts: False: every positive has value 1 (a repeated pair too). True: the values
                are interaction counts (plays, clicks) and a pair's value is their sum.

        Returns:
            `Ratings` with one entry per positive pair.

        Raises:
            RatingsError: no rating is above `threshold`, or `counts` with a negative value.
        """
        keep = np.ones(len(self), bool) if threshold is None else self.values > float(threshold)
        if not keep.any():
            raise RatingsError(
                f"no rating is above the threshold {threshold!r} (ratings are in "
                f"[{self.values.min():g}, {self.values.max():g}])"
            )
        users, items = self.users[keep].astype(np.int64), self.items[keep].astype(np.int64)
        values = self.values[keep].astype(np.float64)
        if counts and (values < 0).any():
            raise RatingsError(f"counts must be >= 0, got {values.min():g}")
        pair, inverse = np.unique(users * self.num_items + items, return_inverse=True)
        merged = np.bincount(inverse, weights=values if counts else None, minlength=len(pair))
        return Ratings(
            users=pair // self.num_items,
            items=pair % self.num_items,
            values=merged if counts else np.ones(len(pair)),
            num_users=self.num_users,
            num_items=self.num_items,
            user_ids=self.user_ids,
            item_ids=self.item_ids,
            catalog=self.catalog,
        )

    def to_frame(self) -> pd.DataFrame:
        """The ratings as a frame with columns `user`, `item`, `rating` (and `timestamp`)."""
        cols: dict[str, Any] = {"user": self.users, "item": self.items, "rating": self.values}
        if self.timestamps is not None:
            cols["timestamp"] = self.timestamps
        return pd.DataFrame(cols)


def as_ratings(data: Any, what: str) -> Ratings:
    """Accepts `Ratings` or anything with a `.ratings` attribute holding them (a dataset)."""
    if isinstance(data, Ratings):
        return data
    inner = getattr(data, "ratings", None)
    if isinstance(inner, Ratings):
        return inner
    raise ArgumentTypeError(
        f"{what} must be cfcore.Ratings (or a dataset holding them), got {type(data).__name__}"
    )


def _as_index_array(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == np.int32 and arr.ndim == 1:
        return arr  # already narrow: skip the int64 round trip (GBs at tens of millions of ratings)
    if arr.ndim != 1:
        raise RatingsError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if (
            np.issubdtype(arr.dtype, np.floating)
            and np.all(np.isfinite(arr))
            and np.all(arr == np.round(arr))
        ):
            big = np.abs(arr) >= 2**62
            if big.any():  # would wrap around when cast to int64
                raise RatingsError(f"{name[:-1]} index {arr[big][0]:g} is out of range")
            arr = arr.astype(np.int64)
        else:
            raise RatingsError(f"{name} must be integer indices, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _check_range(idx: np.ndarray, size: int, what: str) -> None:
    if idx.size == 0:
        return
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0:
        raise RatingsError(f"{what} index {lo} is negative; indices must be in [0, {size})")
    if hi >= size:
        raise RatingsError(
            f"{what} index {hi} is out of range for {size} {what}s (valid: 0..{size - 1})"
        )


def _encode(col: pd.Series, vocab: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    if vocab is None:
        codes, uniques = pd.factorize(col, sort=True)
        if (codes < 0).any():
            raise RatingsError(f"{what} ids contain missing values")
        return codes.astype(np.int32), np.asarray(uniques)
    vocab_arr = np.asarray(vocab)
    index = pd.Index(vocab_arr)
    if not index.is_unique:
        raise RatingsError(f"the {what} vocabulary has duplicate ids")
    codes = index.get_indexer(pd.Index(col))
    if (codes < 0).any():
        bad = col[codes < 0].iloc[0]
        bad = bad.item() if isinstance(bad, np.generic) else bad
        raise RatingsError(f"{what} id {bad!r} is not in the {what} vocabulary of {len(index)} ids")
    return codes.astype(np.int32), vocab_arr


@dataclass(frozen=True)
class Batch:
    """Observed ratings as arrays, host (NumPy) or device (native).

    Attributes:
        users: int32 `[n]`.
        items: int32 `[n]`.
        values: float32 `[n]`.
    """

    users: Any
    items: Any
    values: Any

    @classmethod
    def from_ratings(cls, ratings: Any) -> Batch:
        return cls(ratings.users, ratings.items, ratings.values)
