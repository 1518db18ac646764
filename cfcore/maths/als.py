"""Alternating least squares written once on the backend's operations: row solves and half-sweeps.

Every ALS model of cfcore (`WALS`, `IALS`, `BiasedMF` with `solver="als"`) solves, with the other
table `F` (`[M, d]`) fixed, one weighted ridge regression per row `r` of the table being updated:

    x_r = (Σ_{k∈S_r} w_k f_k f_kᵀ + ρ_r·diag(c) + P)⁻¹ Σ_{k∈S_r} w_k y_k f_k

with `S_r` the observations of row `r`, `f_k` the fixed row of observation `k`, `w_k ≥ 0` its
weight, `y_k` its target, `ρ_r` a per-row regularization, `c` a per-column one (`[d]`) and `P` a
`[d, d]` prior shared by every row (the gravity / unobserved-pairs term `α·FᵀF`).

Two solvers:

* "cholesky": the per-row Gramians `Σ w f fᵀ` as one batched matrix product per block of rows
  (`[B, d, L] @ [B, L, d]` over the row's `L` observation slots), then the backend's batched
  Cholesky `solve`. Exact; memory `O(B·(L·d + d²))` for a block of `B` rows.
* "cg": conjugate gradient on every row at once, warm-started from the current rows, a fixed
  number of steps; each step is one matrix-vector product `A x` through two batched products
  with the block's gathered `[B, L, d]` rows (memory `O(B·L·d)`, no `[d, d]` system per row).
  Each CG step minimises the row's quadratic over a larger Krylov space that contains the
  previous iterate, so a half-sweep by CG can only lower the objective too; it is not the exact
  minimiser.

On a backend with sparse row products (the optional `row_dots` and `row_sums`: PyTorch's CSR
kernels), a CG half-sweep reads the observations compressed by row instead
(`cfcore.data.row_blocks.row_csr`): each CG product is then two sparse products over the
observations, with no padding, gather of `[B, L, d]` blocks or map over blocks. With
`row_grams` too, a Cholesky half-sweep does likewise: each row's system `Σ w f fᵀ` is one
sparse product with the fixed rows' outer products.

Otherwise the observations are laid out densely per row (`cfcore.data.row_blocks`): rows in buckets of
about equal observation counts, each row's observations padded to its bucket's `L` slots (padding
slots weigh 0), each bucket cut into blocks of rows, and a compiled loop over a bucket's blocks
(the backend's optional `compile_map`, else `Backend.compile_loop`) when it has more than one, so
the memory of a half-sweep is bounded by the block size whatever the number of ratings. There is
no scatter: reductions over a row's observations are batched matrix products, the blocks'
solutions are stacked by the map (without one: put into the bucket's output by a one-hot
select), and the new table is one gather of the buckets' outputs.

A backend that can run independent compiled computations at once on one device (the optional
`compile_parts` and `concurrent_parts`: TensorFlow runs XLA calls from a non-XLA graph on its
inter-op threads, one a core) gets the blocks of a half-sweep cut into that many parts of about
equal work (`plan_parts`), each a run of consecutive blocks solved by a computation of its own;
their rows, concatenated in order, are the very concatenation the gather reads. Every block is
solved by the same operations whatever the parts, so the rows do not depend on them.

References: Hu, Koren & Volinsky, "Collaborative filtering for implicit feedback datasets" (2008);
Rendle, Krichene, Zhang & Koren, "Revisiting the performance of iALS on item recommendation
benchmarks" (2022), whose iALS objective and frequency-scaled regularization `IALS` uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..backend.capabilities import CSR_CAPABILITIES, capability, has_capability, raw_ops
from ..errors import ArgumentValueError

SOLVERS: tuple[str, ...] = ("cholesky", "cg")

MIN_PART_WORK = 1 << 20
"""Work (`block_work`: about a padded observation slot each) of a half-sweep per concurrent part
at least: a half-sweep is cut into at most `work // MIN_PART_WORK` parts. Each part is compiled
apart, and a small half-sweep (MovieLens 1M: about a million slots a side, 0.09 s a TensorFlow
iALS sweep) gains less from a second core than its extra programs cost to compile."""


def gather_rows(be: Any, table: Any, cols: Any) -> Any:
    """`table[cols]`: `[B, L, d]` from `[M, d]` and int32 `[B, L]`."""
    xp = be.xp
    b, length = (int(s) for s in cols.shape)
    d = int(table.shape[1])
    return xp.reshape(xp.take(table, xp.reshape(cols, (-1,))), (b, length, d))


def gather_rows_t(be: Any, table: Any, cols_t: Any) -> Any:
    """`table[cols]` with its last two axes swapped: `[B, d, L]` from `[M, d]` and `cols_t`,
    int32 `[L, B]` (`cols` transposed).

    The array namespace has only 2-D transposes: the gather gives `[L, B, d]`, seen as the
    matrix `[L, B·d]`, whose transpose `[B·d, L]` is `[B, d, L]`.
    """
    xp = be.xp
    length, b = (int(s) for s in cols_t.shape)
    d = int(table.shape[1])
    g = xp.reshape(xp.take(table, xp.reshape(cols_t, (-1,))), (length, b * d))
    return xp.reshape(xp.transpose(g), (b, d, length))


def _rhs(be: Any, f: Any, weights: Any, targets: Any) -> Any:
    """`Σ_l w_l y_l f_l` per row, `[B, d]`: a row vector times the row's `[L, d]` block."""
    return _vecmat(be, weights * targets, f)


def _vecmat(be: Any, a: Any, f: Any) -> Any:
    """`Σ_l a_l f_l` per row: `[B, d]` from `[B, L]` and the rows' `[B, L, d]` blocks."""
    xp = be.xp
    b, length, d = (int(s) for s in f.shape)
    return xp.reshape(xp.matmul(xp.reshape(a, (b, 1, length)), f), (b, d))


def _matvec(be: Any, f: Any, x: Any) -> Any:
    """`⟨f_l, x⟩` per slot: `[B, L]` from the rows' `[B, L, d]` blocks and `[B, d]`."""
    xp = be.xp
    b, length, d = (int(s) for s in f.shape)
    return xp.reshape(xp.matmul(f, xp.reshape(x, (b, d, 1))), (b, length))


def observed_loss(be: Any, f: Any, weights: Any, targets: Any, x: Any) -> Any:
    """`Σ_r Σ_{k∈S_r} w_k (⟨f_k, x_r⟩ − y_k)²` of a block of rows (padding slots weigh 0): the
    observed part of the objective that the block's systems minimise, at the rows `x`."""
    xp = be.xp
    return xp.sum(weights * xp.square(_matvec(be, f, x) - targets))


def row_systems(
    be: Any,
    fixed: Any,
    cols: Any,
    cols_t: Any,
    weights: Any,
    targets: Any,
    row_reg: Any,
    col_reg: Any,
    prior: Any,
) -> tuple[Any, Any, Any]:
    """The systems `(A [B, d, d], b [B, d])` of a block of rows (arguments as `row_solve`) and
    the block's gathered `[B, L, d]` fixed rows."""
    xp = be.xp
    b, length = (int(s) for s in cols.shape)
    f = gather_rows(be, fixed, cols)  # [B, L, d]
    ft = gather_rows_t(be, fixed, cols_t) * xp.reshape(weights, (b, 1, length))
    gram = xp.matmul(ft, f)  # Σ_l w_l f_l f_lᵀ: [B, d, L] @ [B, L, d]
    return _system(be, gram, row_reg, col_reg, prior), _rhs(be, f, weights, targets), f


def _system(be: Any, gram: Any, row_reg: Any, col_reg: Any, prior: Any) -> Any:
    """The rows' systems `A = Σ w f fᵀ + diag(ρ c) + P`: `[B, d, d]` from their `gram`
    `[B, d, d]`, `row_reg` `[B]`, `col_reg` `[d]` and `prior` `[d, d]`."""
    xp = be.xp
    d = int(gram.shape[-1])
    diag = xp.reshape(row_reg, (-1, 1)) * xp.reshape(col_reg, (1, d))  # [B, d]
    eye = xp.reshape(be.asarray(np.eye(d, dtype=np.float32)), (1, d, d))
    return gram + xp.reshape(diag, (-1, 1, d)) * eye + xp.reshape(prior, (1, d, d))


def row_solve(
    be: Any,
    fixed: Any,
    cols: Any,
    weights: Any,
    targets: Any,
    row_reg: Any,
    col_reg: Any,
    prior: Any,
    *,
    cols_t: Any = None,
    solver: str = "cholesky",
    x0: Any = None,
    cg_steps: int = 3,
) -> Any:
    """The rows `x_r` of the module docstring's weighted ridge regressions, for a block of rows.

    Args:
        be: the backend.
        fixed: `[M, d]`, F.
        cols: int32 `[B, L]`, the fixed row of each observation slot of each row.
        weights: float32 `[B, L]`, w (0 for padding slots: they then add nothing).
        targets: float32 `[B, L]`, y.
        row_reg: float32 `[B]`, ρ (> 0 for a row without observations, or its system is singular).
        col_reg: float32 `[d]`, c.
        prior: float32 `[d, d]`, P (symmetric positive semi-definite).
        cols_t: int32 `[L, B]`, `cols` transposed (required for "cholesky").
        solver: "cholesky" (exact) or "cg".
        x0: `[B, d]`, the starting rows of CG (required for "cg").
        cg_steps: number of CG steps.

    Returns:
        `[B, d]`.
    """
    if solver == "cholesky":
        if cols_t is None:
            raise ArgumentValueError("the cholesky solver needs cols_t, the transposed slots")
        system, rhs, _ = row_systems(
            be, fixed, cols, cols_t, weights, targets, row_reg, col_reg, prior
        )
        return raw_ops(be).solve(system, rhs)
    if solver != "cg":
        raise ArgumentValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if x0 is None:
        raise ArgumentValueError("the cg solver starts from x0: pass the current rows")
    f = gather_rows(be, fixed, cols)  # [B, L, d], gathered once for every CG step
    return _cg(be, f, weights, targets, row_reg, col_reg, prior, x0, cg_steps)[0]


def _cg(
    be: Any,
    f: Any,
    weights: Any,
    targets: Any,
    row_reg: Any,
    col_reg: Any,
    prior: Any,
    x0: Any,
    cg_steps: int,
    seg_row: Any = None,
) -> tuple[Any, Any]:
    """CG on a block's systems from `x0`, on its gathered rows `f` `[B, L, d]`: `(x [B, d],
    the block's observed loss at x0)` (`observed_loss`, from the first residual's predictions).

    With `seg_row` (int32 `[S]`): `f` `[S, L, d]`, `weights` and `targets` `[S, L]` are the
    segments of the block's `B` rows (`x0` `[B, d]`), segment s a part of row `seg_row[s]`; a
    row's products are its segments' summed (`cfcore.data.row_blocks.row_blocks`)."""
    xp = be.xp
    rows = int(x0.shape[0])
    if seg_row is None:
        spread = _identity
        gather = _identity
    else:

        def spread(x: Any) -> Any:  # [S, d] segments' sums -> [B, d] rows'
            return raw_ops(be).segment_sum(x, seg_row, rows)

        def gather(x: Any) -> Any:  # [B, d] rows -> [S, d] each segment's row
            return xp.take(x, seg_row)

    return cg_rows(
        be,
        lambda x: _matvec(be, f, gather(x)),
        lambda a: spread(_vecmat(be, a, f)),
        weights,
        targets,
        row_reg,
        col_reg,
        prior,
        x0,
        cg_steps,
    )


def cg_rows(
    be: Any,
    predict: Callable[[Any], Any],
    accumulate: Callable[[Any], Any],
    weights: Any,
    targets: Any,
    row_reg: Any,
    col_reg: Any,
    prior: Any,
    x0: Any,
    cg_steps: int,
) -> tuple[Any, Any]:
    """CG on the systems of rows `x0` `[B, d]` whose observations are reached through two
    products: `predict(x)`, each observation's `⟨f, x_row⟩` (`[B, L]` for padded blocks, `[n]`
    for a CSR layout), and `accumulate(a)`, each row's `Σ a f` over its observations (`[B, d]`);
    `weights` and `targets` in `predict`'s shape. Returns `(x [B, d], the observed loss at x0)`
    (`observed_loss`, from the first residual's predictions)."""
    xp = be.xp
    d = int(x0.shape[1])
    diag = xp.reshape(row_reg, (-1, 1)) * xp.reshape(col_reg, (1, d))  # [B, d]

    def product(x: Any, fx: Any) -> Any:
        """`A x` from `fx` = ⟨f_l, x⟩ per observation."""
        return accumulate(weights * fx) + diag * x + xp.matmul(x, prior)

    def matvec(x: Any) -> Any:
        return product(x, predict(x))

    # r = b − A x0 as two terms (b alone, then A x0), not one pass over f for Σ w (y − ⟨f, x0⟩) f
    # nor b and Σ w ⟨f, x0⟩ f as two rows of one product: CG's few steps amplify rounding, and
    # either changes the float32 error of the ill-conditioned biased systems from 2e-5 (the
    # conformance suite's bound) to 4e-5-9e-5.
    fx0 = predict(x0)  # the predictions at x0: also the observed loss
    loss = xp.sum(weights * xp.square(fx0 - targets))
    x = x0
    r = accumulate(weights * targets) - product(x, fx0)
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
    return x, loss


def _identity(x: Any) -> Any:
    return x


def segment_systems(
    be: Any,
    fixed: Any,
    block: dict[str, Any],
    targets: Any,
    col_reg: Any,
    prior: Any,
) -> tuple[Any, Any, Any]:
    """`row_systems` of a block of segments (`cfcore.data.row_blocks.row_blocks`: `cols`
    `[S, L]`, `cols_t` `[L, S]`, `weights`, `seg_row` `[S]`, `row_reg` `[B]`): each segment's
    partial Gramian and right-hand side summed into its row's. Returns `(A [B, d, d], b [B, d],
    the gathered [S, L, d] rows)`."""
    xp = be.xp
    s, length = (int(v) for v in block["cols"].shape)
    rows = int(block["row_reg"].shape[0])
    d = int(fixed.shape[1])
    f = gather_rows(be, fixed, block["cols"])  # [S, L, d]
    ft = gather_rows_t(be, fixed, block["cols_t"]) * xp.reshape(block["weights"], (s, 1, length))
    parts = xp.reshape(xp.matmul(ft, f), (s, d * d))  # each segment's Σ_l w_l f_l f_lᵀ
    gram = xp.reshape(raw_ops(be).segment_sum(parts, block["seg_row"], rows), (rows, d, d))
    system = _system(be, gram, block["row_reg"], col_reg, prior)
    rhs = raw_ops(be).segment_sum(_rhs(be, f, block["weights"], targets), block["seg_row"], rows)
    return system, rhs, f


HalfSweep = Callable[..., Any]


def make_half_sweep(
    be: Any,
    col_reg: np.ndarray | None = None,
    *,
    solver: str,
    cg_steps: int,
    offsets: bool = False,
    observed: bool = False,
) -> HalfSweep:
    """One half of an ALS sweep: every row of one table solved with the other table fixed.

    Args:
        be: the backend.
        col_reg: float32 `[d]`, c of every row's system, compiled in as a constant; or None:
            `half` reads it at run time from its own `col_reg` argument (a device array), so
            that one compiled sweep serves every value of the coefficients in it.
        solver: "cholesky" or "cg".
        cg_steps: CG steps per half-sweep.
        offsets: the targets are `values − offset[col]` (a bias of the fixed side, given to
            `half`), else `values`.
        observed: `half` also returns the observed loss `Σ w (⟨f, x⟩ − y)²` over every
            observation at the current rows (`observed_loss`), from predictions the solver
            makes anyway (CG's first residual; one more pass over the gathered rows for
            Cholesky): the objective of a sweep without a pass of its own over the data.

    Returns:
        `half(fixed, current, blocks, prior, offset=None, extra=None, col_reg=None) -> new
        [R, d]` (`(new, loss)` with `observed`): `fixed` `[M, d]`, `current` `[R, d]` (CG's warm
        start; also the shape of the result), `blocks` the device form of
        `cfcore.data.row_blocks.row_blocks` (or, on a backend with `row_dots` and `row_sums`
        for CG, and `row_grams` too for Cholesky, of `row_csr`), `prior` `[d, d]`, `offset` `[M]`, `extra` `[R, d]`
        added to each row's right-hand side (Cholesky only: the prior-mean term of a perturbed
        system, `cfcore.models.posterior`), `col_reg` float32 `[d]` (required when
        `make_half_sweep` was given none, refused otherwise). Usable inside compiled code.
    """
    xp = be.xp
    const = None if col_reg is None else np.asarray(col_reg, np.float32)

    def targets_of(data: dict[str, Any], block: dict[str, Any]) -> Any:
        if not offsets:
            return block["values"]
        cols = block["cols"]
        return block["values"] - xp.reshape(
            xp.take(data["offset"], xp.reshape(cols, (-1,))), tuple(int(s) for s in cols.shape)
        )

    def systems(data: dict[str, Any], block: dict[str, Any]) -> tuple[Any, Any, Any]:
        """The block's Cholesky systems and its observed loss (0 unless `observed`)."""
        targets = targets_of(data, block)
        if "seg_row" in block:
            system, rhs, f = segment_systems(
                be, data["fixed"], block, targets, data["col_reg"], data["prior"]
            )
        else:
            system, rhs, f = row_systems(
                be,
                data["fixed"],
                block["cols"],
                block["cols_t"],
                block["weights"],
                targets,
                block["row_reg"],
                data["col_reg"],
                data["prior"],
            )
        if "extra" in data:
            rhs = rhs + xp.take(data["extra"], block["ids"])
        loss = xp.sum(xp.zeros_like(block["row_reg"]))
        if observed:
            x0 = xp.take(data["current"], block["ids"])
            if "seg_row" in block:
                x0 = xp.take(x0, block["seg_row"])
            loss = observed_loss(be, f, block["weights"], targets, x0)
        return system, rhs, loss

    def solve_block(data: dict[str, Any], block: dict[str, Any]) -> tuple[Any, Any]:
        """`([B, d] solutions, observed loss)` of one block (a bucket's arrays without their K
        axis)."""
        if solver == "cholesky":
            system, rhs, loss = systems(data, block)
            return raw_ops(be).solve(system, rhs), loss
        return _cg(
            be,
            gather_rows(be, data["fixed"], block["cols"]),
            block["weights"],
            targets_of(data, block),
            block["row_reg"],
            data["col_reg"],
            data["prior"],
            xp.take(data["current"], block["ids"]),
            cg_steps,
            block.get("seg_row"),
        )

    mapped = capability(be, "compile_map")
    if mapped is not None:
        # Each block's rows stacked into the bucket's [K, B, d] output by the loop itself; a
        # part of a concurrent half-sweep maps blocks `start` to `stop` − 1 of a bucket.
        solve_bucket = mapped(solve_block)
    else:
        # Without compile_map: a loop whose carry is the bucket's [K, B, d] output, block k's
        # rows put into place k through a one-hot select, not a product (0·NaN is NaN, and a
        # padding row's system may be singular).
        def body(carry: tuple[Any, Any], data: dict[str, Any], step: dict[str, Any]):
            out, total = carry
            k = int(step["slot"].shape[0])
            sol, loss = solve_block(data, step["block"])
            b, d = (int(s) for s in sol.shape)
            here = xp.reshape(step["slot"], (k, 1, 1)) > 0.5
            return xp.where(here, xp.reshape(sol, (1, b, d)), out), total + loss

        loop = be.compile_loop(body)

        def solve_bucket(data: dict[str, Any], bucket: dict[str, Any]) -> tuple[Any, Any]:
            k, b = (int(s) for s in bucket["ids"].shape)
            d = int(data["current"].shape[1])
            start = xp.reshape(xp.zeros_like(xp.reshape(bucket["row_reg"], (-1,))), (k, b, 1))
            zeros = start * xp.reshape(xp.zeros_like(xp.sum(data["current"], axis=0)), (1, 1, d))
            steps = {"block": bucket, "slot": be.asarray(np.eye(k, dtype=np.float32))}
            return loop((zeros, xp.sum(xp.zeros_like(bucket["row_reg"]))), data, steps)

    def solve_segments(
        data: dict[str, Any], buckets: list[dict[str, Any]], segments: list[tuple[int, int, int]]
    ) -> tuple[Any, Any]:
        """The rows of blocks `k0` to `k1` − 1 of bucket `j`, for each `(j, k0, k1)` of
        `segments` in order, concatenated (`[Σ (k1 − k0)·B, d]`), and their observed loss."""
        d = int(data["current"].shape[1])
        outs: list[Any] = []
        losses: list[Any] = []
        single: list[tuple[Any, Any]] = []  # Cholesky buckets of one block: solved together
        for j, k0, k1 in segments:
            bucket = buckets[j]
            k, b = (int(s) for s in bucket["ids"].shape)
            if k == 1:  # one block: no loop to compile
                block = {name: a[0] for name, a in bucket.items()}
                if solver == "cholesky":
                    system, rhs, loss = systems(data, block)
                    single.append((system, rhs))
                    outs.append(None)
                else:
                    sol, loss = solve_block(data, block)
                    outs.append(sol)
                losses.append(xp.reshape(loss, (1,)))
                continue
            if (k0, k1) == (0, k):
                sols, loss = solve_bucket(data, bucket)
            else:  # (only with compile_map: `_parts` plans no parts without it)
                sols, loss = solve_bucket(data, bucket, k0, k1)  # type: ignore[call-arg]
            outs.append(xp.reshape(sols, ((k1 - k0) * b, d)))
            losses.append(xp.reshape(loss, (-1,)))  # each block's (one, without compile_map)
        if single:
            # One batched solve for them all (row_blocks puts these buckets first, and a part
            # takes them all): each solve shape is compiled apart, and small buckets' solves
            # cost more to compile than to run.
            outs[: len(single)] = [
                raw_ops(be).solve(
                    _concat(xp, [a for a, _ in single]), _concat(xp, [r for _, r in single])
                )
            ]
        # Each block's loss, in order: summed once by `half`, so that parts (each a run of these
        # blocks) give the very total of one computation.
        return _concat(xp, outs), _concat(xp, losses)

    def solve_csr(data: dict[str, Any], layout: dict[str, Any]) -> tuple[Any, Any]:
        """Every row on a CSR layout (`cfcore.data.row_blocks.row_csr`) through the backend's
        sparse row products, a part of its rows at a time, each on its own fixed rows: `(new
        [R, d], observed loss)`. CG: two products a step (`row_dots`, `row_sums`); Cholesky:
        each row's system from `row_grams` and `row_sums`."""
        names = CSR_CAPABILITIES.get(solver, ())
        if not names or not has_capability(be, *names):
            raise ArgumentValueError(
                f"a CSR row layout solved by {solver} needs a backend with the "
                f"{', '.join(names)} capabilities; {getattr(be, 'name', be)!r} has not all: lay "
                "the rows out with row_blocks"
            )
        dots, sums = capability(be, "row_dots"), capability(be, "row_sums")
        rows: list[Any] = []
        losses: list[Any] = []
        for part in layout["csr"]:
            # The part's own fixed rows, gathered once: every CG step reads them from the cache.
            fixed = xp.take(data["fixed"], part["fixed"])
            targets = part["values"]
            if offsets:
                targets = targets - xp.take(xp.take(data["offset"], part["fixed"]), part["cols"])
            if solver == "cholesky":
                x, loss = csr_cholesky(data, part, fixed, targets, dots, sums)
            else:
                x, loss = cg_rows(
                    be,
                    lambda x, part=part, fixed=fixed: dots(part, fixed, x),
                    lambda a, part=part, fixed=fixed: sums(part, a, fixed),
                    part["weights"],
                    targets,
                    part["row_reg"],
                    data["col_reg"],
                    data["prior"],
                    xp.take(data["current"], part["ids"]),
                    cg_steps,
                )
            rows.append(x)
            losses.append(xp.reshape(loss, (1,)))
        return _concat(xp, rows), xp.sum(_concat(xp, losses))

    def csr_cholesky(
        data: dict[str, Any], part: dict[str, Any], fixed: Any, targets: Any, dots: Any, sums: Any
    ) -> tuple[Any, Any]:
        """A CSR part's rows solved exactly, `(x [B, d], observed loss at the current rows)`:
        the systems of `row_systems` (`Σ w f fᵀ + diag(ρ c) + P`, `b = Σ w y f`) from the
        part's sparse products."""
        weights = part["weights"]
        gram = capability(be, "row_grams")(part, weights, fixed)
        system = _system(be, gram, part["row_reg"], data["col_reg"], data["prior"])
        rhs = sums(part, weights * targets, fixed)
        if "extra" in data:
            rhs = rhs + xp.take(data["extra"], part["ids"])
        loss = xp.sum(xp.zeros_like(part["row_reg"]))
        if observed:
            fx0 = dots(part, fixed, xp.take(data["current"], part["ids"]))
            loss = xp.sum(weights * xp.square(fx0 - targets))
        return raw_ops(be).solve(system, rhs), loss

    def half(
        fixed: Any,
        current: Any,
        blocks: dict[str, Any],
        prior: Any,
        offset: Any = None,
        extra: Any = None,
        col_reg: Any = None,
    ):
        if (col_reg is None) == (const is None):
            raise ArgumentValueError(
                "the column regularization is given once: to make_half_sweep (a constant) or "
                "to each half-sweep (col_reg=, read at run time), "
                + ("got neither" if col_reg is None else "got both")
            )
        col = be.asarray(const) if col_reg is None else col_reg
        data = {"fixed": fixed, "current": current, "prior": prior, "col_reg": col}
        if offsets:
            data["offset"] = offset
        if extra is not None:
            if solver != "cholesky":
                raise ArgumentValueError(
                    f"extra right-hand sides need the cholesky solver, not {solver!r}"
                )
            data["extra"] = extra
        if "csr" in blocks:
            new, loss = solve_csr(data, blocks)
            return (new, loss) if observed else new
        buckets = blocks["buckets"]
        d = int(current.shape[1])
        groups = _parts(be, buckets, solver, d)
        if groups is None:
            rows, losses = solve_segments(
                data, buckets, [(j, 0, int(b["ids"].shape[0])) for j, b in enumerate(buckets)]
            )
        else:
            # Independent parts (each reads the same arguments, none another's output), which
            # the backend may run at once; their rows in order are the whole concatenation.
            fns = [
                lambda data, buckets, group=group: solve_segments(data, buckets, group)
                for group in groups
            ]
            solved = raw_ops(be).compile_parts(fns)(data, buckets)
            rows = _concat(xp, [r for r, _ in solved])
            losses = _concat(xp, [loss for _, loss in solved])
        new = xp.take(rows, blocks["position"])
        if not observed:
            return new
        return new, xp.sum(losses)

    return half


def _concat(xp: Any, arrays: list[Any]) -> Any:
    return arrays[0] if len(arrays) == 1 else xp.concat(arrays, axis=0)


def block_work(rows: int, length: int, d: int, solver: str) -> float:
    """The work of solving a block of `rows` rows of `length` slots, in padded observation slots
    (what balances concurrent parts): a CG step passes over each slot's `d` floats twice, so CG's
    work is the slots; Cholesky's per row is `2·L·d²` for the Gramian and `d³/3` for the
    factorization, `L + d/6` slots' worth."""
    if solver == "cholesky":
        return float(rows) * (length + d / 6.0)
    return float(rows * length)


def plan_parts(work: list[float], parts: int) -> list[tuple[int, int]]:
    """Consecutive units `[lo, hi)` cut into at most `parts` groups of about equal work.

    Each cut falls at the unit boundary nearest its share (`total·p/parts`), so that the part of
    most work exceeds `total/parts` by less than one unit; no group is empty.

    Args:
        work: the work of each unit, in order (≥ 0).
        parts: the most groups (≥ 1).

    Returns:
        `[(lo, hi), ...]` covering `0..len(work)` in order.

    Example:
        >>> plan_parts([4.0, 1.0, 1.0, 1.0, 1.0], 2)
        [(0, 1), (1, 5)]
        >>> plan_parts([1.0, 1.0], 5)
        [(0, 1), (1, 2)]
    """
    n = len(work)
    parts = max(1, min(int(parts), n))
    prefix = np.concatenate([[0.0], np.cumsum(np.asarray(work, np.float64))])
    cuts = [0]
    for p in range(1, parts):
        target = prefix[-1] * p / parts
        # The boundary nearest the target, after the last cut and leaving a unit per later part.
        lo, hi = cuts[-1] + 1, n - (parts - p)
        if lo > hi:
            break
        cuts.append(lo + int(np.argmin(np.abs(prefix[lo : hi + 1] - target))))
    cuts.append(n)
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]


def _parts(
    be: Any, buckets: list[dict[str, Any]], solver: str, d: int
) -> list[list[tuple[int, int, int]]] | None:
    """The concurrent parts of a half-sweep over `buckets` (static shapes), each a list of
    `(bucket, first block, end block)` segments in order; None: no parts (one computation, the
    backend runs parts one at a time here, or it has no `compile_parts`).

    One part (a small half-sweep) is still a part: where the backend runs parts at once, the
    other code of the step runs outside its compiled computations (TensorFlow's non-XLA graph),
    and the blocks' solves belong inside one.
    """
    width = capability(be, "concurrent_parts")
    if width is None or not has_capability(be, "compile_parts", "compile_map"):
        return None  # (a part maps a range of a bucket's blocks: compile_map too)
    parts = int(width())
    if parts <= 1:
        return None
    # The units: each block of a bucket of several blocks; Cholesky's one-block buckets all in
    # one (they are solved by one batched solve), CG's one each.
    units: list[list[tuple[int, int, int]]] = []
    work: list[float] = []
    singles: list[tuple[int, int, int]] = []
    single_work = 0.0
    for j, bucket in enumerate(buckets):
        k, b, length = (int(s) for s in bucket["cols"].shape)
        if k == 1 and solver == "cholesky":
            singles.append((j, 0, 1))
            single_work += block_work(b, length, d, solver)
            continue
        for t in range(k):
            units.append([(j, t, t + 1)])
            work.append(block_work(b, length, d, solver))
    if singles:
        units.insert(0, singles)
        work.insert(0, single_work)
    if MIN_PART_WORK > 0:
        parts = min(parts, max(1, int(sum(work) // MIN_PART_WORK)))
    groups = []
    for lo, hi in plan_parts(work, parts):
        segments: list[tuple[int, int, int]] = []
        for unit in units[lo:hi]:
            for j, k0, k1 in unit:
                if segments and segments[-1][0] == j and segments[-1][2] == k0:
                    segments[-1] = (j, segments[-1][1], k1)  # blocks of one bucket: one range
                else:
                    segments.append((j, k0, k1))
        groups.append(segments)
    return groups


def gravity_scale(count: int, n: int, m: int) -> np.ndarray:
    """|Ω|/(N·M) as a float32 scalar: the gravity prior of a half-sweep is λg times it times the
    fixed table's Gramian (the objective multiplied by |Ω|)."""
    return np.asarray(count / (float(n) * float(m)), np.float32)


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
