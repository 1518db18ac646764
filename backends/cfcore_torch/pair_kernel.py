"""The observed-pair dot on a precomputed sparse layout: `pair_dot` without `[n, d]` blocks.

The plain kernel (`kernels.pair_dot`) gathers `U[users]` and `V[items]` as `[n, d]` blocks,
multiplies them, and its backward pass scatters two `[n, d]` blocks back into the tables
(`embedding_dense_backward`): on the CPU that is most of a full-batch step (ml-100k u1, d 30:
about 14 of 17 ms; benchmarks/results/torch_steps.md). Written on the sparse matrix `S` of the
observed pairs (`N × M`, one entry per distinct pair) it needs none of these blocks:

* forward: the dot of each distinct pair is the sampled product `(U Vᵀ) ∘ S`
  (`torch.sparse.sampled_addmm`), read back in rating order by a gather of `n` scalars;
* backward, for the per-rating cotangent `g` `[n]`: `G`, the matrix `S` with `g` summed per
  distinct pair, gives `∂U = G V` and `∂V = Gᵀ U`, two sparse × dense products (`G` in CSR
  by user, `Gᵀ` in CSR by item).

The layout depends only on the ids: the training set's is built once, on the host
(`make_pair_layout`, NumPy radix sorts) and every step reads it. The CSR arrays hold each
distinct pair once, columns ascending within a row: valid CSR for every sparse routine
(repeated ratings of one pair are summed in the backward pass by an `index_add` of scalars).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from cfcore.data.row_blocks import stable_row_order
from cfcore.errors import ArgumentValueError

LAYOUT_KEYS = ("user_crow", "user_col", "item_crow", "item_col", "item_from_user", "pair")
"""The arrays of a layout (all int32 `[·]`; p distinct pairs among the n ratings):

* `user_crow` `[N + 1]`, `user_col` `[p]`: the distinct pairs in CSR by user (item ids,
  ascending within a user);
* `item_crow` `[M + 1]`, `item_col` `[p]`: the same pairs in CSR by item (user ids);
* `item_from_user` `[p]`: for each pair in item order, its position in user order;
* `pair` `[n]`: for each rating, the position of its pair in user order.
"""

# torch warns once per process, at the first CSR tensor, that they are in beta: used up here,
# silently (the kernel uses only the sampled product and the CSR × dense product, which the
# conformance tests check), without changing the process' warning filters.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch.sparse_csr_tensor(
        torch.zeros(2, dtype=torch.int64),
        torch.zeros(0, dtype=torch.int64),
        torch.zeros(0),
        (1, 1),
        check_invariants=False,
    )


def make_pair_layout(
    users: Any, items: Any, num_users: int, num_items: int
) -> dict[str, np.ndarray]:
    """The sparse layout of `pair_dot_layout` for the pairs `(users[k], items[k])` of
    `num_users × num_items` tables (NumPy, on the host; once per training set).

    Both id arrays are int `[n]`, n ≥ 1, in range (core checks them before `pair_layout`).
    Returns `LAYOUT_KEYS`' int32 arrays. Cost: stable radix sorts (`stable_row_order`) of the
    ratings by pair (none for ratings already in that order) and of the distinct pairs by item,
    and a few linear passes (benchmarks/results/torch_steps.md).

    Raises:
        ArgumentValueError: the id arrays are not 1-D, differ in shape or are empty, or there
            are 2³¹ ratings or more (int32 positions).
    """
    users, items = np.asarray(users), np.asarray(items)
    if users.shape != items.shape or users.ndim != 1 or not users.size:
        raise ArgumentValueError(
            f"users and items must be non-empty 1-D arrays of one length, got shapes "
            f"{users.shape} and {items.shape}"
        )
    n = users.shape[0]
    if n >= 2**31:
        raise ArgumentValueError(f"a pair layout of {n:,} ratings does not fit int32 indices")
    num_users, num_items = int(num_users), int(num_items)
    # Each pair as one key, user-major, sorted stably (both ids within 32 bits: NumPy sorts
    # the 64-bit keys of larger catalogs by timsort, slower but rare).
    key = users.astype(np.int64) * num_items + items
    order = stable_row_order(key, num_users * num_items)
    key_sorted = key if order is None else key[order]
    first = np.ones(n, bool)  # a rating whose pair differs from the one before it (in order)
    np.not_equal(key_sorted[1:], key_sorted[:-1], out=first[1:])
    pair_sorted = np.cumsum(first, dtype=np.int32) - 1
    if order is None:
        pair = pair_sorted
    else:
        pair = np.empty(n, np.int32)
        pair[order] = pair_sorted
    pair_users, pair_items = np.divmod(key_sorted[first], num_items)
    pair_users, pair_items = pair_users.astype(np.int32), pair_items.astype(np.int32)
    # The distinct pairs by item; stable, so users stay ascending within an item.
    item_from_user = stable_row_order(pair_items, num_items)
    if item_from_user is None:
        item_from_user = np.arange(pair_items.shape[0])
    return {
        "user_crow": _row_starts(pair_users, num_users),
        "user_col": pair_items,
        "item_crow": _row_starts(pair_items, num_items),
        "item_col": pair_users[item_from_user],
        "item_from_user": item_from_user.astype(np.int32),
        "pair": pair,
    }


def _row_starts(rows: np.ndarray, num_rows: int) -> np.ndarray:
    """CSR row pointers `[num_rows + 1]` (int32) of the sorted row ids `rows`."""
    starts = np.zeros(num_rows + 1, np.int32)
    np.cumsum(np.bincount(rows, minlength=num_rows), out=starts[1:])
    return starts


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, num_cols: int):
    # The layout is valid CSR by construction (make_pair_layout): checking it every step would
    # cost a pass over the indices.
    shape = (crow.shape[0] - 1, num_cols)
    return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


class _PairDot(torch.autograd.Function):
    """`⟨U[users[k]], V[items[k]]⟩` from the layout, with the sparse-product gradient."""

    @staticmethod
    def forward(user_emb, item_emb, user_crow, user_col, item_crow, item_col, item_from_user, pair):
        del item_crow, item_col, item_from_user  # read by backward
        num_items = item_emb.shape[0]
        pattern = _csr(user_crow, user_col, user_emb.new_zeros(user_col.shape), num_items)
        sampled = torch.sparse.sampled_addmm(pattern, user_emb, item_emb.mT, beta=0.0)
        return torch.index_select(sampled.values(), 0, pair)

    @staticmethod
    def setup_context(ctx, inputs, output):
        del output
        ctx.save_for_backward(*inputs)

    # once_differentiable: a second derivative through the sparse products is refused clearly
    # (its typing makes the override's parameters positional, hence the pyright exception).
    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # pyright: ignore[reportIncompatibleMethodOverride]
        user_emb, item_emb, user_crow, user_col, item_crow, item_col, item_from_user, pair = (
            ctx.saved_tensors
        )
        num_users, num_items = user_emb.shape[0], item_emb.shape[0]
        # The cotangent per distinct pair (repeated ratings of a pair summed), in user order.
        per_pair = grad.new_zeros(user_col.shape).index_add_(0, pair, grad)
        grad_user = grad_item = None
        if ctx.needs_input_grad[0]:
            grad_user = _csr(user_crow, user_col, per_pair, num_items) @ item_emb
        if ctx.needs_input_grad[1]:
            by_item = torch.index_select(per_pair, 0, item_from_user)
            grad_item = _csr(item_crow, item_col, by_item, num_users) @ user_emb
        return grad_user, grad_item, None, None, None, None, None, None


def pair_dot_layout(user_emb: torch.Tensor, item_emb: torch.Tensor, layout: dict[str, Any]):
    """`pair_dot` of the pairs `layout` was built from: `[n]` float32, in rating order.

    Args:
        user_emb: float32 `[N, d]`.
        item_emb: float32 `[M, d]`.
        layout: `make_pair_layout(users, items, N, M)` as tensors on the tables' device.

    Raises:
        ArgumentValueError: `layout` lacks one of `LAYOUT_KEYS` or was built for tables of
            other sizes.
    """
    missing = [k for k in LAYOUT_KEYS if k not in layout]
    if missing:
        raise ArgumentValueError(f"not a torch pair layout: it lacks {missing}")
    rows = (layout["user_crow"].shape[0] - 1, layout["item_crow"].shape[0] - 1)
    if rows != (user_emb.shape[0], item_emb.shape[0]):
        raise ArgumentValueError(
            f"the pair layout is of {rows[0]} users × {rows[1]} items, the tables have "
            f"{user_emb.shape[0]} and {item_emb.shape[0]} rows"
        )
    out = _PairDot.apply(user_emb, item_emb, *(layout[k] for k in LAYOUT_KEYS))
    assert isinstance(out, torch.Tensor)
    return out
