"""Alternating least squares models: `WALS` (the notebook's regularized objective) and `IALS`.

Both train through the one trainer (`cfcore.train.Session`) with no optimizer: a step is one
sweep, every user row solved with the items fixed, then every item row with the users fixed
(`cfcore.maths.als`), compiled in chunks of sweeps under the same non-finite guard as gradient
steps, with one history row per `eval_every` sweeps (by default one after the last).

Example:
    >>> import cfcore
    >>> r = cfcore.synthetic_ratings(200, 100, 4000, seed=0)
    >>> model = cfcore.WALS(embedding_dim=8, regularization_coeff=0.1, gravity_coeff=1.0)
    >>> history = model.fit(r, steps=5, progress=False)                 # doctest: +SKIP
    >>> implicit = cfcore.IALS(embedding_dim=16).fit(r.to_implicit(threshold=3.5), steps=10)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from ..backend.capabilities import raw_ops
from ..backend.registry import get_backend
from ..data.ratings import Ratings, as_ratings
from ..data.row_blocks import row_blocks
from ..errors import ArgumentValueError
from ..maths import functional, objectives
from ..maths.als import gravity_scale, make_half_sweep
from ..persistence import register_model
from ..specs import IALSSpec, WALSSpec
from ..train.hyper import HYPER, hyper_values, spec_key, with_coefficients
from ..train.placement import Placement
from ..train.session import Session
from .base import FACTOR_ARGUMENTS, PENALTY_ARGUMENTS, CommandLine, FitPlan, whole_batch
from .factor import LAYOUTS, FactorModel, RatingModel, TrainingSet
from .mf import MF_COLUMNS, coefficient_loss, evaluate_terms, rating_row

Sweep = Callable[[dict[str, Any], Any], tuple[Any, dict[str, Any]]]
Half = Callable[[dict[str, Any], Any], dict[str, Any]]


# ---------------------------------------------------------------------------- WALS


def wals_blocks(
    spec: WALSSpec, train: Ratings, placement: Placement | None = None
) -> dict[str, Any]:
    """The host data of a WALS sweep: the ratings, their blocks by user and by item (each
    device's own with a sharded `placement`; each row's ρ = λ·|Ω|/N or λ·|Ω|/M in them) and
    `gravity_scale`, |Ω|/(N·M) (float32 scalar). λg is not in it: the sweep reads it from the
    data's `hyper` entry (`cfcore.train.hyper`, what `fit` adds), else from `spec`."""
    n, m, count = train.num_users, train.num_items, len(train)
    lam = spec.regularization_coeff
    ones = np.ones(count, np.float32)
    by_user, by_item = (placement or Placement(None)).side_blocks(
        row_blocks,
        (train.users, train.items, train.values, ones, np.full(n, lam * count / n)),
        (train.items, train.users, train.values, ones, np.full(m, lam * count / m)),
        dim=spec.embedding_dim,
        solver=spec.linear_solver,
    )
    ratings = {"users": train.users, "items": train.items, "values": train.values}
    return {
        "ratings": ratings,
        "by_user": by_user,
        "by_item": by_item,
        "gravity_scale": gravity_scale(count, n, m),
    }


def wals_halves(be: Any, spec: WALSSpec, placement: Placement | None = None) -> tuple[Half, Half]:
    """The two halves of a WALS sweep, `half(params, data) -> params` (users, then items),
    each row solved where `placement` keeps it; `data` as `wals_blocks` (placed): the gravity
    prior λg·|Ω|/(N·M)·VᵀV from its `gravity_scale` and `hyper` (else `spec`'s λg)."""

    def grav(data: Any) -> Any:
        return with_coefficients(spec, data).gravity_coeff * data["gravity_scale"]

    return gramian_halves(be, spec, placement, grav)


def gramian_halves(
    be: Any, spec: Any, placement: Placement | None, weight: Callable[[Any], Any]
) -> tuple[Half, Half]:
    """The two halves of a sweep whose prior on each row is `weight(data)` times the other
    table's Gramian (WALS's gravity, iALS's unobserved weight), `half(params, data) -> params`,
    each row solved where `placement` keeps it."""
    xp = be.xp
    ops = raw_ops(be)
    half = (placement or Placement(be)).half_sweep(
        make_half_sweep(
            be,
            np.ones(spec.embedding_dim, np.float32),
            solver=spec.linear_solver,
            cg_steps=spec.cg_steps,
        )
    )

    def users(params: dict[str, Any], data: Any) -> dict[str, Any]:
        u, v = params["user"], params["item"]
        u = half(v, u, data["by_user"], weight(data) * ops.gramian(v))
        return {"user": xp.astype(u, "float32"), "item": v}

    def items(params: dict[str, Any], data: Any) -> dict[str, Any]:
        u, v = params["user"], params["item"]
        v = half(u, v, data["by_item"], weight(data) * ops.gramian(u))
        return {"user": u, "item": xp.astype(v, "float32")}

    return users, items


def wals_sweep(be: Any, spec: WALSSpec, placement: Placement | None = None) -> Sweep:
    """`sweep(params, data) -> (objective at params, params after users then items)`, on the
    arrays of `placement` (default: one device); the coefficients read from `data` (`hyper`, in
    `data["ratings"]` too for the objective) where it has them, else from `spec`."""
    placement = placement or Placement(be)
    loss = placement.placed(coefficient_loss(be, spec.objective))
    return halves_sweep(placement, loss, *wals_halves(be, spec, placement))


def halves_sweep(placement: Placement, loss: Callable[..., Any], users: Half, items: Half) -> Sweep:
    """`sweep(params, data) -> (loss at params on data["ratings"], params after the half-sweep
    `users` then `items`)`, in `placement`'s scope (the priors' Gramians: per-shard sums when
    sharded)."""

    def sweep(params: dict[str, Any], data: Any) -> tuple[Any, dict[str, Any]]:
        total, _ = loss(params, data["ratings"])
        with placement.scope():
            return total, items(users(params, data), data)

    return sweep


def with_hyper(place: Placement, spec: Any, data: dict[str, Any], *keys: str) -> dict[str, Any]:
    """Placed sweep `data` with `spec`'s coefficients (`hyper_values`, placed) added at its top
    and in its entries `keys` (the ratings the objective is evaluated on): a sweep reads them at
    run time, so one compiled sweep serves every value (`cfcore.train.hyper`)."""
    hyper = place.data(hyper_values(spec))
    return {**data, **{k: {**data[k], HYPER: hyper} for k in keys}, HYPER: hyper}


def sweep_data(
    model: FactorModel, session: Session, train: Ratings, *keys: str, variant: Any = None
) -> dict[str, Any]:
    """The device data of `model`'s sweeps on `train`: its host layouts (`model._layouts`,
    built once per training set) placed, with the coefficients (`with_hyper`, in `keys`)."""
    place = session.placement
    host = model._layouts(train, place, variant)
    return with_hyper(place, model.spec, place.data(host), *keys)


@register_model
class WALS(RatingModel):
    """The notebook's regularized MF objective, minimised by alternating least squares.

    Same objective and hyper-parameter names as `RegularizedMF`: observed MSE + λr·(ΣU²/N +
    ΣV²/M) + λg·(1/(N·M))·Σᵢⱼ⟨Uᵢ,Vⱼ⟩². With one table fixed it is quadratic in each row of the
    other, which a sweep solves exactly (see `WALSSpec`): no optimizer and no learning rate, and
    each half-sweep can only lower the objective. Fold-in (`fold_in`, `add_users`) solves the very
    system of a user row.

    Args:
        embedding_dim: d.
        init_stddev: standard deviation of the normal initial embeddings.
        regularization_coeff: λr (> 0).
        gravity_coeff: λg.
        solver: "auto" (Cholesky up to d = 128, else CG), "cholesky" or "cg".
        cg_steps: CG steps per half-sweep (warm-started from the current rows).
    """

    kind = "wals"
    spec_type = WALSSpec
    trainers = {"als": "ALS sweeps"}
    command_line = CommandLine(
        "wals", "ratings", "sweeps",
        arguments={**FACTOR_ARGUMENTS, **PENALTY_ARGUMENTS, "--solver": "solver"},
        defaults={"--dim": 35, "--init-stddev": 0.1, "--steps": 20},
    )  # fmt: skip

    # fmt: off
    _S = WALSSpec  # the defaults live in the spec only

    def __init__(self, embedding_dim: int = _S.embedding_dim, init_stddev: float = _S.init_stddev,
                 regularization_coeff: float = _S.regularization_coeff,
                 gravity_coeff: float = _S.gravity_coeff, solver: str = _S.solver,
                 cg_steps: int = _S.cg_steps) -> None:
        super().__init__(WALSSpec(embedding_dim, init_stddev, regularization_coeff,
                                  gravity_coeff, solver, cg_steps))
    # fmt: on

    def fit(
        self,
        train: Ratings,
        *,
        test: Ratings | None = None,
        steps: int,
        backend: Any = None,
        seed: int = 0,
        eval_every: int | None = None,
        progress: bool = True,
        devices: Any = None,
    ) -> pd.DataFrame:
        """Runs `steps` sweeps (users then items); a second call continues.

        Args:
            train: training ratings (or a dataset; its `.ratings` are used).
            test: optional held-out ratings over the same catalog.
            steps: number of sweeps.
            backend: "jax", "tf", "torch", "numpy" (float64), a backend instance, or None.
            seed: seeds the initial embeddings (first fit only).
            eval_every: sweeps between two history rows (None: one row after the last sweep,
                besides the row of step 0; each row costs a pass over the data and a wait for
                the device, so following every sweep (1) can double a small fit's time).
            progress: show a progress bar.
            devices: None (one device), or an int k / a list of `jax.Device` or
                `tf.config.LogicalDevice` (JAX and TensorFlow backends): both tables
                row-sharded; each device solves its own rows (see `cfcore.train.sharding`).

        Returns:
            The whole history: `step` (sweeps), `train_mse`, `test_mse` (with `test`),
            `observed_loss`, `regularization_loss`, `gravity_loss`, `total_loss`, as
            `RegularizedMF`.
        """
        run = (steps, steps if eval_every is None else eval_every, seed, backend, devices, progress)
        return self._fit(TrainingSet(train, test), "als", None, *run)

    def _host_layouts(self, train: Ratings, placement: Placement, variant: Any) -> Any:
        return wals_blocks(self.spec, train, placement)

    def _plan(self, session: Session, inputs: TrainingSet, seed: int) -> FitPlan:
        spec, be, place = self.spec, session.backend, session.placement
        data = sweep_data(self, session, inputs.train, "ratings")
        test_data = None
        if inputs.test is not None:
            test_data = {**place.data(be.device_batch(inputs.test)), HYPER: data[HYPER]}
        # Keyed by the spec's structure: coefficients and the data set's numbers are data.
        chunk = session.sweep_chunk(
            ("wals", spec_key(spec)), wals_sweep(be, spec, place), whole_batch
        )
        terms = partial(evaluate_terms, be, spec.objective, placement=place)
        row = rating_row(session, terms, data["ratings"], test_data, MF_COLUMNS)
        return FitPlan(chunk, data, row, ("train_mse", "test_mse", "total_loss"))

    def _objective_terms(self, be: Any, ratings: Ratings) -> dict[str, Any]:
        return functional.mf_loss_terms(be, self.spec.objective, self.embeddings_numpy(), ratings)


# ---------------------------------------------------------------------------- iALS


PAIR_CHECK_SLOTS = 1 << 21
"""Slots (int32) of the table `repeats_pairs` marks a run of rows' pairs in: 8 MB, in cache,
so that its scattered writes and reads cost little beside a sort."""


def repeats_pairs(rows: np.ndarray, cols: np.ndarray, num_rows: int, num_cols: int) -> bool:
    """Whether a pair `(rows[k], cols[k])` occurs twice.

    Pairs grouped by row (`rows` nondecreasing, as ratings read by user are; or grouped by col,
    the roles swapped) are checked without a sort: the rows are taken `C` at a time
    (`C·num_cols ≤ PAIR_CHECK_SLOTS`), each pair k writes k into the slot of its pair in a
    table of `C·num_cols` slots, and a pair that reads back another index shares its slot with
    an earlier or later pair (whichever write won). Other pairs: one sort of their keys.

    Args:
        rows, cols: int `[n]` ids in `[0, num_rows)` and `[0, num_cols)`.
        num_rows, num_cols: their bounds.
    """
    rows, cols = np.asarray(rows), np.asarray(cols)
    n = len(rows)
    if n < 2:
        return False
    if (rows[1:] < rows[:-1]).any():
        if not (cols[1:] < cols[:-1]).any():
            return repeats_pairs(cols, rows, num_cols, num_rows)
        # (uint32 keys where they fit: NumPy sorts them about twice as fast as int64 ones.)
        kind = np.uint64 if num_rows * num_cols > 1 << 32 else np.uint32
        key = rows.astype(kind) * kind(num_cols) + cols.astype(kind)
        key.sort()
        return bool((key[1:] == key[:-1]).any())
    per = max(1, PAIR_CHECK_SLOTS // max(num_cols, 1))  # rows a run
    slot = (rows % per).astype(np.int64) * num_cols + cols  # the pair's slot in its run's table
    table = np.empty(per * num_cols, np.int32 if n < 1 << 31 else np.int64)
    index = np.arange(n, dtype=table.dtype)
    # The first pair of each run of `per` rows (rows nondecreasing).
    bounds = np.searchsorted(rows, np.arange(0, int(rows[-1]) + per, per)).tolist() + [n]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=False):
        if hi > lo:
            table[slot[lo:hi]] = index[lo:hi]
            if (table[slot[lo:hi]] != index[lo:hi]).any():
                return True
    return False


def _repeats_pairs(train: Ratings) -> bool:
    return repeats_pairs(train.users, train.items, train.num_users, train.num_items)


def check_implicit(train: Ratings) -> None:
    """Positives for iALS: each (user, item) pair once, counts ≥ 0. The pair check is cached
    with the layouts (a later `fit` on the same, unchanged `Ratings` does not sort it again)."""
    if LAYOUTS.get(train, ("repeats pairs",), lambda: _repeats_pairs(train)):
        raise ArgumentValueError(
            "iALS takes each (user, item) pair once, but these interactions repeat pairs: "
            "merge them first, e.g. ratings.to_implicit(counts=True)"
        )
    if (train.values < 0).any():
        raise ArgumentValueError(
            f"iALS interaction counts must be >= 0, got {float(train.values.min()):g}: pass "
            "positives, e.g. ratings.to_implicit(threshold=3.5)"
        )


def unregularized_rows(spec: IALSSpec, counts: np.ndarray, other: int) -> np.ndarray:
    """The rows (indices, ascending) whose regularization λ·(|S_r| + α₀·other)^ν is 0: rows
    without positives when α₀ = 0 and ν > 0 (ν = 0 gives λ·0⁰ = λ)."""
    return np.flatnonzero(spec.row_regularization(counts, other) == 0)


def unregularized_cause(spec: IALSSpec) -> str:
    """Why a row without positives has no solution under `spec` (see `unregularized_rows`)."""
    nu = spec.regularization_exponent
    return (
        f"with unobserved_weight=0 and regularization_exponent={nu:g} its regularization "
        f"λ·(0 + 0)^{nu:g} is 0 whatever regularization_coeff is, so its linear system is all "
        "zeros (no unique solution: a sweep makes it NaN)"
    )


def _unregularized(spec: IALSSpec, train: Ratings) -> tuple[str, int, int, int] | None:
    """The first side with rows `unregularized_rows` finds: `(side, its first such row, how
    many, rows of that side)`, or None."""
    n, m = train.num_users, train.num_items
    sides = (
        ("user", np.bincount(train.users, minlength=n), m),
        ("item", np.bincount(train.items, minlength=m), n),
    )
    for side, counts, other in sides:
        empty = unregularized_rows(spec, counts, other)
        if len(empty):
            return side, int(empty[0]), len(empty), len(counts)
    return None


def check_regularized(spec: IALSSpec, train: Ratings) -> None:
    """Refuses positives with a user or item row whose system has no solution under `spec`
    (`unregularized_rows`): naming the first such row, how many there are and why, before any
    sweep (which would only diverge). Cached with the layouts (a later `fit` on the same,
    unchanged `Ratings` does not count its rows again)."""
    found = LAYOUTS.get(train, ("unregularized rows", spec), lambda: _unregularized(spec, train))
    if found is None:
        return
    side, row, empty, rows = found
    name = f"{side} {row}"
    ids = train.user_ids if side == "user" else train.item_ids
    if ids is not None:
        name += f" (id {np.asarray(ids)[row : row + 1].tolist()[0]!r})"
    raise ArgumentValueError(
        f"iALS cannot fit these positives: {name} has no positives ({empty} of "
        f"{rows} {side}s have none); {unregularized_cause(spec)}. Pass "
        "unobserved_weight > 0, regularization_exponent=0 (a plain λ), or ratings in which "
        "every user and item has a positive"
    )


def ials_blocks(
    spec: IALSSpec, train: Ratings, placement: Placement | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """The host data of an iALS sweep: positives with each row's λ, and blocks per side (each
    device's own with a sharded `placement`). λ, ν and α are in them (each row's
    λ·(|S_r| + α₀·other)^ν, the confidences as weights); α₀ is not: the sweep reads it from the
    data's `hyper` entry (what `fit` adds), else from `spec`."""
    n, m = train.num_users, train.num_items
    user_reg = spec.row_regularization(np.bincount(train.users, minlength=n), m)
    item_reg = spec.row_regularization(np.bincount(train.items, minlength=m), n)
    conf = (1.0 + spec.confidence * train.values.astype(np.float64)).astype(np.float32)
    ones = np.ones(len(train), np.float32)
    by_user, by_item = (placement or Placement(None)).side_blocks(
        row_blocks,
        (train.users, train.items, ones, conf, user_reg),
        (train.items, train.users, ones, conf, item_reg),
        dim=spec.embedding_dim,
        solver=spec.linear_solver,
    )
    positives = {
        "users": train.users,
        "items": train.items,
        "values": train.values,
        "user_reg": user_reg.astype(np.float32),
        "item_reg": item_reg.astype(np.float32),
    }
    return {"positives": positives, "by_user": by_user, "by_item": by_item}


def ials_halves(be: Any, spec: IALSSpec, placement: Placement | None = None) -> tuple[Half, Half]:
    """The two halves of an iALS sweep, `half(params, data) -> params`, each row solved where
    `placement` keeps it; α₀ read from `data` (`hyper`) where it has it, else from `spec`."""
    return gramian_halves(
        be, spec, placement, lambda data: with_coefficients(spec, data).unobserved_weight
    )


def ials_sweep(be: Any, spec: IALSSpec, placement: Placement | None = None) -> Sweep:
    """`sweep(params, data) -> (objective at params, params after users then items)`, on the
    arrays of `placement` (default: one device); α₀ and α read from `data` (`hyper`, in
    `data["positives"]` too) where it has them, else from `spec`.

    The objective costs no pass of its own over the positives: its observed part comes from the
    predictions the user half-sweep makes at the current rows anyway (CG's first residual,
    `make_half_sweep(observed=True)`; sharded: each device's, summed), its other parts from the
    two Gramians (the item one the user half's prior needs) and the rows' squared norms. A
    placement whose half-sweeps cannot return that loss (`Placement.observed_halves`) computes
    it apart (`objectives.ials_loss_terms`).
    """
    placement = placement or Placement(be)
    if not placement.observed_halves:
        return _ials_sweep_apart(be, spec, placement)
    xp = be.xp
    ops = raw_ops(be)
    col = np.ones(spec.embedding_dim, np.float32)
    kw = {"solver": spec.linear_solver, "cg_steps": spec.cg_steps}
    user_half = placement.half_sweep(make_half_sweep(be, col, observed=True, **kw), observed=True)
    item_half = placement.half_sweep(make_half_sweep(be, col, **kw))

    def sweep(params: dict[str, Any], data: Any) -> tuple[Any, dict[str, Any]]:
        u, v = params["user"], params["item"]
        a0 = with_coefficients(spec, data).unobserved_weight
        pos = data["positives"]
        with placement.scope():  # the Gramians: per-shard sums when sharded
            gram_v = ops.gramian(v)
            new_u, observed = user_half(v, u, data["by_user"], a0 * gram_v)
            # The parts of `objectives.ials_loss_terms` at (u, v), the observed one from the
            # half; the squared norms of the tables without their padding rows (`view`).
            unobserved = a0 * xp.sum(ops.gramian(u) * gram_v)
            rows, _ = placement.view(params, None)
            reg = xp.sum(xp.reshape(pos["user_reg"], (-1, 1)) * xp.square(rows["user"])) + xp.sum(
                xp.reshape(pos["item_reg"], (-1, 1)) * xp.square(rows["item"])
            )
            new_u = xp.astype(new_u, "float32")
            new_v = item_half(new_u, v, data["by_item"], a0 * ops.gramian(new_u))
        return observed + unobserved + reg, {"user": new_u, "item": xp.astype(new_v, "float32")}

    return sweep


def _ials_sweep_apart(be: Any, spec: IALSSpec, placement: Placement) -> Sweep:
    """`ials_sweep` with the objective computed by a pass of its own (placements whose
    half-sweeps do not return the observed loss)."""
    terms = placement.placed(
        lambda p, d: objectives.ials_loss_terms(be, with_coefficients(spec, d), p, d)
    )
    users, items = ials_halves(be, spec, placement)

    def sweep(params: dict[str, Any], data: Any) -> tuple[Any, dict[str, Any]]:
        total = terms(params, data["positives"])["total"]
        with placement.scope():  # the priors' Gramians: per-shard sums when sharded
            return total, items(users(params, data), data)

    return sweep


@register_model
class IALS(FactorModel):
    """Implicit-feedback ALS (Hu, Koren & Volinsky 2008; Rendle et al. 2022); see `IALSSpec`.

    Trained on positives: a `Ratings` whose pairs are the interactions, each once, values their
    counts (only used through the confidence `c = 1 + α·count`); `ratings.to_implicit(threshold=
    3.5)` makes them from explicit ratings. Every unobserved pair weighs α₀ through the Gramian
    `α₀·HᵀH` (never the `N × M` matrix); rows are regularized by λ·(|S_r| + α₀·other)^ν.

    Scores are ⟨w_u, h_i⟩; `cfcore.retrieval.recommend` and `neighbors` work as for MF, and
    `fold_in` solves a new user's row with the very system of a sweep.

    Args:
        embedding_dim: d.
        init_stddev: standard deviation of the normal initial embeddings.
        regularization_coeff: λ.
        unobserved_weight: α₀ (with α₀ = 0 and ν > 0 a user or item without positives has
            no regularization at all: `fit` refuses such ratings, naming the row).
        regularization_exponent: ν.
        confidence: α.
        solver: "auto", "cholesky" or "cg".
        cg_steps: CG steps per half-sweep.
    """

    kind = "ials"
    spec_type = IALSSpec
    trainers = {"als": "ALS sweeps"}
    command_line = CommandLine(
        "ials", "implicit", "sweeps",
        arguments={**FACTOR_ARGUMENTS, "--regularization": "regularization_coeff",
                   "--unobserved-weight": "unobserved_weight", "--solver": "solver"},
        defaults={"--dim": 64, "--init-stddev": 0.1, "--steps": 15, "--regularization": 0.01},
    )  # fmt: skip

    # fmt: off
    _S = IALSSpec  # the defaults live in the spec only

    def __init__(self, embedding_dim: int = _S.embedding_dim, init_stddev: float = _S.init_stddev,
                 regularization_coeff: float = _S.regularization_coeff,
                 unobserved_weight: float = _S.unobserved_weight,
                 regularization_exponent: float = _S.regularization_exponent,
                 confidence: float = _S.confidence, solver: str = _S.solver,
                 cg_steps: int = _S.cg_steps) -> None:
        super().__init__(IALSSpec(embedding_dim, init_stddev, regularization_coeff,
                                  unobserved_weight, regularization_exponent, confidence,
                                  solver, cg_steps))
    # fmt: on

    def fit(
        self,
        train: Ratings,
        *,
        steps: int,
        eval_every: int | None = None,
        seed: int = 0,
        backend: Any = None,
        devices: Any = None,
        progress: bool = True,
    ) -> pd.DataFrame:
        """Runs `steps` sweeps on the positives (users then items); a second call continues.

        Args:
            train: the positives (see the class docstring).
            steps: number of sweeps.
            eval_every: sweeps between two history rows (None: one row after the last sweep,
                besides the row of step 0; each row costs a pass over the data and a wait for
                the device, so following every sweep (1) can double a small fit's time).
            seed: seeds the initial embeddings (first fit only).
            backend: a backend name or instance, "numpy" (float64), or None.
            devices: None (one device), or an int k / a list of `jax.Device` or
                `tf.config.LogicalDevice` (JAX and TensorFlow backends): both tables
                row-sharded; each device solves its own rows.
            progress: show a progress bar.

        Returns:
            The whole history: `step`, `observed_loss`, `unobserved_loss`,
            `regularization_loss` and `total_loss` (the sums of `IALSSpec`'s objective).
        """
        run = (steps, steps if eval_every is None else eval_every, seed, backend, devices, progress)
        return self._fit(TrainingSet(train), "als", None, *run)

    def _checked_inputs(self, inputs: TrainingSet) -> TrainingSet:
        inputs = super()._checked_inputs(inputs)
        check_implicit(inputs.train)
        check_regularized(self.spec, inputs.train)
        return inputs

    def _remember_inputs(self, inputs: TrainingSet) -> None:
        super()._remember_inputs(inputs)
        self._rating_scale = None  # counts: any number >= 0 folds in

    def _host_layouts(self, train: Ratings, placement: Placement, variant: Any) -> Any:
        return ials_blocks(self.spec, train, placement)

    def _plan(self, session: Session, inputs: TrainingSet, seed: int) -> FitPlan:
        spec, be, place = self.spec, session.backend, session.placement
        data = sweep_data(self, session, inputs.train, "positives")
        terms_fn = be.compiled(
            ("ials_terms", spec_key(spec), place.key),
            lambda: place.placed(
                lambda p, d: objectives.ials_loss_terms(be, with_coefficients(spec, d), p, d)
            ),
        )

        def row(_: float | None) -> dict[str, float]:
            terms = terms_fn(session.params, data["positives"])
            out: dict[str, float] = {"step": session.step}
            for k in ("observed", "unobserved", "regularization", "total"):
                out[f"{k}_loss"] = float(be.to_numpy(terms[k]))
            return out

        chunk = session.sweep_chunk(
            ("ials", spec_key(spec)), ials_sweep(be, spec, place), whole_batch
        )
        return FitPlan(chunk, data, row, ("total_loss",))

    def loss_terms(self, ratings: Ratings, backend: Any = None) -> dict[str, float]:
        """The parts of the iALS objective on the positives `ratings` (as in the history)."""
        r = as_ratings(ratings, "ratings")
        be = get_backend(backend)
        host = ials_blocks(self.spec, r)["positives"]
        terms = objectives.ials_loss_terms(
            be, self.spec, be.params_from_numpy(self.embeddings_numpy()), Placement(be).data(host)
        )
        return {k: float(be.to_numpy(v)) for k, v in terms.items()}

    def _fold_in_arrays(
        self, rows: Any, items: Any, values: Any, num: int, reg: Any, backend: Any
    ) -> np.ndarray:
        spec = self.spec
        emb = self.embeddings_numpy()
        v = emb["item"]
        counts = np.bincount(rows, minlength=num)
        if reg is None:
            reg = spec.row_regularization(counts, v.shape[0])
            empty = unregularized_rows(spec, counts, v.shape[0])
            if len(empty):
                raise ArgumentValueError(
                    f"cannot fold in new user {int(empty[0])}: it has no positives "
                    f"({len(empty)} of {num} new users have none); {unregularized_cause(spec)}. "
                    "Give every new user a positive, or pass reg= > 0"
                )
        values = np.asarray(values, np.float64)
        if (values < 0).any():
            raise ArgumentValueError(f"interaction counts must be >= 0, got {values.min():g}")
        conf = 1.0 + spec.confidence * values
        prior = spec.unobserved_weight * (v.astype(np.float64).T @ v.astype(np.float64))
        return solve_rows(
            v, rows, items, conf, np.ones(len(rows)), num, reg, prior, backend=backend
        )


# ---------------------------------------------------------------------------- row solves


def solve_rows(
    fixed: np.ndarray,
    rows: Any,
    cols: Any,
    weights: Any,
    targets: Any,
    num_rows: int,
    row_reg: Any,
    prior: Any,
    *,
    col_reg: Any = None,
    backend: Any = None,
) -> np.ndarray:
    """New rows by exact weighted ridge regressions on a fixed table, on a backend.

    `x_r = (Σ_{k∈S_r} w_k f_k f_kᵀ + ρ_r·diag(c) + P)⁻¹ Σ_{k∈S_r} w_k y_k f_k`: the system of an
    ALS half-sweep (`cfcore.maths.als.row_solve`, Cholesky), for fold-in.

    Args:
        fixed: `[M, d]`, F.
        rows: `[n]` row (0..num_rows-1) of each observation.
        cols: `[n]` fixed row of each observation.
        weights: `[n]` w ≥ 0.
        targets: `[n]` y.
        num_rows: R.
        row_reg: ρ > 0, scalar or `[R]`.
        prior: `[d, d]` P, or None.
        col_reg: `[d]` c (default ones).
        backend: a backend name or instance, or "numpy" (float64).

    Returns:
        float32 `[R, d]`.
    """
    fixed = np.asarray(fixed, np.float32)
    d = fixed.shape[1]
    num_rows = int(num_rows)
    row_reg = np.broadcast_to(np.asarray(row_reg, np.float64), (num_rows,))
    if not np.all(np.isfinite(row_reg)) or (row_reg <= 0).any():
        raise ArgumentValueError(
            f"the row regularization must be finite and > 0, got {row_reg.min():g}"
        )
    col = np.ones(d, np.float32) if col_reg is None else np.asarray(col_reg, np.float32)
    prior = np.zeros((d, d)) if prior is None else np.asarray(prior)
    be = get_backend(backend)
    blocks = row_blocks(rows, cols, targets, weights, row_reg, dim=d, solver="cholesky")

    def make() -> Callable[..., Any]:
        # c read at run time: fold-ins of models of other coefficients share the program.
        half = make_half_sweep(be, solver="cholesky", cg_steps=1)
        return lambda f, cur, b, p, c: half(f, cur, b, p, col_reg=c)

    fn = be.compiled(("als_rows", d), make)
    out = fn(
        be.asarray(fixed),
        be.asarray(np.zeros((num_rows, d), np.float32)),
        Placement(be).data(blocks),
        be.asarray(prior.astype(np.float32)),
        be.asarray(col),
    )
    return np.asarray(be.to_numpy(out), np.float32)
