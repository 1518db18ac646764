"""Scoring and top-k retrieval in TensorFlow."""

from __future__ import annotations

import tensorflow as tf


@tf.function(jit_compile=True, reduce_retracing=True)
def predict(user_emb, item_emb, users, items):
    """⟨U_u, V_i⟩ for each pair; `[n]`."""
    return tf.reduce_sum(tf.gather(user_emb, users) * tf.gather(item_emb, items), axis=1)


@tf.function(jit_compile=True, reduce_retracing=True)
def score_all(query_emb, item_emb):
    """Dot-product scores of `[B, d]` queries against `[M, d]` items: `[B, M]`."""
    return tf.matmul(query_emb, item_emb, transpose_b=True)


def top_k(scores, k: int, exclude=None):
    """Top-k per row of `[B, M]` scores (ties: lowest index first); excluded entries never win."""
    scores = tf.convert_to_tensor(scores, tf.float32)
    if exclude is not None:
        scores = tf.where(
            tf.convert_to_tensor(exclude, tf.bool), tf.constant(-float("inf")), scores
        )
    out = tf.math.top_k(scores, k=k, sorted=True)
    return out.values, out.indices
