"""The MF losses in JAX: observed MSE (gather and dense forms), L2 penalty, gravity."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jax import lax

from cfcore.specs import MFSpec

# Full float32 matmuls: on GPUs the default precision may use TF32 and lose agreement with TF.
_HIGHEST = lax.Precision.HIGHEST


def sparse_mse(user_emb, item_emb, users, items, ratings, method: str = "gather") -> jnp.ndarray:
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
        pred = jnp.sum(
            jnp.take(user_emb, users, axis=0) * jnp.take(item_emb, items, axis=0), axis=1
        )
    elif method == "dense":
        pred = jnp.matmul(user_emb, item_emb.T, precision=_HIGHEST)[users, items]
    else:
        raise ValueError(f"method must be 'gather' or 'dense', got {method!r}")
    return jnp.mean(jnp.square(pred - ratings))


def l2_penalty(user_emb, item_emb) -> jnp.ndarray:
    """ΣU²/N + ΣV²/M for `U` `[N, d]` and `V` `[M, d]`; scalar float32."""
    return (
        jnp.sum(jnp.square(user_emb)) / user_emb.shape[0]
        + jnp.sum(jnp.square(item_emb)) / item_emb.shape[0]
    )


def gravity(user_emb, item_emb) -> jnp.ndarray:
    """(1/(N·M)) Σ_ij ⟨U_i, V_j⟩², through the `[d, d]` Gramians; scalar float32.

    N·M is formed in floating point: at ML-20M shape it overflows int32.
    """
    gu = jnp.matmul(user_emb.T, user_emb, precision=_HIGHEST)
    gv = jnp.matmul(item_emb.T, item_emb, precision=_HIGHEST)
    scale = 1.0 / (float(user_emb.shape[0]) * float(item_emb.shape[0]))
    return jnp.sum(gu * gv) * scale


def mf_loss_terms(
    spec: MFSpec, params: dict[str, Any], users, items, values
) -> dict[str, jnp.ndarray]:
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
