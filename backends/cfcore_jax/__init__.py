"""The JAX backend of cfcore: the operations of `cfcore.backend.protocol.Backend` on jax.

Importing this module imports jax; `cfcore` itself never does. Select it with `backend="jax"`.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import kernels, ops, transforms

_DTYPES = {"float32": jnp.float32, "int32": jnp.int32, "bool": jnp.bool_, None: None}
_NARROW = {np.dtype(np.float64): jnp.float32, np.dtype(np.int64): jnp.int32}


class JaxBackend:
    """cfcore's `Backend` on jax.jit and jax.numpy."""

    name = "jax"
    xp = ops

    @staticmethod
    def is_available() -> bool:
        # optax is needed only for optax optimizers (`native_optimizer`), imported then.
        return importlib.util.find_spec("jax") is not None

    def asarray(self, x: Any, dtype: str | None = None) -> jax.Array:
        if dtype is None and isinstance(x, np.ndarray | np.generic | float | int | bool):
            x = np.asarray(x)
            return jnp.asarray(x, _NARROW.get(x.dtype, x.dtype))
        return jnp.asarray(x, _DTYPES[dtype])

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def sync(self, tree: Any) -> Any:
        return jax.block_until_ready(tree)

    pair_dot = staticmethod(jax.jit(kernels.pair_dot, static_argnames="method"))
    gramian = staticmethod(jax.jit(kernels.gramian))
    segment_sum = staticmethod(jax.jit(kernels.segment_sum, static_argnames="num_segments"))
    bag_of_words = staticmethod(jax.jit(kernels.bag_of_words, static_argnames="combiner"))
    softmax_cross_entropy = staticmethod(jax.jit(kernels.softmax_cross_entropy))
    sampled_softmax_loss = staticmethod(
        jax.jit(kernels.sampled_softmax_loss, static_argnames="remove_accidental_hits")
    )
    top_k = staticmethod(jax.jit(kernels.top_k, static_argnames="k"))
    solve = staticmethod(jax.jit(kernels.solve))

    value_and_grad = staticmethod(transforms.value_and_grad)
    compile = staticmethod(transforms.compile)
    compile_loop = staticmethod(transforms.compile_loop)
    native_optimizer = staticmethod(transforms.native_optimizer)

    def __repr__(self) -> str:
        return f"JaxBackend(jax {jax.__version__}, devices={[d.platform for d in jax.devices()]})"


backend = JaxBackend()
