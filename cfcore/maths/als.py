"""Alternating least squares written once on the backend's operations: row solves and half-sweeps.

Every ALS model of cfcore (`WALS`, `IALS`, `BiasedMF` with `solver="als"`) solves, with the other
table `F` (`[M, d]`) fixed, one weighted ridge regression per row `r` of the table being updated:

    x_r = (Σ_{k∈S_r} w_k f_k f_kᵀ + ρ_r·diag(c) + P)⁻¹ Σ_{k∈S_r} w_k y_k f_k

with `S_r` the observations of row `r`, `f_k` the fixed row of observation `k`, `w_k ≥ 0` its
weight, `y_k` its target, `ρ_r` a per-row regularization, `c` a per-column one (`[d]`) and `P` a
`[d, d]` prior shared by every row (the gravity / unobserved-pairs term `α·FᵀF`).

Two solvers:

* "cholesky": the per-row Gramians as segment sums of the weighted outer products `w_k f_k f_kᵀ`,
  then the backend's batched Cholesky `solve`. Exact; memory `O(C·d²)` for a block of `C`
  observations.
* "cg": conjugate gradient on every row at once, warm-started from the current rows, a fixed
  number of steps; each step is one matrix-vector product `A x` through a gather, a row-wise dot
  and a segment sum (memory `O(C·d)`, no `[d, d]` system per row). Each CG step minimises the row's
  quadratic over a larger Krylov space that contains the previous iterate, so a half-sweep by CG
  can only lower the objective too; it is not the exact minimiser.

The observations are processed in blocks of whole rows (`cfcore.data.row_blocks`), in a compiled
loop over the blocks (`Backend.compile_loop`), so the memory of a half-sweep is bounded by the
block size whatever the number of ratings. Each block's solutions are added into the new table by
a segment sum (every row belongs to exactly one block).

References: Hu, Koren & Volinsky, "Collaborative filtering for implicit feedback datasets" (2008);
Rendle, Krichene, Zhang & Koren, "Revisiting the performance of iALS on item recommendation
benchmarks" (2022), whose iALS objective and frequency-scaled regularization `IALS` uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

SOLVERS: tuple[str, ...] = ("cholesky", "cg")


def row_solve(
    be: Any,
    fixed: Any,
    rows: Any,
    cols: Any,
    weights: Any,
    targets: Any,
    num_rows: int,
    row_reg: Any,
    col_reg: Any,
    prior: Any,
    *,
    solver: str = "cholesky",
    x0: Any = None,
    cg_steps: int = 3,
) -> Any:
    """The rows `x_r` of the module docstring's weighted ridge regressions.

    Args:
        be: the backend.
        fixed: `[M, d]`, F.
        rows: int32 `[C]`, the row (0..num_rows-1) of each observation.
        cols: int32 `[C]`, the fixed row of each observation.
        weights: float32 `[C]`, w (0 for padding observations: they then add nothing).
        targets: float32 `[C]`, y.
        num_rows: R.
        row_reg: float32 `[R]`, ρ (> 0 for a row without observations, or its system is singular).
        col_reg: float32 `[d]`, c.
        prior: float32 `[d, d]`, P (symmetric positive semi-definite).
        solver: "cholesky" (exact) or "cg".
        x0: `[R, d]`, the starting rows of CG (required for "cg").
        cg_steps: number of CG steps.

    Returns:
        `[R, d]`.
    """
    xp = be.xp
    ops = _ops(be)
    d = int(fixed.shape[1])
    f = xp.take(fixed, cols)  # [C, d]
    wf = f * xp.reshape(weights, (-1, 1))
    rhs = ops.segment_sum(wf * xp.reshape(targets, (-1, 1)), rows, num_rows)  # [R, d]
    diag = xp.reshape(row_reg, (-1, 1)) * xp.reshape(col_reg, (1, d))  # [R, d]
    if solver == "cholesky":
        # Σ w f fᵀ per row as a segment sum of outer products: the caller's blocks bound C·d².
        outer = xp.reshape(wf, (-1, d, 1)) * xp.reshape(f, (-1, 1, d))
        gram = ops.segment_sum(outer, rows, num_rows)
        eye = xp.reshape(be.asarray(np.eye(d, dtype=np.float32)), (1, d, d))
        system = gram + xp.reshape(diag, (-1, 1, d)) * eye + xp.reshape(prior, (1, d, d))
        return ops.solve(system, rhs)
    if solver != "cg":
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if x0 is None:
        raise ValueError("the cg solver starts from x0: pass the current rows")

    def matvec(x: Any) -> Any:
        fx = xp.sum(f * xp.take(x, rows), axis=1)  # ⟨f_k, x_{row k}⟩, [C]
        return (
            ops.segment_sum(wf * xp.reshape(fx, (-1, 1)), rows, num_rows)
            + diag * x
            + (xp.matmul(x, prior))
        )

    x = x0
    r = rhs - matvec(x)
    p = r
    rs = xp.sum(r * r, axis=1)
    for _ in range(int(cg_steps)):
        ap = matvec(p)
        pap = xp.sum(p * ap, axis=1)
        # A converged row (r = 0, so p = 0) stays where it is instead of dividing 0 by 0.
        ok = pap > 0
        alpha = xp.where(ok, rs / xp.where(ok, pap, xp.full_like(pap, 1.0)), xp.zeros_like(pap))
        x = x + xp.reshape(alpha, (-1, 1)) * p
        r = r - xp.reshape(alpha, (-1, 1)) * ap
        rs_new = xp.sum(r * r, axis=1)
        has = rs > 0
        beta = xp.where(has, rs_new / xp.where(has, rs, xp.full_like(rs, 1.0)), xp.zeros_like(rs))
        p = r + xp.reshape(beta, (-1, 1)) * p
        rs = rs_new
    return x


HalfSweep = Callable[..., Any]


def make_half_sweep(
    be: Any, col_reg: np.ndarray, *, solver: str, cg_steps: int, offsets: bool = False
) -> HalfSweep:
    """One half of an ALS sweep: every row of one table solved with the other table fixed.

    Args:
        be: the backend.
        col_reg: float32 `[d]`, c of every row's system.
        solver: "cholesky" or "cg".
        cg_steps: CG steps per half-sweep.
        offsets: the targets are `values − offset[col]` (a bias of the fixed side, given to
            `half`), else `values`.

    Returns:
        `half(fixed, current, blocks, prior, offset=None) -> new [R_total, d]`:
        `fixed` `[M, d]`, `current` `[R_total, d]` (CG's warm start; also the shape of the
        result), `blocks` the device form of `cfcore.data.row_blocks.row_blocks` (leading axis K),
        `prior` `[d, d]`, `offset` `[M]`. Usable inside compiled code.
    """
    xp = be.xp
    ops = _ops(be)
    col = np.asarray(col_reg, np.float32)

    def body(out: Any, data: dict[str, Any], block: dict[str, Any]) -> Any:
        num = int(block["ids"].shape[0])
        targets = block["values"]
        if offsets:
            targets = targets - xp.take(data["offset"], block["cols"])
        x0 = xp.take(data["current"], block["ids"]) if solver == "cg" else None
        sol = row_solve(
            be,
            data["fixed"],
            block["rows"],
            block["cols"],
            block["weights"],
            targets,
            num,
            block["row_reg"],
            be.asarray(col),
            data["prior"],
            solver=solver,
            x0=x0,
            cg_steps=cg_steps,
        )
        # Padding rows point at row 0: they add zeros there (where, not a product: 0·NaN is NaN).
        sol = xp.where(xp.reshape(block["valid"], (-1, 1)) > 0.5, sol, xp.zeros_like(sol))
        return out + ops.segment_sum(sol, block["ids"], int(out.shape[0]))

    loop = be.compile_loop(body)

    def half(fixed: Any, current: Any, blocks: dict[str, Any], prior: Any, offset: Any = None):
        data = {"fixed": fixed, "current": current, "prior": prior}
        if offsets:
            data["offset"] = offset
        return loop(xp.zeros_like(current), data, blocks)

    return half


def augment(be: Any, table: Any, column: Any) -> Any:
    """`[table, column]`: `[R, d + 1]` from `[R, d]` and `[R]`."""
    xp = be.xp
    return xp.concat([table, xp.reshape(column, (-1, 1))], axis=1)


def ones_column(be: Any, table: Any) -> Any:
    """A column of ones `[R]` for a table `[R, d]` (built from it, so it lives where it does)."""
    xp = be.xp
    return xp.full_like(xp.sum(table, axis=1), 1.0)


def split_last(be: Any, table: Any) -> tuple[Any, Any]:
    """`([R, d], [R])` from an `[R, d + 1]` table: the leading columns and the last one.

    Through constant selection matrices (a matmul), since the array namespace has no slicing.
    """
    xp = be.xp
    d1 = int(table.shape[1])
    head = be.asarray(np.eye(d1, d1 - 1, dtype=np.float32))
    last = be.asarray(np.eye(d1, dtype=np.float32)[:, -1:])
    return xp.matmul(table, head), xp.reshape(xp.matmul(table, last), (-1,))


def pad_prior(be: Any, prior: Any) -> Any:
    """`[[P, 0], [0, 0]]`: a `[d, d]` prior on the embedding block of an augmented row."""
    xp = be.xp
    d = int(prior.shape[0])
    embed = be.asarray(np.eye(d + 1, d, dtype=np.float32))  # [d + 1, d]
    return xp.matmul(xp.matmul(embed, prior), xp.transpose(embed))


def _ops(be: Any) -> Any:
    """The backend's raw operations: inside compiled code the bound backend's host-side checks
    and conversions must not run (shapes may be symbolic there)."""
    return getattr(be, "ops", be)
