"""The array namespace (`xp`) that core's mathematics is written in, on jax.numpy.

Matmuls run at full float32 precision: on GPUs the default may use TF32 and lose agreement with
the other backends and the float64 reference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def strict_float32() -> None:
    """Full float32 precision as JAX's default for every matmul, process-wide (cfcore's own
    matmuls ask for it explicitly; this covers the rest of a program, e.g. a user's loss)."""
    jax.config.update("jax_default_matmul_precision", "highest")


_DTYPES = {"float32": jnp.float32, "int32": jnp.int32, "bool": jnp.bool_}

sum = jnp.sum  # noqa: A001  (the array-API names are the contract)
mean = jnp.mean
max = jnp.max  # noqa: A001
square = jnp.square
sqrt = jnp.sqrt
exp = jnp.exp
log = jnp.log
tanh = jnp.tanh
maximum = jnp.maximum
where = jnp.where
isfinite = jnp.isfinite
all = jnp.all  # noqa: A001
transpose = jnp.transpose
concat = jnp.concatenate
reshape = jnp.reshape
zeros_like = jnp.zeros_like
full_like = jnp.full_like


def matmul(a, b):
    return jnp.matmul(a, b, precision=lax.Precision.HIGHEST)


TAKE_WIDTH = 8
"""On the CPU, rows of a 2-D table wider than this (a multiple of it) are gathered as pieces of
this many floats: XLA's CPU gather copies the rows of a `[M, 8, 8]` view 1.8x (M = 26,744) to
2.8x (M = 138,493) faster than those of the same `[M, 64]` table, and no slower for the other
widths measured (32, 128); most of an ALS half-sweep's time is such gathers. (Not done for the
TF backend: its XLA runs the 2-D gather on several threads and the 3-D one on one.)"""


def take(x, indices, axis: int = 0):
    x = jnp.asarray(x)
    if axis == 0 and x.ndim == 2 and _pieces(int(x.shape[1])):
        m, d = (int(s) for s in x.shape)
        out = jnp.take(jnp.reshape(x, (m, d // TAKE_WIDTH, TAKE_WIDTH)), indices, axis=0)
        return jnp.reshape(out, (*jnp.shape(indices), d))
    return jnp.take(x, indices, axis=axis)


def _pieces(d: int) -> bool:
    return d > TAKE_WIDTH and d % TAKE_WIDTH == 0 and jax.default_backend() == "cpu"


def astype(x, dtype: str):
    return jnp.asarray(x).astype(_DTYPES[dtype])
