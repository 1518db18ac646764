"""What `get_backend` returns: a backend's operations with core's checks and conveniences on top.

A backend implements only the operations of `cfcore.backend.protocol.Backend` (and any optional
ones of `cfcore.backend.capabilities`). `BoundBackend` wraps one and adds, written once in core
for every backend:

* validation before dispatch (shapes, integer indices, host index ranges, `k`), so bad input gets
  the same clear error on every backend;
* `pair_layout`, `native_optimizer` and `sync` whether or not the backend has them (None, None,
  a fetch of every leaf);
* `params_from_numpy` / `params_to_numpy` / `device_batch` conversions and `predict`.

The helpers that compute model objectives (`sparse_mse`, `l2_penalty`, `gravity`,
`mf_loss_terms`, `measure_scores`, `batched_top_k`, `fold_in_solve`, ...) live above the boundary
in `cfcore.maths.functional`, as free functions taking the backend; those that take no model spec
register themselves (`register_method`) so that `bound.sparse_mse(...)` stays reachable. This package imports nothing
from `cfcore.maths`, `cfcore.models` or `cfcore.train`.

Every operation of the wrapped backend stays reachable by name (`bound.pair_dot`, `bound.xp`, ...)
and as `bound.ops`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ArgumentTypeError
from .capabilities import capability
from .checks import (
    check_bag_inputs,
    check_index_range,
    check_indices,
    check_k,
    check_pairs,
    check_softmax_inputs,
    host_ints,
)
from .memo import shared
from .programs import BACKEND_FUNCTIONS, ProgramCache, remembered
from .protocol import Array

_METHODS: dict[str, Callable[..., Any]] = {}
"""Functions registered by `register_method`, reached as methods of every bound backend."""

_DTYPE_NAMES = {"f": "float32", "i": "int32", "u": "int32", "b": "bool"}


class BoundBackend:
    """A backend's operations plus core's checks and conveniences (see the module docstring).

    Args:
        ops: an object implementing `cfcore.backend.protocol.Backend`.
    """

    def __init__(self, ops: Any) -> None:
        self.ops = ops
        self.name: str = ops.name
        self.xp = ops.xp
        self._compiled: dict[Any, Callable[..., Any]] = ProgramCache()

    def __getattr__(self, attr: str) -> Any:
        # Only reached for names not defined here: a method registered from above the boundary
        # (`register_method`), else the wrapped backend's own members.
        if attr == "ops":
            raise AttributeError(attr)
        method = _METHODS.get(attr)
        if method is not None:
            return functools.partial(method, self)
        return getattr(self.ops, attr)

    def __repr__(self) -> str:
        return repr(self.ops)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BoundBackend) and other.ops is self.ops

    def __hash__(self) -> int:
        return hash(id(self.ops))

    def compiled(self, key: Any, make: Callable[[], Callable[..., Any]]) -> Callable[..., Any]:
        """`self.compile(make())`, built once per `key` for this backend (the most recently used
        `BACKEND_FUNCTIONS` kept)."""
        return remembered(self._compiled, key, lambda: self.ops.compile(make()), BACKEND_FUNCTIONS)

    # ------------------------------------------------------------------ arrays
    def asarray(self, x: Any, dtype: Any = None) -> Array:
        """A native array; `dtype` may be "float32"/"int32"/"bool" or a NumPy dtype."""
        if dtype is not None and not isinstance(dtype, str):
            dtype = _DTYPE_NAMES[np.dtype(dtype).kind]
        return self.ops.asarray(x, dtype)

    def sync(self, tree: Any) -> Any:
        """Waits until every array of `tree` is computed (for timing); returns `tree`.

        Uses the backend's optional `sync`; without it, fetches every leaf (which waits too).
        """
        wait = capability(self.ops, "sync")
        if wait is not None:
            return wait(tree)
        _fetch_leaves(self.ops, tree)
        return tree

    def native_optimizer(self, optimizer: Any) -> Any:
        """The backend's `native_optimizer(optimizer)` (optional member), or None without it."""
        wrap = capability(self.ops, "native_optimizer")
        return None if wrap is None else wrap(optimizer)

    def params_from_numpy(self, params: dict[str, Any]) -> dict[str, Array]:
        return {k: self.ops.asarray(np.asarray(v, np.float32)) for k, v in params.items()}

    def params_to_numpy(self, params: dict[str, Any]) -> dict[str, np.ndarray]:
        return {k: np.asarray(self.ops.to_numpy(v)) for k, v in params.items()}

    def device_batch(self, batch: Any, pair_layout: bool = False) -> dict[str, Array]:
        # Several models preparing one training set together (`cfcore.fit_many`) share one.
        return shared(batch, ("device_batch", id(self.ops), pair_layout),
                      lambda: self._device_batch(batch, pair_layout))  # fmt: skip

    def _device_batch(self, batch: Any, pair_layout: bool = False) -> dict[str, Array]:
        """Ratings (`Batch`, `Ratings` or a dict) as `{"users", "items", "values"}` native arrays.

        Args:
            batch: the ratings.
            pair_layout: also add `"layout"`, the backend's `pair_layout` of these pairs, when it
                gives one (full-batch training: built once here, then read by every step's
                `pair_dot`). Needs `batch.num_users` / `batch.num_items` (a `Ratings`).
        """
        if isinstance(batch, dict):
            users, items, values = batch["users"], batch["items"], batch["values"]
        else:
            users, items, values = batch.users, batch.items, batch.values
        check_indices(users, "users")
        check_indices(items, "items")
        out = {
            "users": self.ops.asarray(users, "int32"),
            "items": self.ops.asarray(items, "int32"),
            "values": self.ops.asarray(values, "float32"),
        }
        if pair_layout:
            num_users: Any = getattr(batch, "num_users", None)
            num_items: Any = getattr(batch, "num_items", None)
            if num_users is None or num_items is None:
                raise ArgumentTypeError(
                    f"pair_layout=True needs ratings with num_users and num_items (a Ratings), "
                    f"got {type(batch).__name__}"
                )
            layout = self.pair_layout(users, items, int(num_users), int(num_items))
            if layout is not None:
                out["layout"] = layout
        return out

    def pair_layout(self, users: Any, items: Any, num_users: int, num_items: int) -> Any:
        """The backend's precomputed layout of these pairs for `pair_dot`, or None (also when
        the backend lacks the optional `pair_layout`).

        Host ids are checked (integers, 1-D of one non-empty length, in range) before dispatch.
        """
        users, items = np.asarray(users), np.asarray(items)
        num_users, num_items = int(num_users), int(num_items)
        check_pairs(
            np.empty((num_users, 0)), np.empty((num_items, 0)), users, items, np.empty(len(users))
        )
        make = capability(self.ops, "pair_layout")
        if make is None:
            return None
        return make(
            users.astype(np.int32, copy=False),
            items.astype(np.int32, copy=False),
            num_users,
            num_items,
        )

    # ------------------------------------------------------------------ predictions and top-k
    def predict(self, params: dict[str, Any], users: Any, items: Any) -> Array:
        """`⟨U_u, V_i⟩` per pair: `[n]`."""
        check_indices(users, "users")
        check_indices(items, "items")
        p = self.params_from_numpy(params)
        host_u, host_i = host_ints(users), host_ints(items)
        if host_u is not None and host_i is not None:
            check_index_range(host_u, p["user"].shape[0], "user index", "users")
            check_index_range(host_i, p["item"].shape[0], "item index", "items")
            return self.ops.pair_dot(p["user"], p["item"], *self.ints(users, items))

        def guarded(u, v, us, it):
            # Device indices: an out-of-range pair predicts NaN on every backend.
            ok = in_range(us, u.shape[0]) & in_range(it, v.shape[0])
            pred = self.ops.pair_dot(u, v, self.clamp(ok, us), self.clamp(ok, it))
            return self.nan_unless(ok, pred)

        fn = self.compiled("predict_guarded", lambda: guarded)
        return fn(p["user"], p["item"], *self.ints(users, items))

    def top_k(self, scores: Any, k: int, exclude: Any = None) -> tuple[Array, Array]:
        """Top-k per row of `[B, M]` scores, lowest index first on ties; `exclude` scores −inf."""
        shape = tuple(np.shape(scores)) if not hasattr(scores, "shape") else tuple(scores.shape)
        k = check_k(k, int(shape[-1]))
        scores = self.ops.asarray(scores, "float32")
        if exclude is None:
            return self.ops.top_k(scores, k)
        mask = self.ops.asarray(exclude, "bool")
        return self.ops.top_k(self.xp.where(mask, self.xp.full_like(scores, -np.inf), scores), k)

    # ------------------------------------------------------------------ softmax
    def bag_of_words(self, table, ids, weights, combiner: str = "mean") -> Array:
        """Weighted bags of `table` rows: `[..., d]` for `ids`/`weights` `[..., L]`."""
        check_bag_inputs(table, ids, weights, combiner)
        return self.ops.bag_of_words(
            *self.floats(table),
            None if ids is None else self.ops.asarray(ids, "int32"),
            *self.floats(weights),
            combiner=combiner,
        )

    def softmax_cross_entropy(self, query_emb, item_emb, labels) -> Array:
        """Mean full-softmax cross-entropy of `[B, d]` queries over `[M, d]` items; scalar."""
        check_softmax_inputs(query_emb, item_emb, labels)
        if host_ints(labels) is not None:
            return self.ops.softmax_cross_entropy(
                *self.floats(query_emb, item_emb), self.ops.asarray(labels, "int32")
            )

        def guarded(q, v, y):
            # Device labels: an out-of-range one makes the loss NaN on every backend.
            ok = in_range(y, v.shape[0])
            loss = self.ops.softmax_cross_entropy(q, v, self.clamp(ok, y))
            return self.nan_unless(self.xp.all(ok), loss)

        fn = self.compiled("softmax_ce_guarded", lambda: guarded)
        return fn(*self.floats(query_emb, item_emb), self.ops.asarray(labels, "int32"))

    def sampled_softmax_loss(
        self, query_emb, item_emb, labels, log_q=None, remove_accidental_hits: bool = True
    ) -> Array:
        """In-batch sampled softmax with logQ correction and accidental hits removed; scalar."""
        check_softmax_inputs(query_emb, item_emb, labels, log_q)
        hits = bool(remove_accidental_hits)
        lq = None if log_q is None else self.ops.asarray(log_q, "float32")
        y = self.ops.asarray(labels, "int32")
        q, v = self.floats(query_emb, item_emb)
        if host_ints(labels) is not None:
            return self.ops.sampled_softmax_loss(q, v, y, lq, remove_accidental_hits=hits)
        # Device labels: an out-of-range one makes the loss NaN on every backend.
        ok = in_range(y, v.shape[0])
        loss = self.ops.sampled_softmax_loss(
            q, v, self.clamp(ok, y), lq, remove_accidental_hits=hits
        )
        return self.nan_unless(self.xp.all(ok), loss)

    # ------------------------------------------------------------------ helpers
    def clamp(self, ok: Any, idx: Any) -> Any:
        """`idx` with the entries where `ok` is false replaced by 0 (a valid row)."""
        return self.xp.where(ok, idx, self.xp.zeros_like(idx))

    def nan_unless(self, ok: Any, x: Any) -> Any:
        """`x` where `ok`, NaN elsewhere (`ok` a bool scalar or of `x`'s shape)."""
        return self.xp.where(ok, x, self.xp.full_like(x, float("nan")))

    def floats(self, *xs: Any) -> list[Array]:
        """Each of `xs` as a native float32 array."""
        return [self.ops.asarray(x, "float32") for x in xs]

    def ints(self, *xs: Any) -> list[Array]:
        """Each of `xs` as a native int32 array."""
        return [self.ops.asarray(x, "int32") for x in xs]


def in_range(idx: Any, size: int) -> Any:
    """Element-wise `0 <= idx < size` on native arrays."""
    return (idx >= 0) & (idx < size)


def _fetch_leaves(ops: Any, tree: Any) -> None:
    """`ops.to_numpy` of every array leaf of `tree` (dicts, lists, tuples; None skipped)."""
    if isinstance(tree, dict):
        for v in tree.values():
            _fetch_leaves(ops, v)
    elif isinstance(tree, list | tuple):
        for v in tree:
            _fetch_leaves(ops, v)
    elif tree is not None:
        ops.to_numpy(tree)


def register_method(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Makes `fn(be, *args, **kwargs)` reachable as `bound.<fn's name>(*args, **kwargs)`.

    The helpers that compute model objectives (`cfcore.maths.functional`: `sparse_mse`,
    `fold_in_solve`, ...) live above the boundary, which imports nothing from `cfcore.maths`;
    they register themselves here so that `get_backend("tf").sparse_mse(...)` keeps working.
    A name the bound backend defines itself wins. Returns `fn` (a decorator).
    """
    _METHODS[fn.__name__] = fn
    return fn


def bind(backend: Any) -> BoundBackend:
    """`backend` as a `BoundBackend` (unchanged if it already is one)."""
    return backend if isinstance(backend, BoundBackend) else BoundBackend(backend)
