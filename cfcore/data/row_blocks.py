"""Observations grouped by row into padded blocks of whole rows: the layout of an ALS half-sweep.

A half-sweep solves one small system per row of a table. `row_blocks` sorts the observations by
row and packs consecutive rows into blocks of at most `max_obs` observations and `max_rows` rows,
padded to one shape, so that a compiled loop over the blocks bounds the memory of a half-sweep
(the `[C, d, d]` outer products of a Cholesky block, the `[C, d]` gathers of CG) whatever the
number of ratings. Every row, even one without observations, belongs to exactly one block.
"""

from __future__ import annotations

import numpy as np

BLOCK_FLOATS = 1 << 25
"""Floats of the largest temporary of one block (128 MB of float32): `C·d²` for the Cholesky
solver (outer products, and the `[R, d, d]` systems), `C·d` for CG. A row with more observations
than that still forms one block of its own (its rows are never split)."""


def block_size(d: int, solver: str) -> int:
    """Observations (and rows) per block for embedding width `d`: `BLOCK_FLOATS` over the
    floats one observation needs."""
    per_obs = d * d if solver == "cholesky" else 4 * d
    return max(1, BLOCK_FLOATS // per_obs)


def row_blocks(
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    weights: np.ndarray,
    row_reg: np.ndarray,
    *,
    max_obs: int,
    max_rows: int | None = None,
) -> dict[str, np.ndarray]:
    """The observations of each row, packed into padded blocks of whole rows.

    Args:
        rows: int `[n]`, the row of each observation (0..R-1).
        cols: int `[n]`, the fixed-side row of each observation.
        values: float `[n]`, the target of each observation (before any offset).
        weights: float `[n]`, its weight in the row's system.
        row_reg: float `[R]`, the regularization ρ of each row's system (> 0).
        max_obs: observations per block (raised to the largest row's count if needed).
        max_rows: rows per block (default `max_obs`).

    Returns:
        A dict of arrays with a leading axis of K blocks: `rows` int32 `[K, C]` (the row within
        its block), `cols` int32 `[K, C]`, `values` and `weights` float32 `[K, C]` (padding
        observations have weight 0, row 0, col 0), `ids` int32 `[K, B]` (the row of each block
        row; padding rows point at row 0), `valid` float32 `[K, B]` (1 for a real row) and
        `row_reg` float32 `[K, B]` (1 for padding rows, so their systems stay regular).
    """
    rows = np.asarray(rows, np.int64)
    num_rows = len(row_reg)
    if num_rows < 1:
        raise ValueError("row_blocks needs at least one row")
    order = np.argsort(rows, kind="stable")
    counts = np.bincount(rows, minlength=num_rows)
    starts = np.concatenate([[0], np.cumsum(counts)])
    max_obs = max(int(max_obs), int(counts.max()), 1)
    max_rows = max_obs if max_rows is None else max(int(max_rows), 1)
    bounds = [0]
    first = 0
    while first < num_rows:
        # As many whole rows as fit in max_obs observations and max_rows rows (at least one).
        last = int(np.searchsorted(starts, starts[first] + max_obs, side="right")) - 1
        last = max(min(last, first + max_rows, num_rows), first + 1)
        bounds.append(last)
        first = last
    edges = np.asarray(bounds)
    k = len(edges) - 1
    obs_per = starts[edges[1:]] - starts[edges[:-1]]
    rows_per = np.diff(edges)
    c, b = max(int(obs_per.max()), 1), int(rows_per.max())
    out = {
        "rows": np.zeros((k, c), np.int32),
        "cols": np.zeros((k, c), np.int32),
        "values": np.zeros((k, c), np.float32),
        "weights": np.zeros((k, c), np.float32),
        "ids": np.zeros((k, b), np.int32),
        "valid": np.zeros((k, b), np.float32),
        "row_reg": np.ones((k, b), np.float32),
    }
    sorted_rows = rows[order]
    cols = np.asarray(cols)[order]
    values, weights = np.asarray(values)[order], np.asarray(weights)[order]
    row_reg = np.asarray(row_reg, np.float32)
    for j in range(k):
        lo, hi = starts[edges[j]], starts[edges[j + 1]]
        n = hi - lo
        out["rows"][j, :n] = sorted_rows[lo:hi] - edges[j]
        out["cols"][j, :n] = cols[lo:hi]
        out["values"][j, :n] = values[lo:hi]
        out["weights"][j, :n] = weights[lo:hi]
        r = rows_per[j]
        out["ids"][j, :r] = np.arange(edges[j], edges[j + 1])
        out["valid"][j, :r] = 1.0
        out["row_reg"][j, :r] = row_reg[edges[j] : edges[j + 1]]
    return out
