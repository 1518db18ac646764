"""cfcore optimizer specs as pure TensorFlow functions (the update rules of their docstrings).

Keras optimizers are stateful objects with their own defaults (Adam's ε = 1e-7, placed differently),
so the updates are written out here to match cfcore's specs, and so the JAX backend, exactly.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from cfcore.specs import SGD, Adagrad, Adam, OptimizerSpec

State = dict[str, Any]


def init(optimizer: OptimizerSpec, params: dict[str, tf.Tensor]) -> State:
    """The optimizer state for `params`: accumulators or moments of the same shapes."""
    if isinstance(optimizer, SGD):
        return {}
    if isinstance(optimizer, Adagrad):
        return {
            "acc": {
                k: tf.fill(
                    tf.shape(v), tf.constant(optimizer.initial_accumulator_value, tf.float32)
                )
                for k, v in params.items()
            }
        }
    if isinstance(optimizer, Adam):
        return {
            "m": {k: tf.zeros_like(v) for k, v in params.items()},
            "v": {k: tf.zeros_like(v) for k, v in params.items()},
            "t": tf.constant(0, tf.int32),
        }
    raise TypeError(f"the tf backend does not know optimizer {optimizer!r}")


def update(optimizer: OptimizerSpec, grads: dict, state: State, params: dict) -> tuple[dict, State]:
    """One step of `optimizer`; returns `(new_params, new_state)`."""
    lr = tf.constant(optimizer.learning_rate, tf.float32)
    if isinstance(optimizer, SGD):
        return {k: params[k] - lr * grads[k] for k in params}, state
    if isinstance(optimizer, Adagrad):
        eps = tf.constant(optimizer.eps, tf.float32)
        acc = {k: state["acc"][k] + tf.square(grads[k]) for k in params}
        new = {k: params[k] - lr * (grads[k] * tf.math.rsqrt(acc[k] + eps)) for k in params}
        return new, {"acc": acc}
    if isinstance(optimizer, Adam):
        b1 = tf.constant(optimizer.b1, tf.float32)
        b2 = tf.constant(optimizer.b2, tf.float32)
        eps = tf.constant(optimizer.eps, tf.float32)
        t = state["t"] + 1
        tf_ = tf.cast(t, tf.float32)
        m = {k: b1 * state["m"][k] + (1.0 - b1) * grads[k] for k in params}
        v = {k: b2 * state["v"][k] + (1.0 - b2) * tf.square(grads[k]) for k in params}
        c1, c2 = 1.0 - tf.pow(b1, tf_), 1.0 - tf.pow(b2, tf_)
        new = {k: params[k] - lr * ((m[k] / c1) / (tf.sqrt(v[k] / c2) + eps)) for k in params}
        return new, {"m": m, "v": v, "t": t}
    raise TypeError(f"the tf backend does not know optimizer {optimizer!r}")
