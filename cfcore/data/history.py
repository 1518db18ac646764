"""User histories as bags of tokens: `HistoryFeatures`, built from a dataset, and the bags it sends.

See `cfcore.data.features` for the bag layout (dense counts up to `DENSE_VOCAB` tokens, padded ids
above).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ArgumentTypeError, ArgumentValueError
from .bags import Ragged, SoftmaxBatch, Vocabulary
from .ratings import Ratings

FEATURES = ("movie_id", "genre", "year")
"""The features `HistoryFeatures.from_dataset` builds (genre and year need item metadata)."""

DENSE_VOCAB = 2048
"""Vocabularies up to this size are sent as whole-vocabulary count vectors `[B, V_f]`.

On a CPU a `[B, V] x [V, d]` product is about ten times faster than gathering and scattering the
`[B, L, d]` rows of padded ids for MovieLens 100K's 1,682 movies (`L` = 737, the longest history).
The price is memory: a chunk of `k` steps holds `k · B · V · 4` bytes per dense feature (134 MB for
100 steps of 200 users over 1,682 movies), hence the cap.
"""


MISSING = "<missing>"
"""The token of a missing value (a movie without a release year), as the notebook's "nan"."""

NO_GENRE = "Other"


class HistoryFeatures:
    """What the softmax model reads from a dataset: user histories and each item's tokens.

    Build it with `from_dataset`. Histories hold each user's distinct rated items, sorted.

    Attributes:
        vocabularies: per feature, its `Vocabulary`.
        item_tokens: per feature other than the item feature, the tokens of each item (`[M]` rows).
        histories: per user, the rated items (`[N]` rows).
        num_users: N.
        num_items: M.
        item_feature: the feature whose tokens are the items themselves (`"movie_id"`).
    """

    def __init__(
        self,
        histories: Ragged,
        num_items: int,
        vocabularies: dict[str, Vocabulary],
        item_tokens: dict[str, Ragged],
        item_feature: str = "movie_id",
    ) -> None:
        self.histories = histories
        self.num_users = len(histories)
        self.num_items = int(num_items)
        self.vocabularies = dict(vocabularies)
        self.item_tokens = dict(item_tokens)
        self.item_feature = item_feature
        if item_feature not in self.vocabularies:
            raise ArgumentValueError(f"the item feature {item_feature!r} has no vocabulary")
        for name, tokens in self.item_tokens.items():
            if len(tokens) != self.num_items:
                raise ArgumentValueError(
                    f"feature {name!r} gives tokens for {len(tokens)} items, expected {self.num_items}"
                )
        # Each item's tokens padded with -1 to the most any item has: one gather per batch.
        self._token_table: dict[str, np.ndarray] = {}
        for name, tokens in self.item_tokens.items():
            padded, valid = tokens.padded(width=max(int(tokens.lengths.max(initial=0)), 1))
            self._token_table[name] = np.where(valid, padded.astype(np.int64), -1)
        lengths = histories.lengths
        self.max_history = int(lengths.max(initial=0))
        # The most distinct tokens any user's whole history holds: a fixed pad width for every
        # subset of it, so that batch shapes (and compilations) do not change between steps.
        self.max_distinct: dict[str, int] = {item_feature: self.max_history}
        users = np.repeat(np.arange(self.num_users), lengths)
        for name, tokens in self.item_tokens.items():
            # Every token of every rated item, with the user who rated the item.
            positions, toks = tokens.pairs(histories.values)
            rows = users[positions]
            vocab = len(self.vocabularies[name])
            keys = np.unique(rows.astype(np.int64) * vocab + toks)
            per_user = np.bincount(keys // vocab, minlength=self.num_users)
            self.max_distinct[name] = int(per_user.max(initial=0))

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_dataset(
        cls, dataset: Any, genre_columns: Sequence[str] | None = None
    ) -> HistoryFeatures:
        """The notebook's features of a dataset: ratings plus item metadata.

        Args:
            dataset: a `cfcore.datasets.MovieLens` (its `ratings`, `items` and `genres` are used),
                or `Ratings` whose `catalog` has a `year` column and 0/1 genre columns.
            genre_columns: names of the 0/1 genre columns of the catalog; by default the
                dataset's `genres`, else every column of the catalog holding only 0 and 1.

        Returns:
            Features `"movie_id"` (vocabulary: the catalog's item ids), `"genre"` (the genre
            columns, plus `"Other"` if an item has none, as the notebook does) and `"year"`
            (the distinct release years as strings, plus `"<missing>"` if a year is missing);
            genre and year only if the catalog has them.

        Raises:
            TypeError: `dataset` holds no `Ratings`.
            ValueError: the dataset has no item catalog.
        """
        ratings = _ratings_of(dataset)
        catalog = getattr(dataset, "items", None)
        if not isinstance(catalog, pd.DataFrame):
            catalog = ratings.catalog
        if catalog is None:
            raise ArgumentValueError(
                "the softmax model needs item metadata: pass a dataset from "
                "cfcore.datasets.load_movielens, or Ratings with a catalog frame (one row per item, "
                "with 'year' and 0/1 genre columns)"
            )
        if len(catalog) != ratings.num_items:
            raise ArgumentValueError(
                f"the item catalog has {len(catalog)} rows but the ratings {ratings.num_items} items"
            )
        m = ratings.num_items
        ids = catalog["item_id"].to_numpy() if "item_id" in catalog else np.arange(m)
        vocabularies = {"movie_id": Vocabulary("movie_id", tuple(str(i) for i in ids))}
        item_tokens: dict[str, Ragged] = {}
        if genre_columns is None:
            genre_columns = getattr(dataset, "genres", None)
        if genre_columns is None:
            genre_columns = [
                c
                for c in catalog.columns
                if c not in ("item_id", "year")
                and pd.api.types.is_integer_dtype(catalog[c])
                and catalog[c].isin([0, 1]).all()
            ]
        if genre_columns:
            missing = [c for c in genre_columns if c not in catalog]
            if missing:
                raise ArgumentValueError(
                    f"genre columns {missing} are not in the catalog {list(catalog)}"
                )
            flags = catalog[list(genre_columns)].to_numpy(dtype=bool)
            tokens = [str(c) for c in genre_columns]
            none = ~flags.any(axis=1)
            if none.any():
                tokens.append(NO_GENRE)
                flags = np.column_stack([flags, none])
            vocabularies["genre"] = Vocabulary("genre", tuple(tokens))
            item_tokens["genre"] = _ragged_from_flags(flags)
        if "year" in catalog:
            year = pd.to_numeric(catalog["year"], errors="coerce").astype("Int64")
            years = sorted(int(y) for y in year.dropna().unique())
            tokens = [str(y) for y in years] + ([MISSING] if year.isna().any() else [])
            lookup = {y: i for i, y in enumerate(years)}
            codes = np.array(
                [len(years) if pd.isna(y) else lookup[int(y)] for y in year], dtype=np.int32
            )
            vocabularies["year"] = Vocabulary("year", tuple(tokens))
            item_tokens["year"] = Ragged(np.arange(m + 1, dtype=np.int64), codes)
        return cls(_histories(ratings), m, vocabularies, item_tokens)

    # ------------------------------------------------------------------ views

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.vocabularies)

    @property
    def vocab_sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.vocabularies.items()}

    def check_features(self, names: Sequence[str]) -> None:
        """Raises a ValueError naming any feature of `names` this dataset cannot provide."""
        unknown = [n for n in names if n not in self.vocabularies]
        if unknown:
            raise ArgumentValueError(
                f"unknown feature name(s) {unknown}; this dataset provides {list(self.vocabularies)}"
            )

    def width(self, name: str) -> int:
        """`L_f`, the padded length of feature `name`'s bags."""
        vocab = len(self.vocabularies[name])
        if vocab <= DENSE_VOCAB:
            return vocab
        return max(self.max_distinct[name], 1)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}: {v}" for k, v in self.vocab_sizes.items())
        return (
            f"HistoryFeatures({self.num_users} users, {self.num_items} items, "
            f"{len(self.histories.values)} ratings; vocabularies {{{sizes}}})"
        )

    # ------------------------------------------------------------------ bags

    def padded_histories(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The histories of `users`, padded to the longest history of the dataset.

        Returns:
            `(items [B, L] int32, valid [B, L] bool)` with `L = max_history`.

        Raises:
            ValueError: a user is out of range or has no rated items.
        """
        users = np.asarray(users, dtype=np.int64)
        _check_users(users, self.num_users)
        empty = self.histories.lengths[users] == 0
        if empty.any():
            raise ArgumentValueError(
                f"user {int(users[np.argmax(empty)])} has no rated items: its bags of words would be "
                "empty. Keep only users with at least one rating."
            )
        return self.histories.padded(users, self.max_history)

    def bags(
        self,
        items: np.ndarray,
        mask: np.ndarray,
        names: Sequence[str],
        labels: np.ndarray | None = None,
    ) -> SoftmaxBatch:
        """Bags of words of padded rows of items.

        Args:
            items: int `[..., B, L]` item indices (anything where `mask` is False).
            mask: bool `[..., B, L]`, which items are in each row's input.
            names: the features to build.
            labels: optional int `[..., B]` targets, passed through.

        Returns:
            A `SoftmaxBatch` with leading shape `[..., B]` (see `bags_from_pairs`).

        Raises:
            ValueError: a feature is unknown or a row's input is empty.
        """
        items = np.asarray(items)
        mask = np.asarray(mask, dtype=bool)
        lead = items.shape[:-1]
        flat_mask = mask.reshape(-1, items.shape[-1])
        rows, cols = np.nonzero(flat_mask)
        in_items = items.reshape(flat_mask.shape)[rows, cols]
        return self.bags_from_pairs(rows, in_items, lead, names, labels)

    def bags_from_pairs(
        self,
        rows: np.ndarray,
        items: np.ndarray,
        lead: tuple[int, ...],
        names: Sequence[str],
        labels: np.ndarray | None = None,
    ) -> SoftmaxBatch:
        """Bags of words from the (row, item) pairs of the inputs.

        Args:
            rows: int `[n]` row of each input item, into the `prod(lead)` rows.
            items: int `[n]` the input items.
            lead: the leading shape of the rows (e.g. `(k, B)`).
            names: the features to build.
            labels: optional int `lead` targets, passed through.

        Returns:
            A `SoftmaxBatch`: for a feature with at most `DENSE_VOCAB` tokens, only
            `weights[f]` `[*lead, V_f]` (the token counts over the whole vocabulary; the backend
            combines them with one matrix product); for a larger one, `ids[f]` and `weights[f]`
            `[*lead, L_f]` (distinct tokens with their counts, padded).

        Raises:
            ValueError: a feature is unknown or a row's input is empty.
        """
        self.check_features(names)
        num_rows = int(np.prod(lead, dtype=np.int64))
        rows = np.asarray(rows, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        per_row = np.bincount(rows, minlength=num_rows)
        if len(per_row) > num_rows:
            raise ArgumentValueError(f"row {int(rows.max())} is out of range for {num_rows} rows")
        if num_rows and per_row.min() == 0:
            raise ArgumentValueError(
                f"row {int(np.argmin(per_row))} of the batch has an empty input: a bag of words "
                "needs at least one item"
            )
        if len(items) and (items.min() < 0 or items.max() >= self.num_items):
            bad = int(items.min() if items.min() < 0 else items.max())
            raise ArgumentValueError(f"item id {bad} is out of range for {self.num_items} items")
        ids: dict[str, np.ndarray] = {}
        weights: dict[str, np.ndarray] = {}
        for name in names:
            vocab = len(self.vocabularies[name])
            if name == self.item_feature:
                keys = rows * vocab + items
                if vocab <= DENSE_VOCAB:
                    # A history holds each item once, so the keys are distinct: set, do not count.
                    dense = np.zeros(num_rows * vocab, np.float32)
                    dense[keys] = 1.0
                    weights[name] = dense.reshape(*lead, vocab)
                    continue
            else:
                keys = self._token_keys(name, rows, items)
            if vocab <= DENSE_VOCAB:
                counts = np.bincount(keys, minlength=num_rows * vocab)
                weights[name] = counts.astype(np.float32).reshape(*lead, vocab)
                continue
            uniq, counts = np.unique(keys, return_counts=True)
            row, tok = uniq // vocab, uniq % vocab
            pos = np.arange(len(uniq)) - np.searchsorted(row, row, side="left")
            width = self.width(name)
            fid = np.zeros((num_rows, width), np.int32)
            fw = np.zeros((num_rows, width), np.float32)
            fid[row, pos] = tok
            fw[row, pos] = counts
            ids[name] = fid.reshape(*lead, width)
            weights[name] = fw.reshape(*lead, width)
        if labels is not None:
            labels = np.asarray(labels, dtype=np.int32).reshape(lead)
        return SoftmaxBatch(ids, weights, labels)

    def _token_keys(self, name: str, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """`row · V + token` for every token of every (row, item) input pair."""
        table = self._token_table[name]  # [M, most tokens of an item], -1 padded
        vocab = len(self.vocabularies[name])
        if table.shape[1] == 1:
            return rows * vocab + table[items, 0]
        toks = table[items]
        return (rows[:, None] * vocab + toks)[toks >= 0]


def _ragged_from_flags(flags: np.ndarray) -> Ragged:
    """The columns set in each row of a 2-D flag matrix `[R, C]`, ascending."""
    rows, cols = np.nonzero(flags)
    return Ragged.from_pairs(rows, cols, flags.shape[0], flags.shape[1])


def _ratings_of(dataset: Any) -> Ratings:
    if isinstance(dataset, Ratings):
        return dataset
    inner = getattr(dataset, "ratings", None)
    if isinstance(inner, Ratings):
        return inner
    raise ArgumentTypeError(
        "expected a dataset (e.g. cfcore.datasets.load_movielens('100k')) or cfcore.Ratings with a "
        f"catalog, got {type(dataset).__name__}"
    )


def _histories(ratings: Ratings) -> Ragged:
    """Each user's distinct rated items, sorted (a movie rated twice counts once)."""
    keys = np.unique(ratings.users.astype(np.int64) * ratings.num_items + ratings.items)
    users, items = keys // ratings.num_items, keys % ratings.num_items
    return Ragged.from_pairs(users, items, ratings.num_users, ratings.num_items)


def _check_users(users: np.ndarray, num_users: int) -> None:
    if len(users) and (users.min() < 0 or users.max() >= num_users):
        bad = int(users.min() if users.min() < 0 else users.max())
        raise ArgumentValueError(f"user id {bad} is out of range for {num_users} users")
