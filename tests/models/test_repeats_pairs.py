"""iALS's check of repeated (user, item) pairs (`cfcore.models.als.repeats_pairs`) agrees with
counting the distinct pairs, whichever way the pairs are ordered and however small its table."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cfcore.models import als


def _reference(rows, cols):
    return len({(int(r), int(c)) for r, c in zip(rows, cols, strict=True)}) < len(rows)


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    num_rows=st.integers(1, 40),
    num_cols=st.integers(1, 40),
    n=st.integers(0, 120),
    order=st.sampled_from(["rows", "cols", "shuffled"]),
    slots=st.sampled_from([1, 7, 64, 1 << 21]),
)
def test_repeats_pairs_counts_distinct_pairs(seed, num_rows, num_cols, n, order, slots):
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, num_rows, n).astype(np.int32)
    cols = rng.integers(0, num_cols, n).astype(np.int32)
    if rng.random() < 0.5 and n:  # mostly distinct pairs: redraw, then maybe repeat one
        key = np.unique(rows.astype(np.int64) * num_cols + cols)
        rows, cols = (key // num_cols).astype(np.int32), (key % num_cols).astype(np.int32)
        if rng.random() < 0.5:
            k = int(rng.integers(0, len(rows)))
            rows, cols = np.append(rows, rows[k]), np.append(cols, cols[k])
    if order == "rows":
        perm = np.argsort(rows, kind="stable")
    elif order == "cols":
        perm = np.argsort(cols, kind="stable")
    else:
        perm = rng.permutation(len(rows))
    rows, cols = rows[perm], cols[perm]
    old = als.PAIR_CHECK_SLOTS
    try:
        als.PAIR_CHECK_SLOTS = slots  # (hypothesis does not take function-scoped fixtures)
        got = als.repeats_pairs(rows, cols, num_rows, num_cols)
    finally:
        als.PAIR_CHECK_SLOTS = old
    assert got == _reference(rows, cols)


def test_repeats_pairs_with_keys_past_32_bits():
    # N·M past 2^32: (0, 0) and (42949, 67296) have keys 2^32 apart, equal in uint32.
    num_rows = num_cols = 100_000
    rows = np.array([42949, 0, 5], np.int64)
    cols = np.array([67296, 0, 3], np.int64)
    assert not als.repeats_pairs(rows, cols, num_rows, num_cols)
    assert als.repeats_pairs(np.append(rows, 5), np.append(cols, 3), num_rows, num_cols)
