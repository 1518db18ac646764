"""Array containers of the bag-of-words inputs: `Vocabulary`, `Ragged` rows and `SoftmaxBatch`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ArgumentValueError

if TYPE_CHECKING:
    from .ratings import Ratings


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
            raise ArgumentValueError(
                f"token {token!r} is not in the vocabulary of feature {self.name!r} "
                f"({len(self)} tokens, e.g. {list(self.tokens[:3])})"
            ) from None


@dataclass(frozen=True, eq=False)
class Ragged:
    """Rows of different lengths stored flat (CSR): row `i` is `values[offsets[i]:offsets[i + 1]]`.

    cfcore's one compressed-sparse-row container: users' histories and items' tokens (softmax
    model), ranking targets (`cfcore.metrics`) and the items each user rated (retrieval's
    exclusions, where it is also named `cfcore.retrieval.RatedItems`).

    Attributes:
        offsets: int64 `[R + 1]`, non-decreasing, starting at 0.
        values: int32 `[offsets[-1]]`, column indices (item or token ids).
        num_columns: the number of columns the values index (M items for rated items), or None
            when not known; `mask` needs it.

    Example:
        >>> r = Ragged.from_rows([[2, 0], [], [1]])
        >>> len(r), r.lengths.tolist(), r.row(0).tolist()
        (3, [2, 0, 1], [2, 0])
        >>> Ragged.from_pairs([1, 0, 1], [3, 1, 0], num_rows=2, num_columns=4).mask().astype(int)
        array([[0, 1, 0, 0],
               [1, 0, 0, 1]])
    """

    offsets: np.ndarray
    values: np.ndarray
    num_columns: int | None = None

    @classmethod
    def from_rows(cls, rows: Sequence[Any], num_columns: int | None = None) -> Ragged:
        """From a sequence of `R` integer sequences (row `i`'s values in order)."""
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        values = (
            np.concatenate([np.asarray(r, dtype=np.int64) for r in rows]).astype(np.int32)
            if len(rows) and offsets[-1]
            else np.zeros(0, np.int32)
        )
        return cls(offsets, values, num_columns)

    @classmethod
    def from_pairs(
        cls, rows: Any, columns: Any, num_rows: int, num_columns: int | None = None
    ) -> Ragged:
        """From `(row, column)` pairs, `[n]` each; a row keeps its columns in the pairs' order."""
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=num_rows))])
        values = np.asarray(columns)[order].astype(np.int32)
        return cls(offsets.astype(np.int64), values, num_columns)

    @classmethod
    def from_ratings(cls, ratings: Ratings) -> Ragged:
        """The items each user rated in `ratings`: `N` rows over `M` columns, in rating order."""
        return cls.from_pairs(ratings.users, ratings.items, ratings.num_users, ratings.num_items)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_rows(self) -> int:
        """R, the number of rows (`len(self)`)."""
        return len(self)

    # The names `cfcore.retrieval.RatedItems` had before it became this class (SciPy's CSR names).
    @property
    def indptr(self) -> np.ndarray:
        """`offsets`, under its CSR name."""
        return self.offsets

    @property
    def indices(self) -> np.ndarray:
        """`values`, under its CSR name."""
        return self.values

    @property
    def num_items(self) -> int | None:
        """`num_columns`, under the name it has for rated items."""
        return self.num_columns

    @property
    def lengths(self) -> np.ndarray:
        """int64 `[R]`."""
        return np.diff(self.offsets)

    def row(self, i: int) -> np.ndarray:
        """Row `i`'s values, int32 `[lengths[i]]`."""
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def rows(self) -> list[np.ndarray]:
        return [self.row(i) for i in range(len(self))]

    def pairs(self, rows: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """`(position [n], value [n])` of every value of rows `rows` (all by default), in order.

        `position` is the index into `rows` (int64), `value` the int64 value; `n` is the total
        length of those rows.
        """
        rows = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        starts, lengths = self.offsets[rows], self.offsets[rows + 1] - self.offsets[rows]
        # Value j of the r-th selected row sits at starts[r] + j in `values`.
        first = np.cumsum(lengths) - lengths
        index = np.repeat(starts - first, lengths) + np.arange(int(lengths.sum()))
        return np.repeat(np.arange(len(rows)), lengths), self.values[index].astype(np.int64)

    def take(self, rows: Any) -> Ragged:
        """The rows `rows` (`[B]`), in that order, as a new `Ragged` with `B` rows."""
        rows = np.asarray(rows, dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(self.lengths[rows])]).astype(np.int64)
        return Ragged(offsets, self.pairs(rows)[1].astype(np.int32), self.num_columns)

    def mask(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Dense boolean `[stop - start, num_columns]` of rows `start:stop` (all by default)."""
        if self.num_columns is None:
            raise ArgumentValueError(
                "a dense mask needs num_columns, the width of the rows; it is None"
            )
        stop = len(self) if stop is None else stop
        out = np.zeros((stop - start, self.num_columns), dtype=bool)
        positions, values = self.pairs(np.arange(start, stop))
        out[positions, values] = True
        return out

    def padded(self, rows: np.ndarray | None = None, width: int | None = None):
        """Rows `rows` (all by default) padded with 0 to `width` (default: the longest).

        Returns:
            `(values [len(rows), width] int32, valid [len(rows), width] bool)`.
        """
        rows = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        starts, lengths = self.offsets[rows], self.lengths[rows]
        width = int(lengths.max(initial=0)) if width is None else int(width)
        if len(rows) and lengths.max() > width:
            raise ArgumentValueError(
                f"a row has {int(lengths.max())} values, more than width {width}"
            )
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
