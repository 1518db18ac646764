"""Ranking metrics at k, vectorised NumPy.

For one user, let `r_1, ..., r_k` be the top-k ranked items (distinct) and `T` the set of target
items (the held-out ones), `rel_i = 1 if r_i ∈ T else 0` and `h = Σ_i rel_i` the number of hits:

* precision@k  = h / k
* recall@k     = h / |T|
* NDCG@k       = DCG / IDCG, with `DCG = Σ_{i=1..k} rel_i / log₂(i + 1)` and
  `IDCG = Σ_{i=1..min(k, |T|)} 1 / log₂(i + 1)` (the DCG of a perfect ranking)
* MAP@k        = mean over users of `AP@k = (1 / min(k, |T|)) · Σ_{i=1..k} rel_i · P@i`, where
  `P@i = (Σ_{j ≤ i} rel_j) / i` (the denominator `min(k, |T|)` makes a perfect ranking score 1)
* hit rate@k   = 1 if h > 0 else 0

Each is averaged over users (macro average). With a single target per user, precision@k is what
TensorFlow's `tf.metrics.precision_at_k` reports (the notebook's metric): `[y ∈ top-k] / k`, so it
is at most `1/k`. `cfcore.reference.ranking_metrics` computes the same by plain loops.

Example:
    >>> import numpy as np
    >>> top = np.array([[3, 1, 4], [0, 2, 5]])
    >>> m = ranking_metrics(top, [np.array([1, 9]), np.array([7])], k=3)
    >>> round(m["precision@3"], 4), m["hit_rate@3"]
    (0.1667, 0.5)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..backend.checks import check_k
from ..data.bags import Ragged
from ..errors import ArgumentValueError

__all__ = [
    "METRICS",
    "hit_rate_at_k",
    "map_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "ranking_metrics",
    "recall_at_k",
]

METRICS = ("precision", "recall", "ndcg", "map", "hit_rate")
"""Names of the metrics `ranking_metrics` returns, each suffixed with `@k`."""


def _targets_csr(targets: Any, num_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Targets as (row of each target, item of each target), duplicates within a row removed."""
    if isinstance(targets, Ragged):
        lengths = targets.lengths
        items = targets.values.astype(np.int64)
    else:
        rows = [np.asarray(t).reshape(-1) for t in targets]
        lengths = np.array([len(t) for t in rows], dtype=np.int64)
        items = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)
    if len(lengths) != num_rows:
        raise ArgumentValueError(
            f"targets are given for {len(lengths)} users but rankings for {num_rows}"
        )
    if len(lengths) and lengths.min() == 0:
        raise ArgumentValueError(
            f"user row {int(np.argmin(lengths))} has no targets: recall, NDCG and MAP are undefined "
            "for it; leave such users out"
        )
    if len(items) and items.min() < 0:
        raise ArgumentValueError(
            f"target item {int(items.min())} is negative; items are indices >= 0"
        )
    return np.repeat(np.arange(num_rows), lengths), items


def _relevance(top_items: np.ndarray, targets: Any) -> tuple[np.ndarray, np.ndarray]:
    """`rel [U, k]` (bool) and `|T| [U]` for ranked items `[U, k]` and ragged targets."""
    num_rows = top_items.shape[0]
    rows, items = _targets_csr(targets, num_rows)
    span = int(max(items.max(initial=-1), top_items.max(initial=-1))) + 1
    target_keys = np.unique(rows * span + items)
    sizes = np.bincount(target_keys // span, minlength=num_rows)
    # Negative entries (e.g. -1 for "no item") never match a target.
    top_keys = np.where(top_items >= 0, np.arange(num_rows)[:, None] * span + top_items, -1)
    return np.isin(top_keys, target_keys), sizes


def ranking_metrics(
    top_items: Any, targets: Any, k: int | None = None, *, per_user: bool = False
) -> dict[str, Any]:
    """Precision, recall, NDCG, MAP and hit rate at k (definitions in the module docstring).

    Args:
        top_items: int `[U, K]`, each user's ranked items, best first, distinct within a row
            (negative entries stand for "no item" and never hit).
        targets: per user, the target items: a sequence of `U` int arrays, or a
            `cfcore.data.features.Ragged`. Every user needs at least one target.
        k: the cut-off, `1 <= k <= K` (default `K`).
        per_user: return `[U]` arrays instead of means.

    Returns:
        `{"precision@k", "recall@k", "ndcg@k", "map@k", "hit_rate@k"}`: floats (means over users)
        or `[U]` float64 arrays.

    Raises:
        ValueError: `k` is not in `[1, K]`, the lengths differ, or a user has no target.
    """
    top = np.asarray(top_items)
    if top.ndim != 2 or not np.issubdtype(top.dtype, np.integer):
        raise ArgumentValueError(
            f"top_items must be a 2-D int array [users, K], got {top.dtype} {top.shape}"
        )
    k = check_k(top.shape[1] if k is None else k, top.shape[1], "number of items ranked per user")
    top = top[:, :k].astype(np.int64)
    rel, sizes = _relevance(top, targets)
    relf = rel.astype(np.float64)
    hits = relf.sum(axis=1)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)[np.minimum(sizes, k) - 1]
    precision_at_i = np.cumsum(relf, axis=1) / np.arange(1, k + 1)
    out = {
        f"precision@{k}": hits / k,
        f"recall@{k}": hits / sizes,
        f"ndcg@{k}": (relf @ discounts) / ideal,
        f"map@{k}": (relf * precision_at_i).sum(axis=1) / np.minimum(sizes, k),
        f"hit_rate@{k}": (hits > 0).astype(np.float64),
    }
    if per_user:
        return out
    return {name: float(np.mean(v)) for name, v in out.items()}


def _one(name: str, top_items: Any, targets: Any, k: int | None) -> float:
    result = ranking_metrics(top_items, targets, k)
    return next(v for key, v in result.items() if key.startswith(name + "@"))


def precision_at_k(top_items: Any, targets: Sequence[Any], k: int | None = None) -> float:
    """Mean over users of `hits / k`; see `ranking_metrics`."""
    return _one("precision", top_items, targets, k)


def recall_at_k(top_items: Any, targets: Sequence[Any], k: int | None = None) -> float:
    """Mean over users of `hits / |T|`; see `ranking_metrics`."""
    return _one("recall", top_items, targets, k)


def ndcg_at_k(top_items: Any, targets: Sequence[Any], k: int | None = None) -> float:
    """Mean over users of `DCG@k / IDCG@k` (binary relevance); see `ranking_metrics`."""
    return _one("ndcg", top_items, targets, k)


def map_at_k(top_items: Any, targets: Sequence[Any], k: int | None = None) -> float:
    """Mean over users of `AP@k` with denominator `min(k, |T|)`; see `ranking_metrics`."""
    return _one("map", top_items, targets, k)


def hit_rate_at_k(top_items: Any, targets: Sequence[Any], k: int | None = None) -> float:
    """Share of users with at least one target in their top k; see `ranking_metrics`."""
    return _one("hit_rate", top_items, targets, k)
