"""Scoring and top-k retrieval in JAX."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

_HIGHEST = lax.Precision.HIGHEST


@jax.jit
def predict(user_emb, item_emb, users, items):
    """⟨U_u, V_i⟩ for each pair; `[n]`."""
    return jnp.sum(jnp.take(user_emb, users, axis=0) * jnp.take(item_emb, items, axis=0), axis=1)


@jax.jit
def score_all(query_emb, item_emb):
    """Dot-product scores of `[B, d]` queries against `[M, d]` items: `[B, M]`."""
    return jnp.matmul(query_emb, item_emb.T, precision=_HIGHEST)


def top_k(scores, k: int, exclude=None):
    """Top-k per row of `[B, M]` scores (ties: lowest index first); excluded entries never win."""
    scores = jnp.asarray(scores, jnp.float32)
    if exclude is not None:
        scores = jnp.where(jnp.asarray(exclude, bool), -jnp.inf, scores)
    return lax.top_k(scores, k)
