"""`compile_loop` (and the optional `compile_map`) as plain Python loops, for backends that run
eagerly (NumPy, torch).

A backend whose framework compiles loops (JAX's `lax.scan`, TensorFlow's `while_loop`) writes its
own; one that runs operations one by one returns `python_loop(body)` or `python_map(fn, stack)`
(inside whatever context it needs, e.g. torch's `no_grad`). Public, so a third-party backend may
use them too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..errors import ArgumentValueError
from .protocol import LoopBody, MapFn, Tree


def python_loop(body: LoopBody) -> Callable[..., Tree]:
    """`run(carry, data, xs=None, num_steps=None) -> carry` calling `body` once per step.

    With `xs` (a tree whose leaves have a leading axis of length k) step `i` gets `xs[i]`;
    without, `body(carry, data, None)` runs `num_steps` times. See `Backend.compile_loop`.

    Example:
        >>> run = python_loop(lambda total, data, x: total + data * (1.0 if x is None else x))
        >>> float(run(0.0, 2.0, xs=np.arange(4.0)))  # 2 * (0 + 1 + 2 + 3)
        12.0
        >>> run(0.0, 1.0, num_steps=3)
        3.0
        >>> run(0.0, 1.0)
        Traceback (most recent call last):
        ...
        cfcore.errors.ArgumentValueError: run needs xs (inputs stacked per step) or num_steps; both are None
    """

    def run(carry: Tree, data: Tree, xs: Tree = None, num_steps: int | None = None) -> Tree:
        if xs is None:
            if num_steps is None:
                raise ArgumentValueError(
                    "run needs xs (inputs stacked per step) or num_steps; both are None"
                )
            for _ in range(int(num_steps)):
                carry = body(carry, data, None)
            return carry
        leaves = tree_leaves(xs)
        for i in range(int(np.shape(leaves[0])[0]) if leaves else 0):
            carry = body(carry, data, _index(xs, i))
        return carry

    return run


def python_map(fn: MapFn, stack: Callable[[list[Any]], Any]) -> Callable[..., Tree]:
    """`run(data, xs, start=0, stop=None) -> ys`: `fn(data, xs[i])` for each `i` from `start` to
    `stop` − 1 (default all), each leaf stacked by `stack`.

    Args:
        fn: `fn(data, x) -> tree of arrays`, the same structure and shapes for every `x`.
        stack: the framework's stack of a list of same-shaped arrays along a new leading axis.

    Example:
        >>> run = python_map(lambda data, x: (data * x, x), np.stack)
        >>> [a.tolist() for a in run(2.0, np.arange(3.0))]
        [[0.0, 2.0, 4.0], [0.0, 1.0, 2.0]]
        >>> [a.tolist() for a in run(2.0, np.arange(3.0), 1, 3)]
        [[2.0, 4.0], [1.0, 2.0]]
    """

    def run(data: Tree, xs: Tree, start: int = 0, stop: int | None = None) -> Tree:
        start, stop = map_range(int(np.shape(tree_leaves(xs)[0])[0]), start, stop)
        outs = [fn(data, _index(xs, i)) for i in range(start, stop)]
        return _stack(outs, stack)

    return run


def map_range(total: int, start: int, stop: int | None) -> tuple[int, int]:
    """`compile_map`'s item range `(start, stop)` over `total` items (`stop` None: all), checked.

    Raises:
        ValueError: unless `0 <= start < stop <= total`.

    Example:
        >>> map_range(5, 1, None)
        (1, 5)
    """
    stop = total if stop is None else int(stop)
    if not 0 <= int(start) < stop <= total:
        raise ArgumentValueError(
            f"compile_map's range must satisfy 0 <= start < stop <= {total} (the items), "
            f"got start={start}, stop={stop}"
        )
    return int(start), stop


def _stack(outs: list[Tree], stack: Callable[[list[Any]], Any]) -> Tree:
    first = outs[0]
    if isinstance(first, dict):
        return {k: _stack([o[k] for o in outs], stack) for k in first}
    if isinstance(first, list | tuple):
        return type(first)(_stack([o[i] for o in outs], stack) for i in range(len(first)))
    return stack(outs)


def tree_leaves(tree: Tree) -> list[Any]:
    """The array leaves of a tree (dicts, lists, tuples), in order; `None` leaves left out."""
    if isinstance(tree, dict):
        return [leaf for v in tree.values() for leaf in tree_leaves(v)]
    if isinstance(tree, list | tuple):
        return [leaf for v in tree for leaf in tree_leaves(v)]
    return [] if tree is None else [tree]


def tree_index(tree: Tree, i: int | slice) -> Tree:
    """Item (or slice) `i` of the leading axis of every leaf of `tree`."""
    if isinstance(tree, dict):
        return {k: tree_index(v, i) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(tree_index(v, i) for v in tree)
    return None if tree is None else tree[i]


_index = tree_index


def split_mapped(args: tuple[Any, ...], in_axes: tuple[Any, ...]) -> tuple[list[Any], Any]:
    """The leaves of `args` mapped by `in_axes` (as `Capabilities.vmap` takes them: per
    argument a tree, or a prefix of it, of 0 and None), and `rebuild(mapped) -> args` putting
    one item's mapped leaves back among the shared ones.

    For backends whose own map takes one tree of mapped arrays (`tf.vectorized_map`).

    Example:
        >>> mapped, rebuild = split_mapped(({"a": 1, "b": 2}, 3), ({"a": 0, "b": None}, None))
        >>> mapped
        [1]
        >>> rebuild([10])
        ({'a': 10, 'b': 2}, 3)
    """
    mapped: list[Any] = []

    def collect(tree: Any, axes: Any) -> None:
        if axes is None or tree is None:
            return
        if isinstance(axes, dict):
            for k in axes:
                collect(tree[k], axes[k])
        elif isinstance(axes, list | tuple):
            for t, a in zip(tree, axes, strict=True):
                collect(t, a)
        elif axes == 0:
            mapped.extend(tree_leaves(tree))
        else:
            raise ArgumentValueError(f"vmap maps leading axes only (0 or None); got {axes!r}")

    collect(args, tuple(in_axes))

    def rebuild(items: list[Any]) -> tuple[Any, ...]:
        it = iter(items)

        def put(tree: Any, axes: Any) -> Any:
            if axes is None or tree is None:
                return tree
            if isinstance(axes, dict):
                return {k: put(v, axes.get(k)) if k in axes else v for k, v in tree.items()}
            if isinstance(axes, list | tuple):
                out = [put(t, a) for t, a in zip(tree, axes, strict=True)]
                return type(tree)(*out) if hasattr(tree, "_fields") else type(tree)(out)
            return tree_with_leaves(tree, it)

        return put(tuple(args), tuple(in_axes))

    return mapped, rebuild


def tree_with_leaves(tree: Tree, leaves: Iterator[Any]) -> Tree:
    """`tree`'s structure (named tuples kept) with its leaves taken in order from `leaves`,
    `None` leaves kept (`tree_leaves`' order)."""
    if isinstance(tree, dict):
        return {k: tree_with_leaves(v, leaves) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        out = [tree_with_leaves(v, leaves) for v in tree]
        return type(tree)(*out) if hasattr(tree, "_fields") else type(tree)(out)
    return None if tree is None else next(leaves)
