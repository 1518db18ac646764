"""The dense bucket layout of an ALS half-sweep (`cfcore.data.row_blocks`): every observation once,
in its row's slots, every row once at its `position`, padding bounded."""

from __future__ import annotations

import numpy as np
import pytest

from cfcore.data import row_blocks as rb


@pytest.fixture(autouse=True)
def _segments(monkeypatch):
    # `row_blocks` lays out small tables in buckets by default: these tests ask for segments
    # (the bucket layout is `bucket_blocks`, or `lengths=`/`shapes=`).
    monkeypatch.setattr(rb, "SEGMENTS", True)


def test_default_layout_turns_to_segments_beyond_a_few_buckets(monkeypatch):
    monkeypatch.setattr(rb, "SEGMENTS", None)
    monkeypatch.setattr(rb, "MAX_BUCKETS", 1)  # (the real bound needs millions of ratings)

    def layout(counts):
        rows = np.repeat(np.arange(len(counts)), counts)
        ones = np.ones(len(rows), np.float32)
        return rb.row_blocks(rows, np.arange(len(rows)) % 50, ones, ones, np.ones(len(counts)),
                             dim=4, solver="cg")  # fmt: skip

    one = np.full(1000, 40)
    two = np.concatenate([one, np.full(100, 400)])
    assert len(np.unique(rb.bucket_lengths(one))) == 1
    assert len(np.unique(rb.bucket_lengths(two))) == 2
    assert all("seg_row" not in b for b in layout(one)["buckets"])
    assert all("seg_row" in b for b in layout(two)["buckets"])


def _problem(seed: int = 0, num_rows: int = 60, num_cols: int = 25, n: int = 700):
    rng = np.random.default_rng(seed)
    # Skewed counts, and a few rows without any observation.
    rows = np.minimum(rng.zipf(1.6, n) - 1, num_rows - 4)
    cols = rng.integers(0, num_cols, n)
    values = rng.normal(size=n).astype(np.float32)
    weights = rng.uniform(0.5, 2.0, n).astype(np.float32)
    reg = rng.uniform(0.1, 1.0, num_rows)
    return rows, cols, values, weights, reg


def _unpack(layout):
    """`{row: sorted [(col, value, weight)]}` and `{row: row_reg}` read back from the layout,
    each row at its `position` in the concatenation of the buckets' blocks, its observations in
    its own block row (buckets) or in the segments `seg_row` gives it (segments)."""
    ids = np.concatenate([b["ids"].reshape(-1) for b in layout["buckets"]])
    regs = np.concatenate([b["row_reg"].reshape(-1) for b in layout["buckets"]])
    obs = {r: [] for r in range(len(layout["position"]))}
    for b in layout["buckets"]:
        k, s, length = b["cols"].shape
        seg_row = b.get("seg_row", np.broadcast_to(np.arange(s), (k, s)))
        assert seg_row.shape == (k, s) and seg_row.max() < b["ids"].shape[1]
        owner = np.take_along_axis(b["ids"], seg_row, axis=1).reshape(-1)
        keep = b["weights"].reshape(k * s, length) > 0
        for seg in np.flatnonzero(keep.any(axis=1)):
            here = keep[seg]
            obs[int(owner[seg])] += zip(
                b["cols"].reshape(k * s, length)[seg][here],
                b["values"].reshape(k * s, length)[seg][here],
                b["weights"].reshape(k * s, length)[seg][here],
                strict=True,
            )
    reg = {}
    for r, at in enumerate(layout["position"]):
        assert ids[at] == r, "position must point at the row's own block row"
        reg[r] = regs[at]
    return {r: sorted(o) for r, o in obs.items()}, reg


@pytest.mark.parametrize("build", ["row_blocks", "bucket_blocks"])
@pytest.mark.parametrize("solver", ["cholesky", "cg"])
@pytest.mark.parametrize("block_floats", [1 << 18, 300])
def test_every_observation_once_in_its_row(monkeypatch, solver, block_floats, build):
    monkeypatch.setattr(rb, "BLOCK_FLOATS", block_floats)
    monkeypatch.setattr(rb, "WHOLE_FLOATS", 0 if block_floats < 1000 else rb.WHOLE_FLOATS)
    monkeypatch.setattr(rb, "SEGMENT_LENGTHS", (1, 2, 8, 32))  # every class on this table
    rows, cols, values, weights, reg = _problem()
    layout = getattr(rb, build)(rows, cols, values, weights, reg, dim=4, solver=solver)
    if build == "row_blocks":
        assert len(layout["buckets"]) == 4
    got, got_reg = _unpack(layout)
    for r in range(len(reg)):
        sel = rows == r
        want = sorted(zip(cols[sel], values[sel], weights[sel], strict=True))
        assert got[r] == want, f"row {r}"
        assert got_reg[r] == pytest.approx(reg[r], rel=1e-6)
    for b in layout["buckets"]:
        if solver == "cholesky":
            np.testing.assert_array_equal(b["cols_t"], b["cols"].transpose(0, 2, 1))
        else:
            assert "cols_t" not in b
    # Single-block buckets come first (a half-sweep solves them together).
    many = [b["ids"].shape[0] > 1 for b in layout["buckets"]]
    assert many == sorted(many)
    if block_floats < 1000:
        assert any(many), "small blocks must cut some bucket into several"


def test_padding_is_less_than_a_quarter_of_the_observations(monkeypatch):
    monkeypatch.setattr(rb, "MIN_BUCKET_OBS", 1)  # no merging: the ladder's lengths only
    monkeypatch.setattr(rb, "LADDER_MIN_OBS", 0)  # the ladder of a large table
    rows, cols, values, weights, reg = _problem(seed=1)
    counts = np.bincount(rows, minlength=len(reg))
    layout = rb.bucket_blocks(rows, cols, values, weights, reg, dim=4, solver="cg")
    steps = rb.ladder(int(counts.max()))
    for b in layout["buckets"]:
        length = b["cols"].shape[-1]
        real = counts[b["ids"].reshape(-1)][b["row_reg"].reshape(-1) != 1.0]
        assert length in steps, "slots are a length of the ladder"
        assert np.all(real <= length)
        # Less than 1/S of a row's observations padded, S = LADDER_STEPS (2: a half).
        s = rb.LADDER_STEPS
        assert np.all((real == 0) | (s * (length - real) < real) | (length == 1))


def test_ladder(monkeypatch):
    assert rb.LADDER_STEPS == 2
    assert rb.ladder(100).tolist() == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128]
    monkeypatch.setattr(rb, "LADDER_STEPS", 4)
    assert rb.ladder(100).tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32,
                                       40, 48, 56, 64, 80, 96, 112]  # fmt: skip
    assert rb.ladder(1).tolist() == [1]
    assert rb.ladder(9).tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 10]
    # Every step at most 5/4 of the one before it past the first four.
    steps = rb.ladder(10**6)
    assert steps[-1] >= 10**6 and np.all(4 * steps[4:] <= 5 * steps[3:-1])
    monkeypatch.setattr(rb, "LADDER_STEPS", 1)  # powers of two
    assert rb.ladder(100).tolist() == [1, 2, 4, 8, 16, 32, 64, 128]


def test_small_tables_use_powers_of_two(monkeypatch):
    # Under LADDER_MIN_OBS observations the buckets are powers of two (less to compile); from
    # it on, the half-octave ladder (less padding).
    monkeypatch.setattr(rb, "MIN_BUCKET_OBS", 1)
    counts = np.array([3, 5, 6, 12, 20])
    monkeypatch.setattr(rb, "LADDER_MIN_OBS", int(counts.sum()) + 1)
    np.testing.assert_array_equal(rb.bucket_lengths(counts), [4, 8, 8, 16, 32])
    monkeypatch.setattr(rb, "LADDER_MIN_OBS", int(counts.sum()))
    np.testing.assert_array_equal(rb.bucket_lengths(counts), [3, 6, 6, 12, 24])


def test_small_buckets_merge_upwards(monkeypatch):
    monkeypatch.setattr(rb, "MIN_BUCKET_OBS", 8)
    monkeypatch.setattr(rb, "LADDER_MIN_OBS", 0)  # the half-octave ladder
    counts = np.array([1, 2, 3, 5, 40, 41, 300, 0])
    # Buckets 1 (2 rows of 1 slot) and 2 (then 3 rows of 2 slots) are under 8 padded slots:
    # they join bucket 3; bucket 6 (one row of 5) joins bucket 48; the longest bucket stays
    # whatever its size; a row without observations has 1 slot, merged too.
    np.testing.assert_array_equal(rb.bucket_lengths(counts), [3, 3, 3, 48, 48, 48, 384, 3])


def test_bad_solver_and_empty_table():
    with pytest.raises(ValueError, match="solver"):
        rb.row_blocks([0], [0], [1.0], [1.0], [1.0], dim=2, solver="lu")
    with pytest.raises(ValueError, match="at least one row"):
        rb.row_blocks([], [], [], [], [], dim=2, solver="cg")


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_given_lengths_and_shapes(solver):
    """A sharded placement's form: the slot counts and every bucket's `K x B` given, an empty
    bucket still built; every observation still once in its row, the blocks as asked."""
    rows, cols, values, weights, reg = _problem(seed=2)
    counts = np.bincount(rows, minlength=len(reg))
    lengths = 2 * rb.bucket_lengths(counts)  # longer than needed: still every observation
    shapes = {int(n): (2, int((lengths == n).sum())) for n in np.unique(lengths)}
    shapes[4096] = (1, 3)  # a bucket no row falls in
    layout = rb.row_blocks(
        rows, cols, values, weights, reg, dim=4, solver=solver, lengths=lengths, shapes=shapes
    )
    got, got_reg = _unpack(layout)
    for r in range(len(reg)):
        sel = rows == r
        assert got[r] == sorted(zip(cols[sel], values[sel], weights[sel], strict=True)), r
        assert got_reg[r] == pytest.approx(reg[r], rel=1e-6)
    built = sorted((b["cols"].shape[-1], b["ids"].shape) for b in layout["buckets"])
    assert built == sorted((n, shape) for n, shape in shapes.items())
    empty = [b for b in layout["buckets"] if b["cols"].shape[-1] == 4096][0]
    assert np.all(empty["weights"] == 0) and np.all(empty["row_reg"] == 1)
    # A device without rows: only padding, in the same buckets.
    none = rb.row_blocks(
        [], [], [], [], [], dim=4, solver=solver, lengths=np.zeros(0, np.int64), shapes=shapes
    )
    assert len(none["position"]) == 0
    assert sorted((b["cols"].shape[-1], b["ids"].shape) for b in none["buckets"]) == built


def test_bad_lengths_and_shapes():
    rows, cols, values, weights, reg = _problem(seed=3)
    counts = np.bincount(rows, minlength=len(reg))
    lengths = rb.bucket_lengths(counts)
    shapes = {int(n): (1, int((lengths == n).sum())) for n in np.unique(lengths)}
    args = (rows, cols, values, weights, reg)
    with pytest.raises(ValueError, match="lengths must be"):
        rb.row_blocks(*args, dim=4, solver="cg", lengths=np.ones_like(lengths), shapes=shapes)
    with pytest.raises(ValueError, match="a bucket for every length"):
        rb.row_blocks(*args, dim=4, solver="cg", lengths=lengths, shapes={1: (1, len(reg))})
    small = {n: (1, b - 1) for n, (_, b) in shapes.items()}
    with pytest.raises(ValueError, match="expected at least"):
        rb.row_blocks(*args, dim=4, solver="cg", lengths=lengths, shapes=small)


def test_canonical_count(monkeypatch):
    assert rb.SHAPE_STEPS == 4 and rb.MIN_ROW_STEP == 16
    # Step 1: the ladder of SHAPE_STEPS steps an octave, every count to its first step >= it.
    steps = rb.ladder(5000, rb.SHAPE_STEPS)
    for n in range(1, 4097):
        assert rb.canonical_count(n) == steps[np.searchsorted(steps, n)], n
    assert [rb.canonical_count(n) for n in (1, 4, 5, 9, 17, 537, 553)] == [
        1,
        4,
        5,
        10,
        20,
        640,
        640,
    ]
    # A larger step: multiples of it below 4 steps, the ladder above.
    assert [rb.canonical_count(n, 16) for n in (1, 16, 17, 24, 28, 45, 64, 65, 342, 362)] == [
        16, 16, 32, 32, 32, 48, 64, 80, 384, 384,
    ]  # fmt: skip
    assert rb.canonical_count(0) == 0
    monkeypatch.setattr(rb, "SHAPE_STEPS", 2)
    assert [rb.canonical_count(n) for n in (5, 7, 9, 13)] == [6, 8, 12, 16]


def _counts_problem(counts: list[tuple[int, int]], seed: int):
    """Rows with the given observation counts (`[(rows, count each), ...]`), random columns."""
    per_row = np.concatenate([np.full(r, c) for r, c in counts])
    rows = np.repeat(np.arange(len(per_row)), per_row)
    rng = np.random.default_rng(seed)
    cols = rng.integers(0, 50, len(rows))
    ones = np.ones(len(rows), np.float32)
    return rows, cols, rng.normal(size=len(rows)), ones, np.full(len(per_row), 0.5)


def _shapes(problem, build=rb.bucket_blocks, **kwargs) -> list[tuple[int, ...]]:
    layout = build(*problem, dim=4, solver="cg", **kwargs)
    return sorted(b["cols"].shape for b in layout["buckets"])


@pytest.mark.parametrize("whole", [True, False])
def test_similar_problems_share_bucket_shapes(monkeypatch, whole):
    """Two folds of a data set (buckets of a few more or fewer rows) get the same buckets
    (`bucket_blocks`, the layout of a sharded placement: `K` blocks of `B` rows of `L` slots): one compiled sweep serves both. The padding rows stay
    under a quarter of a bucket's blocks (or `MIN_ROW_STEP` rows of a bucket of one block)."""
    monkeypatch.setattr(rb, "MIN_BUCKET_OBS", 1)
    if not whole:  # blocks of 64 rows of 8 slots, 8 rows of 64 slots (CG: 4·L·d floats a row)
        monkeypatch.setattr(rb, "WHOLE_FLOATS", 0)
        monkeypatch.setattr(rb, "BLOCK_FLOATS", 8192)
    first = _counts_problem([(100, 5), (210, 40)], seed=0)
    second = _counts_problem([(97, 5), (200, 41)], seed=1)
    shapes = [_shapes(first), _shapes(second)]
    assert shapes[0] == shapes[1]
    # Lengths 8 and 64 (powers of two: a small table); rows 100 / 97 -> 112, 210 / 200 -> 224
    # in one block each, or blocks of 64 and 8 rows, 2 and 27 / 25 -> 28 of them.
    assert shapes[0] == ([(1, 112, 8), (1, 224, 64)] if whole else [(2, 64, 8), (28, 8, 64)])
    for problem in (first, second):
        layout = rb.bucket_blocks(*problem, dim=4, solver="cg")
        for b in layout["buckets"]:
            k, size, _ = b["cols"].shape
            real = int((b["row_reg"] == 0.5).sum())
            if k == 1:
                assert 4 * (size - real) < size or size - real < rb.MIN_ROW_STEP
            else:
                assert 4 * (k - -(-real // size)) < k  # padding blocks: under a quarter
    # Without the canonical shapes they differ.
    monkeypatch.setattr(rb, "SHAPE_STEPS", 1 << 30)
    monkeypatch.setattr(rb, "MIN_ROW_STEP", 1)
    assert _shapes(first) != _shapes(second)


# ---------------------------------------------------------------------------- segments


def _segment_rows(layout):
    """`[(row, class length, segments)]` of every real row of a segment layout."""
    out = []
    for b in layout["buckets"]:
        k, s, length = b["cols"].shape
        for j in range(k):
            real = b["row_reg"][j] != 1.0
            per = np.bincount(b["seg_row"][j], minlength=b["ids"].shape[1])
            # Padding segments point at local row 0: count only segments with a weight.
            used = np.bincount(
                b["seg_row"][j], weights=(b["weights"][j] > 0).any(axis=1), minlength=len(per)
            )
            for i in np.flatnonzero(real):
                out.append((int(b["ids"][j, i]), length, int(used[i])))
    return out


@pytest.mark.parametrize("block_floats", [1 << 18, 2000])
def test_segments_pad_less_than_a_segment(monkeypatch, block_floats):
    """A row's observations fill its segments but the last: its padding is under one segment,
    and under 1/MIN_SEGMENTS of its observations above the first class."""
    monkeypatch.setattr(rb, "BLOCK_FLOATS", block_floats)
    monkeypatch.setattr(rb, "WHOLE_FLOATS", 0 if block_floats < 10_000 else rb.WHOLE_FLOATS)
    edges = [rb.MIN_SEGMENTS * n for n in rb.SEGMENT_LENGTHS]  # where a class begins
    counts = np.array([0, 1, 3, 8, 9] + [e + i for e in edges for i in (-1, 0, 1)])
    rows = np.repeat(np.arange(len(counts)), counts)
    cols = np.arange(len(rows)) % 97
    ones = np.ones(len(rows), np.float32)
    layout = rb.row_blocks(rows, cols, ones, ones, np.full(len(counts), 0.5), dim=4, solver="cg")
    got = {r: (length, segs) for r, length, segs in _segment_rows(layout)}
    assert sorted(got) == list(range(len(counts)))
    for r, (length, segs) in got.items():
        c = int(counts[r])
        assert segs == -(-c // length), f"row {r}: {c} observations in {segs} of {length}"
        if length > rb.SEGMENT_LENGTHS[0]:
            assert rb.MIN_SEGMENTS * (segs * length - c) < c
    lengths = sorted({b["cols"].shape[-1] for b in layout["buckets"]})
    assert lengths == list(rb.SEGMENT_LENGTHS)


def test_segment_shapes_do_not_grow_with_the_data(monkeypatch):
    """Tables ten times apart, with rows up to ten times longer, get one block shape per class:
    at most len(SEGMENT_LENGTHS) of them, where the per-length buckets need more and more."""
    monkeypatch.setattr(rb, "MIN_BUCKET_OBS", 1)  # (merged buckets: fewer, but still growing)
    rng = np.random.default_rng(0)
    for n in (20_000, 200_000):
        rows = np.minimum(rng.zipf(1.3, n) - 1, 4999)
        cols = rng.integers(0, 1000, n)
        ones = np.ones(n, np.float32)
        reg = np.full(5000, 0.5)
        seg = rb.row_blocks(rows, cols, ones, ones, reg, dim=64, solver="cg")
        shapes = {b["cols"].shape[1:] for b in seg["buckets"]}
        assert len(seg["buckets"]) == len(shapes) <= len(rb.SEGMENT_LENGTHS)
        buckets = rb.bucket_blocks(rows, cols, ones, ones, reg, dim=64, solver="cg")
        assert len(buckets["buckets"]) > len(rb.SEGMENT_LENGTHS)


@pytest.mark.parametrize("whole", [True, False])
def test_similar_problems_share_segment_shapes(monkeypatch, whole):
    """Two folds of a data set get the same segment blocks: one compiled sweep serves both."""
    if not whole:
        monkeypatch.setattr(rb, "WHOLE_FLOATS", 0)
        monkeypatch.setattr(rb, "BLOCK_FLOATS", 8192)
    first = _counts_problem([(100, 5), (210, 40), (30, 300)], seed=0)
    second = _counts_problem([(97, 5), (200, 39), (29, 310)], seed=1)
    shapes = [_shapes(first, rb.row_blocks), _shapes(second, rb.row_blocks)]
    assert shapes[0] == shapes[1]
    assert len(shapes[0]) == 2  # rows of 5 and 40 in segments of 4, of 300 in segments of 32


@pytest.mark.parametrize("part_floats, part_obs", [(1 << 20, 1 << 21), (4 * 5, 30), (1, 1)])
def test_row_csr_is_the_observations_by_row_in_their_order(part_floats, part_obs, monkeypatch):
    import cfcore
    from cfcore.data.row_blocks import row_csr

    monkeypatch.setattr(rb, "CSR_PART_FLOATS", part_floats)
    monkeypatch.setattr(rb, "CSR_PART_OBS", part_obs)
    rng = np.random.default_rng(4)
    n, num_rows, d = 500, 40, 4
    rows = rng.integers(3, num_rows, n)  # rows 0-2 without observations; unsorted
    rows[:40] = 10  # one row of more observations than a part may hold: a part of its own
    cols = rng.integers(0, 25, n)
    values = rng.normal(size=n)
    weights = rng.uniform(0.5, 2.0, n)
    reg = rng.uniform(0.1, 1.0, num_rows)
    parts = row_csr(rows, cols, values, weights, reg, dim=d)["csr"]
    # The parts, joined, are the observations sorted by row (stably), every row once in order.
    ids = np.concatenate([p["ids"] for p in parts])
    np.testing.assert_array_equal(ids, np.arange(num_rows))
    order = np.argsort(rows, kind="stable")
    # Each part's cols index its own fixed rows (distinct, ascending): together, the fixed rows.
    for p in parts:
        assert np.all(np.diff(p["fixed"]) > 0)
        assert np.array_equal(np.unique(p["cols"]), np.arange(len(p["fixed"])))
    joined = {k: np.concatenate([p[k] for p in parts]) for k in ("values", "weights")}
    joined["cols"] = np.concatenate([p["fixed"][p["cols"]] for p in parts])
    np.testing.assert_array_equal(joined["cols"], cols[order])
    np.testing.assert_array_equal(joined["values"], values[order].astype(np.float32))
    np.testing.assert_array_equal(joined["weights"], weights[order].astype(np.float32))
    counts = np.bincount(rows, minlength=num_rows)
    for p in parts:
        np.testing.assert_array_equal(np.diff(p["starts"]), counts[p["ids"]])
        assert p["starts"][0] == 0
        np.testing.assert_array_equal(
            p["rows"], np.repeat(np.arange(len(p["ids"])), counts[p["ids"]])
        )
        np.testing.assert_array_equal(p["row_reg"], reg[p["ids"]].astype(np.float32))
        # Within the bounds, or a single row.
        assert len(p["ids"]) == 1 or (
            len(p["ids"]) * d <= max(part_floats, d) and len(p["cols"]) <= part_obs
        )
        assert {a.dtype for a in p.values()} == {np.dtype(np.int32), np.dtype(np.float32)}
    if part_floats == 1:
        assert len(parts) == num_rows
    with pytest.raises(cfcore.CfcoreError, match="at least one row"):
        row_csr(rows[:0], cols[:0], values[:0], weights[:0], reg[:0], dim=d)
