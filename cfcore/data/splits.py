"""Splits of the users for the softmax model: training users, test users' inputs and targets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ArgumentValueError
from .bags import Ragged, SoftmaxBatch
from .history import HistoryFeatures

PROTOCOLS = ("holdout", "notebook")
"""Evaluation protocols of the softmax model; see `split_users`."""


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
        raise ArgumentValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    for name, v in (("test_fraction", test_fraction), ("target_fraction", target_fraction)):
        if not 0.0 < float(v) < 1.0:
            raise ArgumentValueError(f"{name} must be strictly between 0 and 1, got {v!r}")
    min_len = 2 if protocol == "holdout" else 1
    lengths = features.histories.lengths
    eligible = np.flatnonzero(lengths >= min_len)
    if len(eligible) < 2:
        raise ArgumentValueError(
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
