"""The popularity baseline: recommend the movies the most training users rated.

It is evaluated under the softmax model's protocols (`cfcore.data.features.split_users`), so its
numbers sit beside the model's: a recommender that does not beat it has learnt nothing personal.
`PopularityScorer` is the same baseline for the implicit-feedback protocol
(`cfcore.eval.implicit.evaluate_strong_generalization`).

Example:
    >>> import cfcore
    >>> ml = cfcore.datasets.load_movielens("100k")
    >>> scores = evaluate_popularity(ml, k=10, seed=0)
    >>> {name: round(value, 4) for name, value in scores.items()}
    {'precision@10': 0.1691, 'recall@10': 0.1139, 'ndcg@10': 0.1938, 'map@10': 0.0924,
     'hit_rate@10': 0.7766, 'users': 94}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.features import HistoryFeatures, SoftmaxSplit, split_users
from ..errors import ArgumentValueError
from .metrics import ranking_metrics

__all__ = ["PopularityScorer", "evaluate_popularity", "popularity_ranking", "popularity_scores"]


def popularity_scores(features: HistoryFeatures, users: np.ndarray) -> np.ndarray:
    """How many of `users` rated each item: float64 `[M]`."""
    users = np.asarray(users, dtype=np.int64)
    hist = features.histories
    items = np.concatenate([hist.row(u) for u in users]) if len(users) else np.zeros(0, np.int32)
    return np.bincount(items, minlength=features.num_items).astype(np.float64)


def popularity_ranking(features: HistoryFeatures, split: SoftmaxSplit, k: int = 10) -> np.ndarray:
    """Each test user's top `k` by popularity among the training users: int64 `[n_test, k]`.

    Items are ranked by count, ties by the lowest index; under "holdout" the test user's input
    items are left out, as for the model.
    """
    if (
        not isinstance(k, int | np.integer)
        or isinstance(k, bool)
        or not 1 <= k <= features.num_items
    ):
        raise ArgumentValueError(
            f"k must be an int in [1, {features.num_items}] (the catalogue size), got {k!r}"
        )
    scores = popularity_scores(features, split.train_users)
    # A stable sort of the negated counts keeps equal counts in index order.
    order = np.argsort(-scores, kind="stable")
    if not split.exclude_inputs:
        return np.broadcast_to(order[:k], (len(split.test_users), k)).copy()
    top = np.empty((len(split.test_users), k), np.int64)
    for row, inputs in enumerate(split.test_inputs.rows()):
        # At most |inputs| of the first |inputs| + k items are excluded.
        head = order[: k + len(inputs)]
        top[row] = head[~np.isin(head, inputs)][:k]
    return top


def evaluate_popularity(
    dataset: Any, *, k: int = 10, protocol: str = "holdout", seed: int = 0
) -> dict[str, float]:
    """The popularity baseline's ranking metrics under a softmax-model protocol.

    Args:
        dataset: ratings plus item metadata, or `HistoryFeatures`.
        k: the cut-off.
        protocol: "holdout" or "notebook" (see `split_users`).
        seed: the split's seed (the same seed gives the model's split).

    Returns:
        `{"precision@k", "recall@k", "ndcg@k", "map@k", "hit_rate@k", "users"}`.
    """
    features = (
        dataset if isinstance(dataset, HistoryFeatures) else HistoryFeatures.from_dataset(dataset)
    )
    split = split_users(features, protocol, seed)
    top = popularity_ranking(features, split, k)
    return {**ranking_metrics(top, split.test_targets, k), "users": len(split.test_users)}


@dataclass(frozen=True, eq=False)
class PopularityScorer:
    """Scores every item by how many training users interacted with it, the same for everyone.

    A scorer for `cfcore.eval.implicit.evaluate_strong_generalization`: called with the held-out
    users' fold-in items (a `cfcore.retrieval.RatedItems` of `B` rows), it returns the counts for
    each of them; the evaluation leaves the fold-in items out and breaks ties by the lowest index.

    Attributes:
        counts: float64 `[M]`, the number of distinct users with a rating of each item.
    """

    counts: np.ndarray

    @classmethod
    def from_ratings(cls, train: Any) -> PopularityScorer:
        """From the training interactions (`cfcore.Ratings`; a pair counted once per user)."""
        m = train.num_items
        pairs = np.unique(np.asarray(train.users, np.int64) * m + np.asarray(train.items))
        return cls(np.bincount(pairs % m, minlength=m).astype(np.float64))

    def __call__(self, fold_in: Any) -> np.ndarray:
        """`[B, M]` scores (a read-only broadcast of `counts`) for `B` users."""
        return np.broadcast_to(self.counts, (fold_in.num_rows, len(self.counts)))
