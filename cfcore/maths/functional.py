"""Model-level helpers on a backend, compiled once per backend: losses, scores, fold-in.

These free functions take the backend first (`be`, what `cfcore.get_backend` returns, or a raw
backend) and do what core's models, retrieval and the conformance suites need on top of the
backend's operations: check the input on the host, convert it, and call the mathematics of
`cfcore.maths.objectives` / `cfcore.maths.retrieval` through one compiled function per backend
and configuration. They live above the boundary (the backend package imports nothing from
`cfcore.maths`); those that take arrays and numbers only are also reachable as methods of the
bound backend (`get_backend("tf").sparse_mse(...)`), registered by
`cfcore.backend.bound.register_method`. The two that take a model spec (`mf_loss_terms`,
`softmax_query_embeddings`) are not: no method of a backend takes a model spec.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..backend.bound import BoundBackend, bind, in_range, register_method
from ..backend.checks import check_embeddings, check_k, check_pairs, host_ints
from ..backend.protocol import Array
from ..errors import ArgumentValueError
from ..resources import check_memory
from . import objectives as losses
from . import retrieval as compute


@register_method
def sparse_mse(
    be: Any, user_emb, item_emb, users, items, ratings, method: str = "gather", layout=None
) -> Array:
    """Mean squared error over observed pairs; a native float32 scalar.

    Args:
        be: the backend.
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
    be = bind(be)
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
    args = [*be.floats(user_emb, item_emb), *be.ints(users, items), *be.floats(ratings)]
    if layout is not None:
        # A layout is built from host ids, which were range-checked then.
        fn = be.compiled(
            ("sparse_mse", method, "layout"),
            lambda: (
                lambda u, v, us, it, r, lay: losses.sparse_mse(be, u, v, us, it, r, method, lay)
            ),
        )
        return fn(*args, layout)
    if host_ints(users) is not None and host_ints(items) is not None:
        fn = be.compiled(
            ("sparse_mse", method),
            lambda: lambda u, v, us, it, r: losses.sparse_mse(be, u, v, us, it, r, method),
        )
    else:
        # Device indices are not range-checked on the host (that would synchronise): an
        # out-of-range one makes the loss NaN, the same on every backend.
        def guarded(u, v, us, it, r):
            ok = in_range(us, u.shape[0]) & in_range(it, v.shape[0])
            us, it = be.clamp(ok, us), be.clamp(ok, it)
            return be.nan_unless(be.xp.all(ok), losses.sparse_mse(be, u, v, us, it, r, method))

        fn = be.compiled(("sparse_mse_guarded", method), lambda: guarded)
    return fn(*args)


@register_method
def l2_penalty(be: Any, user_emb, item_emb) -> Array:
    """`ΣU²/N + ΣV²/M`; a native float32 scalar."""
    return _on_tables(be, losses.l2_penalty, user_emb, item_emb)


@register_method
def gravity(be: Any, user_emb, item_emb) -> Array:
    """`(1/(N·M)) Σ_ij ⟨U_i, V_j⟩²` through the Gramians; a native float32 scalar."""
    return _on_tables(be, losses.gravity, user_emb, item_emb)


def _on_tables(be: Any, term: Callable[..., Any], user_emb: Any, item_emb: Any) -> Array:
    """`term(be, U, V)` of `[N, d]` and `[M, d]` tables, checked and compiled once per term."""
    be = bind(be)
    check_embeddings(user_emb, item_emb)
    fn = be.compiled(term.__name__, lambda: lambda u, v: term(be, u, v))
    return fn(*be.floats(user_emb, item_emb))


def mf_loss_terms(be: Any, spec: Any, params: dict[str, Any], batch: Any) -> dict[str, Array]:
    """The parts of an `MFSpec`'s objective on `batch` (see `cfcore.maths.objectives`)."""
    be = bind(be)
    data = be.device_batch(batch)
    check_pairs(params["user"], params["item"], data["users"], data["items"], data["values"])
    fn = be.compiled(("mf_terms", spec), lambda: lambda p, b: losses.mf_loss_terms(be, spec, p, b))
    return fn(be.params_from_numpy(params), data)


@register_method
def measure_scores(be: Any, query_emb, item_emb, query_power=0.0, item_power=0.0) -> Array:
    """`⟨q, v⟩ / (‖q‖^query_power · ‖v‖^item_power)`: `[B, M]`, zero norms counted as 1."""
    be = bind(be)
    check_embeddings(query_emb, item_emb)
    qp, ip = float(query_power), float(item_power)
    fn = be.compiled(
        ("scores", qp, ip), lambda: lambda q, v: compute.measure_scores(be, q, v, qp, ip)
    )
    return fn(*be.floats(query_emb, item_emb))


@register_method
def score_all(be: Any, query_emb: Any, item_emb: Any) -> Array:
    """Dot-product scores `[B, M]`."""
    return measure_scores(be, query_emb, item_emb)


@register_method
def batched_top_k(
    be: Any, query_emb, item_emb, k: int, exclude=None, query_power=0.0, item_power=0.0
) -> tuple[Array, Array]:
    """Top-k items of `measure_scores` per query row: `(values [B, k], indices [B, k])`."""
    be = bind(be)
    check_embeddings(query_emb, item_emb)
    k = check_k(k, int(item_emb.shape[0]))
    qp, ip = float(query_power), float(item_power)
    b, m = int(query_emb.shape[0]), int(item_emb.shape[0])

    def make() -> Callable[..., Any]:
        def fn(q, v, mask):
            s = compute.measure_scores(be, q, v, qp, ip)
            return compute.masked_top_k(be, s, k, mask)

        return fn

    mask = np.zeros((b, m), bool) if exclude is None else np.asarray(exclude, bool)
    fn = be.compiled(("batched_top_k", k, qp, ip), make)
    return fn(*be.floats(query_emb, item_emb), be.ops.asarray(mask.reshape(b, m), "bool"))


@register_method
def fold_in_solve(be: Any, item_emb, rows, items, ratings, num_rows: int, reg, prior=None) -> Array:
    """`[num_rows, d]`: `u_b = (V_Sᵀ V_S + reg_b·I + prior)⁻¹ V_Sᵀ r_b` per new user `b`."""
    be = bind(be)
    num_rows = int(num_rows)
    d = int(item_emb.shape[1])
    reg = np.broadcast_to(np.asarray(reg, np.float32), (num_rows,))
    prior = np.zeros((d, d), np.float32) if prior is None else np.asarray(prior, np.float32)
    fn = be.compiled(
        ("fold_in", num_rows),
        lambda: lambda v, r, i, y, lam, p: compute.fold_in_solve(be, v, r, i, y, num_rows, lam, p),
    )
    return fn(*be.floats(item_emb), *be.ints(rows, items), *be.floats(ratings, reg, prior))


def softmax_query_embeddings(
    be: Any, spec: Any, params: dict[str, Any], ids: dict, weights: dict
) -> Array:
    """The softmax tower: `[B, d]` query embeddings of the feature bags."""
    be = bind(be)
    fn = be.compiled(
        ("softmax_query", spec),
        lambda: lambda p, i, w: losses.softmax_query_embeddings(be, spec, p, i, w),
    )
    return fn(
        be.params_from_numpy(params),
        {k: be.ops.asarray(v, "int32") for k, v in ids.items()},
        {k: be.ops.asarray(v, "float32") for k, v in weights.items()},
    )


__all__ = [
    "BoundBackend",
    "batched_top_k",
    "fold_in_solve",
    "gravity",
    "l2_penalty",
    "measure_scores",
    "mf_loss_terms",
    "score_all",
    "softmax_query_embeddings",
    "sparse_mse",
]
