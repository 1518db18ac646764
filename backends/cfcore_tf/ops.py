"""The array namespace (`xp`) that core's mathematics is written in, on TensorFlow ops.

TensorFlow names these differently from NumPy (`reduce_sum`, `gather`, ...): this module maps the
array-API names core uses onto them, nothing more.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence

import tensorflow as tf

from . import kernels
from .rows import PaddedRows


def strict_float32() -> None:
    """No TensorFloat-32 in float32 matmuls, process-wide (TF enables it on recent GPUs)."""
    tf.config.experimental.enable_tensor_float_32_execution(False)


_DTYPES = {"float32": tf.float32, "int32": tf.int32, "bool": tf.bool}


def sum(x, axis: int | None = None):  # noqa: A001  (the array-API names are the contract)
    if isinstance(x, PaddedRows):
        if axis is None:
            # A padded table's padding rows are zeros: its total without slicing them off.
            return tf.reduce_sum(x.padded)
        x = x.__tf_tensor__()
    return tf.reduce_sum(x, axis=axis)


def mean(x, axis: int | None = None):
    return tf.reduce_mean(x, axis=axis)


def max(x, axis: int | None = None):  # noqa: A001
    return tf.reduce_max(x, axis=axis)


def square(x):
    if isinstance(x, PaddedRows):
        # Zero padding rows stay zero: still a padded table (`sum` reads it without a slice).
        return PaddedRows(tf.square(x.padded), x.rows)
    return tf.square(x)


sqrt = tf.sqrt
exp = tf.exp
log = tf.math.log
tanh = tf.tanh
isfinite = tf.math.is_finite


def maximum(x, y):
    return tf.maximum(x, tf.cast(y, x.dtype) if not isinstance(y, tf.Tensor) else y)


def where(condition, x, y):
    rank = getattr(getattr(x, "shape", None), "rank", None)
    if rank and getattr(condition, "shape", None) is not None and condition.shape.rank == 0:
        # A scalar condition as `[1, ..., 1]` (same broadcast): DTensor (TF 2.21) crashes the
        # process on a select of row-sharded tables under a rank-0 condition, which is what
        # the trainer's divergence guard does with every table.
        condition = tf.reshape(condition, [1] * rank)
    return tf.where(condition, x, y)


def all(x):  # noqa: A001
    return tf.reduce_all(x)


def matmul(a, b):
    if _lone_row(a, b):
        # Two rows (the second zero), the first kept: see `_lone_row`.
        pad = tf.zeros_like(a)
        return tf.split(tf.matmul(tf.concat([a, pad], axis=-2), b), 2, axis=-2)[0]
    return tf.matmul(a, b)


FUSED_VECTOR_BYTES = 16 * 1024
"""XLA:CPU (TensorFlow 2.21's) fuses the producer of a dot's matrix operand into the dot when
the dot's result is a vector and its vector operand is smaller than this; the fused dot is then
emitted as a naive loop."""


def _lone_row(a, b) -> bool:
    """Whether `a @ b` is one row times a matrix (every batch axis 1) that XLA:CPU would emit
    as a naive loop: a row `[1, L]` against `[L, n]`, L·4 bytes under `FUSED_VECTOR_BYTES`.

    XLA drops the unit axes, and a vector-matrix dot whose matrix comes from a fusible op (the
    reshape of a gather: an ALS block of one long row, `[1, 1, L] @ [1, L, d]`) becomes one loop
    fusion that reads the `[L, d]` matrix a column at a time: 190 µs for L = 2048, d = 64 (0.7
    GFLOP/s), most of a TF ALS sweep at ML-1M shape (JAX's XLA calls its GEMM here). Two rows
    keep the product a `[2, n]` matrix, which XLA leaves to its GEMM.
    """
    sa, sb = a.shape, b.shape
    if sa.rank is None or sb.rank is None or sa.rank < 2 or sb.rank < 2:
        return False
    if not sa.is_fully_defined() or not sb.is_fully_defined():
        return False
    batch = 1
    for n in list(sa[:-2]) + list(sb[:-2]):
        batch *= int(n)
    length = int(sa[-1])
    return batch == 1 and int(sa[-2]) == 1 and int(sb[-1]) > 1 and length * 4 < FUSED_VECTOR_BYTES


def transpose(x):
    return tf.transpose(x)


def take(x, indices, axis: int = 0):
    return tf.gather(x, indices, axis=axis)


def concat(xs: Sequence, axis: int = 0):
    xs = list(xs)
    if axis != 0 and xs and builtins.all(isinstance(x, PaddedRows) for x in xs):
        # Padded tables side by side (the biased model's augmented columns): the padded
        # result, no slice (which would make each piece whole on every device).
        rows = {x.rows for x in xs}
        if len(rows) == 1 and len({int(x.padded.shape[0]) for x in xs}) == 1:
            return PaddedRows(tf.concat([x.padded for x in xs], axis=axis), rows.pop())
    out = tf.concat(xs, axis=axis)
    if builtins.all(kernels.is_replicated(x) for x in xs):  # `all` is the array-API one here
        # Pieces fixed whole on every device (a sharded step's bags): the result whole too.
        return kernels.replicated(out)
    return out


def reshape(x, shape: Sequence[int]):
    if isinstance(x, PaddedRows):
        if x.padded.shape.rank == 1 and tuple(shape) == (-1, 1):
            # A padded column `[N]` -> `[N, 1]`: still padded (zero rows stay zero).
            return PaddedRows(tf.reshape(x.padded, (-1, 1)), x.rows)
        x = x.__tf_tensor__()  # any other shape: of the unpadded table
    return tf.reshape(x, shape)


def zeros_like(x):
    return tf.zeros_like(x)


def full_like(x, value: float):
    # Not `tf.fill(tf.shape(x), ...)`: on a row-sharded DTensor that gives a replicated tensor
    # (every device holding the whole table: Adagrad's accumulators were so), while `ones_like`
    # keeps `x`'s layout. Exact: 1·v == v for every float v (±0, ±inf and NaN included).
    if isinstance(x, PaddedRows):
        # The padding rows stay zero (what `PaddedRows` promises its kernels).
        full = tf.ones_like(x.padded) * tf.constant(value, x.dtype)
        real = tf.range(int(x.padded.shape[0])) < x.rows
        real = tf.reshape(real, [-1] + [1] * (x.padded.shape.rank - 1))
        return PaddedRows(tf.where(real, full, tf.zeros_like(full)), x.rows)
    return tf.ones_like(x) * tf.constant(value, x.dtype)


def astype(x, dtype: str):
    return tf.cast(x, _DTYPES[dtype])
