"""Transforms of the JAX backend: autodiff, compilation and compiled loops of steps."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from cfcore.backend.loops import map_range
from cfcore.errors import ArgumentValueError


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
            raise ArgumentValueError(
                "run needs xs (inputs stacked per step) or num_steps; both are None"
            )
        return repeat(carry, data, jnp.int32(num_steps))

    return run


def vmap(fn: Callable, in_axes: tuple[Any, ...]) -> Callable:
    """`jax.vmap` (see `cfcore.backend.capabilities.Capabilities.vmap`)."""
    return jax.vmap(fn, in_axes=in_axes)


def compile_map(fn: Callable) -> Callable:
    """`run(data, xs, start=0, stop=None) -> ys`: `lax.map` of `fn(data, x)` over items `start`
    to `stop` − 1 of the leading axis of `xs` (default all)."""

    @jax.jit
    def run_all(data, xs):
        return lax.map(lambda x: fn(data, x), xs)

    @functools.partial(jax.jit, static_argnums=(2, 3))
    def run_range(data, xs, start, stop):
        part = jax.tree_util.tree_map(lambda a: a[start:stop], xs)
        return lax.map(lambda x: fn(data, x), part)

    def run(data, xs, start: int = 0, stop: int | None = None):
        total = int(jax.tree_util.tree_leaves(xs)[0].shape[0])
        start, stop = map_range(total, start, stop)
        if (start, stop) == (0, total):
            return run_all(data, xs)
        return run_range(data, xs, start, stop)

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
