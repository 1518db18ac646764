"""The host layouts of an ALS half-sweep (`cfcore.data.row_blocks`) are the very arrays the
earlier, slower builder made: the same buckets, keys, dtypes, shapes and bytes, and the same
`position`, on random, skewed, presorted and wide inputs.

The reference below is that builder (`_pack` and `segment_blocks` as they were before the radix
sort, the skipped sort of presorted rows, the constant-array shortcut, the gathered pairs and
the vectorised packing), kept verbatim except for its docstrings, and the sort and gathers of
`bucket_blocks` (the rest of which did not change): a change of the fast builder that moves one
observation, pads one slot more or reorders one row fails here.
"""

from __future__ import annotations

import numpy as np
import pytest

from cfcore.data import row_blocks as rb
from cfcore.errors import ArgumentValueError

# ---------------------------------------------------------------------------- the reference


def old_by_row(rows, cols, values, weights, num_rows, counts=None, scalars=False):
    """The sort and gathers of the earlier `bucket_blocks` (the rest of it is unchanged):
    NumPy's stable argsort of the int64 rows, then a gather of each array."""
    rows = np.asarray(rows, np.int64)
    order = np.argsort(rows, kind="stable")
    counts = np.bincount(rows, minlength=num_rows)
    starts = np.concatenate([[0], np.cumsum(counts)])
    sorted_cols = np.asarray(cols)[order]
    sorted_values = np.asarray(values, np.float32)[order]
    sorted_weights = np.asarray(weights, np.float32)[order]
    return counts, starts, sorted_cols, sorted_values, sorted_weights


def old_pack(segments: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(segments)
    ends = np.cumsum(segments)  # heads: rows lo.. take ends[j] − ends[lo − 1]
    tails = np.cumsum(segments[::-1])  # tails: rows hi, hi − 1, ... from the end
    block = np.zeros(n, np.int64)
    order: list[np.ndarray] = []
    lo, hi, k = 0, n, 0  # rows lo..hi − 1 are left
    while lo < hi:
        base = ends[lo - 1] if lo else 0
        stop = min(int(np.searchsorted(ends, base + capacity, side="right")), hi)
        room = capacity - int(ends[stop - 1] - base)
        taken = n - hi  # rows already taken from the end
        used = tails[taken - 1] if taken else 0
        fill = int(np.searchsorted(tails, used + room, side="right")) - taken
        fill = max(0, min(fill, hi - stop))
        block[lo:stop] = k
        block[hi - fill : hi] = k
        order += [np.arange(lo, stop), np.arange(hi - fill, hi)]
        lo, hi, k = stop, hi - fill, k + 1
    return block, np.concatenate(order)


def old_segment_blocks(
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    weights: np.ndarray,
    row_reg: np.ndarray,
    *,
    dim: int,
    solver: str,
) -> dict[str, object]:
    rows = np.asarray(rows, np.int64)
    num_rows = len(row_reg)
    if num_rows < 1:
        raise ArgumentValueError("row_blocks needs at least one row")
    if solver not in ("cholesky", "cg"):
        raise ArgumentValueError(f"solver must be 'cholesky' or 'cg', got {solver!r}")
    order = np.argsort(rows, kind="stable")  # by row, a row's observations in given order
    counts = np.bincount(rows, minlength=num_rows)
    starts = np.concatenate([[0], np.cumsum(counts)])
    sorted_cols = np.asarray(cols)[order]
    sorted_values = np.asarray(values, np.float32)[order]
    sorted_weights = np.asarray(weights, np.float32)[order]
    row_reg = np.asarray(row_reg, np.float32)
    seg_len = np.asarray(rb.SEGMENT_LENGTHS, np.int64)
    cls = rb.segment_classes(counts)
    nsegs = -(-np.maximum(counts, 1) // seg_len[cls])  # a row without observations: one
    classes = [int(c) for c in np.unique(cls)]
    floats = sum(
        int(nsegs[cls == c].sum()) * rb.segment_floats(int(seg_len[c]), dim, solver)
        for c in classes
    )
    whole = floats <= rb.WHOLE_FLOATS
    # Each row's slot index of its first observation in the concatenation of every class's
    # flat `[K·S·L]` slots, and its index in the concatenation of the `[K·Rb]` solutions.
    base = np.zeros(num_rows, np.int64)
    position = np.zeros(num_rows, np.int64)
    buckets: list[dict[str, np.ndarray]] = []
    slot_offset = row_offset = 0
    layouts = []
    for c in classes:
        length = int(seg_len[c])
        members = np.flatnonzero(cls == c)
        # Longest rows first: a block then wastes less than the next row's segments.
        members = members[np.argsort(-nsegs[members], kind="stable")]
        m = nsegs[members]
        if whole:
            # (Rounded in steps of about 8·rb.MIN_ROW_STEP slots: similar data sets share shapes.)
            capacity = rb.canonical_count(int(m.sum()), max(1, 8 * rb.MIN_ROW_STEP // length))
        else:
            per = max(1, rb.BLOCK_FLOATS // max(rb.segment_floats(length, dim, solver), 1))
            capacity = rb.canonical_count(max(per, int(m.max())))
        block_of, packed = old_pack(m, capacity)
        members, m, block_of = members[packed], m[packed], block_of[packed]
        firsts = np.flatnonzero(np.diff(np.concatenate([[-1], block_of])))
        local = np.arange(len(members)) - firsts[block_of]  # the row's index in its block
        seg_start = np.concatenate([[0], np.cumsum(m)])[:-1]
        seg_in_block = seg_start - seg_start[firsts][block_of]
        k = rb.canonical_count(len(firsts), steps=rb.SEGMENT_SHAPE_STEPS)
        width = rb.canonical_count(int(local.max()) + 1, 1 if not whole else rb.MIN_ROW_STEP)
        base[members] = slot_offset + (block_of * capacity + seg_in_block) * length
        position[members] = row_offset + block_of * width + local
        layouts.append((c, members, m, block_of, local, seg_in_block, k, capacity, width))
        slot_offset += k * capacity * length
        row_offset += k * width
    # Every observation's flat slot: its row's first slot plus its index within the row.
    index = np.arange(len(order)) - np.repeat(starts[:-1], counts)
    slot = np.repeat(base, counts) + index
    flat_cols = np.zeros(slot_offset, np.int32)
    flat_values = np.zeros(slot_offset, np.float32)
    flat_weights = np.zeros(slot_offset, np.float32)
    flat_cols[slot] = sorted_cols
    flat_values[slot] = sorted_values
    flat_weights[slot] = sorted_weights
    slot_offset = 0
    for c, members, m, block_of, local, seg_in_block, k, capacity, width in layouts:
        length = int(seg_len[c])
        size = k * capacity * length
        part = slice(slot_offset, slot_offset + size)
        slot_offset += size
        # The local row of each segment (padding segments: row 0, at weight 0).
        seg_row = np.zeros((k, capacity), np.int32)
        seg_flat = np.repeat(block_of * capacity + seg_in_block, m) + (
            np.arange(int(m.sum())) - np.repeat(np.cumsum(m) - m, m)
        )
        seg_row.reshape(-1)[seg_flat] = np.repeat(local, m)
        ids = np.zeros((k, width), np.int32)
        reg = np.ones((k, width), np.float32)
        ids.reshape(-1)[block_of * width + local] = members
        reg.reshape(-1)[block_of * width + local] = row_reg[members]
        bucket = {
            "cols": flat_cols[part].reshape(k, capacity, length),
            "values": flat_values[part].reshape(k, capacity, length),
            "weights": flat_weights[part].reshape(k, capacity, length),
            "seg_row": seg_row,
            "ids": ids,
            "row_reg": reg,
        }
        if solver == "cholesky":
            bucket["cols_t"] = np.ascontiguousarray(bucket["cols"].transpose(0, 2, 1))
        buckets.append(bucket)
    # Classes of one block first: a Cholesky half-sweep solves them together.
    first = sorted(range(len(buckets)), key=lambda j: buckets[j]["ids"].shape[0] > 1)
    sizes = [b["ids"].size for b in buckets]
    old = np.concatenate([[0], np.cumsum(sizes)])
    new = np.concatenate([[0], np.cumsum([sizes[j] for j in first])])
    shift = np.zeros(len(buckets), np.int64)
    for new_j, j in enumerate(first):
        shift[j] = new[new_j] - old[j]
    which = np.searchsorted(old, position, side="right") - 1
    position = position + shift[which]
    return {"buckets": [buckets[j] for j in first], "position": position.astype(np.int32)}


# ---------------------------------------------------------------------------- the tests


def _problem(seed: int, kind: str):
    """Rows, cols, values, weights and ρ of one kind of input (see the parametrisation)."""
    rng = np.random.default_rng(seed)
    num_rows, num_cols, n = 300, 80, 6000
    if kind == "wide":  # past 2^16 rows: the radix sort's second pass
        num_rows = (1 << 16) + 500
    rows = rng.integers(0, num_rows, n)
    if kind in ("skewed", "presorted", "constant", "wide"):
        # Zipf counts: a few long rows (several classes, multi-segment rows), many short ones,
        # some rows without any observation.
        rows = np.minimum(rng.zipf(1.3, n) - 1, num_rows - 3)
        if kind == "wide":
            rows = np.where(rng.random(n) < 0.5, rows, rng.integers(0, num_rows, n))
    if kind == "presorted" or (kind == "constant" and seed % 2):  # no sort at all
        rows = np.sort(rows)
    cols = rng.integers(0, num_cols, n)
    values = rng.normal(size=n)  # float64: cast to float32 by the builder
    weights = rng.uniform(0.5, 2.0, n).astype(np.float32)
    if kind == "constant":
        # Values one number throughout (the builder skips their gather); weights zeros but
        # one -0.0, equal as numbers yet not in bits: they must be gathered.
        values = np.ones(n, np.float32)
        weights = np.zeros(n, np.float32)
        weights[n // 2] = -0.0
    reg = rng.uniform(0.1, 1.0, num_rows)
    dtype = np.int32 if seed % 2 else np.int64
    return rows.astype(dtype), cols.astype(dtype), values, weights, reg


def _assert_same(new, old):
    assert len(new["buckets"]) == len(old["buckets"])
    for a, b in zip(new["buckets"], old["buckets"], strict=True):
        assert sorted(a) == sorted(b)
        for key in a:
            assert a[key].dtype == b[key].dtype, key
            assert a[key].shape == b[key].shape, key
            assert a[key].tobytes() == b[key].tobytes(), key
    assert new["position"].dtype == old["position"].dtype
    np.testing.assert_array_equal(new["position"], old["position"])


KINDS = ["random", "skewed", "presorted", "constant", "wide"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("solver", ["cg", "cholesky"])
@pytest.mark.parametrize("block_floats", [None, 4096])
@pytest.mark.parametrize("seed", [0, 1])
def test_segments_are_the_old_builders(monkeypatch, kind, solver, block_floats, seed):
    if block_floats is not None:  # small blocks: many blocks a class, the packing loop runs
        monkeypatch.setattr(rb, "BLOCK_FLOATS", block_floats)
        monkeypatch.setattr(rb, "WHOLE_FLOATS", 1)
    rows, cols, values, weights, reg = _problem(seed, kind)
    size = {"dim": 8, "solver": solver}
    new = rb.segment_blocks(rows, cols, values, weights, reg, **size)
    _assert_same(new, old_segment_blocks(rows, cols, values, weights, reg, **size))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("solver", ["cg", "cholesky"])
@pytest.mark.parametrize("seed", [0, 1])
def test_buckets_are_the_old_builders(monkeypatch, kind, solver, seed):
    rows, cols, values, weights, reg = _problem(seed, kind)
    size = {"dim": 8, "solver": solver}
    new = rb.bucket_blocks(rows, cols, values, weights, reg, **size)
    monkeypatch.setattr(rb, "_by_row", old_by_row)
    _assert_same(new, rb.bucket_blocks(rows, cols, values, weights, reg, **size))


def test_row_blocks_dispatch_keeps_the_layout(monkeypatch):
    # `row_blocks` hands its counts to `segment_blocks`: the same layout as without them.
    monkeypatch.setattr(rb, "SEGMENTS", None)
    monkeypatch.setattr(rb, "MAX_BUCKETS", 1)
    rows, cols, values, weights, reg = _problem(3, "skewed")
    size = {"dim": 8, "solver": "cg"}
    new = rb.row_blocks(rows, cols, values, weights, reg, **size)
    assert "seg_row" in new["buckets"][0]
    _assert_same(new, old_segment_blocks(rows, cols, values, weights, reg, **size))


@pytest.mark.parametrize("num_rows", [7, 1 << 16, (1 << 16) + 1, (1 << 24) + 5])
def test_stable_row_order_is_numpys_stable_argsort(num_rows):
    rng = np.random.default_rng(num_rows)
    rows = rng.integers(0, num_rows, 5000).astype(np.int32)
    rows[:3] = num_rows - 1  # the top id: every radix digit in use
    np.testing.assert_array_equal(
        rb.stable_row_order(rows, num_rows), np.argsort(rows, kind="stable")
    )
    assert rb.stable_row_order(np.sort(rows), num_rows) is None
    assert rb.stable_row_order(rows[:1], num_rows) is None
