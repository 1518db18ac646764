"""Transforms of the JAX backend: autodiff, compilation and compiled loops of steps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax


def value_and_grad(fn: Callable) -> Callable:
    return jax.value_and_grad(fn, has_aux=True)


def compile(fn: Callable) -> Callable:  # noqa: A001
    return jax.jit(fn)


def compile_loop(body: Callable) -> Callable:
    """`run(carry, data, xs=None, num_steps=None)`: `lax.scan` over `xs`, else a `fori_loop`."""

    @jax.jit
    def scan(carry, data, xs):
        return lax.scan(lambda c, x: (body(c, data, x), None), carry, xs)[0]

    @jax.jit
    def repeat(carry, data, num_steps):
        return lax.fori_loop(0, num_steps, lambda _, c: body(c, data, None), carry)

    def run(carry, data, xs=None, num_steps: int | None = None):
        if xs is not None:
            return scan(carry, data, xs)
        if num_steps is None:
            raise ValueError("run needs xs (inputs stacked per step) or num_steps; both are None")
        return repeat(carry, data, jnp.int32(num_steps))

    return run


def compile_map(fn: Callable) -> Callable:
    """`run(data, xs) -> ys`: `lax.map` of `fn(data, x)` over the leading axis of `xs`."""

    @jax.jit
    def run(data, xs):
        return lax.map(lambda x: fn(data, x), xs)

    return run


class _Optax:
    """An optax `GradientTransformation` as the `init` / `update` pair core's trainer calls."""

    def __init__(self, tx: Any) -> None:
        self.tx = tx

    def init(self, params):
        return self.tx.init(params)

    def update(self, grads, state, params):
        import optax

        updates, state = self.tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state


def native_optimizer(optimizer: Any) -> Any:
    """An optax `GradientTransformation` (anything with `init` and `update`), else None."""
    import optax

    if isinstance(optimizer, optax.GradientTransformation):
        return _Optax(optimizer)
    return None
