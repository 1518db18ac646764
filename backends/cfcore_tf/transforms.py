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

    def run(carry, data, xs=None, num_steps: int | None = None):
        if xs is not None:
            return scan(carry, data, xs)
        if num_steps is None:
            raise ValueError("run needs xs (inputs stacked per step) or num_steps; both are None")
        return repeat(carry, data, tf.constant(num_steps, tf.int32))

    return run


def native_optimizer(optimizer: Any) -> Any:
    """None: no TensorFlow optimizer is accepted yet.

    Keras 3 optimizers are stateful, and their stateless API (`stateless_apply`) refuses to run
    with Keras' TensorFlow backend ("incompatible with tf.distribute"), so they cannot run inside
    cfcore's functional compiled loop. Use cfcore's pinned `SGD`, `Adagrad` or `Adam`.
    """
    return None
