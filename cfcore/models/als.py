"""Alternating least squares models: `WALS` (the notebook's regularized objective) and `IALS`.

Both train through the one trainer (`cfcore.train.Session`) with no optimizer: a step is one
sweep, every user row solved with the items fixed, then every item row with the users fixed
(`cfcore.maths.als`), compiled in chunks of sweeps under the same non-finite guard as gradient
steps, with one history row per `eval_every` sweeps.

Example:
    >>> import cfcore
    >>> r = cfcore.synthetic_ratings(200, 100, 4000, seed=0)
    >>> model = cfcore.WALS(embedding_dim=8, regularization_coeff=0.1, gravity_coeff=1.0)
    >>> history = model.fit(r, steps=5, progress=False)                 # doctest: +SKIP
    >>> implicit = cfcore.IALS(embedding_dim=16).fit(r.to_implicit(threshold=3.5), steps=10)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from .._registry import get_backend
from ..data.ratings import Ratings
from ..data.row_blocks import row_blocks
from ..init import init_mf_params
from ..maths import objectives
from ..maths.als import gravity_scale, make_half_sweep
from ..persistence import register_model
from ..specs import IALSSpec, WALSSpec
from ..train.hyper import HYPER, hyper_values, spec_key, with_coefficients
from ..train.placement import Placement
from ..train.session import Session, as_ratings, check_steps
from .base import Params
from .mf import MatrixFactorization, coefficient_loss, evaluate_terms, history_row

Sweep = Callable[[dict[str, Any], Any], tuple[Any, dict[str, Any]]]
Half = Callable[[dict[str, Any], Any], dict[str, Any]]


# ---------------------------------------------------------------------------- shared


def check_fit_inputs(model: Any, train: Any, test: Any, steps: Any, eval_every: Any) -> Any:
    """`(train, test)` as `Ratings`, checked against each other and the model's shape."""
    train = as_ratings(train, "train")
    if test is not None:
        test = as_ratings(test, "test")
        if (test.num_users, test.num_items) != (train.num_users, train.num_items):
            raise ValueError(
                f"test ratings are over {test.num_users} users x {test.num_items} items but train "
                f"ratings over {train.num_users} x {train.num_items}: they must share a catalog"
            )
    check_steps(steps, eval_every)
    shape = (train.num_users, train.num_items)
    if model._shape is not None and shape != model._shape:
        raise ValueError(
            f"this model has embeddings for {model._shape[0]} users x {model._shape[1]} items; "
            f"cannot continue training on ratings over {shape[0]} x {shape[1]}"
        )
    return train, test


def run_sweeps(
    session: Session,
    key: Any,
    sweep: Sweep,
    data: Any,
    *,
    steps: int,
    eval_every: int,
    record: Callable[[float | None], dict[str, float]],
    label: Callable[[dict[str, float]], str],
    progress: bool,
) -> None:
    """`steps` sweeps of `sweep` on `data` (device) in `session`, a history row per chunk."""
    run_chunk = session.sweep_chunk(key, sweep, _whole)
    session.run(
        run_chunk,
        data,
        steps=steps,
        eval_every=eval_every,
        next_xs=None,
        record=record,
        progress=progress,
        label=label,
    )


def _whole(data: Any, x: Any) -> Any:
    return data


def _label(columns: tuple[str, ...]) -> Callable[[dict[str, float]], str]:
    def label(row: dict[str, float]) -> str:
        return "  ".join(f"{c}={row[c]:.4f}" for c in columns if c in row)

    return label


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
    blocks = (placement or Placement(None)).row_blocks
    size = {"dim": spec.embedding_dim, "solver": spec.linear_solver}
    by_user = blocks(
        row_blocks,
        train.users,
        train.items,
        train.values,
        ones,
        np.full(n, lam * count / n),
        **size,
    )
    by_item = blocks(
        row_blocks,
        train.items,
        train.users,
        train.values,
        ones,
        np.full(m, lam * count / m),
        **size,
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
    xp = be.xp
    ops = getattr(be, "ops", be)
    half = (placement or Placement(be)).half_sweep(
        make_half_sweep(
            be,
            np.ones(spec.embedding_dim, np.float32),
            solver=spec.linear_solver,
            cg_steps=spec.cg_steps,
        )
    )

    def grav(data: Any) -> Any:
        return with_coefficients(spec, data).gravity_coeff * data["gravity_scale"]

    def users(params: dict[str, Any], data: Any) -> dict[str, Any]:
        u, v = params["user"], params["item"]
        u = half(v, u, data["by_user"], grav(data) * ops.gramian(v))
        return {"user": xp.astype(u, "float32"), "item": v}

    def items(params: dict[str, Any], data: Any) -> dict[str, Any]:
        u, v = params["user"], params["item"]
        v = half(u, v, data["by_item"], grav(data) * ops.gramian(u))
        return {"user": u, "item": xp.astype(v, "float32")}

    return users, items


def wals_sweep(be: Any, spec: WALSSpec, placement: Placement | None = None) -> Sweep:
    """`sweep(params, data) -> (objective at params, params after users then items)`, on the
    arrays of `placement` (default: one device); the coefficients read from `data` (`hyper`, in
    `data["ratings"]` too for the objective) where it has them, else from `spec`."""
    placement = placement or Placement(be)
    loss = placement.placed(coefficient_loss(be, spec.objective))
    users, items = wals_halves(be, spec, placement)

    def sweep(params: dict[str, Any], data: Any) -> tuple[Any, dict[str, Any]]:
        total, _ = loss(params, data["ratings"])
        with placement.scope():  # the priors' Gramians: per-shard sums when sharded
            return total, items(users(params, data), data)

    return sweep


def with_hyper(place: Placement, spec: Any, data: dict[str, Any], *keys: str) -> dict[str, Any]:
    """Placed sweep `data` with `spec`'s coefficients (`hyper_values`, placed) added at its top
    and in its entries `keys` (the ratings the objective is evaluated on): a sweep reads them at
    run time, so one compiled sweep serves every value (`cfcore.train.hyper`)."""
    hyper = place.data(hyper_values(spec))
    return {**data, **{k: {**data[k], HYPER: hyper} for k in keys}, HYPER: hyper}


@register_model
class WALS(MatrixFactorization):
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

    def __init__(
        self,
        embedding_dim: int = 3,
        init_stddev: float = 0.1,
        regularization_coeff: float = 0.1,
        gravity_coeff: float = 1.0,
        solver: str = "auto",
        cg_steps: int = 3,
    ) -> None:
        super().__init__(embedding_dim, init_stddev)
        self.spec = WALSSpec(
            embedding_dim=embedding_dim,
            init_stddev=init_stddev,
            regularization_coeff=regularization_coeff,
            gravity_coeff=gravity_coeff,
            solver=solver,
            cg_steps=cg_steps,
        )

    def fit(  # type: ignore[override]
        self,
        train: Ratings,
        *,
        test: Ratings | None = None,
        steps: int,
        backend: Any = None,
        seed: int = 0,
        eval_every: int = 1,
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
            eval_every: sweeps between two history rows.
            progress: show a progress bar.
            devices: None (one device), or an int k / a list of `jax.Device` or
                `tf.config.LogicalDevice` (JAX and TensorFlow backends): both tables
                row-sharded; each device solves its own rows (see `cfcore.train.sharding`).

        Returns:
            The whole history: `step` (sweeps), `train_mse`, `test_mse` (with `test`),
            `observed_loss`, `regularization_loss`, `gravity_loss`, `total_loss`, as
            `RegularizedMF`.
        """
        train, test = check_fit_inputs(self, train, test, steps, eval_every)
        spec = self.spec
        n, m = train.num_users, train.num_items
        be = get_backend(backend)

        def start_params() -> Params:
            return self.params_numpy() if self._has_params() else init_mf_params(spec, n, m, seed)

        session = self._train_session(be, None, start_params, devices, trainer="als")
        self._shape = (n, m)
        if train.catalog is not None:
            self.catalog = train.catalog
        self._remember_train(train)
        place = session.placement
        data = with_hyper(place, spec, place.data(wals_blocks(spec, train, place)), "ratings")
        test_data = None if test is None else session.placement.data(be.device_batch(test))
        if test_data is not None:
            test_data = {**test_data, HYPER: data[HYPER]}
        objective = spec.objective

        def record(_: float | None) -> dict[str, float]:
            terms = evaluate_terms(be, objective, session.params, data["ratings"], place)
            test_mse = None
            if test_data is not None:
                test_mse = evaluate_terms(be, objective, session.params, test_data, place)[
                    "observed"
                ]
            row = history_row(session.step, terms, test_mse, True)
            session.history_rows.append(row)
            return row

        try:
            # Keyed by the spec's structure: coefficients and the data set's numbers are data.
            run_sweeps(
                session,
                ("wals", spec_key(spec)),
                wals_sweep(be, spec, place),
                data,
                steps=steps,
                eval_every=eval_every,
                record=record,
                label=_label(("train_mse", "test_mse", "total_loss")),
                progress=progress,
            )
        finally:
            self.history = pd.DataFrame(session.history_rows)
        return self.history

    def loss_terms(self, ratings: Ratings, backend: Any = None) -> dict[str, float]:
        """The objective's parts on `ratings`, computed by the backend (as in the history)."""
        be = get_backend(backend)
        terms = be.mf_loss_terms(
            self.spec.objective, self.embeddings_numpy(), as_ratings(ratings, "ratings")
        )
        return {k: float(be.to_numpy(v)) for k, v in terms.items()}

    @classmethod
    def _spec_from_dict(cls, fields: dict[str, Any]) -> WALSSpec:
        return WALSSpec(**fields)

    @classmethod
    def _from_spec(cls, spec: WALSSpec) -> WALS:
        return cls(
            spec.embedding_dim,
            spec.init_stddev,
            spec.regularization_coeff,
            spec.gravity_coeff,
            spec.solver,
            spec.cg_steps,
        )


# ---------------------------------------------------------------------------- iALS


def check_implicit(train: Ratings) -> None:
    """Positives for iALS: each (user, item) pair once, counts ≥ 0."""
    key = train.users.astype(np.int64) * train.num_items + train.items
    if len(np.unique(key)) != len(key):
        raise ValueError(
            "iALS takes each (user, item) pair once, but these interactions repeat pairs: "
            "merge them first, e.g. ratings.to_implicit(counts=True)"
        )
    if (train.values < 0).any():
        raise ValueError(
            f"iALS interaction counts must be >= 0, got {float(train.values.min()):g}: pass "
            "positives, e.g. ratings.to_implicit(threshold=3.5)"
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
    blocks = (placement or Placement(None)).row_blocks
    size = {"dim": spec.embedding_dim, "solver": spec.linear_solver}
    by_user = blocks(row_blocks, train.users, train.items, ones, conf, user_reg, **size)
    by_item = blocks(row_blocks, train.items, train.users, ones, conf, item_reg, **size)
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
    xp = be.xp
    ops = getattr(be, "ops", be)
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
        a0 = with_coefficients(spec, data).unobserved_weight
        u = half(v, u, data["by_user"], a0 * ops.gramian(v))
        return {"user": xp.astype(u, "float32"), "item": v}

    def items(params: dict[str, Any], data: Any) -> dict[str, Any]:
        u, v = params["user"], params["item"]
        a0 = with_coefficients(spec, data).unobserved_weight
        v = half(u, v, data["by_item"], a0 * ops.gramian(u))
        return {"user": u, "item": xp.astype(v, "float32")}

    return users, items


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
    ops = getattr(be, "ops", be)
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
class IALS(MatrixFactorization):
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
        unobserved_weight: α₀.
        regularization_exponent: ν.
        confidence: α.
        solver: "auto", "cholesky" or "cg".
        cg_steps: CG steps per half-sweep.
    """

    kind = "ials"

    def __init__(
        self,
        embedding_dim: int = 64,
        init_stddev: float = 0.1,
        regularization_coeff: float = 0.01,
        unobserved_weight: float = 0.1,
        regularization_exponent: float = 1.0,
        confidence: float = 0.0,
        solver: str = "auto",
        cg_steps: int = 3,
    ) -> None:
        super().__init__(embedding_dim, init_stddev)
        self.spec = IALSSpec(
            embedding_dim=embedding_dim,
            init_stddev=init_stddev,
            regularization_coeff=regularization_coeff,
            unobserved_weight=unobserved_weight,
            regularization_exponent=regularization_exponent,
            confidence=confidence,
            solver=solver,
            cg_steps=cg_steps,
        )

    def fit(  # type: ignore[override]
        self,
        train: Ratings,
        *,
        steps: int,
        backend: Any = None,
        seed: int = 0,
        eval_every: int = 1,
        progress: bool = True,
        devices: Any = None,
    ) -> pd.DataFrame:
        """Runs `steps` sweeps (users then items); a second call continues.

        Args:
            train: the positives (see the class docstring).
            steps: number of sweeps.
            backend: a backend name or instance, "numpy" (float64), or None.
            seed: seeds the initial embeddings (first fit only).
            eval_every: sweeps between two history rows.
            progress: show a progress bar.
            devices: None (one device), or an int k / a list of `jax.Device` or
                `tf.config.LogicalDevice` (JAX and TensorFlow backends): both tables
                row-sharded; each device solves its own rows.

        Returns:
            The whole history: `step`, `observed_loss`, `unobserved_loss`,
            `regularization_loss` and `total_loss` (the sums of `IALSSpec`'s objective).
        """
        train, _ = check_fit_inputs(self, train, None, steps, eval_every)
        check_implicit(train)
        spec = self.spec
        n, m = train.num_users, train.num_items
        be = get_backend(backend)

        def start_params() -> Params:
            return self.params_numpy() if self._has_params() else init_mf_params(spec, n, m, seed)

        session = self._train_session(be, None, start_params, devices, trainer="als")
        self._shape = (n, m)
        if train.catalog is not None:
            self.catalog = train.catalog
        self._remember_train(train)
        self._rating_scale = None  # counts: any number >= 0 folds in
        place = session.placement
        data = with_hyper(place, spec, place.data(ials_blocks(spec, train, place)), "positives")
        terms_fn = be.compiled(
            ("ials_terms", spec_key(spec), place.key),
            lambda: place.placed(
                lambda p, d: objectives.ials_loss_terms(be, with_coefficients(spec, d), p, d)
            ),
        )

        def record(_: float | None) -> dict[str, float]:
            terms = terms_fn(session.params, data["positives"])
            row: dict[str, float] = {"step": session.step}
            for k in ("observed", "unobserved", "regularization", "total"):
                row[f"{k}_loss"] = float(be.to_numpy(terms[k]))
            session.history_rows.append(row)
            return row

        try:
            run_sweeps(
                session,
                ("ials", spec_key(spec)),
                ials_sweep(be, spec, place),
                data,
                steps=steps,
                eval_every=eval_every,
                record=record,
                label=_label(("total_loss",)),
                progress=progress,
            )
        finally:
            self.history = pd.DataFrame(session.history_rows)
        return self.history

    def evaluate(self, ratings: Ratings) -> dict[str, float]:
        """Not defined for implicit feedback: iALS scores rank items, they do not predict ratings.

        Raises:
            ValueError: always; evaluate rankings instead (`cfcore.eval`).
        """
        raise ValueError(
            "IALS scores rank items and are not ratings: evaluate it with ranking metrics "
            "(recall/NDCG of cfcore.retrieval.batch_recommend, see cfcore.eval), not MSE"
        )

    def loss_terms(self, ratings: Ratings, backend: Any = None) -> dict[str, float]:
        """The parts of the iALS objective on the positives `ratings` (as in the history)."""
        r = as_ratings(ratings, "ratings")
        be = get_backend(backend)
        host = ials_blocks(self.spec, r)["positives"]
        terms = objectives.ials_loss_terms(
            be, self.spec, be.params_from_numpy(self.embeddings_numpy()), Placement(be).data(host)
        )
        return {k: float(be.to_numpy(v)) for k, v in terms.items()}

    def _fold_in_arrays(self, rows, items, values, num, reg, backend) -> np.ndarray:
        spec = self.spec
        emb = self.embeddings_numpy()
        v = emb["item"]
        counts = np.bincount(rows, minlength=num)
        if reg is None:
            reg = spec.row_regularization(counts, v.shape[0])
        values = np.asarray(values, np.float64)
        if (values < 0).any():
            raise ValueError(f"interaction counts must be >= 0, got {values.min():g}")
        conf = 1.0 + spec.confidence * values
        prior = spec.unobserved_weight * (v.astype(np.float64).T @ v.astype(np.float64))
        return solve_rows(
            v, rows, items, conf, np.ones(len(rows)), num, reg, prior, backend=backend
        )

    @classmethod
    def _spec_from_dict(cls, fields: dict[str, Any]) -> IALSSpec:
        return IALSSpec(**fields)

    @classmethod
    def _from_spec(cls, spec: IALSSpec) -> IALS:
        model = cls(spec.embedding_dim)
        model.spec = spec
        return model


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
        raise ValueError(f"the row regularization must be finite and > 0, got {row_reg.min():g}")
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
