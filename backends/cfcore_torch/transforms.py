"""Transforms of the torch backend: autodiff, (no) compilation and loops of steps.

torch runs eagerly: `compile` returns the function itself and `compile_loop` is a Python loop.
`torch.compile` would work, but on CPU its compile time dominates the small problems cfcore
trains, and its recompiles on new shapes are slow; it may become an opt-in later.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import torch

from cfcore.backend.loops import map_range, python_loop, tree_index, tree_leaves

from .ops import floats


def _map(fn: Callable, tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _map(fn, v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(_map(fn, v) for v in tree)
    return None if tree is None else fn(tree)


def _detach(x: Any) -> Any:
    return x.detach() if isinstance(x, torch.Tensor) else x


_MAPPED: ContextVar[bool] = ContextVar("cfcore_torch_mapped", default=False)
"""True while `vmap`'s function runs: autograd's `grad` cannot run there, `torch.func`'s can."""


def value_and_grad(fn: Callable) -> Callable:
    """`g(params, *args) -> ((loss, aux), grads)` by reverse-mode autograd; see the protocol.

    Inside `vmap` by `torch.func.grad_and_value` (the same gradient, composable with
    `torch.func.vmap`)."""
    functional = torch.func.grad_and_value(lambda p, *a: _with_aux(fn(p, *a)), has_aux=True)

    def value_and_grad_fn(params, *args):
        if _MAPPED.get():
            leaves = {k: floats(v) for k, v in params.items()}
            grads, (value, aux) = functional(leaves, *args)
            return (value, aux), grads
        with torch.enable_grad():  # also inside `compile_loop`, which runs under no_grad
            leaves = {k: floats(v).detach().requires_grad_() for k, v in params.items()}
            value, aux = fn(leaves, *args)
            names = list(leaves)
            grads = (
                torch.autograd.grad(value, [leaves[k] for k in names], allow_unused=True)
                if value.requires_grad
                else [None] * len(names)
            )
        # A parameter the loss does not use gets a zero gradient (autograd gives None).
        dense = {
            k: torch.zeros_like(leaves[k]) if g is None else g
            for k, g in zip(names, grads, strict=True)
        }
        # Detached: nothing returned keeps the step's graph (and its memory) alive.
        return (value.detach(), _map(_detach, aux)), dense

    return value_and_grad_fn


def _with_aux(out: tuple[Any, Any]) -> tuple[Any, tuple[Any, Any]]:
    value, aux = out
    return value, (value, aux)


def vmap(fn: Callable, in_axes: tuple[Any, ...]) -> Callable:
    """`torch.func.vmap` of `fn` (see `cfcore.backend.capabilities.Capabilities.vmap`); its
    gradients by `torch.func` (`value_and_grad`)."""
    mapped = torch.func.vmap(fn, in_dims=tuple(in_axes))

    def run(*args: Any) -> Any:
        token = _MAPPED.set(True)
        try:
            return mapped(*args)
        finally:
            _MAPPED.reset(token)

    return run


def compile(fn: Callable) -> Callable:  # noqa: A001
    """`fn` itself (see the module docstring)."""
    return fn


def compile_loop(body: Callable) -> Callable:
    """`run(carry, data, xs=None, num_steps=None)`: a Python loop over the steps, under no_grad.

    No host synchronisation happens between steps unless `body` asks for a value (on a GPU the
    kernels queue asynchronously).
    """

    loop = python_loop(body)

    def run(carry, data, xs=None, num_steps: int | None = None):
        with torch.no_grad():
            return loop(carry, data, xs, num_steps)

    return run


MAP_CHUNK = 64
"""Items `compile_map` runs as one batch (`torch.func.vmap`'s `chunk_size`): each op then runs
once per chunk instead of once per item (an ALS bucket's blocks: hundreds of small ones on
ml-100k at d 128), while a chunk's temporaries stay bounded (a block's are at most
`cfcore.data.row_blocks.BLOCK_FLOATS`)."""


def compile_map(fn: Callable) -> Callable:
    """`run(data, xs, start=0, stop=None) -> ys`: `fn` over items `start` to `stop` − 1 of the
    leading axis of `xs`, batched by `torch.func.vmap` in chunks of `MAP_CHUNK` items, under
    no_grad."""

    batched = torch.func.vmap(fn, in_dims=(None, 0), chunk_size=MAP_CHUNK)

    def run(data, xs, start: int = 0, stop: int | None = None):
        total = int(tree_leaves(xs)[0].shape[0])
        start, stop = map_range(total, start, stop)
        if (start, stop) != (0, total):
            xs = tree_index(xs, slice(start, stop))
        with torch.no_grad():
            return batched(data, xs)

    return run


def sync(tree: Any) -> Any:
    """Waits for the queued GPU work that produces `tree`; a no-op on the CPU."""
    if any(isinstance(x, torch.Tensor) and x.is_cuda for x in tree_leaves(tree)):
        torch.cuda.synchronize()
    return tree
