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
    return tf.matmul(a, b)


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
