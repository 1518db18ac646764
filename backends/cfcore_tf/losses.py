"""The MF losses in TensorFlow 2: observed MSE (gather and dense forms), L2 penalty, gravity."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from cfcore.specs import MFSpec


def _rows(x: tf.Tensor) -> tf.Tensor:
    # Static when known (inside our compiled functions it always is), else dynamic.
    n = x.shape[0]
    return (
        tf.constant(float(n), tf.float32) if n is not None else tf.cast(tf.shape(x)[0], tf.float32)
    )


def sparse_mse(user_emb, item_emb, users, items, ratings, method: str = "gather") -> tf.Tensor:
    """Mean squared error over observed pairs.

    Args:
        user_emb: `[N, d]` float32.
        item_emb: `[M, d]` float32.
        users: `[n]` int32 user index of each rating.
        items: `[n]` int32 item index of each rating.
        ratings: `[n]` float32.
        method: "gather" gathers the `n` user and item rows and takes row-wise dots (memory
            O(n·d)); "dense" forms `U·Vᵀ` (`[N, M]`) and gathers from it (memory O(N·M)).

    Returns:
        Scalar float32.
    """
    if method == "gather":
        pred = tf.reduce_sum(tf.gather(user_emb, users) * tf.gather(item_emb, items), axis=1)
    elif method == "dense":
        full = tf.matmul(user_emb, item_emb, transpose_b=True)
        pred = tf.gather_nd(full, tf.stack([users, items], axis=1))
    else:
        raise ValueError(f"method must be 'gather' or 'dense', got {method!r}")
    return tf.reduce_mean(tf.square(pred - ratings))


def l2_penalty(user_emb, item_emb) -> tf.Tensor:
    """ΣU²/N + ΣV²/M for `U` `[N, d]` and `V` `[M, d]`; scalar float32."""
    return tf.reduce_sum(tf.square(user_emb)) / _rows(user_emb) + tf.reduce_sum(
        tf.square(item_emb)
    ) / _rows(item_emb)


def gravity(user_emb, item_emb) -> tf.Tensor:
    """(1/(N·M)) Σ_ij ⟨U_i, V_j⟩², through the `[d, d]` Gramians; scalar float32.

    N·M is formed in floating point: at ML-20M shape it overflows int32.
    """
    gu = tf.matmul(user_emb, user_emb, transpose_a=True)
    gv = tf.matmul(item_emb, item_emb, transpose_a=True)
    return tf.reduce_sum(gu * gv) / (_rows(user_emb) * _rows(item_emb))


def mf_loss_terms(
    spec: MFSpec, params: dict[str, Any], users, items, values
) -> dict[str, tf.Tensor]:
    """The parts of `spec`'s objective ("observed", "regularization", "gravity", "total")."""
    u, v = params["user"], params["item"]
    observed = sparse_mse(u, v, users, items, values, spec.mse)
    terms = {"observed": observed}
    total = observed
    if spec.regularized:
        terms["regularization"] = spec.regularization_coeff * l2_penalty(u, v)
        terms["gravity"] = spec.gravity_coeff * gravity(u, v)
        total = total + terms["regularization"] + terms["gravity"]
    terms["total"] = total
    return terms
