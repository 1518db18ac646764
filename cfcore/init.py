"""Host-side initialisation: every backend starts from the same NumPy values."""

from __future__ import annotations

import numpy as np

from .specs import MFSpec


def init_mf_params(
    spec: MFSpec, num_users: int, num_items: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Draws the initial embeddings `U ~ N(0, σ²)` of shape `[N, d]` and `V` of shape `[M, d]`.

    Drawn with `numpy.random.default_rng(seed)` (users first, then items) in float32, so TensorFlow
    and JAX start from bit-identical values.

    Returns:
        `{"user": float32[N, d], "item": float32[M, d]}`.
    """
    rng = np.random.default_rng(seed)
    d = spec.embedding_dim
    user = rng.normal(0.0, spec.init_stddev, size=(num_users, d)).astype(np.float32)
    item = rng.normal(0.0, spec.init_stddev, size=(num_items, d)).astype(np.float32)
    return {"user": user, "item": item}
