"""Fused kernels of the TensorFlow backend (contracts in `cfcore.backend.protocol`)."""

from __future__ import annotations

from contextvars import ContextVar

import tensorflow as tf

_NEG_INF = float("-inf")


def pair_dot(user_emb, item_emb, users, items, method: str = "gather"):
    """`⟨U[users[k]], V[items[k]]⟩` for each observed pair: `[n]` float32."""
    if method == "dense":
        full = tf.matmul(user_emb, item_emb, transpose_b=True)
        return tf.gather_nd(full, tf.stack([users, items], axis=1))
    return tf.reduce_sum(tf.gather(user_emb, users) * tf.gather(item_emb, items), axis=1)


def gramian(x):
    """`xᵀx`: `[d, d]` for `[n, d]`."""
    return tf.matmul(x, x, transpose_a=True)


def segment_sum(data, segment_ids, num_segments: int):
    """Row sums per segment: `[S, ...]`."""
    return tf.math.unsorted_segment_sum(data, segment_ids, num_segments)


def bag_of_words(table, ids, weights, combiner: str = "mean"):
    """Weighted bags of `table` rows: `[B, d]`."""
    if ids is None:
        total = tf.tensordot(weights, table, axes=1)
    else:
        total = tf.reduce_sum(weights[..., None] * tf.gather(table, ids), axis=-2)
    if combiner == "sum":
        return total
    count = tf.reduce_sum(weights, axis=-1, keepdims=True)
    return total / tf.where(count > 0, count, tf.ones_like(count))


def softmax_cross_entropy(query_emb, item_emb, labels):
    """Mean full-softmax cross-entropy: scalar."""
    logits = tf.matmul(query_emb, item_emb, transpose_b=True)
    picked = tf.gather(logits, labels, axis=1, batch_dims=1)
    return tf.reduce_mean(tf.reduce_logsumexp(logits, axis=1) - picked)


def sampled_softmax_loss(query_emb, item_emb, labels, log_q=None, remove_accidental_hits=True):
    """Mean in-batch sampled-softmax cross-entropy: scalar."""
    logits = tf.matmul(query_emb, tf.gather(item_emb, labels), transpose_b=True)
    if log_q is not None:
        logits = logits - tf.gather(log_q, labels)[None, :]
    if remove_accidental_hits:
        n = tf.shape(labels)[0]
        same = tf.equal(labels[:, None], labels[None, :])
        hit = tf.logical_and(same, tf.logical_not(tf.eye(n, dtype=tf.bool)))
        logits = tf.where(hit, tf.constant(_NEG_INF, logits.dtype), logits)
    return tf.reduce_mean(tf.reduce_logsumexp(logits, axis=1) - tf.linalg.diag_part(logits))


def top_k(scores, k: int):
    """`tf.math.top_k` documents lowest-index-first ties for equal values, as the contract asks."""
    out = tf.math.top_k(scores, k=k, sorted=True)
    return out.values, out.indices


# True while a step on DTensors is traced (`sharding.ShardedPlacement.scope`): DTensor (TF 2.21)
# has no layout propagation for `MatrixTriangularSolve` ("does not implement layout
# propagation"), so `solve` then substitutes with elementwise ops instead.
ON_DTENSORS: ContextVar[bool] = ContextVar("cfcore_tf_on_dtensors", default=False)


def solve(a, b):
    """Batched Cholesky solves; under XLA a non-positive-definite system gives NaN rows."""
    if ON_DTENSORS.get():
        return _substitution_solve(tf.linalg.cholesky(a), b)
    return tf.linalg.cholesky_solve(tf.linalg.cholesky(a), b[..., None])[..., 0]


def _substitution_solve(chol, b):
    """`(L Lᵀ)⁻¹ b` by forward then backward substitution, one column at a time (d static):
    `chol` `[..., d, d]` lower triangular, `b` `[..., d]`; returns `[..., d]`."""
    d = int(chol.shape[-1])
    y = []
    for i in range(d):
        acc = b[..., i]
        for j in range(i):
            acc = acc - chol[..., i, j] * y[j]
        y.append(acc / chol[..., i, i])
    x = [None] * d
    for i in reversed(range(d)):
        acc = y[i]
        for j in range(i + 1, d):
            acc = acc - chol[..., j, i] * x[j]
        x[i] = acc / chol[..., i, i]
    return tf.stack(x, axis=-1)
