"""Seeded training batches of the softmax model: `SoftmaxBatcher`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ArgumentValueError
from .bags import SoftmaxBatch
from .batching import MinibatchSampler
from .history import HistoryFeatures, _check_users
from .splits import PROTOCOLS


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
            raise ArgumentValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if not 0.0 < float(input_fraction) < 1.0:
            raise ArgumentValueError(
                f"input_fraction must be strictly between 0 and 1, got {input_fraction!r}"
            )
        users = np.asarray(users, dtype=np.int64)
        if users.ndim != 1 or len(users) == 0:
            raise ArgumentValueError(
                f"users must be a non-empty 1-D array, got shape {users.shape}"
            )
        _check_users(users, features.num_users)
        min_len = 2 if protocol == "holdout" else 1
        short = features.histories.lengths[users] < min_len
        if short.any():
            raise ArgumentValueError(
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
