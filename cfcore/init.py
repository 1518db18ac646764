"""Host-side initialisation: every backend starts from the same NumPy values."""

from __future__ import annotations

from typing import Any

import numpy as np

from .resources import check_memory
from .validate import check_int


def init_mf_params(
    spec: Any, num_users: int, num_items: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Draws the initial embeddings `U ~ N(0, σ²)` of shape `[N, d]` and `V` of shape `[M, d]`.

    Drawn with `numpy.random.default_rng(seed)` (users first, then items) in float32, so TensorFlow
    and JAX start from bit-identical values.

    Returns:
        `{"user": float32[N, d], "item": float32[M, d]}`.
    """
    rng = np.random.default_rng(check_int("seed", seed, minimum=0))
    d = spec.embedding_dim
    check_mf_memory(spec, num_users, num_items)
    user = rng.normal(0.0, spec.init_stddev, size=(num_users, d)).astype(np.float32)
    item = rng.normal(0.0, spec.init_stddev, size=(num_items, d)).astype(np.float32)
    return {"user": user, "item": item}


def check_mf_memory(spec: Any, num_users: int, num_items: int) -> None:
    """Refuses, before allocating, embeddings (and a dense `U·Vᵀ`) that cannot fit in memory.

    The embeddings are drawn in float64 and kept in float32: about 4·(N + M)·d bytes kept plus
    8·max(N, M)·d while drawing. `mse="dense"` also forms the `[N, M]` float32 scores and their
    gradient at every step.

    Raises:
        ResourceLimitError: naming the estimate and what to change.
    """
    n, m, d = int(num_users), int(num_items), int(spec.embedding_dim)
    check_memory(
        4.0 * (n + m) * d + 8.0 * max(n, m) * d,
        f"the initial embeddings ({n} users + {m} items) x embedding_dim={d} in float32",
        f"lower embedding_dim (now {d})",
    )
    # Specs without an MSE form (the ALS solvers) never form U·Vᵀ.
    if getattr(spec, "mse", "gather") == "dense":
        check_memory(
            2 * 4.0 * n * m,
            f'mse="dense" (the [{n}, {m}] matrix U·Vᵀ and its gradient, float32)',
            'use mse="gather" (memory O(ratings x d), the same objective)',
        )
