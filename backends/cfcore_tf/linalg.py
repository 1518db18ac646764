"""Retrieval linear algebra in TensorFlow: fold-in ridge solves, normalized scores, fused top-k.

The formulas are written out in `cfcore.retrieval`; this module only computes them.
"""

from __future__ import annotations

import tensorflow as tf


# No XLA here: tf.linalg.solve (MatrixSolve) is not supported by every XLA device, and the
# solve is small; graph mode still fuses the gathers and segment sums.
@tf.function(reduce_retracing=True)
def fold_in_solve(item_emb, rows, items, ratings, reg, prior, num_rows):
    """Ridge solve of each new user's embedding with the item embeddings fixed.

    For new user `b` with rated items `S_b` and ratings `r_b`:
    `u_b = (V_Sᵀ V_S + reg_b · I + prior)⁻¹ V_Sᵀ r_b`.

    Args:
        item_emb: `[M, d]` float32, V.
        rows: `[n]` int32, the new user (0..num_rows-1) of each rating.
        items: `[n]` int32, the item of each rating.
        ratings: `[n]` float32.
        reg: `[num_rows]` float32, λ of each new user.
        prior: `[d, d]` float32 added to every user's system (zeros for plain ridge).
        num_rows: int32 scalar, B.

    Returns:
        `[B, d]` float32.
    """
    v = tf.gather(item_emb, items)  # [n, d]
    # Σ_k v_k v_kᵀ per user as a segment sum of outer products: memory O(n·d²), bounded by the
    # caller's chunking, and no [B, M] matrix.
    gram = tf.math.unsorted_segment_sum(v[:, :, None] * v[:, None, :], rows, num_rows)
    rhs = tf.math.unsorted_segment_sum(v * ratings[:, None], rows, num_rows)
    eye = tf.eye(tf.shape(item_emb)[1], dtype=item_emb.dtype)
    system = gram + reg[:, None, None] * eye + prior[None]
    return tf.linalg.solve(system, rhs[..., None])[..., 0]


def _safe_norm_power(x, power):
    # A zero vector scores 0 under every measure (its dot products are 0): dividing by 1 keeps it so.
    norm = tf.norm(x, axis=1)
    return tf.pow(tf.where(norm > 0, norm, tf.ones_like(norm)), power)


@tf.function(jit_compile=True, reduce_retracing=True)
def measure_scores(query_emb, item_emb, query_power, item_power):
    """`⟨q, v⟩ / (‖q‖^query_power · ‖v‖^item_power)` for `[B, d]` queries and `[M, d]` items: `[B, M]`."""
    dots = tf.matmul(query_emb, item_emb, transpose_b=True)
    return (
        dots
        / _safe_norm_power(query_emb, query_power)[:, None]
        / _safe_norm_power(item_emb, item_power)[None, :]
    )


@tf.function(jit_compile=True, reduce_retracing=True)
def _scores_masked(query_emb, item_emb, exclude, query_power, item_power):
    scores = measure_scores(query_emb, item_emb, query_power, item_power)
    return tf.where(exclude, tf.constant(-float("inf")), scores)


def batched_top_k(query_emb, item_emb, exclude, query_power, item_power, k: int):
    """Scores (as `measure_scores`) and their top-k per row.

    Args:
        exclude: `[B, M]` bool; excluded entries score −inf.

    Returns:
        `(values [B, k] float32, indices [B, k] int32)`, ties broken by the lowest index.
    """
    scores = _scores_masked(query_emb, item_emb, exclude, query_power, item_power)
    # top_k outside XLA: its tie order (lowest index first) is documented for the TF kernel.
    out = tf.math.top_k(scores, k=k, sorted=True)
    return out.values, out.indices
