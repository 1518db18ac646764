"""Retrieval's mathematics on the backend's operations: measured scores, top-k, fold-in solves.

Written once for every backend (the float64 NumPy reference included); `cfcore.retrieval`
validates the inputs, chunks the work and calls these.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend.capabilities import raw_ops


def _inv_norm_power(be: Any, x: Any, power: float) -> Any:
    # A zero vector scores 0 under every measure (its dot products are 0): dividing by 1 keeps it so.
    xp = be.xp
    norm = xp.sqrt(xp.sum(xp.square(x), axis=1))
    norm = xp.where(norm > 0, norm, xp.full_like(norm, 1.0))
    return 1.0 / norm**power


def measure_scores(
    be: Any, query_emb: Any, item_emb: Any, query_power: float, item_power: float
) -> Any:
    """`⟨q, v⟩ / (‖q‖^query_power · ‖v‖^item_power)`: `[B, M]` for `[B, d]` and `[M, d]`."""
    xp = be.xp
    dots = xp.matmul(query_emb, xp.transpose(item_emb))
    if query_power:
        dots = dots * xp.reshape(_inv_norm_power(be, query_emb, query_power), (-1, 1))
    if item_power:
        dots = dots * xp.reshape(_inv_norm_power(be, item_emb, item_power), (1, -1))
    return dots


def masked_top_k(be: Any, scores: Any, k: int, exclude: Any = None) -> tuple[Any, Any]:
    """Top-k of `[B, M]` scores with `exclude` (bool `[B, M]`) scored −inf; lowest index first."""
    if exclude is not None:
        scores = be.xp.where(exclude, be.xp.full_like(scores, float("-inf")), scores)
    return raw_ops(be).top_k(scores, k)


def fold_in_solve(
    be: Any, item_emb: Any, rows: Any, items: Any, ratings: Any, num_rows: int, reg: Any, prior: Any
) -> Any:
    """New rows by ridge regression on fixed items: `u_b = (V_Sᵀ V_S + reg_b·I + P)⁻¹ V_Sᵀ r_b`.

    Args:
        be: the backend.
        item_emb: `[M, d]`, V.
        rows: int32 `[n]`, the new row (0..num_rows-1) of each rating.
        items: int32 `[n]`, the item of each rating.
        ratings: float32 `[n]`.
        num_rows: B.
        reg: float32 `[B]`, λ of each row.
        prior: float32 `[d, d]` added to every row's system (zeros for plain ridge).

    Returns:
        `[B, d]`.
    """
    xp = be.xp
    v = xp.take(item_emb, items)  # [n, d]
    d = item_emb.shape[1]
    # Σ_k v_k v_kᵀ per row as a segment sum of outer products: memory O(n·d²), bounded by the
    # caller's chunking, and no [B, M] matrix.
    outer = xp.reshape(v, (-1, d, 1)) * xp.reshape(v, (-1, 1, d))
    gram = raw_ops(be).segment_sum(outer, rows, num_rows)
    rhs = raw_ops(be).segment_sum(v * xp.reshape(ratings, (-1, 1)), rows, num_rows)
    # A NumPy constant: inside a compiled function it becomes part of the program.
    eye = xp.reshape(be.asarray(np.eye(d, dtype=np.float32)), (1, d, d))
    system = gram + xp.reshape(reg, (-1, 1, 1)) * eye + xp.reshape(prior, (1, d, d))
    return raw_ops(be).solve(system, rhs)
