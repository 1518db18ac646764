"""The array namespace (`xp`) that core's mathematics is written in, on TensorFlow ops.

TensorFlow names these differently from NumPy (`reduce_sum`, `gather`, ...): this module maps the
array-API names core uses onto them, nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf


def strict_float32() -> None:
    """No TensorFloat-32 in float32 matmuls, process-wide (TF enables it on recent GPUs)."""
    tf.config.experimental.enable_tensor_float_32_execution(False)


_DTYPES = {"float32": tf.float32, "int32": tf.int32, "bool": tf.bool}


def sum(x, axis: int | None = None):  # noqa: A001  (the array-API names are the contract)
    return tf.reduce_sum(x, axis=axis)


def mean(x, axis: int | None = None):
    return tf.reduce_mean(x, axis=axis)


def max(x, axis: int | None = None):  # noqa: A001
    return tf.reduce_max(x, axis=axis)


square = tf.square
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
    return tf.concat(list(xs), axis=axis)


def reshape(x, shape: Sequence[int]):
    return tf.reshape(x, shape)


def zeros_like(x):
    return tf.zeros_like(x)


def full_like(x, value: float):
    return tf.fill(tf.shape(x), tf.constant(value, x.dtype))


def astype(x, dtype: str):
    return tf.cast(x, _DTYPES[dtype])
