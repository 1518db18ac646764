"""Bag-of-words inputs of the softmax model: vocabularies, user histories, splits and batches.

A user is described, as in the notebook's section VI, by three bags of tokens built from the movies
they rated: the movie ids (`"movie_id"`), the genres of those movies (`"genre"`, one token per
active genre flag, so a user who rated five dramas has "Drama" five times in the bag) and their
release years (`"year"`). Each feature has its own vocabulary.

Everything here is NumPy and every random draw comes from `numpy.random.default_rng(seed)`, so the
TensorFlow and JAX backends receive identical batches.

A bag is a set of tokens with counts. For a feature whose vocabulary has at most `DENSE_VOCAB`
tokens (the movie ids, genres and years of MovieLens 100K) it is sent dense: `weights[f]`, float32
`[B, V_f]`, the count of every token, and the backend combines it with one matrix product
(`weights · T / Σ weights` for the mean). A larger vocabulary is sent sparse: `ids[f]` (int32
`[B, L_f]`) and `weights[f]` (float32 `[B, L_f]`), the distinct tokens with their counts padded
with weight 0 to `L_f`, the most distinct tokens any user's history holds (fixed, so batch shapes
and compilations do not change between steps). Either way the mean combiner equals the plain mean
over the bag with its repetitions.

Example:
    >>> ml = cfcore.datasets.load_movielens("100k")                     # doctest: +SKIP
    >>> feats = HistoryFeatures.from_dataset(ml)                        # doctest: +SKIP
    >>> split = split_users(feats, protocol="holdout", seed=0)          # doctest: +SKIP
    >>> batcher = SoftmaxBatcher(feats, split.train_users, batch_size=200, seed=0,
    ...                          protocol="holdout")                    # doctest: +SKIP
    >>> batch = batcher.take(10)  # weights [10, 200, V_f], labels [10, 200]    # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .batching import MinibatchSampler
from .ratings import Ratings

__all__ = [
    "DENSE_VOCAB",
    "FEATURES",
    "PROTOCOLS",
    "HistoryFeatures",
    "Ragged",
    "SoftmaxBatch",
    "SoftmaxBatcher",
    "SoftmaxSplit",
    "Vocabulary",
    "input_bags",
    "split_users",
]

FEATURES = ("movie_id", "genre", "year")
"""The features `HistoryFeatures.from_dataset` builds (genre and year need item metadata)."""

PROTOCOLS = ("holdout", "notebook")
"""Evaluation protocols of the softmax model; see `split_users`."""

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


@dataclass(frozen=True)
class Vocabulary:
    """The tokens of one feature; token `i` has id `i`.

    Attributes:
        name: the feature's name.
        tokens: the tokens, as strings, in id order.
    """

    name: str
    tokens: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.tokens)

    def index(self, token: Any) -> int:
        """The id of `token`; a ValueError names the feature if it is not in the vocabulary."""
        try:
            return self.tokens.index(str(token))
        except ValueError:
            raise ValueError(
                f"token {token!r} is not in the vocabulary of feature {self.name!r} "
                f"({len(self)} tokens, e.g. {list(self.tokens[:3])})"
            ) from None


@dataclass(frozen=True, eq=False)
class Ragged:
    """Rows of different lengths stored flat (CSR): row `i` is `values[offsets[i]:offsets[i + 1]]`.

    Attributes:
        offsets: int64 `[R + 1]`, non-decreasing, starting at 0.
        values: int32 `[offsets[-1]]`.
    """

    offsets: np.ndarray
    values: np.ndarray

    @classmethod
    def from_rows(cls, rows: Sequence[Any]) -> Ragged:
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        values = (
            np.concatenate([np.asarray(r, dtype=np.int64) for r in rows]).astype(np.int32)
            if len(rows) and offsets[-1]
            else np.zeros(0, np.int32)
        )
        return cls(offsets, values)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """int64 `[R]`."""
        return np.diff(self.offsets)

    def row(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def rows(self) -> list[np.ndarray]:
        return [self.row(i) for i in range(len(self))]

    def padded(self, rows: np.ndarray | None = None, width: int | None = None):
        """Rows `rows` (all by default) padded with 0 to `width` (default: the longest).

        Returns:
            `(values [len(rows), width] int32, valid [len(rows), width] bool)`.
        """
        rows = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        starts, lengths = self.offsets[rows], self.lengths[rows]
        width = int(lengths.max(initial=0)) if width is None else int(width)
        if len(rows) and lengths.max() > width:
            raise ValueError(f"a row has {int(lengths.max())} values, more than width {width}")
        pos = np.arange(width)
        valid = pos[None, :] < lengths[:, None]
        index = np.where(valid, starts[:, None] + pos[None, :], 0)
        values = np.where(valid, self.values[index] if len(self.values) else 0, 0)
        return values.astype(np.int32), valid


@dataclass(frozen=True)
class SoftmaxBatch:
    """Bags of words (and labels) as NumPy arrays, the same for every backend.

    Shapes have a leading `[k]` when `k` steps are stacked for one compiled chunk.

    Attributes:
        ids: per feature, int32 `[..., B, L_f]` token ids (0 on padding).
        weights: per feature, float32 `[..., B, L_f]` token counts (0 on padding).
        labels: int32 `[..., B]` target items, or None for inputs alone.
    """

    ids: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]
    labels: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        """`{"ids": ..., "weights": ..., "labels": ...}`: the pytree the backends take."""
        out: dict[str, Any] = {"ids": dict(self.ids), "weights": dict(self.weights)}
        if self.labels is not None:
            out["labels"] = self.labels
        return out

    def step(self, i: int) -> SoftmaxBatch:
        """Step `i` of a stacked batch (`[k, B, ...]` -> `[B, ...]`)."""
        return SoftmaxBatch(
            {f: a[i] for f, a in self.ids.items()},
            {f: a[i] for f, a in self.weights.items()},
            None if self.labels is None else self.labels[i],
        )

    def rows(self, index: np.ndarray) -> SoftmaxBatch:
        """Rows `index` of an unstacked batch."""
        return SoftmaxBatch(
            {f: a[index] for f, a in self.ids.items()},
            {f: a[index] for f, a in self.weights.items()},
            None if self.labels is None else self.labels[index],
        )


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
            raise ValueError(f"the item feature {item_feature!r} has no vocabulary")
        for name, tokens in self.item_tokens.items():
            if len(tokens) != self.num_items:
                raise ValueError(
                    f"feature {name!r} gives tokens for {len(tokens)} items, expected {self.num_items}"
                )
        # Each item's tokens padded with -1 to the most any item has: one gather per batch.
        self._token_table: dict[str, np.ndarray] = {}
        for name, tokens in self.item_tokens.items():
            per_item = tokens.lengths
            table = np.full((self.num_items, max(int(per_item.max(initial=0)), 1)), -1, np.int64)
            item_of = np.repeat(np.arange(self.num_items), per_item)
            table[item_of, np.arange(len(item_of)) - np.repeat(tokens.offsets[:-1], per_item)] = (
                tokens.values
            )
            self._token_table[name] = table
        lengths = histories.lengths
        self.max_history = int(lengths.max(initial=0))
        # The most distinct tokens any user's whole history holds: a fixed pad width for every
        # subset of it, so that batch shapes (and compilations) do not change between steps.
        self.max_distinct: dict[str, int] = {item_feature: self.max_history}
        users = np.repeat(np.arange(self.num_users), lengths)
        for name, tokens in self.item_tokens.items():
            rows, toks = _expand(tokens, users, histories.values)
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
            raise ValueError(
                "the softmax model needs item metadata: pass a dataset from "
                "cfcore.datasets.load_movielens, or Ratings with a catalog frame (one row per item, "
                "with 'year' and 0/1 genre columns)"
            )
        if len(catalog) != ratings.num_items:
            raise ValueError(
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
                raise ValueError(f"genre columns {missing} are not in the catalog {list(catalog)}")
            flags = catalog[list(genre_columns)].to_numpy(dtype=bool)
            tokens = [str(c) for c in genre_columns]
            none = ~flags.any(axis=1)
            if none.any():
                tokens.append(NO_GENRE)
                flags = np.concatenate([flags, none[:, None]], axis=1)
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
            raise ValueError(
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
            raise ValueError(
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
            raise ValueError(f"row {int(rows.max())} is out of range for {num_rows} rows")
        if num_rows and per_row.min() == 0:
            raise ValueError(
                f"row {int(np.argmin(per_row))} of the batch has an empty input: a bag of words "
                "needs at least one item"
            )
        if len(items) and (items.min() < 0 or items.max() >= self.num_items):
            bad = int(items.min() if items.min() < 0 else items.max())
            raise ValueError(f"item id {bad} is out of range for {self.num_items} items")
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


def _expand(tokens: Ragged, rows: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For (row, item) pairs, the (row, token) pairs of every token of each item."""
    starts = tokens.offsets[items]
    lengths = tokens.offsets[items + 1] - starts
    total = int(lengths.sum())
    # Index of each output token: its item's start plus its rank within the item.
    first = np.repeat(np.cumsum(lengths) - lengths, lengths)
    index = np.repeat(starts, lengths) + (np.arange(total) - first)
    return np.repeat(rows, lengths), tokens.values[index].astype(np.int64)


def _ragged_from_flags(flags: np.ndarray) -> Ragged:
    rows, cols = np.nonzero(flags)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(flags)))])
    return Ragged(offsets.astype(np.int64), cols.astype(np.int32))


def _ratings_of(dataset: Any) -> Ratings:
    if isinstance(dataset, Ratings):
        return dataset
    inner = getattr(dataset, "ratings", None)
    if isinstance(inner, Ratings):
        return inner
    raise TypeError(
        "expected a dataset (e.g. cfcore.datasets.load_movielens('100k')) or cfcore.Ratings with a "
        f"catalog, got {type(dataset).__name__}"
    )


def _histories(ratings: Ratings) -> Ragged:
    """Each user's distinct rated items, sorted (a movie rated twice counts once)."""
    keys = np.unique(ratings.users.astype(np.int64) * ratings.num_items + ratings.items)
    users, items = keys // ratings.num_items, keys % ratings.num_items
    offsets = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=ratings.num_users))])
    return Ragged(offsets.astype(np.int64), items.astype(np.int32))


def _check_users(users: np.ndarray, num_users: int) -> None:
    if len(users) and (users.min() < 0 or users.max() >= num_users):
        bad = int(users.min() if users.min() < 0 else users.max())
        raise ValueError(f"user id {bad} is out of range for {num_users} users")


# ---------------------------------------------------------------------------- splits


@dataclass(frozen=True, eq=False)
class SoftmaxSplit:
    """Users split into training and test users, with each test user's input and targets.

    Attributes:
        protocol: "holdout" or "notebook".
        seed: the seed that drew the split.
        train_users: int64 `[n_train]`, sorted.
        test_users: int64 `[n_test]`, sorted.
        test_inputs: per test user, the items of its input bags.
        test_targets: per test user, the items to retrieve.
        exclude_inputs: whether rankings exclude the input items (holdout) or not (notebook).
    """

    protocol: str
    seed: int
    train_users: np.ndarray
    test_users: np.ndarray
    test_inputs: Ragged
    test_targets: Ragged
    exclude_inputs: bool


def split_users(
    features: HistoryFeatures,
    protocol: str = "holdout",
    seed: int = 0,
    *,
    test_fraction: float = 0.1,
    target_fraction: float = 0.2,
) -> SoftmaxSplit:
    """Splits the users 90/10 (seeded) and sets each test user's input and targets.

    Users without ratings (and, for "holdout", with a single rating) are left out. With
    `rng = numpy.random.default_rng(seed)`, the test users are the first
    `round(test_fraction · n)` of `rng.permutation` of the eligible users; then, per test user in
    increasing order:

    * "notebook" (the course notebook's set-up): the input is the whole history and the target
      one movie drawn from it by `rng.integers`. The label is in the input, so a model can find it
      by copying its input (a leak), and with one target precision@10 is at most 0.1.
    * "holdout" (leak-free): `rng.permutation` of the history; the first
      `max(1, round(target_fraction · n))` items (at most `n - 1`) are the targets, the rest the
      input. Rankings exclude the input items.

    Args:
        features: the dataset's features.
        protocol: "holdout" or "notebook".
        seed: seed of the generator.
        test_fraction: share of the eligible users held out, in (0, 1).
        target_fraction: share of a test user's history held out as targets ("holdout"), in (0, 1).

    Returns:
        The `SoftmaxSplit`.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    for name, v in (("test_fraction", test_fraction), ("target_fraction", target_fraction)):
        if not 0.0 < float(v) < 1.0:
            raise ValueError(f"{name} must be strictly between 0 and 1, got {v!r}")
    min_len = 2 if protocol == "holdout" else 1
    lengths = features.histories.lengths
    eligible = np.flatnonzero(lengths >= min_len)
    if len(eligible) < 2:
        raise ValueError(
            f"only {len(eligible)} user(s) have at least {min_len} rated item(s); the {protocol!r} "
            "protocol needs two or more to split into training and test users"
        )
    rng = np.random.default_rng(seed)
    perm = rng.permutation(eligible)
    n_test = min(max(int(round(test_fraction * len(eligible))), 1), len(eligible) - 1)
    test_users = np.sort(perm[:n_test])
    train_users = np.sort(perm[n_test:])
    inputs, targets = [], []
    for u in test_users:
        history = features.histories.row(u)
        n = len(history)
        if protocol == "notebook":
            inputs.append(history)
            targets.append(history[[rng.integers(n)]])
        else:
            order = rng.permutation(n)
            n_t = min(max(int(round(target_fraction * n)), 1), n - 1)
            targets.append(np.sort(history[order[:n_t]]))
            inputs.append(np.sort(history[order[n_t:]]))
    return SoftmaxSplit(
        protocol=protocol,
        seed=int(seed),
        train_users=train_users.astype(np.int64),
        test_users=test_users.astype(np.int64),
        test_inputs=Ragged.from_rows(inputs),
        test_targets=Ragged.from_rows(targets),
        exclude_inputs=protocol == "holdout",
    )


def input_bags(
    features: HistoryFeatures, split: SoftmaxSplit, names: Sequence[str]
) -> SoftmaxBatch:
    """The input bags of the split's test users (leading shape `[n_test]`), without labels."""
    inputs = split.test_inputs
    rows = np.repeat(np.arange(len(inputs)), inputs.lengths)
    return features.bags_from_pairs(rows, inputs.values, (len(inputs),), names)


# ---------------------------------------------------------------------------- training batches


class SoftmaxBatcher:
    """Seeded training batches: users in shuffled epochs, one (input, label) example per user.

    Users are drawn as `MinibatchSampler` draws positions (epochs of permutations, as the notebook's
    shuffled, repeated dataset). For each example:

    * "notebook": the input is the whole history and the label a movie drawn uniformly from it
      (the notebook's `select_random`; the label stays in the input).
    * "holdout": each movie of the history goes to the input with probability `input_fraction`
      (at least one on each side) and the label is drawn uniformly from the others, so it is
      never in the input, as at test time.

    Args:
        features: the dataset's features.
        users: int `[n]` the users to draw from (e.g. `split.train_users`).
        batch_size: examples per step, in [1, n].
        seed: seed of the generator (user order and every draw).
        protocol: "holdout" or "notebook".
        names: the features to build (default: all of the dataset's).
        input_fraction: "holdout" only: share of the history in the input, in (0, 1).
    """

    def __init__(
        self,
        features: HistoryFeatures,
        users: np.ndarray,
        batch_size: int,
        seed: int = 0,
        protocol: str = "holdout",
        names: Sequence[str] | None = None,
        input_fraction: float = 0.8,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if not 0.0 < float(input_fraction) < 1.0:
            raise ValueError(
                f"input_fraction must be strictly between 0 and 1, got {input_fraction!r}"
            )
        users = np.asarray(users, dtype=np.int64)
        if users.ndim != 1 or len(users) == 0:
            raise ValueError(f"users must be a non-empty 1-D array, got shape {users.shape}")
        _check_users(users, features.num_users)
        min_len = 2 if protocol == "holdout" else 1
        short = features.histories.lengths[users] < min_len
        if short.any():
            raise ValueError(
                f"user {int(users[np.argmax(short)])} has {int(features.histories.lengths[users][short][0])} "
                f"rated item(s); the {protocol!r} protocol needs at least {min_len} per training user"
            )
        self.features = features
        self.users = users
        self.protocol = protocol
        self.names = tuple(features.feature_names if names is None else names)
        features.check_features(self.names)
        self.input_fraction = float(input_fraction)
        self.batch_size = int(batch_size)
        self._sampler = MinibatchSampler(len(users), batch_size, seed)
        # One generator for the sampler's permutations, another for the examples: the order of the
        # users does not depend on how many draws an example takes.
        self._rng = np.random.default_rng([seed, 1])

    def take(self, num_steps: int) -> SoftmaxBatch:
        """The next `num_steps` batches, stacked: leading shape `[k, B]`, `labels` `[k, B]`.

        The draws are made step by step, so the batches do not depend on how steps are grouped
        into calls (`take(10)` twice gives what `take(20)` gives).
        """
        positions = self._sampler.take(num_steps)
        rows, items, labels = [], [], []
        for step in range(num_steps):
            r, i, lab = self._examples(self.users[positions[step]])
            rows.append(r + step * self.batch_size)
            items.append(i)
            labels.append(lab)
        shape = (num_steps, self.batch_size)
        return self.features.bags_from_pairs(
            np.concatenate(rows), np.concatenate(items), shape, self.names, np.stack(labels)
        )

    def _examples(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One example per user: `(row, item)` pairs of the inputs and the labels `[B]`."""
        hist = self.features.histories
        lengths = hist.lengths[users]
        num_rows = len(users)
        rows = np.repeat(np.arange(num_rows), lengths)
        row_start = np.cumsum(lengths) - lengths  # each row's first entry in the flat arrays
        within = np.arange(len(rows)) - np.repeat(row_start, lengths)
        items = hist.values[np.repeat(hist.offsets[users], lengths) + within]
        rng = self._rng
        if self.protocol == "notebook":
            label_entry = row_start + np.floor(rng.random(num_rows) * lengths).astype(np.int64)
            return rows, items, items[label_entry]
        keep = rng.random(len(rows)) < self.input_fraction
        kept = np.bincount(rows, weights=keep, minlength=num_rows).astype(np.int64)
        # A row with everything kept drops one random item; one with nothing kept keeps one.
        forced = row_start + np.floor(rng.random(num_rows) * lengths).astype(np.int64)
        keep[forced[kept == lengths]] = False
        keep[forced[kept == 0]] = True
        dropped = np.flatnonzero(~keep)  # in row order
        n_dropped = np.bincount(rows[dropped], minlength=num_rows)
        pick = np.floor(rng.random(num_rows) * n_dropped).astype(np.int64)
        label_entry = dropped[np.cumsum(n_dropped) - n_dropped + pick]
        return rows[keep], items[keep], items[label_entry]
