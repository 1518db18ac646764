"""Transforms of the TensorFlow backend: autodiff, XLA compilation and compiled loops of steps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

# XLA compilation: about 1.7x faster per step than plain graph mode on ml-100k (see benchmarks/),
# and it fuses the gathers of the observed-pair dot into the reduction.
JIT_COMPILE = True


def value_and_grad(fn: Callable) -> Callable:
    def value_and_grad_fn(params, *args):
        params = {k: tf.convert_to_tensor(v, tf.float32) for k, v in params.items()}
        with tf.GradientTape() as tape:
            tape.watch(params)
            value, aux = fn(params, *args)
        grads = tape.gradient(value, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        # Gathers give IndexedSlices; the contract (and the optimizers) want dense tensors.
        return (value, aux), {k: tf.convert_to_tensor(g) for k, g in grads.items()}

    return value_and_grad_fn


def compile(fn: Callable) -> Callable:  # noqa: A001
    # Traced per input shape (no reduce_retracing): core's mathematics may use static shapes
    # (the embedding dimension of an identity, the row counts of a penalty).
    return tf.function(fn, jit_compile=JIT_COMPILE)


def compile_loop(body: Callable) -> Callable:
    """`run(carry, data, xs=None, num_steps=None)`: one XLA `while_loop` over the steps."""

    @tf.function(jit_compile=JIT_COMPILE)
    def scan(carry, data, xs):
        num = tf.shape(tf.nest.flatten(xs)[0])[0]

        def step(t, c):
            x = tf.nest.map_structure(lambda a: a[t], xs)
            return t + 1, body(c, data, x)

        return tf.while_loop(lambda t, c: t < num, step, (tf.constant(0), carry))[1]

    @tf.function(jit_compile=JIT_COMPILE)
    def repeat(carry, data, num_steps):
        def step(t, c):
            return t + 1, body(c, data, None)

        return tf.while_loop(lambda t, c: t < num_steps, step, (tf.constant(0), carry))[1]

    def run(carry, data, xs=None, num_steps=None):
        if xs is not None:
            return scan(carry, data, xs)
        return repeat(carry, data, tf.constant(num_steps, tf.int32))

    return run


class _Keras:
    """A Keras 3 optimizer through its stateless API (`stateless_apply`), as a pure pair."""

    def __init__(self, optimizer: Any) -> None:
        self.optimizer = optimizer
        self._names: list[str] = []

    def init(self, params):
        self._names = sorted(params)
        variables = [tf.Variable(params[k]) for k in self._names]
        self.optimizer.build(variables)
        return [tf.convert_to_tensor(v) for v in self.optimizer.variables]

    def update(self, grads, state, params):
        trainable = [params[k] for k in self._names]
        new, state = self.optimizer.stateless_apply(
            list(state), [grads[k] for k in self._names], trainable
        )
        return dict(zip(self._names, new, strict=True)), list(state)


def native_optimizer(optimizer: Any) -> Any:
    """A Keras 3 optimizer (`keras.optimizers.Optimizer`), else None."""
    try:
        import keras
    except ImportError:
        return None
    if isinstance(optimizer, keras.optimizers.Optimizer) and hasattr(optimizer, "stateless_apply"):
        return _Keras(optimizer)
    return None
