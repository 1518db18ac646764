"""What `get_backend` returns: a backend's operations with core's checks and conveniences on top.

A backend implements only the operations of `cfcore.backend.protocol.Backend`. `BoundBackend`
wraps one and adds, written once in core for every backend:

* validation before dispatch (shapes, integer indices, host index ranges, `k`), so bad input gets
  the same clear error on every backend;
* the functional losses users call in their own loops (`sparse_mse`, `l2_penalty`, `gravity`) and
  the other model-level helpers core and the conformance suites use (`mf_loss_terms`,
  `measure_scores`, `batched_top_k`, `fold_in_solve`, ...), each compiled once per backend;
* `params_from_numpy` / `params_to_numpy` / `device_batch` conversions.

Every operation of the wrapped backend stays reachable by name (`bound.pair_dot`, `bound.xp`, ...)
and as `bound.ops`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ArgumentTypeError, ArgumentValueError
from ..resources import check_memory
from .capabilities import capability
from .checks import (
    check_bag_inputs,
    check_embeddings,
    check_index_range,
    check_indices,
    check_k,
    check_pairs,
    check_softmax_inputs,
    host_ints,
)
from .protocol import Array

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
        self._compiled: dict[Any, Callable[..., Any]] = {}

    def __getattr__(self, attr: str) -> Any:
        # Only reached for names not defined here: the wrapped backend's own members.
        if attr == "ops":
            raise AttributeError(attr)
        return getattr(self.ops, attr)

    def __repr__(self) -> str:
        return repr(self.ops)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BoundBackend) and other.ops is self.ops

    def __hash__(self) -> int:
        return hash(id(self.ops))

    def compiled(self, key: Any, make: Callable[[], Callable[..., Any]]) -> Callable[..., Any]:
        """`self.compile(make())`, built once per `key` for this backend."""
        fn = self._compiled.get(key)
        if fn is None:
            fn = self._compiled[key] = self.ops.compile(make())
        return fn

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

    # ------------------------------------------------------------------ functional losses
    def sparse_mse(
        self, user_emb, item_emb, users, items, ratings, method: str = "gather", layout=None
    ):
        """Mean squared error over observed pairs; a native float32 scalar.

        Args:
            user_emb: `[N, d]`.
            item_emb: `[M, d]`.
            users, items: integer `[n]`. Host indices (NumPy, lists) out of range are a
                ValueError; indices already on a device are not pulled back to check (that
                would synchronise): an out-of-range one makes the loss NaN, on every backend.
            ratings: `[n]`.
            method: "gather" (memory O(n·d)) or "dense" (forms `U·Vᵀ`, memory O(N·M)).
            layout: optional `pair_layout(users, items, N, M)` of these same pairs (gather only):
                the backend may use it for a faster `pair_dot`; the value is the same.
        """
        from ..maths import objectives as losses

        if method not in ("gather", "dense"):
            raise ArgumentValueError(f"method must be 'gather' or 'dense', got {method!r}")
        check_pairs(user_emb, item_emb, users, items, ratings)
        if method == "dense":
            n, m = int(user_emb.shape[0]), int(item_emb.shape[0])
            check_memory(
                2 * 4.0 * n * m,
                f'method="dense" (the [{n}, {m}] scores U·Vᵀ and their gradient, float32)',
                'use method="gather" (memory O(n·d), the same value)',
            )
        args = [*self._f32(user_emb, item_emb), *self._i32(users, items), *self._f32(ratings)]
        if layout is not None:
            # A layout is built from host ids, which were range-checked then.
            fn = self.compiled(
                ("sparse_mse", method, "layout"),
                lambda: (
                    lambda u, v, us, it, r, lay: losses.sparse_mse(
                        self, u, v, us, it, r, method, lay
                    )
                ),
            )
            return fn(*args, layout)
        if host_ints(users) is not None and host_ints(items) is not None:
            fn = self.compiled(
                ("sparse_mse", method),
                lambda: lambda u, v, us, it, r: losses.sparse_mse(self, u, v, us, it, r, method),
            )
        else:
            # Device indices are not range-checked on the host (that would synchronise): an
            # out-of-range one makes the loss NaN, the same on every backend.
            def guarded(u, v, us, it, r):
                ok = _in_range(us, u.shape[0]) & _in_range(it, v.shape[0])
                us, it = self._clamp(ok, us), self._clamp(ok, it)
                return self._nan_unless(
                    self.xp.all(ok), losses.sparse_mse(self, u, v, us, it, r, method)
                )

            fn = self.compiled(("sparse_mse_guarded", method), lambda: guarded)
        return fn(*args)

    def l2_penalty(self, user_emb, item_emb):
        """`ΣU²/N + ΣV²/M`; a native float32 scalar."""
        from ..maths import objectives as losses

        check_embeddings(user_emb, item_emb)
        fn = self.compiled("l2", lambda: lambda u, v: losses.l2_penalty(self, u, v))
        return fn(*self._f32(user_emb, item_emb))

    def gravity(self, user_emb, item_emb):
        """`(1/(N·M)) Σ_ij ⟨U_i, V_j⟩²` through the Gramians; a native float32 scalar."""
        from ..maths import objectives as losses

        check_embeddings(user_emb, item_emb)
        fn = self.compiled("gravity", lambda: lambda u, v: losses.gravity(self, u, v))
        return fn(*self._f32(user_emb, item_emb))

    def mf_loss_terms(self, spec: Any, params: dict[str, Any], batch: Any) -> dict[str, Array]:
        """The parts of an `MFSpec`'s objective on `batch` (see `cfcore.maths.objectives`)."""
        from ..maths import objectives as losses

        data = self.device_batch(batch)
        check_pairs(params["user"], params["item"], data["users"], data["items"], data["values"])
        fn = self.compiled(
            ("mf_terms", spec), lambda: lambda p, b: losses.mf_loss_terms(self, spec, p, b)
        )
        return fn(self.params_from_numpy(params), data)

    def predict(self, params: dict[str, Any], users: Any, items: Any) -> Array:
        """`⟨U_u, V_i⟩` per pair: `[n]`."""
        check_indices(users, "users")
        check_indices(items, "items")
        p = self.params_from_numpy(params)
        host_u, host_i = host_ints(users), host_ints(items)
        if host_u is not None and host_i is not None:
            check_index_range(host_u, p["user"].shape[0], "user index", "users")
            check_index_range(host_i, p["item"].shape[0], "item index", "items")
            return self.ops.pair_dot(p["user"], p["item"], *self._i32(users, items))

        def guarded(u, v, us, it):
            # Device indices: an out-of-range pair predicts NaN on every backend.
            ok = _in_range(us, u.shape[0]) & _in_range(it, v.shape[0])
            pred = self.ops.pair_dot(u, v, self._clamp(ok, us), self._clamp(ok, it))
            return self._nan_unless(ok, pred)

        fn = self.compiled("predict_guarded", lambda: guarded)
        return fn(p["user"], p["item"], *self._i32(users, items))

    # ------------------------------------------------------------------ scoring and retrieval
    def score_all(self, query_emb: Any, item_emb: Any) -> Array:
        """Dot-product scores `[B, M]`."""
        return self.measure_scores(query_emb, item_emb)

    def measure_scores(self, query_emb, item_emb, query_power=0.0, item_power=0.0) -> Array:
        """`⟨q, v⟩ / (‖q‖^query_power · ‖v‖^item_power)`: `[B, M]`, zero norms counted as 1."""
        from ..maths import retrieval as compute

        check_embeddings(query_emb, item_emb)
        qp, ip = float(query_power), float(item_power)
        fn = self.compiled(
            ("scores", qp, ip), lambda: lambda q, v: compute.measure_scores(self, q, v, qp, ip)
        )
        return fn(*self._f32(query_emb, item_emb))

    def top_k(self, scores: Any, k: int, exclude: Any = None) -> tuple[Array, Array]:
        """Top-k per row of `[B, M]` scores, lowest index first on ties; `exclude` scores −inf."""
        from ..maths import retrieval as compute

        shape = tuple(np.shape(scores)) if not hasattr(scores, "shape") else tuple(scores.shape)
        k = check_k(k, int(shape[-1]))
        scores = self.ops.asarray(scores, "float32")
        if exclude is None:
            return self.ops.top_k(scores, k)
        return compute.masked_top_k(self, scores, k, self.ops.asarray(exclude, "bool"))

    def batched_top_k(
        self, query_emb, item_emb, k: int, exclude=None, query_power=0.0, item_power=0.0
    ) -> tuple[Array, Array]:
        """Top-k items of `measure_scores` per query row: `(values [B, k], indices [B, k])`."""
        from ..maths import retrieval as compute

        check_embeddings(query_emb, item_emb)
        k = check_k(k, int(item_emb.shape[0]))
        qp, ip = float(query_power), float(item_power)
        b, m = int(query_emb.shape[0]), int(item_emb.shape[0])

        def make() -> Callable[..., Any]:
            def fn(q, v, mask):
                s = compute.measure_scores(self, q, v, qp, ip)
                return compute.masked_top_k(self, s, k, mask)

            return fn

        mask = np.zeros((b, m), bool) if exclude is None else np.asarray(exclude, bool)
        fn = self.compiled(("batched_top_k", k, qp, ip), make)
        return fn(*self._f32(query_emb, item_emb), self.ops.asarray(mask.reshape(b, m), "bool"))

    def fold_in_solve(self, item_emb, rows, items, ratings, num_rows: int, reg, prior=None):
        """`[num_rows, d]`: `u_b = (V_Sᵀ V_S + reg_b·I + prior)⁻¹ V_Sᵀ r_b` per new user `b`."""
        from ..maths import retrieval as compute

        num_rows = int(num_rows)
        d = int(item_emb.shape[1])
        reg = np.broadcast_to(np.asarray(reg, np.float32), (num_rows,))
        prior = np.zeros((d, d), np.float32) if prior is None else np.asarray(prior, np.float32)
        fn = self.compiled(
            ("fold_in", num_rows),
            lambda: (
                lambda v, r, i, y, lam, p: compute.fold_in_solve(self, v, r, i, y, num_rows, lam, p)
            ),
        )
        return fn(
            *self._f32(item_emb),
            *self._i32(rows, items),
            *self._f32(ratings, reg, prior),
        )

    # ------------------------------------------------------------------ softmax
    def bag_of_words(self, table, ids, weights, combiner: str = "mean") -> Array:
        """Weighted bags of `table` rows: `[..., d]` for `ids`/`weights` `[..., L]`."""
        check_bag_inputs(table, ids, weights, combiner)
        return self.ops.bag_of_words(
            *self._f32(table),
            None if ids is None else self.ops.asarray(ids, "int32"),
            *self._f32(weights),
            combiner=combiner,
        )

    def softmax_cross_entropy(self, query_emb, item_emb, labels) -> Array:
        """Mean full-softmax cross-entropy of `[B, d]` queries over `[M, d]` items; scalar."""
        check_softmax_inputs(query_emb, item_emb, labels)
        if host_ints(labels) is not None:
            return self.ops.softmax_cross_entropy(
                *self._f32(query_emb, item_emb), self.ops.asarray(labels, "int32")
            )

        def guarded(q, v, y):
            # Device labels: an out-of-range one makes the loss NaN on every backend.
            ok = _in_range(y, v.shape[0])
            loss = self.ops.softmax_cross_entropy(q, v, self._clamp(ok, y))
            return self._nan_unless(self.xp.all(ok), loss)

        fn = self.compiled("softmax_ce_guarded", lambda: guarded)
        return fn(*self._f32(query_emb, item_emb), self.ops.asarray(labels, "int32"))

    def sampled_softmax_loss(
        self, query_emb, item_emb, labels, log_q=None, remove_accidental_hits: bool = True
    ) -> Array:
        """In-batch sampled softmax with logQ correction and accidental hits removed; scalar."""
        check_softmax_inputs(query_emb, item_emb, labels, log_q)
        hits = bool(remove_accidental_hits)
        lq = None if log_q is None else self.ops.asarray(log_q, "float32")
        y = self.ops.asarray(labels, "int32")
        q, v = self._f32(query_emb, item_emb)
        if host_ints(labels) is not None:
            return self.ops.sampled_softmax_loss(q, v, y, lq, remove_accidental_hits=hits)
        # Device labels: an out-of-range one makes the loss NaN on every backend.
        ok = _in_range(y, v.shape[0])
        loss = self.ops.sampled_softmax_loss(
            q, v, self._clamp(ok, y), lq, remove_accidental_hits=hits
        )
        return self._nan_unless(self.xp.all(ok), loss)

    def softmax_query_embeddings(self, spec: Any, params: dict[str, Any], ids: dict, weights: dict):
        """The softmax tower: `[B, d]` query embeddings of the feature bags."""
        from ..maths import objectives as losses

        fn = self.compiled(
            ("softmax_query", spec),
            lambda: lambda p, i, w: losses.softmax_query_embeddings(self, spec, p, i, w),
        )
        return fn(
            self.params_from_numpy(params),
            {k: self.ops.asarray(v, "int32") for k, v in ids.items()},
            {k: self.ops.asarray(v, "float32") for k, v in weights.items()},
        )

    # ------------------------------------------------------------------ helpers
    def _clamp(self, ok: Any, idx: Any) -> Any:
        """`idx` with the entries where `ok` is false replaced by 0 (a valid row)."""
        return self.xp.where(ok, idx, self.xp.zeros_like(idx))

    def _nan_unless(self, ok: Any, x: Any) -> Any:
        """`x` where `ok`, NaN elsewhere (`ok` a bool scalar or of `x`'s shape)."""
        return self.xp.where(ok, x, self.xp.full_like(x, float("nan")))

    def _f32(self, *xs: Any) -> list[Array]:
        return [self.ops.asarray(x, "float32") for x in xs]

    def _i32(self, *xs: Any) -> list[Array]:
        return [self.ops.asarray(x, "int32") for x in xs]


def _in_range(idx: Any, size: int) -> Any:
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


def bind(backend: Any) -> BoundBackend:
    """`backend` as a `BoundBackend` (unchanged if it already is one)."""
    return backend if isinstance(backend, BoundBackend) else BoundBackend(backend)
