"""Observations grouped by row into dense, padded blocks: the layout of an ALS half-sweep.

`row_blocks` lays a table out in segments (`segment_blocks`): each row cut into segments of a
few fixed lengths (`SEGMENT_LENGTHS`, by the row's length), a class's rows packed whole into
blocks of one shape, so that a half-sweep compiles one block program per class (at most four a
side) whatever the data; it sums a row's segments' partial systems (a segment sum of `[S, d]`
or `[S, d²]`, small beside the block's products) before the row's solve. Per-length buckets
(below), which compiled one block program per bucket (about 20 a side at ML-20M shape: a
first iALS sweep there compiled for 30-45 s), remain the layout of a sharded placement, which
gives every device the same buckets (`lengths=`, `shapes=`).

The buckets (`bucket_blocks`): a half-sweep solves one small system per row of a table. It sorts
the rows by their number of observations and groups them into buckets of rows with about as many
observations: bucket `j` holds the rows with `L_{j-1} < count ≤ L_j` observations (`L_j` on the ladder 1, 2, 3,
4, 6, 8, 12, 16, 24, ...: `LADDER_STEPS` = 2 steps an octave, so a bucket pads a row by less than
half its observations), each row's observations as one dense row of `L_j` slots (`[B, L]`
index, weight and target arrays, padding slots with weight 0). A row's Gramian is then a batched
matrix product of its gathered `[L, d]` rows, its right-hand side and a conjugate-gradient
matrix-vector product batched products too: no scatter (segment sum) at all, which XLA's CPU
backend runs single-threaded and slowly.

Each bucket is cut into blocks of at most `block_rows` rows (padded to one shape per bucket) so that
a compiled loop over the blocks bounds the memory of a half-sweep (the `[B, L, d]` gathers, the
`[B, d, d]` systems of a Cholesky block) whatever the number of ratings. Every row, even one
without observations, is in exactly one block; `position` says where its solution lands in the
concatenation of every bucket's blocks, so the new table is one gather of that concatenation.

The shapes are canonical (`canonical_count`): a bucket's block count, and the rows of a bucket of
one block, are rounded up to `SHAPE_STEPS` steps an octave, so that similar data sets (the folds of
one catalog: MovieLens 100K's u1..u5) get the very same buckets and share one compiled sweep.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

import numpy as np

from ..errors import ArgumentValueError

BLOCK_FLOATS = 1 << 18
"""Floats of the temporaries of one block (1 MB of float32, so that a block's passes run from
the cache): `B·(2·L·d + 2·d²)` for the Cholesky solver (two gathers of the block's rows, the
`[B, d, d]` Gramians and systems), `B·4·L·d` for CG. A bucket whose single row needs more still
forms blocks of one row."""

WHOLE_FLOATS = 1 << 24
"""A half-sweep whose temporaries fit in this many floats (64 MB) solves each bucket as one
block: no compiled loop at all, which on small problems costs more to compile than the cache
misses of large blocks cost to run."""

MIN_BUCKET_OBS = 1 << 15
"""A bucket with fewer padded observations than this is merged into the next longer one: each
bucket is a separately compiled computation, and a tiny one costs more to compile than the
padding it saves costs to run."""


SHAPE_STEPS = 4
"""Block counts (and rows of a bucket of one block) an octave: a bucket's `K` is rounded up to
`{S, ..., 2S − 1}·2^j` (`S` this), padding it by less than 1/S of its blocks, so that two similar
data sets (the folds of one catalog) get the same shapes and share one compiled sweep."""

MIN_ROW_STEP = 16
"""The rows of a bucket of one block are rounded up to a multiple of this at least (then to the
`SHAPE_STEPS` ladder): counts of a few dozen rows differ between folds by more than a finer step,
and 16 padding rows cost little."""


def stable_row_order(rows: np.ndarray, num_rows: int) -> np.ndarray | None:
    """`np.argsort(rows, kind="stable")`, or None when `rows` are already nondecreasing (then
    the order is the identity: ratings read by user often are).

    By 16-bit radix passes (a stable NumPy sort of 8- and 16-bit keys is a radix sort, linear;
    of wider ones a timsort, about 4x slower on 10M random ids): the low 16 bits, then the high
    ones (8 bits below 2^24 rows).

    Args:
        rows: int `[n]`, ids in `[0, num_rows)`.
        num_rows: their bound.

    Returns:
        int `[n]` positions (intp), or None.
    """
    rows = np.asarray(rows)
    if len(rows) < 2 or not (rows[1:] < rows[:-1]).any():
        return None
    if num_rows > 1 << 32:
        return np.argsort(rows, kind="stable")
    order = np.argsort((rows & 0xFFFF).astype(np.uint16), kind="stable")
    if num_rows > 1 << 16:
        high = (rows >> 16).astype(np.uint8 if num_rows <= 1 << 24 else np.uint16)
        order = order[np.argsort(high[order], kind="stable")]
    return order


def _ids(rows: np.ndarray) -> np.ndarray:
    """`rows` as an integer array `np.bincount` takes: as given when it is one (no copy of
    10M int32 ids), else int64."""
    rows = np.asarray(rows)
    if rows.dtype.kind == "i" or (rows.dtype.kind == "u" and rows.dtype.itemsize < 8):
        return rows
    return rows.astype(np.int64)


def _one_value(a: np.ndarray) -> np.ndarray | np.float32:
    """`a` (float32), or its one value as a NumPy scalar when it holds one value throughout
    (the ones of a weight or target; compared bit for bit, so 0.0 and −0.0 differ)."""
    if len(a):
        bits = a.view(np.uint32)
        if bits[0] == bits[-1] and (bits == bits[0]).all():
            return a[0]
    return a


def _gather(order: np.ndarray, *arrays: Any) -> list[Any]:
    """`a[order]` of each array (a NumPy scalar passes as it is). The first two arrays of 4-byte
    elements are gathered as one array of 8-byte pairs: one random read for both, where the
    reads (not the bytes) cost (10M ids: 0.12 s against 0.23 s)."""
    out = list(arrays)
    pair = [j for j, a in enumerate(arrays) if isinstance(a, np.ndarray) and a.dtype.itemsize == 4]
    pair = pair[:2] if len(pair) >= 2 else []
    if pair:
        a, b = arrays[pair[0]], arrays[pair[1]]
        both = np.empty((len(a), 2), np.uint32)
        both[:, 0], both[:, 1] = a.view(np.uint32), b.view(np.uint32)
        got = both.view(np.uint64).reshape(-1)[order].view(np.uint32).reshape(-1, 2)
        out[pair[0]], out[pair[1]] = got[:, 0].view(a.dtype), got[:, 1].view(b.dtype)
    for j, a in enumerate(arrays):
        if j not in pair and isinstance(a, np.ndarray):
            out[j] = a[order]
    return out


def _by_row(
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    weights: np.ndarray,
    num_rows: int,
    counts: np.ndarray | None = None,
    scalars: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any, Any]:
    """The observations by row, a row's in their given order (one stable sort, skipped when
    the rows are already in order; a weight or target of one value is not gathered).

    Returns:
        `(counts, starts, cols, values, weights)`: int64 `[R]` observations a row, int64
        `[R + 1]` each row's first index in the sorted arrays, then the sorted int `[n]` cols
        and float32 `[n]` values and weights (with `scalars`, a float32 scalar for one that
        holds one value throughout).
    """
    rows = _ids(rows)
    if counts is None:
        counts = np.bincount(rows, minlength=num_rows)
    starts = np.zeros(num_rows + 1, np.int64)
    np.cumsum(counts, out=starts[1:])
    order = stable_row_order(rows, num_rows)
    parts: list[Any] = [np.asarray(cols), np.asarray(values, np.float32)]
    parts.append(np.asarray(weights, np.float32))
    if order is not None or scalars:
        parts[1:] = [_one_value(a) for a in parts[1:]]
    if order is not None:
        parts = _gather(order, *parts)
    if not scalars:  # (arrays throughout: a one-value one as its array)
        n = len(parts[0])
        parts[1:] = [np.full(n, a, np.float32) if np.ndim(a) == 0 else a for a in parts[1:]]
    return counts, starts, parts[0], parts[1], parts[2]


def canonical_count(count: int, step: int = 1, steps: int | None = None) -> int:
    """`count` rounded up to the ladder of `SHAPE_STEPS` steps an octave, in steps of at least
    `step`: `⌈count/g⌉·g` with `g = max(step, 2^(⌊log2 count⌋ − log2 S))` (S a power of two).

    Example: with S = 4, 537 → 640, 45 → 48 (step 16), 24 → 32 (step 16), 9 → 10, 3 → 3.
    `steps`: S instead of `SHAPE_STEPS`.
    """
    count = int(count)
    if count <= 0:
        return count
    shift = int(SHAPE_STEPS if steps is None else steps).bit_length() - 1  # log2 S
    g = max(int(step), 1 << max(count.bit_length() - 1 - shift, 0))
    return -(-count // g) * g


def row_floats(length: int, d: int, solver: str) -> int:
    """Floats of the temporaries of one row of `length` slots (see `BLOCK_FLOATS`)."""
    if solver == "cholesky":
        return 2 * length * d + 2 * d * d
    return 4 * length * d


def block_rows(length: int, d: int, solver: str) -> int:
    """Rows per block for a bucket of `length` observation slots and embedding width `d`."""
    return max(1, BLOCK_FLOATS // max(row_floats(length, d, solver), 1))


LADDER_STEPS = 2
"""Bucket lengths an octave: `{S, ..., 2S − 1}·2^j` with `S` this (and every length below 2S).
Every padded slot is gathered and passed over by each solver step, so padding costs as much as
an observation. At ML-20M shape two steps pad users and items by 19-20% where powers of two (1)
pad them by 43-45%, in 20 buckets a side instead of 10-11; four steps pad by 9% in 34-38, and
each bucket is compiled apart: a JAX iALS sweep at d 64 compiled in 30 s (two) against 55 s
(four), and ran 8% slower."""


LADDER_MIN_OBS = 1_000_000
"""Observations of a table below which its buckets are powers of two (one step an octave)
instead of `LADDER_STEPS`: every bucket is compiled apart, a fixed cost, while padding costs in
proportion to the observations. On ml-100k (100k ratings) the half-octave ladder added 0.3-0.4 s
of compilation to a BiasedMF ALS fit (JAX, 2.0-2.5 s against 1.6-2.2 s) and saved nothing
measurable per sweep (0.06 s either way)."""


def ladder(top: int, steps: int | None = None) -> np.ndarray:
    """The bucket lengths up to the first one ≥ `top`: 1, ..., 2S − 1, then `{S, ..., 2S − 1}·2^j`
    (`S = steps`, default `LADDER_STEPS`; j = 1, 2, ...), ascending."""
    steps = max(int(LADDER_STEPS if steps is None else steps), 1)
    out = list(range(1, steps + 1))
    scale = 1
    while out[-1] < top:
        out += [m * scale for m in range(steps + 1, 2 * steps + 1)]
        scale *= 2
    steps_up = np.array(sorted(set(out)), np.int64)
    return steps_up[: int(np.searchsorted(steps_up, top)) + 1]


def bucket_lengths(counts: np.ndarray) -> np.ndarray:
    """The slot count `L` of each row's bucket: the first length of `ladder` ≥ its count (≥ 1;
    powers of two for a table of fewer than `LADDER_MIN_OBS` observations), with buckets of fewer
    than `MIN_BUCKET_OBS` padded observations merged into the next longer one."""
    counts = np.asarray(counts, np.int64)
    need = np.maximum(counts, 1)
    octave = LADDER_STEPS if int(counts.sum()) >= LADDER_MIN_OBS else 1
    steps = ladder(int(need.max()) if len(need) else 1, octave)
    length = steps[np.searchsorted(steps, need)]
    sizes = np.unique(length)
    merged = length.copy()
    carry = np.zeros(len(counts), bool)
    for i, size in enumerate(sizes):
        members = (length == size) | carry
        if i + 1 < len(sizes) and int(members.sum()) * int(size) < MIN_BUCKET_OBS:
            carry = members  # too small: these rows join the next bucket
            continue
        merged[members] = size
        carry = np.zeros(len(counts), bool)
    return merged


def bucket_blocks(
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    weights: np.ndarray,
    row_reg: np.ndarray,
    *,
    dim: int,
    solver: str,
    lengths: np.ndarray | None = None,
    shapes: dict[int, tuple[int, int]] | None = None,
) -> dict[str, object]:
    """The observations of each row as dense padded buckets, cut into blocks of rows (the
    layout of a sharded placement, which gives `lengths` and `shapes`; see `row_blocks`).

    Args:
        rows: int `[n]`, the row of each observation (0..R-1).
        cols: int `[n]`, the fixed-side row of each observation.
        values: float `[n]`, the target of each observation (before any offset).
        weights: float `[n]`, its weight in the row's system.
        row_reg: float `[R]`, the regularization ρ of each row's system (> 0).
        dim: the width `d` of the rows solved (sizes the blocks).
        solver: "cholesky" or "cg" (sizes the blocks; "cholesky" also stores `cols_t`).
        lengths: int `[R]`, the slot count `L` of each row's bucket (≥ its count), instead of
            `bucket_lengths` of the counts: a sharded placement gives every device's rows their
            lengths in the whole table, so that all devices build the same buckets.
        shapes: `{L: (K, B)}`, the blocks of every bucket (each `K·B` ≥ its rows), instead of
            sizing them here: one bucket per key, even an empty one (then rows may be 0).

    Returns:
        `{"buckets": [...], "position": int32 [R]}`. Each bucket is a dict of arrays with a
        leading axis of K blocks of B rows and L slots: `cols` int32 `[K, B, L]`, `values` and
        `weights` float32 `[K, B, L]` (padding slots: weight 0, col 0), `cols_t` int32
        `[K, L, B]` (Cholesky only: `cols` with the last two axes swapped, for the transposed
        gather), `ids` int32 `[K, B]` (the row of each block row; padding rows point at row 0),
        `row_reg` float32 `[K, B]` (1 for padding rows, so their systems stay regular).
        `position[r]` is row r's index in the concatenation of every bucket's `[K·B]` solutions.
    """
    num_rows = len(row_reg)
    if num_rows < 1 and not shapes:
        raise ArgumentValueError("row_blocks needs at least one row")
    if solver not in ("cholesky", "cg"):
        raise ArgumentValueError(f"solver must be 'cholesky' or 'cg', got {solver!r}")
    # By row, a row's observations in their given order. (Sorted by fixed row within a row, the
    # gathers read ascending rows, about 10% faster; but the float32 sums change order, which
    # CG's few steps amplify on ill-conditioned systems past the conformance suite's 2e-5.)
    counts, starts, sorted_cols, sorted_values, sorted_weights = _by_row(
        rows, cols, values, weights, num_rows
    )
    row_reg = np.asarray(row_reg, np.float32)
    if lengths is None:
        lengths = bucket_lengths(counts)
    else:
        lengths = np.asarray(lengths, np.int64)
        if lengths.shape != (num_rows,) or np.any(lengths < np.maximum(counts, 1)):
            raise ArgumentValueError(
                f"lengths must be {num_rows} slot counts, each at least its row's observation "
                f"count and 1, got shape {lengths.shape}"
            )
    sizes = np.unique(lengths) if shapes is None else np.array(sorted(shapes), np.int64)
    if shapes is not None and not set(np.unique(lengths).tolist()) <= set(sizes.tolist()):
        raise ArgumentValueError(
            f"shapes must have a bucket for every length, got {sorted(shapes)}"
        )
    floats = sum(int((lengths == n).sum()) * row_floats(int(n), dim, solver) for n in sizes)
    whole = floats <= WHOLE_FLOATS
    position = np.zeros(num_rows, np.int64)
    buckets: list[dict[str, np.ndarray]] = []
    offset = 0
    for length in sizes:
        length = int(length)
        members = np.flatnonzero(lengths == length)  # rows of this bucket, ascending
        if shapes is None:
            # Rounded up (`canonical_count`): similar data sets get the same shapes.
            most = canonical_count(len(members), MIN_ROW_STEP)
            size = most if whole else min(block_rows(length, dim, solver), most)
            k = canonical_count(-(-len(members) // size))
        else:
            k, size = shapes[length]
            if k * size < len(members):
                raise ArgumentValueError(
                    f"shapes[{length}] = {(k, size)} holds {k * size} rows, expected at least "
                    f"{len(members)}"
                )
        padded = k * size
        # Slot t of row r holds its t-th observation (t < count), else padding.
        slot = np.arange(length)
        have = slot[None, :] < counts[members][:, None]  # [rows, L]
        src = np.where(have, starts[members][:, None] + slot[None, :], 0)
        c = np.zeros((padded, length), np.int32)
        v = np.zeros((padded, length), np.float32)
        w = np.zeros((padded, length), np.float32)
        if len(sorted_cols):  # (rows without a single observation: nothing to read)
            c[: len(members)] = np.where(have, sorted_cols[src], 0)
            v[: len(members)] = np.where(have, sorted_values[src], 0.0)
            w[: len(members)] = np.where(have, sorted_weights[src], 0.0)
        ids = np.zeros(padded, np.int32)
        ids[: len(members)] = members
        reg = np.ones(padded, np.float32)
        reg[: len(members)] = row_reg[members]
        position[members] = offset + np.arange(len(members))
        offset += padded
        bucket = {
            "cols": c.reshape(k, size, length),
            "values": v.reshape(k, size, length),
            "weights": w.reshape(k, size, length),
            "ids": ids.reshape(k, size),
            "row_reg": reg.reshape(k, size),
        }
        if solver == "cholesky":
            bucket["cols_t"] = np.ascontiguousarray(bucket["cols"].transpose(0, 2, 1))
        buckets.append(bucket)
    # Single-block buckets first: a half-sweep solves them together (`cfcore.maths.als`).
    order = sorted(range(len(buckets)), key=lambda j: buckets[j]["ids"].shape[0] > 1)
    firsts = np.concatenate([[0], np.cumsum([buckets[j]["ids"].size for j in order])])
    old_first = np.concatenate([[0], np.cumsum([b["ids"].size for b in buckets])])
    moved = np.zeros(num_rows, np.int64)
    for new_j, j in enumerate(order):
        inside = (position >= old_first[j]) & (position < old_first[j + 1])
        moved[inside] = position[inside] - old_first[j] + firsts[new_j]
    return {"buckets": [buckets[j] for j in order], "position": moved.astype(np.int32)}


SEGMENT_LENGTHS: tuple[int, ...] = (8, 64, 512, 4096)
"""The slot counts of a segment, one per shape class (ascending). A row is cut into segments of
its class's length (`segment_classes`) and every block of a class has one shape, so that a
half-sweep compiles one block program per class whatever the data: the per-length buckets this
replaces (`bucket_blocks`) compiled one per bucket, about 20 a side at ML-20M shape. Four
classes, 8× apart: at ML-20M shape (10M positives, d 64, JAX) the blocks hold 14% more slots
than the observations, a CG sweep costs about as much as on the buckets (within 6% CPU time)
and compiles in about a fifth of their time; three classes (4, 32, 256) compiled a little
less but swept 23% slower (the longest class's blocks, sized by the longest row, held most of
the item side's observations in blocks far past the cache)."""

MIN_SEGMENTS = 4
"""Segments a row of a class above the first has at least: a row goes to the longest class
whose segments it fills `MIN_SEGMENTS` times, so that its padding (less than one segment) is
under 1/`MIN_SEGMENTS` of its observations."""


SEGMENT_SHAPE_STEPS = 8
"""`SHAPE_STEPS` of a class's block count: every padding block is gathered and solved as a
real one, and a class holds a whole table's rows of a length range (a bucket a fraction of
them), so the block count is rounded more finely (less than 1/8 of its blocks padding)."""


SEGMENTS: bool | None = None
"""Whether `row_blocks` lays a table out in segments (True), in per-length buckets as a sharded
placement does (False), or (None) in buckets while they are at most `MAX_BUCKETS` and in
segments beyond. Tests that compare a sharded run with one device's bit for bit set it off for
the one device, so that both sum every row in the same order; tests of the segments set it on."""

MAX_BUCKETS = 8
"""The most per-length buckets `row_blocks` lays out (by default) before it turns to segments.
Small tables have few buckets and sweep faster in them (a segment sum is a larger share of a
short row's work; benchmarks/results/compile_scaling.md); large ones have dozens, each compiled
apart, where segments keep the programs to one per class. Either way a half-sweep compiles at
most `max(MAX_BUCKETS, len(SEGMENT_LENGTHS))` block programs."""


def segment_classes(counts: np.ndarray) -> np.ndarray:
    """The class (index into `SEGMENT_LENGTHS`) of each row of `counts` observations: the
    longest segments `L` with `count ≥ MIN_SEGMENTS·L`, else the first."""
    need = np.maximum(np.asarray(counts, np.int64), 1)
    lengths = np.asarray(SEGMENT_LENGTHS, np.int64)
    return np.maximum(np.searchsorted(MIN_SEGMENTS * lengths, need, side="right") - 1, 0)


def segment_floats(length: int, d: int, solver: str) -> int:
    """Floats of the temporaries of one segment of `length` slots (see `BLOCK_FLOATS`): its
    gathered rows (and for Cholesky its `[d, d]` partial Gramian and the row's system)."""
    return row_floats(length, d, solver)


def _pack(segments: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `segments` segments each (descending, each ≤ `capacity`) packed whole into
    blocks of `capacity` segments: a block takes the longest rows left while they fit, then
    fills up with the shortest left (so that it wastes less than the shortest row left, not
    the next long one). A loop over the blocks with rows of several lengths (two binary
    searches each), not over rows; the blocks of the alike rows left at the end at once.

    Returns:
        `(block, order)`: each row's block, and the rows in block order (`[n]` each).
    """
    n = len(segments)
    ends = np.cumsum(segments).tolist()  # heads: rows lo.. take ends[j] − ends[lo − 1]
    tails = np.cumsum(segments[::-1]).tolist()  # tails: rows hi, hi − 1, ... from the end
    runs: list[int] = []  # per block: its head's first row and count, its tail's likewise
    rest = np.zeros((0, 4), np.int64)
    lo, hi = 0, n  # rows lo..hi − 1 are left
    while lo < hi:
        if segments[lo] == segments[hi - 1]:
            # The rows left are all alike (most rows, the short ones): every block takes
            # capacity // s of them and fills with none; the blocks at once.
            per = capacity // int(segments[lo])
            heads = np.arange(lo, hi, per)
            rest = np.zeros((len(heads), 4), np.int64)
            rest[:, 0], rest[:, 1], rest[:, 2] = heads, np.minimum(per, hi - heads), hi
            break
        base = ends[lo - 1] if lo else 0
        stop = min(bisect_right(ends, base + capacity), hi)
        room = capacity - (ends[stop - 1] - base)
        taken = n - hi  # rows already taken from the end
        used = tails[taken - 1] if taken else 0
        fill = max(0, min(bisect_right(tails, used + room) - taken, hi - stop))
        runs += [lo, stop - lo, hi - fill, fill]
        lo, hi = stop, hi - fill
    first, count = np.concatenate([np.array(runs, np.int64), rest.reshape(-1)]).reshape(-1, 2).T
    # The rows of each run, runs in block order: first[j] + 0, 1, ..., count[j] − 1.
    ahead = np.cumsum(count) - count
    order = np.repeat(first - ahead, count) + np.arange(n)
    block = np.empty(n, np.int64)
    block[order] = np.repeat(np.arange(len(count) // 2), count[0::2] + count[1::2])
    return block, order


def _slots(base: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Every observation's flat slot, int64 `[n]` (observations by row): its row's first slot
    `base[r]` plus its index within the row. A running sum of steps, 1 within a row and a jump
    to the next row's first slot at its start: one `[n]` array, where a repeat plus an arange
    make two."""
    slot = np.ones(int(starts[-1]), np.int64)
    have = np.flatnonzero(counts)
    if len(have):
        firsts = base[have]
        slot[starts[have]] = firsts - np.concatenate([[0], firsts[:-1] + counts[have][:-1] - 1])
        np.cumsum(slot, out=slot)
    return slot


def segment_blocks(
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    weights: np.ndarray,
    row_reg: np.ndarray,
    *,
    dim: int,
    solver: str,
    counts: np.ndarray | None = None,
) -> dict[str, object]:
    """The observations of each row cut into segments of a few fixed lengths, packed into
    blocks of one shape per class (`SEGMENT_LENGTHS`): see `row_blocks` (`counts`: the rows'
    observation counts, when the caller has them)."""
    num_rows = len(row_reg)
    if num_rows < 1:
        raise ArgumentValueError("row_blocks needs at least one row")
    if solver not in ("cholesky", "cg"):
        raise ArgumentValueError(f"solver must be 'cholesky' or 'cg', got {solver!r}")
    # By row, a row's observations in their given order.
    counts, starts, sorted_cols, sorted_values, sorted_weights = _by_row(
        rows, cols, values, weights, num_rows, counts, scalars=True
    )
    row_reg = np.asarray(row_reg, np.float32)
    seg_len = np.asarray(SEGMENT_LENGTHS, np.int64)
    cls = segment_classes(counts)
    nsegs = -(-np.maximum(counts, 1) // seg_len[cls])  # a row without observations: one
    classes = [int(c) for c in np.unique(cls)]
    floats = sum(
        int(nsegs[cls == c].sum()) * segment_floats(int(seg_len[c]), dim, solver) for c in classes
    )
    whole = floats <= WHOLE_FLOATS
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
            # (Rounded in steps of about 8·MIN_ROW_STEP slots: similar data sets share shapes.)
            capacity = canonical_count(int(m.sum()), max(1, 8 * MIN_ROW_STEP // length))
        else:
            per = max(1, BLOCK_FLOATS // max(segment_floats(length, dim, solver), 1))
            capacity = canonical_count(max(per, int(m.max())))
        block_of, packed = _pack(m, capacity)
        members, m, block_of = members[packed], m[packed], block_of[packed]
        firsts = np.flatnonzero(np.diff(np.concatenate([[-1], block_of])))
        local = np.arange(len(members)) - firsts[block_of]  # the row's index in its block
        seg_start = np.concatenate([[0], np.cumsum(m)])[:-1]
        seg_in_block = seg_start - seg_start[firsts][block_of]
        k = canonical_count(len(firsts), steps=SEGMENT_SHAPE_STEPS)
        width = canonical_count(int(local.max()) + 1, 1 if not whole else MIN_ROW_STEP)
        base[members] = slot_offset + (block_of * capacity + seg_in_block) * length
        position[members] = row_offset + block_of * width + local
        layouts.append((c, members, m, block_of, local, seg_in_block, k, capacity, width))
        slot_offset += k * capacity * length
        row_offset += k * width
    slot = _slots(base, starts, counts)
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


def row_blocks(
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    weights: np.ndarray,
    row_reg: np.ndarray,
    *,
    dim: int,
    solver: str,
    lengths: np.ndarray | None = None,
    shapes: dict[int, tuple[int, int]] | None = None,
) -> dict[str, object]:
    """The observations of each row laid out for an ALS half-sweep, in blocks of a few shapes.

    Without `lengths` and `shapes`: segments (`segment_blocks`). Each row is cut into
    segments of `L` slots, `L` its class's length (`SEGMENT_LENGTHS`, `segment_classes`), the
    last padded (weight 0); a class's rows (longest first) are packed whole into blocks of `S`
    segments, a block taking rows while they fit (`S` from `BLOCK_FLOATS`, at least the
    longest row's segments; the whole class in one block when every class fits in
    `WHOLE_FLOATS`). A half-sweep sums each row's segments' partial systems (`seg_row`) before
    its solve, so it compiles one block program per class, at most `len(SEGMENT_LENGTHS)` a
    side, whatever the number and lengths of the rows.

    With `lengths` or `shapes` (a sharded placement, whose devices must build the same
    buckets), with `SEGMENTS` off, or by default while the buckets are at most `MAX_BUCKETS`:
    the per-length buckets of `bucket_blocks` (its arguments).

    Args:
        rows: int `[n]`, the row of each observation (0..R-1).
        cols: int `[n]`, the fixed-side row of each observation.
        values: float `[n]`, the target of each observation (before any offset).
        weights: float `[n]`, its weight in the row's system.
        row_reg: float `[R]`, the regularization ρ of each row's system (> 0).
        dim: the width `d` of the rows solved (sizes the blocks).
        solver: "cholesky" or "cg" (sizes the blocks; "cholesky" also stores `cols_t`).
        lengths, shapes: see `bucket_blocks`.

    Returns:
        `{"buckets": [...], "position": int32 [R]}`, a bucket per class present: `cols` int32
        `[K, S, L]` (K blocks of S segments of L slots), `values` and `weights` float32
        `[K, S, L]` (padding slots: weight 0, col 0), `cols_t` int32 `[K, L, S]` (Cholesky
        only), `seg_row` int32 `[K, S]` (each segment's row within its block, 0..Rb-1; padding
        segments 0), `ids` int32 `[K, Rb]` (the row of each block row; padding rows point at
        row 0), `row_reg` float32 `[K, Rb]` (1 for padding rows). `position[r]` is row r's
        index in the concatenation of every bucket's `[K·Rb]` solutions.
    """
    segments, counts = SEGMENTS, None
    if segments is None and lengths is None and shapes is None:
        counts = np.bincount(_ids(rows), minlength=len(row_reg))
        segments = len(np.unique(bucket_lengths(counts))) > MAX_BUCKETS
    if lengths is not None or shapes is not None or not segments:
        return bucket_blocks(
            rows, cols, values, weights, row_reg, dim=dim, solver=solver,
            lengths=lengths, shapes=shapes,
        )  # fmt: skip
    return segment_blocks(
        rows, cols, values, weights, row_reg, dim=dim, solver=solver, counts=counts
    )


CSR_PART_FLOATS = 1 << 20
"""Floats of a CSR part's `[rows, d]` vectors (4 MB) at most: a CG half-sweep on CSR rows solves
its rows a part at a time, so that each of its many elementwise passes stays in the cache and its
temporaries are reused by the allocator instead of mapped afresh (PyTorch on Linux maps every
array over 32 MB anew, page faults and all)."""

CSR_PART_OBS = 1 << 16
"""Observations of a CSR part at most (a part holds one row at least). A part reads only its own
fixed rows, gathered once into a small table (at most this many rows: 16 MB at d 64) that every
CG step then reads from the cache: at ML-20M shape the item half's sparse products ran 1.9×
faster so than on the whole 138k-row user table (parts of 2^15 to 2^17 observations measured;
`docs/performance.md`)."""


def row_csr(
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    weights: np.ndarray,
    row_reg: np.ndarray,
    *,
    dim: int,
) -> dict[str, Any]:
    """The observations by row, compressed (CSR), in parts of consecutive rows: the layout of
    an ALS half-sweep on a backend with sparse row products (the optional `row_dots`,
    `row_sums` and, for Cholesky, `row_grams` of `cfcore.backend.capabilities`), which then
    needs no blocks, padding or compiled map.

    Args: as `row_blocks` (`dim` sizes the parts: `CSR_PART_FLOATS`, `CSR_PART_OBS`).

    Returns:
        `{"csr": [part, ...]}`, the parts in row order, each a CSR of its rows over its own
        fixed rows: `ids` int32 `[Rp]` (its rows, consecutive), `fixed` int32 `[Fp]` (the
        distinct fixed rows its observations read, ascending), `starts` int32 `[Rp + 1]` (its
        row i's observations are `starts[i]` to `starts[i + 1]` − 1 of the part's), `rows`
        int32 `[np]` (the part's row of each, 0..Rp−1), `cols` int32 `[np]` (each one's fixed
        row as an index into `fixed`, in their given order within a row; one may repeat),
        `values` and `weights` float32 `[np]`, `row_reg` float32 `[Rp]`.
    """
    num_rows = len(row_reg)
    if num_rows < 1:
        raise ArgumentValueError("row_csr needs at least one row")
    if len(rows) >= 1 << 31:
        raise ArgumentValueError(f"row_csr holds at most 2^31 - 1 observations, got {len(rows)}")
    counts, starts, sorted_cols, sorted_values, sorted_weights = _by_row(
        rows, cols, values, weights, num_rows
    )
    row_reg = np.asarray(row_reg, np.float32)
    sorted_cols = np.asarray(sorted_cols, np.int64)
    width = int(sorted_cols.max()) + 1 if len(sorted_cols) else 1
    local = np.zeros(width, np.int32)  # a fixed row's index in the part being built
    seen = np.zeros(width, bool)
    parts = []
    most_rows = max(1, CSR_PART_FLOATS // max(int(dim), 1))
    lo = 0
    while lo < num_rows:
        # As many rows as fit both bounds, one at least.
        hi = min(num_rows, lo + most_rows)
        last = int(np.searchsorted(starts, starts[lo] + CSR_PART_OBS, "right")) - 1
        hi = max(lo + 1, min(hi, last))
        a, b = int(starts[lo]), int(starts[hi])
        part_cols = sorted_cols[a:b]
        seen[part_cols] = True
        fixed = np.flatnonzero(seen)  # O(width) a part, no sort
        seen[fixed] = False
        local[fixed] = np.arange(len(fixed), dtype=np.int32)
        parts.append(
            {
                "ids": np.arange(lo, hi, dtype=np.int32),
                "fixed": fixed.astype(np.int32),
                "starts": (starts[lo : hi + 1] - a).astype(np.int32),
                "rows": np.repeat(np.arange(hi - lo, dtype=np.int32), counts[lo:hi]),
                "cols": local[part_cols],
                "values": sorted_values[a:b],
                "weights": sorted_weights[a:b],
                "row_reg": row_reg[lo:hi],
            }
        )
        lo = hi
    return {"csr": parts}
