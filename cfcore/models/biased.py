"""Biased matrix factorization: `μ + b_u + b_i + ⟨u, v⟩`, by gradient steps or by ALS, and its
posterior average by Gibbs sampling (`BiasedMF.sample_posterior`, `cfcore.models.posterior`).

Example:
    >>> import cfcore
    >>> r = cfcore.synthetic_ratings(200, 100, 4000, seed=0)
    >>> model = cfcore.BiasedMF(embedding_dim=8, regularization_coeff=0.1)
    >>> history = model.fit(r, steps=10, solver="als", progress=False)          # doctest: +SKIP
    >>> history = model.fit(r, steps=500, optimizer=cfcore.optimizers.Adam(0.05))  # doctest: +SKIP
    >>> bayes = model.sample_posterior(r, samples=100, progress=False)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..backend.capabilities import raw_ops
from ..backend.registry import get_backend
from ..data.batching import MinibatchSampler
from ..data.ratings import Ratings, as_ratings
from ..errors import ArgumentValueError, NotFittedError
from ..maths import objectives
from ..maths.als import augment, make_half_sweep, ones_column, pad_prior, split_last
from ..persistence import register_model
from ..specs import BiasedMFSpec, OptimizerSpec
from ..train.hyper import HYPER, hyper_values, spec_key, with_coefficients
from ..train.placement import Placement
from ..train.session import Session
from .als import halves_sweep, solve_rows, sweep_data
from .base import (
    FACTOR_ARGUMENTS,
    PENALTY_ARGUMENTS,
    CommandLine,
    FitPlan,
    Params,
    State,
    whole_batch,
)
from .biased_parts import (
    biased_blocks,
    centred,
    column_regularization,
    init_biased_params,
    runtime_column_regularization,
)
from .factor import RatingModel, TrainingSet
from .mf import EVAL_CHUNK, coefficient_loss, rating_row, take
from .posterior import check_chain, sample_chain

if TYPE_CHECKING:
    from ..persistence import StateReader

SOLVERS = ("als", "gradient")
COLUMNS = (
    "observed",
    "regularization",
    "bias_regularization",
    "gravity",
    "total",
)


def biased_halves(
    be: Any, spec: BiasedMFSpec, placement: Placement | None = None
) -> tuple[Any, Any]:
    """The two halves of a biased ALS sweep, `half(params, data) -> params`, each row solved
    where `placement` keeps it; `data` as `biased_blocks` (placed), with or without `hyper`.

    With the items fixed, the user row `[u, b_u]` is a ridge regression on `[v, 1]` with targets
    `r − μ − b_i`; multiplying the objective by |Ω| gives per-row λ·|Ω|/N (embedding columns),
    λb·|Ω|/N (bias) and the gravity prior λg·|Ω|/(N·M)·VᵀV on the embedding block. ρ = |Ω|/N
    is in the blocks, |Ω|/(N·M) in `data["gravity_scale"]`, λ, λb and λg in `data["hyper"]`
    (the column regularization is the half-sweep's run-time `col_reg`): nothing compiled in.
    """
    xp = be.xp
    ops = raw_ops(be)
    half = (placement or Placement(be)).half_sweep(
        make_half_sweep(be, solver=spec.linear_solver, cg_steps=spec.cg_steps, offsets=True)
    )

    def solve(params, data, side, other, bias, other_bias, blocks):
        coeffs = with_coefficients(spec, data)
        fixed = augment(be, params[other], ones_column(be, params[other]))
        current = augment(be, params[side], params[bias])
        grav = coeffs.gravity_coeff * data["gravity_scale"]
        prior = pad_prior(be, grav * ops.gramian(params[other]))
        col = runtime_column_regularization(be, spec, coeffs)
        new = half(fixed, current, data[blocks], prior, params[other_bias], col_reg=col)
        table, b = split_last(be, xp.astype(new, "float32"))
        return {**params, side: table, bias: b}

    def users(params: dict[str, Any], data: Any) -> dict[str, Any]:
        return solve(params, data, "user", "item", "user_bias", "item_bias", "by_user")

    def items(params: dict[str, Any], data: Any) -> dict[str, Any]:
        return solve(params, data, "item", "user", "item_bias", "user_bias", "by_item")

    return users, items


def biased_sweep(be: Any, spec: BiasedMFSpec, placement: Placement | None = None) -> Any:
    """`sweep(params, data) -> (objective at params, params after users then items)`, on the
    arrays of `placement` (default: one device); the coefficients read from `data` (`hyper`, in
    `data["ratings"]` too for the objective) where it has them, else from `spec`."""
    placement = placement or Placement(be)
    loss = placement.placed(coefficient_loss(be, spec, objectives.biased_mf_loss_terms))
    return halves_sweep(placement, loss, *biased_halves(be, spec, placement))


@register_model
class BiasedMF(RatingModel):
    """Matrix factorization with a global mean and user and item biases (see `BiasedMFSpec`).

    Prediction `μ + b_u + b_i + ⟨u, v⟩`, with μ the mean training rating (stored with the model,
    not trained) and per-parameter L2: λ on the embeddings, λb on the biases. `fit` trains it by
    cfcore's gradient optimizers (`optimizer=...`) through the one trainer, or by alternating least
    squares (`solver="als"`, no optimizer), the biases solved as augmented columns.

    Predictions are not clipped to the rating scale. `embeddings` holds `user`, `item`,
    `user_bias` and `item_bias`; `recommend` ranks by the prediction (⟨u, v⟩ + b_i: μ and b_u do
    not change a user's ranking) through `scoring_embeddings`, `neighbors` by the item
    embeddings alone.

    Args:
        embedding_dim: d.
        init_stddev: standard deviation of the normal initial embeddings.
        regularization_coeff: λ.
        bias_regularization_coeff: λb.
        gravity_coeff: λg (default 0).
        solver: ALS's linear solver: "auto", "cholesky" or "cg".
        cg_steps: CG steps per half-sweep.
    """

    kind = "biased"
    spec_type = BiasedMFSpec
    trainers = {"als": "ALS sweeps", "biased-gradient": "gradient steps"}
    command_line = CommandLine(
        "biased", "ratings", "sweeps-or-steps",
        arguments={**FACTOR_ARGUMENTS, **PENALTY_ARGUMENTS, "--solver": "solver",
                   "--bias-regularization": "bias_regularization_coeff"},
        options=("--posterior-samples",),
        defaults={"--lr": 0.05, "--steps": 20, "--gravity": 0.0},
    )  # fmt: skip

    # fmt: off
    _S = BiasedMFSpec  # the defaults live in the spec only

    def __init__(self, embedding_dim: int = _S.embedding_dim, init_stddev: float = _S.init_stddev,
                 regularization_coeff: float = _S.regularization_coeff,
                 bias_regularization_coeff: float = _S.bias_regularization_coeff,
                 gravity_coeff: float = _S.gravity_coeff, solver: str = _S.solver,
                 cg_steps: int = _S.cg_steps) -> None:
        super().__init__(BiasedMFSpec(embedding_dim, init_stddev, regularization_coeff,
                                      bias_regularization_coeff, gravity_coeff, solver, cg_steps))
    # fmt: on
        self.global_mean: float | None = None

    # ------------------------------------------------------------------ training

    def fit(
        self,
        train: Ratings,
        *,
        test: Ratings | None = None,
        steps: int,
        solver: str | None = None,
        optimizer: OptimizerSpec | None = None,
        backend: Any = None,
        seed: int = 0,
        batch_size: int | None = None,
        eval_every: int | None = None,
        progress: bool = True,
        devices: Any = None,
    ) -> pd.DataFrame:
        """Trains for `steps` gradient steps or ALS sweeps; a second call continues.

        Args:
            train: training ratings (or a dataset).
            test: optional held-out ratings over the same catalog.
            steps: gradient steps, or sweeps (users then items) for ALS.
            solver: "als" (default without an optimizer) or "gradient" (default with one).
            optimizer: a `cfcore.optimizers` spec, for `solver="gradient"`.
            backend: a backend name or instance, or None.
            seed: seeds the initial embeddings (first fit only) and the minibatch order.
            batch_size: gradient steps only: ratings per step (None: full batch).
            eval_every: steps between two history rows (default 10 for gradient steps; for
                sweeps one row after the last, besides the row of step 0).
            progress: show a progress bar.
            devices: None (one device), or an int k / a list of `jax.Device` or
                `tf.config.LogicalDevice` (JAX and TensorFlow backends): tables and biases
                row-sharded; ALS sweeps solve each device's own rows.

        Returns:
            The whole history: `step`, `train_mse`, `test_mse` (with `test`), `observed_loss`,
            `regularization_loss`, `bias_regularization_loss`, `gravity_loss`, `total_loss`.
        """
        solver = _check_solver(solver, optimizer, batch_size)
        if eval_every is None:
            eval_every = steps if solver == "als" else 10
        run = (steps, eval_every, seed, backend, devices, progress)
        trainer = "als" if solver == "als" else "biased-gradient"
        return self._fit(TrainingSet(train, test, batch_size, solver), trainer, optimizer, *run)

    def _initial_params(self, inputs: TrainingSet, seed: int) -> Params:
        return init_biased_params(self.spec, inputs.train.num_users, inputs.train.num_items, seed)

    def _remember_inputs(self, inputs: TrainingSet) -> None:
        # After the session has started: a refused fit leaves the model as it was.
        if self.global_mean is None:
            self.global_mean = float(np.mean(inputs.train.values.astype(np.float64)))
        super()._remember_inputs(inputs)

    def _host_layouts(self, train: Ratings, placement: Placement, variant: Any) -> Any:
        solver, mean = variant[:2]
        if solver == "als":
            return biased_blocks(self.spec, train, mean, placement)
        host = centred(train, mean)
        if variant[2:] == ("layout",):
            # Full-batch steps read the same pairs every step: the backend's pair layout (if it
            # has one) is built once, as for MF (`MatrixFactorization._plan`).
            be = placement.backend
            layout = be.pair_layout(train.users, train.items, train.num_users, train.num_items)
            if layout is not None:
                host["layout"] = layout
        return host

    def _plan(self, session: Session, inputs: TrainingSet, seed: int) -> FitPlan:
        spec, be, place, mean = self.spec, session.backend, session.placement, self._mean()
        # The coefficients go with the data (read at run time): a search over them (and over a
        # cfcore optimizer's numbers) compiles the chunk, or the ALS sweep, once.
        sampler = None
        if inputs.solver == "als":
            data = sweep_data(self, session, inputs.train, "ratings", variant=("als", mean))
            ratings = data["ratings"]
            # Keyed by the spec's structure only: the coefficients and the data set's numbers
            # are in `data`, its shapes are the compiled function's own business.
            sweep = biased_sweep(be, spec, place)
            chunk = session.sweep_chunk(("biased-als", spec_key(spec)), sweep, whole_batch)
        else:
            if inputs.batch_size is not None:
                sampler = MinibatchSampler(len(inputs.train), inputs.batch_size, seed)
            variant = ("gradient", mean) + (("layout",) if sampler is None and place.pair_layout else ())
            host = self._layouts(inputs.train, place, variant)
            data = ratings = {**place.data(host), HYPER: place.data(hyper_values(spec))}
            key = ("biased", spec_key(spec), sampler is None)
            chunk = session.chunk(key, coefficient_loss(be, spec, objectives.biased_mf_loss_terms), take(be, sampler))
        test_data = None
        if inputs.test is not None:
            test_data = {**place.data(centred(inputs.test, mean)), HYPER: ratings[HYPER]}
        terms = partial(_terms, be, spec, placement=place)
        row = rating_row(session, terms, ratings, test_data, COLUMNS)
        next_xs = None if sampler is None else sampler.take
        return FitPlan(chunk, data, row, ("train_mse", "test_mse"), next_xs)

    def sample_posterior(
        self,
        train: Ratings,
        *,
        samples: int = 100,
        burn_in: int = 10,
        thin: int = 1,
        noise_precision: float = 2.0,
        test: Ratings | None = None,
        backend: Any = None,
        seed: int = 0,
        progress: bool = True,
    ) -> BiasedMF:
        """A Bayesian average of this model: Gibbs-sampled biased ALS, predictions averaged.

        Reads the objective as a posterior, `p(θ | R) ∝ exp(−(α/2)·|Ω|·L(θ))` (Gaussian noise of
        precision α on the ratings, the coefficients λ and λb as Gaussian priors), and draws
        from it by Gibbs sampling: each sweep draws every user row `[u, b_u]` from its Gaussian
        conditional given the items (mean: the row's ALS solution; precision: α times its ALS
        system), then every item row (`cfcore.models.posterior`). The chain starts from this
        model's parameters (fit it first, e.g. by ALS, to shorten the burn-in; else from the
        initial values), runs `burn_in` sweeps, then keeps every `thin`-th draw until it has
        `samples` of them (`burn_in + samples·thin` sweeps).

        Averaging the kept draws' predictions usually beats the single best point estimate: on
        MovieLens 100K (see the benchmarks) it is the only cfcore model under 0.905 mean test
        RMSE. The result predicts exactly that average, as one `BiasedMF` of dimension d·S.

        Args:
            train: the training ratings (the ones this model was fit on, if it was).
            samples: S ≥ 1, draws kept and averaged.
            burn_in: sweeps drawn and discarded first.
            thin: t ≥ 1, keep one draw in t: successive draws are correlated, so a thinned
                chain keeps most of the accuracy of all its draws in a smaller model.
            noise_precision: α > 0, the precision of the ratings' noise (1/σ²): higher keeps
                the draws closer to the ALS solution.
            test: optional held-out ratings, for the history's `test_mse`.
            backend: a backend name or instance, or None; one device.
            seed: seeds the noise (and the initial values of an unfitted model).
            progress: show a progress bar.

        Returns:
            A new `BiasedMF` with `embedding_dim = d·S`: its embeddings are the kept draws side
            by side scaled by `1/√S`, its biases their means, so `predict` gives
            `μ + mean_s(b_u + b_i + ⟨u, v⟩)`. Its `history` has one row per sweep: `sweep`,
            `kept` (draws averaged so far), `train_mse` and `test_mse` of that average (of the
            current draw during the burn-in), `seconds`. This model is left unchanged.

        Raises:
            ValueError: bad `samples`, `burn_in`, `thin` or `noise_precision`,
                `gravity_coeff` ≠ 0 (its prior's noise is not drawn), or ratings over another
                catalog.
        """
        chain = check_chain(self.spec, samples, burn_in, thin, noise_precision)
        data = self._checked_inputs(TrainingSet(train, test))
        train, n, m = data.train, data.train.num_users, data.train.num_items
        if self._has_params():
            start, mean = self.params_numpy(), self._mean()
        else:
            start = init_biased_params(chain.spec, n, m, seed)
            mean = float(np.mean(train.values.astype(np.float64)))
        params, history = sample_chain(
            chain, start, mean, train, data.test, backend=backend, seed=seed, progress=progress
        )
        # The model's own class and spec (its solver too), only wider: d·S.
        out = self._from_spec(
            dataclasses.replace(self.spec, embedding_dim=self.spec.embedding_dim * samples)
        )
        out.global_mean = mean
        out._resume_step = self.step  # the training it averages over started from there
        out._shape = (n, m)
        out.catalog = train.catalog if train.catalog is not None else self.catalog
        out._remember_train(train)
        out._params = params
        out.history = history
        return out

    # ------------------------------------------------------------------ results

    def _mean(self) -> float:
        if self.global_mean is None:
            raise NotFittedError("BiasedMF has no parameters yet: call fit() first")
        return self.global_mean

    def predict(self, users: Any, items: Any) -> np.ndarray:
        """Predicted ratings `μ + b_u + b_i + ⟨u, v⟩` for pairs of indices (not clipped);
        float32 `[n]`."""
        p = self.params_numpy()
        users, items = np.atleast_1d(users), np.atleast_1d(items)
        n, m = len(p["user"]), len(p["item"])
        Ratings(users, items, np.zeros(len(users)), n, m)  # validates ids and lengths
        dots = np.einsum("nd,nd->n", p["user"][users], p["item"][items])
        return (self._mean() + p["user_bias"][users] + p["item_bias"][items] + dots).astype(
            np.float32
        )

    def loss_terms(self, ratings: Ratings, backend: Any = None) -> dict[str, float]:
        """The objective's parts on `ratings`, computed by the backend (as in the history)."""
        be = get_backend(backend)
        params = be.params_from_numpy(self.params_numpy())
        data = Placement(be).data(centred(as_ratings(ratings, "ratings"), self._mean()))
        return _terms(be, self.spec, params, data)

    def scoring_embeddings(self) -> Params:
        """`{"user": [u, 1], "item": [v, b_i]}` (`[N, d+1]`, `[M, d+1]`): their dot product is
        the prediction less `μ + b_u`, which ranks a user's items as the prediction does."""
        p = self.params_numpy()
        return {
            "user": np.concatenate([p["user"], np.ones((len(p["user"]), 1), np.float32)], 1),
            "item": np.concatenate([p["item"], p["item_bias"][:, None]], 1),
        }

    # ------------------------------------------------------------------ new users

    def fold_in(self, ratings: Any, *, reg: Any = None, backend: Any = None) -> np.ndarray:
        """Embeddings of new users, the items fixed: `[B, d]` (see `fold_in_with_bias`)."""
        return self.fold_in_with_bias(ratings, reg=reg, backend=backend)[0]

    def fold_in_with_bias(
        self, ratings: Any, *, reg: Any = None, backend: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings and biases of new users from their ratings, the items fixed.

        One row solve of an ALS user half-sweep: `[u, b_u]` regressed on `[v, 1]` with targets
        `r − μ − b_i` and the model's own regularization (λ·|Ω|/N, λb·|Ω|/N, gravity prior), so
        the row is the one a sweep would compute.

        Args:
            ratings: as `MatrixFactorization.fold_in`.
            reg: None for the model's own regularization, or ρ > 0 (scalar or per new user)
                for embedding and bias alike, without the gravity prior.
            backend: a backend name or instance, or "numpy".

        Returns:
            `(embeddings float32 [B, d], biases float32 [B])`.
        """
        from ..data.user_ratings import fold_in_arrays

        rows, items, values, num, _ = fold_in_arrays(ratings, self)
        aug = self._fold_in_arrays(rows, items, values, num, reg, backend)
        return aug[:, :-1], aug[:, -1]

    def _fold_in_arrays(
        self, rows: Any, items: Any, values: Any, num: int, reg: Any, backend: Any
    ) -> np.ndarray:
        spec = self.spec
        p = self.params_numpy()
        n, m = p["user"].shape[0], p["item"].shape[0]
        fixed = np.concatenate([p["item"], np.ones((m, 1), np.float32)], 1)
        targets = np.asarray(values, np.float64) - self._mean() - p["item_bias"][items]
        if reg is None:
            omega = self.num_train_ratings
            if not omega:
                raise ArgumentValueError(
                    "the default fold-in regularization needs the number of training ratings, "
                    "which this model does not know; pass reg= explicitly"
                )
            row_reg, col = omega / n, column_regularization(spec)
            v = p["item"].astype(np.float64)
            prior = np.zeros((spec.embedding_dim + 1,) * 2)
            prior[:-1, :-1] = spec.gravity_coeff * omega / (n * m) * (v.T @ v)
        else:
            row_reg, col, prior = reg, None, None
        return solve_rows(
            fixed, rows, items, np.ones(len(rows)), targets, num, row_reg, prior,
            col_reg=col, backend=backend,
        )  # fmt: skip

    def _with_new_users(self, params: Params, new: np.ndarray) -> Params:
        return {
            **params,
            "user": np.concatenate([params["user"], new[:, :-1]]),
            "user_bias": np.concatenate([params["user_bias"], new[:, -1]]),
        }

    # ------------------------------------------------------------------ file state

    def _own_state(self, include_ratings: bool) -> State:
        meta, arrays = super()._own_state(include_ratings)
        p = self.params_numpy()
        meta["global_mean"] = self._mean()
        arrays["user_bias"] = np.asarray(p["user_bias"], np.float32)
        arrays["item_bias"] = np.asarray(p["item_bias"], np.float32)
        return meta, arrays

    def _restore_own(
        self, reader: StateReader, meta: dict[str, Any], shape: tuple[int, ...]
    ) -> None:
        super()._restore_own(reader, meta, shape)
        n, m, _ = shape
        user_bias = np.asarray(reader["user_bias"], np.float32)
        item_bias = np.asarray(reader["item_bias"], np.float32)
        if user_bias.shape != (n,) or item_bias.shape != (m,):
            raise reader.damaged(
                f"biases of shapes {user_bias.shape} and {item_bias.shape} do not match the "
                f"recorded shape N={n}, M={m}"
            )
        mean = meta.get("global_mean")
        if not isinstance(mean, int | float) or isinstance(mean, bool) or not np.isfinite(mean):
            raise reader.damaged(f"the global mean {mean!r} is not a finite number")
        assert self._params is not None
        self._params = {**self._params, "user_bias": user_bias, "item_bias": item_bias}
        self.global_mean = float(mean)


def _check_solver(solver: str | None, optimizer: Any, batch_size: int | None) -> str:
    """`fit`'s solver: "als" or "gradient" (None: by whether there is an optimizer), checked
    against the optimizer and batch size."""
    if solver is None:
        solver = "als" if optimizer is None else "gradient"
    if solver not in SOLVERS:
        raise ArgumentValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if solver == "als" and optimizer is not None:
        raise ArgumentValueError(
            "solver='als' takes no optimizer: drop optimizer= or use 'gradient'"
        )
    if solver == "gradient" and optimizer is None:
        raise ArgumentValueError(
            "solver='gradient' needs an optimizer, e.g. cfcore.optimizers.Adam(0.05)"
        )
    if solver == "als" and batch_size is not None:
        raise ArgumentValueError(
            "batch_size applies to gradient steps; ALS sweeps use every rating"
        )
    return solver


def _terms(
    be: Any, spec: BiasedMFSpec, params: Any, data: dict[str, Any], placement: Any = None
) -> dict[str, float]:
    """The objective's parts on device `data` (centred), the MSE over `EVAL_CHUNK` chunks (in
    one call with a pair layout, or on a sharded `placement`: its padding is sliced off
    inside)."""
    key = None if placement is None else placement.key
    # Data carrying the coefficients (gradient `fit`'s) compiles once for any of their values.
    spec_id = spec_key(spec) if HYPER in data else spec
    fn = be.compiled(
        ("biased_terms", spec_id, key),
        lambda: (placement or Placement(be)).placed(
            lambda p, b: objectives.biased_mf_loss_terms(be, with_coefficients(spec, b), p, b)
        ),
    )
    n = int(data["values"].shape[0])
    # A pair layout describes the whole set (its kernel never holds the gathered rows).
    if n <= EVAL_CHUNK or key is not None or "layout" in data:
        return {k: float(be.to_numpy(v)) for k, v in fn(params, data).items()}
    out: dict[str, float] = {}
    observed = 0.0
    for start in range(0, n, EVAL_CHUNK):
        part = {k: v if k == HYPER else v[start : start + EVAL_CHUNK] for k, v in data.items()}
        terms = {k: float(be.to_numpy(v)) for k, v in fn(params, part).items()}
        observed += terms["observed"] * int(part["values"].shape[0])
        out = terms
    out["observed"] = observed / n
    out["total"] = out["observed"] + sum(out[k] for k in COLUMNS[1:-1])
    return out
