"""The implicit-feedback protocol of "strong generalization" (Liang et al., 2018).

Variational Autoencoders for Collaborative Filtering (Liang, Krishnan, Hoffman & Jebara, WWW 2018)
evaluate on users the model never trained on; Rendle, Krichene, Zhang & Koren ("Revisiting the
Performance of iALS on Item Recommendation Benchmarks", RecSys 2022) use the same protocol:

1. Positives are the ratings above a threshold (> 3.5 on MovieLens' 5-star scale); a pair rated
   twice counts once.
2. Only users with at least `min_positives` (5) positives are kept.
3. A seeded share of those users is held out (20% for ml-100k, 10% for ml-latest-small in
   cfcore's benchmarks; Liang et al. hold out 10,000 + 10,000 of ML-20M's users). The others are
   the training users: the model trains on their positives only.
4. Items are limited to those with a positive among the training users (a model knows no
   others); held-out users' positives of other items are dropped.
5. Each held-out user's positives are split at random (seeded), `target_share` (20%, rounded down)
   into targets and the rest into fold-in items. Held-out users left with too few positives to
   have both are dropped (`StrongGeneralizationSplit.dropped_users` counts them).
6. A held-out user's embedding comes from the model's own fold-in of their fold-in items
   (`model.fold_in`: a closed-form solve with the item embeddings fixed), never from training.
7. All training items but the user's fold-in items are ranked; with `rel_i` = 1 when the i-th
   item is a target, `T` the targets and `n = min(k, |T|)`:

   * Recall@k = Σ_{i≤k} rel_i / n (Liang et al.'s normalisation: a perfect ranking scores 1
     even when |T| > k, unlike the `hits / |T|` of `cfcore.eval.metrics`);
   * NDCG@k = Σ_{i≤k} rel_i / log₂(i + 1) divided by Σ_{i≤n} 1 / log₂(i + 1) (binary gain),

   averaged over held-out users, for k = 20, 50 and 100.

Example:
    The popularity baseline on synthetic ratings (a model goes in the same way: its `fold_in`
    gives the held-out users' rows):

    >>> import cfcore
    >>> from cfcore.eval.popularity import PopularityScorer
    >>> ratings = cfcore.synthetic_ratings(300, 60, 9000, seed=0)
    >>> split = strong_generalization_split(ratings, heldout_share=0.2, seed=0)
    >>> scorer = PopularityScorer.from_ratings(split.train)
    >>> evaluate_strong_generalization(scorer, split, ks=(20,), backend="numpy")
    {'recall@20': 0.869..., 'ndcg@20': 0.561..., 'users': 28}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data.ratings import Ratings
from ..errors import ArgumentTypeError, ArgumentValueError
from ..retrieval import RatedItems, _resolve_backend, batch_top_k

__all__ = [
    "KS",
    "StrongGeneralizationSplit",
    "evaluate_strong_generalization",
    "strong_generalization_metrics",
    "strong_generalization_split",
]

KS = (20, 50, 100)
"""The cut-offs of Liang et al. and Rendle et al."""

Scorer = Callable[[RatedItems], Any]
"""Scores of every training item for a chunk of held-out users from their fold-in items:
`scorer(fold_in)` with `fold_in` a `RatedItems` of `B` rows returns `[B, M]` (higher is better)."""


@dataclass(frozen=True, eq=False)
class StrongGeneralizationSplit:
    """Training users' positives, and the held-out users' fold-in items and targets.

    Indices: training users are `0..N-1`, held-out users `0..H-1` (rows of `fold_in` and
    `targets`), training items `0..M-1`; `users`, `heldout_users` and `items` map them back to
    the indices of the ratings that were split.

    Attributes:
        train: the training users' positives, `N` users × `M` items, every value 1.0, with
            timestamps when the source has them; `user_ids`/`item_ids` are the source's original
            ids (or its indices when it has none) and `catalog` its rows of the training items.
        fold_in: `H` rows over `M` items: each held-out user's fold-in items, sorted.
        targets: `H` rows over `M` items: each held-out user's targets, sorted; never in
            `fold_in`'s row.
        items: int64 `[M]`, the source item index of each training item (increasing).
        users: int64 `[N]`, the source user index of each training user (increasing).
        heldout_users: int64 `[H]`, the source user index of each held-out user (increasing).
        heldout_user_ids: `[H]` original ids of the held-out users (source indices without ids).
        dropped_users: held-out users dropped because, limited to the training items, they had
            fewer than `min_positives` positives or no room for both a target and a fold-in item.
        seed, heldout_share, target_share, threshold, min_positives: the split's parameters.
    """

    train: Ratings
    fold_in: RatedItems
    targets: RatedItems
    items: np.ndarray
    users: np.ndarray
    heldout_users: np.ndarray
    heldout_user_ids: np.ndarray = field(repr=False)
    dropped_users: int
    seed: int
    heldout_share: float
    target_share: float
    threshold: float
    min_positives: int

    @property
    def num_items(self) -> int:
        """M, the training items."""
        return self.train.num_items

    @property
    def num_heldout(self) -> int:
        """H, the held-out users that are evaluated."""
        return self.fold_in.num_rows

    def fold_in_ratings(self) -> Ratings:
        """The held-out users' fold-in items as `Ratings` of value 1.0 (`H` users × `M` items).

        What `model.fold_in` takes: its users are the held-out users, its items the training
        items, with the training items' vocabulary and catalog.
        """
        counts = np.diff(self.fold_in.indptr)
        return Ratings(
            np.repeat(np.arange(self.num_heldout), counts),
            self.fold_in.indices,
            np.ones(len(self.fold_in.indices), np.float32),
            self.num_heldout,
            self.num_items,
            user_ids=self.heldout_user_ids,
            item_ids=self.train.item_ids,
            catalog=self.train.catalog,
        )

    def __repr__(self) -> str:
        return (
            f"StrongGeneralizationSplit(train={len(self.train)} positives of "
            f"{self.train.num_users} users x {self.num_items} items, heldout={self.num_heldout} "
            f"users with {len(self.fold_in.indices)} fold-in items and "
            f"{len(self.targets.indices)} targets, seed={self.seed})"
        )


def strong_generalization_split(
    ratings: Any,
    *,
    heldout_share: float,
    seed: int = 0,
    threshold: float = 3.5,
    min_positives: int = 5,
    target_share: float = 0.2,
) -> StrongGeneralizationSplit:
    """Splits ratings into training users and held-out users' fold-in items and targets.

    The protocol of the module docstring. Every random draw comes from
    `numpy.random.default_rng(seed)`: first a permutation of the eligible users (the first
    `round(heldout_share · #eligible)` are held out), then one uniform key per held-out positive
    (each user's positives with the smallest keys are the targets).

    Args:
        ratings: a `cfcore.Ratings`, or a loaded dataset with a `ratings` attribute (a
            `cfcore.datasets.MovieLens`).
        heldout_share: share of the eligible users held out, in (0, 1).
        seed: seed of the split.
        threshold: a rating is a positive when it is strictly greater than this.
        min_positives: users with fewer positives are left out altogether (at least 2).
        target_share: share of a held-out user's positives that become targets, in (0, 1):
            `floor(target_share · n)` of `n` (Liang et al.'s `int(0.2 · n)`).

    Returns:
        The `StrongGeneralizationSplit`.

    Raises:
        ValueError: a parameter is out of range, or too few users are eligible to hold any out
            while training on the rest.
    """
    source = getattr(ratings, "ratings", ratings)
    if not isinstance(source, Ratings):
        raise ArgumentTypeError(
            f"ratings must be a cfcore.Ratings or a dataset with .ratings, got {type(ratings).__name__}"
        )
    for name, share in (("heldout_share", heldout_share), ("target_share", target_share)):
        if isinstance(share, bool) or not isinstance(share, int | float | np.floating):
            raise ArgumentValueError(f"{name} must be a number in (0, 1), got {share!r}")
        if not 0 < share < 1:
            raise ArgumentValueError(f"{name} must be in (0, 1), got {share!r}")
    if isinstance(min_positives, bool) or not isinstance(min_positives, int | np.integer):
        raise ArgumentValueError(f"min_positives must be an int >= 2, got {min_positives!r}")
    if min_positives < 2:
        raise ArgumentValueError(
            f"min_positives must be >= 2 (a held-out user needs a fold-in item and a target), "
            f"got {min_positives}"
        )
    threshold = float(threshold)
    if not np.isfinite(threshold):
        raise ArgumentValueError(f"threshold must be a finite number, got {threshold!r}")

    n_src, m_src = source.num_users, source.num_items
    positive = source.values > threshold
    # One positive per (user, item): a pair rated twice is one interaction.
    keys, first = np.unique(
        source.users[positive].astype(np.int64) * m_src + source.items[positive],
        return_index=True,
    )
    pos_users, pos_items = keys // m_src, keys % m_src
    stamps = None if source.timestamps is None else source.timestamps[positive][first]
    counts = np.bincount(pos_users, minlength=n_src)
    eligible = np.flatnonzero(counts >= min_positives)
    n_heldout = int(round(heldout_share * len(eligible)))
    if n_heldout < 1 or n_heldout >= len(eligible):
        raise ArgumentValueError(
            f"{len(eligible)} users have at least {min_positives} ratings above {threshold:g}: "
            f"holding out a share of {heldout_share:g} of them leaves {n_heldout} held-out and "
            f"{len(eligible) - n_heldout} training users; both must be at least 1"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(eligible)
    heldout = np.sort(order[:n_heldout])
    users = np.sort(order[n_heldout:])

    in_train = np.isin(pos_users, users)
    items = np.unique(pos_items[in_train])
    item_row = np.full(m_src, -1, np.int64)
    item_row[items] = np.arange(len(items))
    user_row = np.full(n_src, -1, np.int64)
    user_row[users] = np.arange(len(users))
    train = Ratings(
        user_row[pos_users[in_train]],
        item_row[pos_items[in_train]],
        np.ones(int(in_train.sum()), np.float32),
        len(users),
        len(items),
        timestamps=None if stamps is None else stamps[in_train],
        user_ids=_ids(source.user_ids, users),
        item_ids=_ids(source.item_ids, items),
        catalog=None
        if source.catalog is None
        else source.catalog.iloc[items].reset_index(drop=True),
    )

    # Held-out users' positives of training items, grouped by user (keys are sorted by user).
    held = np.isin(pos_users, heldout) & (item_row[pos_items] >= 0)
    h_users, h_items = pos_users[held], item_row[pos_items[held]]
    n_pos = np.bincount(h_users, minlength=n_src)[heldout]
    n_targets = np.floor(target_share * n_pos + 1e-9).astype(np.int64)
    keep = (n_pos >= min_positives) & (n_targets >= 1) & (n_targets < n_pos)
    kept = heldout[keep]
    row_of = np.full(n_src, -1, np.int64)
    row_of[kept] = np.arange(len(kept))
    rows = row_of[h_users]
    draw = rng.random(len(rows))  # one key per held-out positive, dropped users' included
    mine = rows >= 0
    rows, h_items, draw = rows[mine], h_items[mine], draw[mine]
    # Rank of each positive within its user by key: the smallest n_targets keys are targets.
    by_key = np.lexsort((draw, rows))
    starts = np.concatenate([[0], np.cumsum(n_pos[keep])])
    rank = np.empty(len(rows), np.int64)
    rank[by_key] = np.arange(len(rows)) - starts[rows[by_key]]
    is_target = rank < n_targets[keep][rows]
    return StrongGeneralizationSplit(
        train=train,
        fold_in=_rated(rows[~is_target], h_items[~is_target], len(kept), len(items)),
        targets=_rated(rows[is_target], h_items[is_target], len(kept), len(items)),
        items=items.astype(np.int64),
        users=users.astype(np.int64),
        heldout_users=kept.astype(np.int64),
        heldout_user_ids=_ids(source.user_ids, kept),
        dropped_users=int(n_heldout - len(kept)),
        seed=seed,
        heldout_share=float(heldout_share),
        target_share=float(target_share),
        threshold=threshold,
        min_positives=int(min_positives),
    )


def _ids(vocab: Any, index: np.ndarray) -> np.ndarray:
    return index.copy() if vocab is None else np.asarray(vocab)[index]


def _rated(rows: np.ndarray, items: np.ndarray, num_rows: int, num_items: int) -> RatedItems:
    """CSR rows of items, each row sorted."""
    order = np.lexsort((items, rows))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=num_rows))])
    return RatedItems(indptr.astype(np.int64), items[order].astype(np.int32), num_items)


# ---------------------------------------------------------------------------- metrics


def strong_generalization_metrics(
    top_items: Any, targets: RatedItems, ks: Sequence[int] = KS, *, per_user: bool = False
) -> dict[str, Any]:
    """Recall@k (hits / min(k, |T|)) and NDCG@k (binary gain) of ranked items.

    Args:
        top_items: int `[H, K]`, each held-out user's ranked items, best first, distinct within
            a row; `K >= max(ks)`.
        targets: `H` rows, each user's targets (at least one).
        ks: the cut-offs.
        per_user: return `[H]` float64 arrays instead of means.

    Returns:
        `{"recall@k", "ndcg@k"}` for each k in `ks`, in that order.
    """
    top = np.asarray(top_items)
    if top.ndim != 2 or not np.issubdtype(top.dtype, np.integer):
        raise ArgumentValueError(
            f"top_items must be a 2-D int array [users, K], got {top.dtype} {top.shape}"
        )
    if top.shape[0] != targets.num_rows:
        raise ArgumentValueError(
            f"top_items has {top.shape[0]} rows but targets {targets.num_rows}"
        )
    ks = _check_ks(ks, top.shape[1], "the number of ranked items per user")
    sizes = np.diff(targets.indptr)
    if len(sizes) and sizes.min() == 0:
        raise ArgumentValueError(f"held-out user row {int(np.argmin(sizes))} has no targets")
    # A ranked item is a hit when (row, item) is a target pair: one sorted search of keys.
    span = np.int64(max(targets.num_items or 0, int(top.max(initial=-1)) + 1))
    target_keys = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes) * span + targets.indices
    top_keys = np.arange(top.shape[0], dtype=np.int64)[:, None] * span + top
    rel = np.isin(top_keys, target_keys) & (top >= 0)
    discounts = 1.0 / np.log2(np.arange(2, max(ks) + 2))
    ideal = np.cumsum(discounts)
    out: dict[str, Any] = {}
    for k in ks:
        n = np.minimum(sizes, k)
        hits = rel[:, :k]
        out[f"recall@{k}"] = hits.sum(axis=1) / n
        out[f"ndcg@{k}"] = (hits @ discounts[:k]) / ideal[n - 1]
    if per_user:
        return out
    return {name: float(np.mean(v)) for name, v in out.items()}


def _check_ks(ks: Any, limit: int, what: str) -> tuple[int, ...]:
    if isinstance(ks, int | np.integer) and not isinstance(ks, bool):
        ks = (ks,)
    ks = tuple(ks)  # pyright: ignore[reportArgumentType]  # any iterable; checked below
    if not ks:
        raise ArgumentValueError("ks must name at least one cut-off")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int | np.integer):
            raise ArgumentValueError(f"each k must be an int, got {k!r}")
        if not 1 <= k <= limit:
            raise ArgumentValueError(
                f"k={k} is out of range: it must be between 1 and {limit}, {what}"
            )
    return tuple(int(k) for k in ks)


# ---------------------------------------------------------------------------- evaluation


def evaluate_strong_generalization(
    model_or_scorer: Any,
    split: StrongGeneralizationSplit,
    ks: Sequence[int] = KS,
    *,
    backend: Any = None,
    chunk_rows: int | None = None,
    per_user: bool = False,
) -> dict[str, Any]:
    """Ranks the training items for the held-out users and scores the targets.

    A model (anything with `fold_in` and `embeddings_numpy`) gets the held-out users'
    embeddings by its own fold-in, `model.fold_in(split.fold_in_ratings(), backend=backend)`,
    and items are scored by ⟨u, v⟩ against its item embeddings (a model with
    `scoring_embeddings()`, such as a biased one, by `⟨[u, 1], [v, b_i]⟩`); a scorer (a callable, see
    `Scorer`) gives the scores itself. Either way the top `max(ks)` items, with each user's
    fold-in items scored −inf, come from the backend's masked top-k (`cfcore.retrieval`), in
    chunks of users; ties go to the lowest item index.

    Args:
        model_or_scorer: a model trained on `split.train` (its items are the training items),
            or a scorer `scorer(fold_in: RatedItems) -> [B, M]` (e.g. `PopularityScorer`).
        split: from `strong_generalization_split`.
        ks: the cut-offs, each at most M.
        backend: where to score (as in `cfcore.retrieval.batch_top_k`: NumPy for small problems
            unless named) and to fold in.
        chunk_rows: held-out users per chunk (default: bounded by `cfcore.retrieval.CHUNK_SCORES`).
        per_user: per-user `[H]` arrays instead of means.

    Returns:
        `{"recall@k", "ndcg@k"}` for each k (means over held-out users, or `[H]` arrays), and
        `"users"`: H.

    Raises:
        ValueError: the model's item count is not the split's, a k is out of range, or the
            argument is neither a model nor a callable.
    """
    m = split.num_items
    ks = _check_ks(ks, m, "the number of training items")
    top_k = max(ks)
    model = model_or_scorer
    if hasattr(model, "fold_in") and hasattr(model, "embeddings_numpy"):
        item_emb = np.asarray(model.embeddings_numpy()["item"])
        if item_emb.shape[0] != m:
            raise ArgumentValueError(
                f"the model has {item_emb.shape[0]} items but the split {m} training items: "
                "train it on split.train"
            )
        # The model's own fold-in: no training, the item embeddings fixed.
        user_emb = np.asarray(model.fold_in(split.fold_in_ratings(), backend=backend), np.float32)
        if user_emb.shape != (split.num_heldout, item_emb.shape[1]):
            raise ArgumentValueError(
                f"fold_in returned shape {user_emb.shape}; expected "
                f"{(split.num_heldout, item_emb.shape[1])} (one row per held-out user)"
            )
        user_emb, item_emb = _scoring_tables(model, user_emb, item_emb)
        _, top = batch_top_k(
            user_emb, item_emb, top_k, exclude=split.fold_in, backend=backend, chunk_rows=chunk_rows
        )
    elif callable(model_or_scorer):
        top = _scorer_top_k(model_or_scorer, split, top_k, backend, chunk_rows)
    else:
        raise ArgumentTypeError(
            "model_or_scorer must be a model with fold_in and embeddings_numpy, or a callable "
            f"scorer(fold_in) -> [B, M] scores; got {type(model_or_scorer).__name__}"
        )
    metrics = strong_generalization_metrics(top, split.targets, ks, per_user=per_user)
    return {**metrics, "users": split.num_heldout}


def _scoring_tables(
    model: Any, user_emb: np.ndarray, item_emb: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The tables whose dot products rank items as the model's predictions do.

    A model whose `scoring_embeddings()` appends columns to its item table (a biased model:
    `[v, b_i]`, its user table `[u, 1]`) is scored with the folded-in rows extended the same
    way, so that the item biases count; other models by their embeddings.
    """
    tables: Any = getattr(model, "scoring_embeddings", None)
    if not callable(tables):
        return user_emb, item_emb
    scoring: Any = tables()
    scoring_items = np.asarray(scoring["item"])
    extra = scoring_items.shape[1] - item_emb.shape[1]
    if scoring_items.shape[0] != item_emb.shape[0] or extra not in (0, 1):
        raise ArgumentValueError(
            f"the model's scoring item table has shape {scoring_items.shape}; expected "
            f"{item_emb.shape[0]} rows of {item_emb.shape[1]} or {item_emb.shape[1] + 1} columns"
        )
    if extra:
        user_emb = np.concatenate([user_emb, np.ones((len(user_emb), 1), np.float32)], axis=1)
    return user_emb, scoring_items


def _scorer_top_k(
    scorer: Scorer, split: StrongGeneralizationSplit, k: int, backend: Any, chunk_rows: int | None
) -> np.ndarray:
    from ..retrieval import CHUNK_SCORES

    h, m = split.num_heldout, split.num_items
    rows = chunk_rows or max(1, CHUNK_SCORES // max(m, 1))
    be = _resolve_backend(backend, h * m)
    top = np.empty((h, k), np.int64)
    for start in range(0, h, rows):
        stop = min(start + rows, h)
        chunk = split.fold_in.take(np.arange(start, stop))
        scores = np.asarray(scorer(chunk), np.float32)
        if scores.shape != (stop - start, m):
            raise ArgumentValueError(
                f"the scorer returned shape {scores.shape} for {stop - start} users; expected "
                f"{(stop - start, m)} (one score per training item)"
            )
        _, idx = be.top_k(scores, k, split.fold_in.mask(start, stop))
        top[start:stop] = be.to_numpy(idx)
    return top
