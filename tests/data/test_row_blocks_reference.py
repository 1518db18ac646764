"""The host layouts of an ALS half-sweep (`cfcore.data.row_blocks`) are the very arrays the
earlier, slower builder made: the same buckets, keys, dtypes, shapes and bytes, and the same
`position`, on random, skewed, presorted and wide inputs.

The reference below is what changed of that builder, kept verbatim but for docstrings: its sort
and gathers by row (NumPy's stable argsort, one gather an array: no radix sort, no skipped sort
of presorted rows, no one-value shortcut, no gathered pairs), its packing loop over every block
(`_pack`) and its flat slots (`_slots`); the rest of `segment_blocks` and `bucket_blocks` did not
change, and runs with them swapped in. A change of the fast builder that moves one observation,
pads one slot more or reorders one row fails here.
"""

from __future__ import annotations

import numpy as np
import pytest

from cfcore.data import row_blocks as rb

# ---------------------------------------------------------------------------- the reference


def old_by_row(rows, cols, values, weights, num_rows, counts=None, scalars=False):
    """The earlier sort and gathers by row: NumPy's stable argsort of the int64 rows, then a
    gather of each array (every one an array)."""
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


def old_slots(base, starts, counts):
    index = np.arange(int(starts[-1])) - np.repeat(starts[:-1], counts)
    return np.repeat(base, counts) + index


def old_builder(monkeypatch):
    """`segment_blocks` and `bucket_blocks` with the earlier sort, gathers, packing and slots
    (what changed; the rest of them did not)."""
    monkeypatch.setattr(rb, "_by_row", old_by_row)
    monkeypatch.setattr(rb, "_pack", old_pack)
    monkeypatch.setattr(rb, "_slots", old_slots)


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
    old_builder(monkeypatch)
    _assert_same(new, rb.segment_blocks(rows, cols, values, weights, reg, **size))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("solver", ["cg", "cholesky"])
@pytest.mark.parametrize("seed", [0, 1])
def test_buckets_are_the_old_builders(monkeypatch, kind, solver, seed):
    rows, cols, values, weights, reg = _problem(seed, kind)
    size = {"dim": 8, "solver": solver}
    new = rb.bucket_blocks(rows, cols, values, weights, reg, **size)
    old_builder(monkeypatch)
    _assert_same(new, rb.bucket_blocks(rows, cols, values, weights, reg, **size))


def test_row_blocks_dispatch_keeps_the_layout(monkeypatch):
    # `row_blocks` hands its counts to `segment_blocks`: the same layout as without them.
    monkeypatch.setattr(rb, "SEGMENTS", None)
    monkeypatch.setattr(rb, "MAX_BUCKETS", 1)
    rows, cols, values, weights, reg = _problem(3, "skewed")
    size = {"dim": 8, "solver": "cg"}
    new = rb.row_blocks(rows, cols, values, weights, reg, **size)
    buckets = new["buckets"]
    assert isinstance(buckets, list) and "seg_row" in buckets[0]
    old_builder(monkeypatch)
    _assert_same(new, rb.segment_blocks(rows, cols, values, weights, reg, **size))


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


@pytest.mark.parametrize("threaded", [False, True])
def test_ials_blocks_on_two_threads_are_the_same(monkeypatch, threaded):
    # The two sides built side by side (`Placement.side_blocks`, as past THREADED_SIDES_MIN)
    # or one after the other: the same arrays, each side's its own.
    import cfcore
    from cfcore.models.als import ials_blocks
    from cfcore.specs import IALSSpec
    from cfcore.train import placement

    r = cfcore.synthetic_ratings(300, 800, 6000, distinct=True, seed=1)
    spec = IALSSpec(embedding_dim=8, solver="cholesky")
    one = ials_blocks(spec, r)
    monkeypatch.setattr(placement, "THREADED_SIDES_MIN", 0 if threaded else 1 << 62)
    started = []
    real = placement.ThreadPoolExecutor
    monkeypatch.setattr(
        placement, "ThreadPoolExecutor", lambda **kw: started.append(1) or real(**kw)
    )
    two = ials_blocks(spec, r)
    assert len(started) == (threaded and placement._cores() > 1)
    for side in ("by_user", "by_item"):
        _assert_same(two[side], one[side])
