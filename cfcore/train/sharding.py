"""Where `fit(..., devices=...)` puts parameters and data: the backend's own placement.

Spreading tables over several devices is the framework's business (`jax.sharding` for JAX,
DTensor for TensorFlow), so a backend that can do it offers an optional
`row_sharding(bound_backend, devices)` returning its primitives (a
`cfcore.backend.sharding.RowSharding`), and core builds the placement on them
(`cfcore.train.placement.RowShardedPlacement`). It is not part of the `Backend` Protocol: a
backend without it trains on one device and refuses `devices=` clearly.
"""

from __future__ import annotations

from typing import Any

from ..backend.capabilities import capability
from ..errors import NotSupportedError
from .placement import Placement, RowShardedPlacement


def make_placement(backend: Any, devices: Any) -> Placement:
    """The placement for `fit(..., devices=devices)`.

    Args:
        backend: the backend trained on.
        devices: None (one device, the backend's default), an int k (the backend's first k
            devices) or a sequence of the framework's devices (`jax.Device` on JAX,
            `tf.config.LogicalDevice` on TensorFlow).

    Raises:
        NotSupportedError: `devices` given on a backend that cannot shard (all but JAX and
            TensorFlow).
        ValueError: k out of range, or the devices empty, repeated or not the framework's.
    """
    if devices is None:
        return Placement(backend)
    factory = capability(backend, "row_sharding")
    if factory is None:
        name = getattr(backend, "name", type(backend).__name__)
        raise NotSupportedError(
            f"multi-device training (devices={devices!r}) is not yet supported on backend "
            f"{name!r}: only the 'jax' and 'tf' backends shard tables over devices; pass "
            "devices=None"
        )
    return RowShardedPlacement(backend, factory(backend, devices))
