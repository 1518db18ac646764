"""Transforms of the TensorFlow backend: autodiff, XLA compilation and compiled loops of steps."""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from typing import Any

import tensorflow as tf

# XLA compilation: about 1.7x faster per step than plain graph mode on ml-100k (see benchmarks/),
# and it fuses the gathers of the observed-pair dot into the reduction.
JIT_COMPILE = True

# No AutoGraph: core's mathematics has no tensor-dependent Python control flow (it runs on NumPy
# as written), and converting its source costs seconds per compiled function (about 5 s of a
# first ALS fit on ml-100k) and has miscompiled closures of the ALS half-sweeps.
AUTOGRAPH = False


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
    return tf.function(fn, jit_compile=JIT_COMPILE, autograph=AUTOGRAPH)


def compile_loop(body: Callable) -> Callable:
    """`run(carry, data, xs=None, num_steps=None)`: one XLA `while_loop` over the steps."""

    @tf.function(jit_compile=JIT_COMPILE, autograph=AUTOGRAPH)
    def scan(carry, data, xs):
        num = tf.shape(tf.nest.flatten(xs)[0])[0]

        def step(t, c):
            x = tf.nest.map_structure(lambda a: a[t], xs)
            return t + 1, body(c, data, x)

        return tf.while_loop(lambda t, c: t < num, step, (tf.constant(0), carry))[1]

    @tf.function(jit_compile=JIT_COMPILE, autograph=AUTOGRAPH)
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
    """A Keras 3 optimizer (of Keras' TensorFlow backend) as cfcore's pure pair, else None.

    Accepted as is (schedules, `clipnorm`, `weight_decay` of `AdamW`): not cross-backend
    identical (Keras' `Adam` puts ε outside the bias-corrected square root, for instance, and its
    defaults differ from cfcore's pinned `Adam`). The object itself is never changed: each fit
    works on a copy made from its config.

    Raises:
        ValueError: a Keras optimizer of another Keras backend (`KERAS_BACKEND`), or one whose
            config does not rebuild it (an unregistered custom schedule).
    """
    # Keras is imported by whoever built a Keras optimizer: never import it here for nothing.
    keras = sys.modules.get("keras")
    if keras is None or not isinstance(optimizer, keras.optimizers.Optimizer):
        return None
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"optimizer {optimizer!r} is a Keras optimizer of Keras' {keras.backend.backend()!r} "
            "backend; the 'tf' backend takes Keras optimizers of Keras' 'tensorflow' backend "
            "(KERAS_BACKEND=tensorflow)"
        )
    adapter = _KERAS_ADAPTERS.get(optimizer)
    if adapter is None:
        adapter = _KERAS_ADAPTERS[optimizer] = _KerasOptimizer(optimizer)
    return adapter


class _KerasOptimizer:
    """A stateful Keras 3 optimizer as the pure pair `init` / `update` over tuples of tensors.

    Keras' stateless API refuses its TensorFlow backend, so the state is carried the other way:
    `init` builds a copy of the optimizer on scratch variables shaped like the parameters, and
    `update` writes the carried state into those variables, lets the optimizer apply the
    gradients, and reads the variables back. Inside the trainer's compiled `tf.while_loop`
    (XLA) the writes and reads are ordered resource-variable ops, so the state that leaves a step
    is a tuple of tensors like any other rule's, and the divergence guard can select it.
    """

    def __init__(self, optimizer: Any) -> None:
        self.optimizer = optimizer
        # One built copy per parameter layout (names, shapes, dtypes): `update` runs inside a
        # compiled loop, where variables cannot be created, and picks its copy by static shape.
        self._slots: dict[tuple, tuple[Any, dict[str, Any]]] = {}

    @staticmethod
    def _layout(params: dict[str, Any]) -> tuple:
        return tuple((k, tuple(p.shape), tf.as_dtype(p.dtype).name) for k, p in params.items())

    def init(self, params: dict[str, Any]) -> tuple:
        """The optimizer's variables after building it on `params`, as a tuple of tensors.

        Called eagerly (the trainer initialises outside its compiled loops).
        """
        import keras

        layout = self._layout(params)
        if layout not in self._slots:
            try:
                opt = type(self.optimizer).from_config(self.optimizer.get_config())
            except Exception as err:  # noqa: BLE001 (Keras raises many kinds; all mean the same)
                raise ValueError(
                    f"cannot copy the Keras optimizer {self.optimizer!r} from its config ({err}); "
                    "register custom schedules with keras.saving.register_keras_serializable"
                ) from err
            # Named after the parameters, so `exclude_from_weight_decay(var_names=...)` works.
            scratch = {k: keras.Variable(p, trainable=True, name=k) for k, p in params.items()}
            opt.build(list(scratch.values()))
            self._slots[layout] = (opt, scratch)
        opt, _ = self._slots[layout]
        # A fresh state every fit: zero slots, iteration 0, the configured learning rate.
        fresh = type(self.optimizer).from_config(self.optimizer.get_config())
        fresh.build([keras.Variable(p, name=k) for k, p in params.items()])
        return tuple(_read(v) for v in fresh.variables)

    def update(self, grads: dict[str, Any], state: tuple, params: dict[str, Any]) -> tuple:
        """`(new_params, new_state)`: one `apply_gradients` of the copy, from `state`."""
        opt, scratch = self._slots[self._layout(params)]
        for var, value in zip(opt.variables, state, strict=True):
            var.assign(value)
        for k, var in scratch.items():
            var.assign(params[k])
        opt.apply_gradients([(grads[k], scratch[k]) for k in scratch])
        return {k: _read(v) for k, v in scratch.items()}, tuple(_read(v) for v in opt.variables)


def _read(var: Any) -> tf.Tensor:
    # A tensor of the variable's value now (not a handle that later assigns would change).
    return tf.identity(var.value.read_value())


_KERAS_ADAPTERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
