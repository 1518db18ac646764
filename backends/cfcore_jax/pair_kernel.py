"""Fast `⟨U[users[k]], V[items[k]]⟩` for many pairs on XLA:CPU, with a hand-written gradient.

Why this exists. The plain expression `sum(U[users] * V[items], axis=1)` is compiled by XLA:CPU
into two gathers that each materialise an `[n, d]` block (at 1M ratings and d = 32: two 128 MB
buffers, written then read again), and its autodiff gradient is two scatter-adds of `n` rows of
`d` floats into `U` and `V`, which XLA:CPU runs as a serial loop over the rows. Together they make
a full-batch MF step on the CPU slower than TensorFlow's, whose XLA fuses the gathers.

What this kernel does instead (the "segment layout"). Group the ratings by user and cut each
user's run into segments of `L` slots (the last one padded); do the same grouped by item. In the
user layout every slot of a segment has the same user, so

* the forward pass gathers one `V` row per slot and one `U` row per *segment*;
* `dU` is a dense reduction over the `L` slots of each segment (`[S, L] x [S, L, d] -> [S, d]`)
  followed by a *sorted* segment sum of `S ≈ n/L + N/2` rows instead of a scatter of `n`;

and symmetrically `dV` uses the item layout. The work runs in fixed-size blocks of segments under
`lax.map`, so each gathered `[block, L, d]` operand stays in cache instead of going through
memory. Nothing is approximated: every output is the same sum of float32 products as the plain
expression (only the summation order of the gradient changes).

The layout depends only on the ids, so the trainer builds it once per training set with
`make_pair_layout` (NumPy, outside `jit`; a few seconds at 20M ratings) and passes it into every
compiled step with the data (`Backend.pair_layout`, `Backend.pair_dot(..., layout=)`).

The layout is a dict of int32 arrays (a tree any `Placement` moves like the ratings):

* `user_owner` `[B_u, K]`: the user of each segment, nondecreasing in row-major order (padding
  segments: the last user);
* `user_other` `[B_u, K, L]`: the item of each slot (padding: 0);
* `user_src` `[B_u, K, L]`: the rating index of each slot (padding: `n`);
* `item_owner`, `item_other`, `item_src`: the same grouped by item;
* `slot` `[n]`: the flat position of rating `k` in the user layout.

`K` segments make one block of `lax.map` (`K·L` slots ≈ `BLOCK_SLOTS`), `B_u` blocks the layout.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cfcore.data.row_blocks import stable_row_order
from cfcore.errors import ArgumentValueError

_HIGHEST = lax.Precision.HIGHEST

#: Slots per segment (L). Padding costs up to (N + M)·L slots (half that on average); 32 beat
#: 8/16/64 at 1M ratings (fewer segments to sum, padding about 10% at MovieLens shapes).
SEGMENT = 32
#: Slots per block of `lax.map`: the gathered `[BLOCK_SLOTS, d]` float32 operand (2 MB at d = 32)
#: stays in cache; 8k-32k slots measured alike, 128k slower.
BLOCK_SLOTS = 16384

LAYOUT_KEYS = (
    "user_owner",
    "user_other",
    "user_src",
    "item_owner",
    "item_other",
    "item_src",
    "slot",
)


def _side(
    owner_ids: np.ndarray,
    other_ids: np.ndarray,
    num_owners: int,
    seg_len: int,
    block_slots: int,
    with_slot: bool,
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """One side's layout (see the module docstring) and, if asked, each rating's flat slot."""
    n = owner_ids.shape[0]
    order = stable_row_order(owner_ids, num_owners)  # None: the ids are in order already
    counts = np.bincount(owner_ids, minlength=num_owners)
    seg_count = (counts + seg_len - 1) // seg_len
    seg_start = np.cumsum(seg_count) - seg_count
    used = int(seg_count.sum())
    block = max(1, block_slots // seg_len)
    num_blocks = max(1, -(-used // block))
    total = num_blocks * block * seg_len
    if total >= 2**31:
        raise ArgumentValueError(
            f"a pair layout of {total:,} slots does not fit int32 indices "
            f"({n:,} ratings over {num_owners:,} rows): use minibatches"
        )
    # The j-th rating in owner order goes to slot seg_start[o]·L + (j − run_start[o]) of its
    # owner o: j plus a per-owner shift, repeated over the owner's run. Every pass here is
    # sequential except the gather of `other_ids` and the scatter of `slot`.
    run_start = np.cumsum(counts) - counts
    shift = (seg_start * seg_len - run_start).astype(np.int32)
    slot_sorted = np.repeat(shift, counts)
    slot_sorted += np.arange(n, dtype=np.int32)
    src = np.full(total, n, np.int32)
    src[slot_sorted] = np.arange(n, dtype=np.int32) if order is None else order
    other = np.zeros(total, np.int32)
    other[slot_sorted] = other_ids if order is None else other_ids[order]
    owner = np.full(num_blocks * block, num_owners - 1, np.int32)
    owner[:used] = np.repeat(np.arange(num_owners, dtype=np.int32), seg_count)
    slot = None
    if with_slot:
        slot = slot_sorted
        if order is not None:
            slot = np.empty(n, np.int32)
            slot[order] = slot_sorted
    layout = {
        "owner": owner.reshape(num_blocks, block),
        "other": other.reshape(num_blocks, block, seg_len),
        "src": src.reshape(num_blocks, block, seg_len),
    }
    return layout, slot


def make_pair_layout(
    users: Any,
    items: Any,
    num_users: int,
    num_items: int,
    seg_len: int = SEGMENT,
    block_slots: int = BLOCK_SLOTS,
) -> dict[str, np.ndarray]:
    """The segment layouts `pair_dot` uses for these pairs (NumPy, on the host; call once).

    Args:
        users: int `[n]` user ids in `[0, num_users)`, n ≥ 1.
        items: int `[n]` item ids in `[0, num_items)`.
        num_users: N, rows of the user table.
        num_items: M, rows of the item table.
        seg_len: slots per segment (L ≥ 1).
        block_slots: slots per block of the blocked loops (rounded down to a multiple of L).

    Returns:
        The layout dict of the module docstring (int32 NumPy arrays). Cost: a radix sort a side
        (none for ids already in order: ratings read by user) and a few passes over the ids
        (benchmarks/results/layouts.md); memory about 7 int32 per rating plus the padding.
    """
    users = np.asarray(users).astype(np.int32, copy=False)
    items = np.asarray(items).astype(np.int32, copy=False)
    if users.ndim != 1 or users.shape != items.shape or users.shape[0] == 0:
        raise ArgumentValueError(
            f"users and items must be non-empty 1-D arrays of one length, got shapes "
            f"{users.shape} and {items.shape}"
        )
    if seg_len < 1 or block_slots < 1:
        raise ArgumentValueError(
            f"seg_len and block_slots must be ≥ 1, got {seg_len}, {block_slots}"
        )
    by_user, slot = _side(users, items, int(num_users), seg_len, block_slots, with_slot=True)
    by_item, _ = _side(items, users, int(num_items), seg_len, block_slots, with_slot=False)
    out = {f"user_{k}": v for k, v in by_user.items()}
    out.update({f"item_{k}": v for k, v in by_item.items()})
    assert slot is not None  # asked for with with_slot=True
    out["slot"] = slot
    return out


def _segment_dots(own_emb, other_emb, owner, other):
    """`[B, K, L]`: ⟨own_emb[owner[b, s]], other_emb[other[b, s, l]]⟩ for every slot."""

    def body(xs):
        own_ids, other_ids = xs
        rows = jnp.take(other_emb, other_ids, axis=0)  # [K, L, d]: in cache
        own = jnp.take(own_emb, own_ids, axis=0)  # [K, d]: one row per segment
        # A batched matvec (dot_general): ~1.3x faster on XLA:CPU than multiply + reduce.
        return jnp.einsum("kld,kd->kl", rows, own, precision=_HIGHEST)

    return lax.map(body, (owner, other))


def _segment_grad(other_emb, g_ext, owner, other, src, num_owners: int):
    """`[num_owners, d]`: Σ_k g[k]·other_emb[other side of k] over the ratings k of each owner."""

    def body(xs):
        other_ids, src_ids = xs
        rows = jnp.take(other_emb, other_ids, axis=0)  # [K, L, d]
        w = jnp.take(g_ext, src_ids, axis=0)  # [K, L]; padding slots read the appended 0
        # As a batched matvec this is ~1.4x faster than multiply + reduce over the middle axis,
        # which XLA:CPU vectorises poorly.
        return jnp.einsum("kl,kld->kd", w, rows, precision=_HIGHEST)

    per_segment = lax.map(body, (other, src))
    per_segment = per_segment.reshape((-1, other_emb.shape[1]))
    # Only S ≈ n/L + N/2 rows reach the scatter, and in owner order.
    return jax.ops.segment_sum(
        per_segment, owner.reshape(-1), num_segments=num_owners, indices_are_sorted=True
    )


@jax.custom_vjp
def _pair_dot_layout(user_emb, item_emb, layout):
    dots = _segment_dots(user_emb, item_emb, layout["user_owner"], layout["user_other"])
    return jnp.take(dots.reshape(-1), layout["slot"], axis=0)


def _fwd(user_emb, item_emb, layout):
    return _pair_dot_layout(user_emb, item_emb, layout), (user_emb, item_emb, layout)


def _bwd(res, g):
    user_emb, item_emb, layout = res
    g_ext = jnp.concatenate([g, jnp.zeros((1,), g.dtype)])
    d_user = _segment_grad(
        item_emb,
        g_ext,
        layout["user_owner"],
        layout["user_other"],
        layout["user_src"],
        user_emb.shape[0],
    )
    d_item = _segment_grad(
        user_emb,
        g_ext,
        layout["item_owner"],
        layout["item_other"],
        layout["item_src"],
        item_emb.shape[0],
    )
    # Integer inputs get float0 cotangents.
    zero = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, dtype=jax.dtypes.float0), layout)
    return d_user, d_item, zero


_pair_dot_layout.defvjp(_fwd, _bwd)


def pair_dot_layout(user_emb, item_emb, layout: dict[str, Any]):
    """`out[k] = ⟨user_emb[users[k]], item_emb[items[k]]⟩` through `make_pair_layout`'s layout.

    Differentiable in both tables (a custom VJP: sorted segment sums, no `n`-row scatter);
    usable inside `jit`, `lax.fori_loop` and `lax.scan`.

    Args:
        user_emb: float32 `[N, d]`.
        item_emb: float32 `[M, d]`.
        layout: `make_pair_layout(users, items, N, M)` for the pairs wanted (host or device).

    Returns:
        float32 `[n]`, in the order of the `users` / `items` the layout was made from.
    """
    missing = [k for k in LAYOUT_KEYS if k not in layout]
    if missing:
        raise ArgumentValueError(
            f"not a pair layout: keys {missing} missing (see make_pair_layout)"
        )
    return _pair_dot_layout(user_emb, item_emb, {k: layout[k] for k in LAYOUT_KEYS})
