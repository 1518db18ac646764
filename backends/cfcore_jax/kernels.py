"""Fused kernels of the JAX backend (contracts in `cfcore.backend.protocol`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from . import pair_kernel

_HIGHEST = lax.Precision.HIGHEST


def pair_dot(user_emb, item_emb, users, items, method: str = "gather", layout=None):
    """`⟨U[users[k]], V[items[k]]⟩` for each observed pair: `[n]` float32.

    With a `layout` (from `pair_kernel.make_pair_layout` for these pairs) the gather form runs
    the segment-layout kernel of `pair_kernel` (same values, faster on XLA:CPU).
    """
    if method == "dense":
        return jnp.matmul(user_emb, item_emb.T, precision=_HIGHEST)[users, items]
    if layout is not None:
        return pair_kernel.pair_dot_layout(user_emb, item_emb, layout)
    return jnp.sum(jnp.take(user_emb, users, axis=0) * jnp.take(item_emb, items, axis=0), axis=1)


def gramian(x):
    """`xᵀx`: `[d, d]` for `[n, d]`."""
    return jnp.matmul(x.T, x, precision=_HIGHEST)


def segment_sum(data, segment_ids, num_segments: int):
    """Row sums per segment: `[S, ...]`."""
    return jax.ops.segment_sum(data, segment_ids, num_segments=num_segments)


def bag_of_words(table, ids, weights, combiner: str = "mean"):
    """Weighted bags of `table` rows: `[B, d]`."""
    if ids is None:
        total = jnp.matmul(weights, table, precision=_HIGHEST)
    else:
        rows = jnp.take(table, ids, axis=0)
        total = jnp.einsum("...l,...ld->...d", weights, rows, precision=_HIGHEST)
    if combiner == "sum":
        return total
    count = jnp.sum(weights, axis=-1, keepdims=True)
    return total / jnp.where(count > 0, count, 1.0)


def softmax_cross_entropy(query_emb, item_emb, labels):
    """Mean full-softmax cross-entropy: scalar."""
    logits = jnp.matmul(query_emb, item_emb.T, precision=_HIGHEST)
    picked = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - picked)


def sampled_softmax_loss(query_emb, item_emb, labels, log_q=None, remove_accidental_hits=True):
    """Mean in-batch sampled-softmax cross-entropy: scalar."""
    rows = jnp.take(item_emb, labels, axis=0)
    return sampled_softmax_from_rows(query_emb, rows, labels, log_q, remove_accidental_hits)


def sampled_softmax_from_rows(query_emb, rows, labels, log_q=None, remove_accidental_hits=True):
    """`sampled_softmax_loss` given the labels' rows `item_emb[labels]` (`[B, d]`): scalar."""
    logits = jnp.matmul(query_emb, rows.T, precision=_HIGHEST)
    if log_q is not None:
        logits = logits - jnp.take(log_q, labels)[None, :]
    if remove_accidental_hits:
        hit = (labels[:, None] == labels[None, :]) & ~jnp.eye(labels.shape[0], dtype=bool)
        logits = jnp.where(hit, -jnp.inf, logits)
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - jnp.diagonal(logits))


def top_k(scores, k: int):
    """`lax.top_k` breaks ties by the lowest index, as the contract asks."""
    return lax.top_k(scores, k)


def solve(a, b):
    """Batched Cholesky solves; a non-positive-definite system gives NaN rows (no exception)."""
    chol = jnp.linalg.cholesky(a)
    return jax.scipy.linalg.cho_solve((chol, True), b[..., None])[..., 0]
