"""Retrieval linear algebra in JAX: fold-in ridge solves, normalized scores, fused top-k.

The formulas are written out in `cfcore.retrieval`; this module only computes them.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

# Full float32 matmuls: on GPUs the default precision may use TF32 and lose agreement with TF.
_HIGHEST = lax.Precision.HIGHEST


@partial(jax.jit, static_argnames="num_rows")
def fold_in_solve(item_emb, rows, items, ratings, reg, prior, num_rows: int):
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
        num_rows: B, the number of new users.

    Returns:
        `[B, d]` float32.
    """
    v = jnp.take(item_emb, items, axis=0)  # [n, d]
    # Σ_k v_k v_kᵀ per user as a segment sum of outer products: memory O(n·d²), bounded by the
    # caller's chunking, and no [B, M] matrix.
    gram = jax.ops.segment_sum(v[:, :, None] * v[:, None, :], rows, num_segments=num_rows)
    rhs = jax.ops.segment_sum(v * ratings[:, None], rows, num_segments=num_rows)
    eye = jnp.eye(item_emb.shape[1], dtype=item_emb.dtype)
    system = gram + reg[:, None, None] * eye + prior[None]
    return jnp.linalg.solve(system, rhs[..., None])[..., 0]


def _safe_norm_power(x, power):
    # A zero vector scores 0 under every measure (its dot products are 0): dividing by 1 keeps it so.
    norm = jnp.linalg.norm(x, axis=1)
    return jnp.where(norm > 0, norm, 1.0) ** power


@jax.jit
def measure_scores(query_emb, item_emb, query_power, item_power):
    """`⟨q, v⟩ / (‖q‖^query_power · ‖v‖^item_power)` for `[B, d]` queries and `[M, d]` items: `[B, M]`."""
    dots = jnp.matmul(query_emb, item_emb.T, precision=_HIGHEST)
    return (
        dots
        / _safe_norm_power(query_emb, query_power)[:, None]
        / _safe_norm_power(item_emb, item_power)[None, :]
    )


@partial(jax.jit, static_argnames="k")
def batched_top_k(query_emb, item_emb, exclude, query_power, item_power, k: int):
    """Scores (as `measure_scores`) and their top-k per row in one compiled call.

    Args:
        exclude: `[B, M]` bool; excluded entries score −inf.

    Returns:
        `(values [B, k] float32, indices [B, k] int32)`, ties broken by the lowest index.
    """
    scores = measure_scores(query_emb, item_emb, query_power, item_power)
    scores = jnp.where(exclude, -jnp.inf, scores)
    return lax.top_k(scores, k)
