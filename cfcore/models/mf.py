"""User-facing models: matrix factorization and its regularized form.

Example:
    >>> import cfcore
    >>> ds = cfcore.datasets.load_movielens("100k")                      # doctest: +SKIP
    >>> train, test = ds.ratings.split(holdout_fraction=0.1, seed=0)    # doctest: +SKIP
    >>> model = cfcore.MatrixFactorization(embedding_dim=30, init_stddev=0.5)
    >>> history = model.fit(train, test=test, steps=1000,
    ...                     optimizer=cfcore.optimizers.SGD(10.0))      # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pandas as pd

from ..data.batching import MinibatchSampler
from ..data.ratings import Ratings
from ..maths import functional
from ..maths import objectives as losses
from ..persistence import register_model
from ..specs import REGULARIZED_MF, MFSpec, MSEMethod, OptimizerSpec
from ..train.hyper import HYPER, hyper_values, spec_key, with_coefficients
from ..train.placement import Placement
from ..train.session import Session
from .base import FACTOR_ARGUMENTS, PENALTY_ARGUMENTS, CommandLine, FitPlan, Params, whole_batch
from .factor import RatingModel, TrainingSet

# Ratings per evaluation call: bounds the memory of the gathered [chunk, d] rows on large data.
EVAL_CHUNK = 1 << 21
# The arrays of a device batch that are one entry per rating (a batch may also hold a "layout").
RATING_KEYS = ("users", "items", "values")


@register_model
class MatrixFactorization(RatingModel):
    """Matrix factorization `A ≈ U·Vᵀ` trained on the MSE of the observed ratings.

    Args:
        embedding_dim: d, the embedding dimension.
        init_stddev: standard deviation of the normal initial embeddings.
        mse: "gather" (default; memory O(|Ω|·d)) or "dense" (the notebook's full U·Vᵀ then
            gather; memory O(N·M)). Same objective, different cost.
    """

    kind = "mf"
    spec_type = MFSpec
    command_line = CommandLine(
        "mf", "ratings", "steps",
        arguments={**FACTOR_ARGUMENTS, "--mse": "mse"},
        options=("--batch-size",),
        defaults={"--dim": 30, "--init-stddev": 0.5, "--lr": 10.0, "--steps": 1000},
    )  # fmt: skip

    def __init__(
        self,
        embedding_dim: int = MFSpec.embedding_dim,
        init_stddev: float = MFSpec.init_stddev,
        mse: MSEMethod = MFSpec.mse,
    ) -> None:
        super().__init__(MFSpec(embedding_dim, init_stddev, mse))

    def fit(
        self,
        train: Ratings,
        *,
        test: Ratings | None = None,
        steps: int,
        optimizer: OptimizerSpec,
        backend: Any = None,
        seed: int = 0,
        batch_size: int | None = None,
        eval_every: int = 10,
        progress: bool = True,
        devices: Any = None,
    ) -> pd.DataFrame:
        """Trains for `steps` updates; a second call continues from where the first stopped.

        Steps run in compiled chunks of `eval_every` on the backend; between chunks the train
        (and test) losses are recorded. If the loss turns NaN or infinite, training stops with
        `TrainingDivergedError` naming the step, and the model keeps the last finite parameters.

        Args:
            train: training ratings (or a dataset; its `.ratings` are used).
            test: optional held-out ratings over the same catalog, evaluated with the training ones.
            steps: number of optimizer updates.
            optimizer: a `cfcore.optimizers` spec, e.g. `SGD(learning_rate=10.0)`.
            backend: "jax", "tf", a backend instance, or None (`CFCORE_BACKEND`, else "jax").
            seed: seeds the initial embeddings (first fit only) and the minibatch order.
            batch_size: None for full-batch gradient descent (the notebook's), else the number
                of ratings per step (epochs of seeded shuffles).
            eval_every: steps between two history rows.
            progress: show a progress bar.
            devices: None (one device), or train on several (JAX and TensorFlow backends): an
                int k (the backend's first k devices) or a list of `jax.Device` /
                `tf.config.LogicalDevice`. The tables are row-sharded over them and each batch
                split (see `cfcore.train.sharding`); the result equals the single-device one up
                to float32 rounding.

        Returns:
            The whole history so far: one row per evaluation with `step`, `train_mse`,
            `test_mse` (with `test`), and for a regularized model `observed_loss`,
            `regularization_loss`, `gravity_loss`, `total_loss`.
        """
        run = (steps, eval_every, seed, backend, devices, progress)
        return self._fit(TrainingSet(train, test, batch_size), "gradient", optimizer, *run)

    def _plan(self, session: Session, inputs: TrainingSet, seed: int) -> FitPlan:
        spec, be, place = self.spec, session.backend, session.placement
        sampler = None
        if inputs.batch_size is not None:
            sampler = MinibatchSampler(len(inputs.train), inputs.batch_size, seed + session.step)
        # Full-batch gather steps read the same pairs every step: the backend's pair layout (if
        # it has one) is built once here. Minibatch steps use the plain gathers: a layout per
        # batch would cost more than it saves at the batch sizes measured (benchmarks/results/notes.md).
        layout = sampler is None and spec.mse == "gather" and place.pair_layout
        # The coefficients go with the data (read at run time): a search over them compiles once.
        hyper = place.data(hyper_values(spec))

        def device(r: Ratings) -> dict[str, Any]:
            return {**place.data(be.device_batch(r, pair_layout=layout)), HYPER: hyper}

        data = device(inputs.train)
        test_data = None if inputs.test is None else device(inputs.test)
        key = (spec_key(spec), sampler is None)
        chunk = session.chunk(key, coefficient_loss(be, spec), take(be, sampler))
        terms = partial(evaluate_terms, be, spec, placement=place)
        row = rating_row(session, terms, data, test_data, MF_COLUMNS if spec.regularized else ())
        next_xs = None if sampler is None else sampler.take
        return FitPlan(chunk, data, row, ("train_mse", "test_mse"), next_xs)

    def _loss(self, be: Any, spec: Any) -> Callable[[Params, Any], tuple[Any, dict[str, Any]]]:
        return coefficient_loss(be, spec)

    def _fold_in_batch(self, rows: Any, items: Any, values: Any, num: int) -> Any:
        return {"users": rows, "items": items, "values": values}


@register_model
class RegularizedMF(MatrixFactorization):
    """Matrix factorization with L2 and gravity regularization (the notebook's section V).

    Objective: observed MSE + λr·(ΣU²/N + ΣV²/M) + λg·(1/(N·M))·Σᵢⱼ⟨Uᵢ,Vⱼ⟩², the gravity sum computed
    through the `[d, d]` Gramians. Gravity pulls the score of every pair, unseen ones included,
    toward zero; it raises the observed errors but gives better-structured embeddings.

    Args:
        embedding_dim: d.
        init_stddev: standard deviation of the normal initial embeddings.
        regularization_coeff: λr.
        gravity_coeff: λg.
        mse: "gather" or "dense", as in `MatrixFactorization`.
    """

    command_line = CommandLine(
        "regularized", "ratings", "steps",
        arguments={**FACTOR_ARGUMENTS, "--mse": "mse", **PENALTY_ARGUMENTS},
        options=("--batch-size",),
        defaults={"--dim": 35, "--init-stddev": 0.05, "--lr": 20.0, "--steps": 2000,
                  "--regularization": 0.1, "--gravity": 1.0},
    )  # fmt: skip

    @classmethod
    def default_spec(cls) -> MFSpec:
        return REGULARIZED_MF

    def __init__(
        self,
        embedding_dim: int = REGULARIZED_MF.embedding_dim,
        init_stddev: float = REGULARIZED_MF.init_stddev,
        regularization_coeff: float = REGULARIZED_MF.regularization_coeff,
        gravity_coeff: float = REGULARIZED_MF.gravity_coeff,
        mse: MSEMethod = REGULARIZED_MF.mse,
    ) -> None:
        spec = MFSpec(embedding_dim, init_stddev, mse, regularization_coeff, gravity_coeff)
        RatingModel.__init__(self, spec)


MF_COLUMNS = ("observed", "regularization", "gravity", "total")
"""The objective's parts a regularized MF history records (as `<part>_loss`)."""


def rating_row(
    session: Session,
    terms: Callable[..., dict[str, float]],
    data: Any,
    test_data: Any,
    columns: tuple[str, ...],
) -> Callable[[float | None], dict[str, float]]:
    """The history row of an explicit-rating model: `step`, `train_mse` (the observed part of
    `terms(params, data)`), `test_mse` (with `test_data`) and `<part>_loss` for each of
    `columns`, at the session's current parameters."""

    def row(_: float | None) -> dict[str, float]:
        parts = terms(session.params, data)
        out: dict[str, float] = {"step": session.step, "train_mse": parts["observed"]}
        if test_data is not None:
            out["test_mse"] = terms(session.params, test_data)["observed"]
        out.update({f"{k}_loss": parts[k] for k in columns})
        return out

    return row


def take(be: Any, sampler: MinibatchSampler | None) -> Callable[[Any, Any], Any]:
    """How a gradient step takes its batch: all of the data (full batch), or the ratings at a
    minibatch's indices (a pair layout describes the whole set, not a minibatch; the
    coefficients, `hyper`, are handed to every batch by the trainer)."""
    if sampler is None:
        return whole_batch

    def minibatch(data: dict[str, Any], idx: Any) -> dict[str, Any]:
        return {k: be.xp.take(data[k], idx) for k in RATING_KEYS}

    return minibatch


def evaluate_terms(
    be: Any, spec: MFSpec, params: Any, data: dict[str, Any], placement: Placement | None = None
) -> dict[str, float]:
    """The objective's parts on device `data`, the observed MSE averaged over `EVAL_CHUNK` chunks.

    With a pair layout in `data` (full-batch training on a backend that makes one) the whole set
    is evaluated in one call: the layout's kernel never holds the `[n, d]` gathered rows. So is
    data of a `placement` with a key (sharded: its padding is sliced off inside the call).
    """
    n = int(data["values"].shape[0])
    key = None if placement is None else placement.key
    # Data carrying the coefficients (`fit`'s) compiles once for any of their values.
    spec_id = spec_key(spec) if HYPER in data else spec

    def terms(p: Any, b: Any) -> Any:
        return losses.mf_loss_terms(be, with_coefficients(spec, b), p, b)

    if key is not None:
        assert placement is not None
        terms_fn = be.compiled(("mf_terms", spec_id, key), lambda: placement.placed(terms))
        return {k: float(be.to_numpy(v)) for k, v in terms_fn(params, data).items()}
    terms_fn = be.compiled(("mf_terms", spec_id), lambda: terms)
    if n <= EVAL_CHUNK or "layout" in data:
        return {k: float(be.to_numpy(v)) for k, v in terms_fn(params, data).items()}
    # The penalties do not depend on the ratings: compute them once, and only the MSE per chunk.
    mse_spec = MFSpec(spec.embedding_dim, spec.init_stddev, spec.mse)
    mse_fn = be.compiled(
        ("mf_terms", mse_spec), lambda: lambda p, b: losses.mf_loss_terms(be, mse_spec, p, b)
    )
    observed = 0.0
    for start in range(0, n, EVAL_CHUNK):
        part = {k: data[k][start : start + EVAL_CHUNK] for k in RATING_KEYS}
        m = int(part["values"].shape[0])
        observed += float(be.to_numpy(mse_fn(params, part)["observed"])) * m
    out = {"observed": observed / n}
    if spec.regularized:
        u, v = params["user"], params["item"]
        out["regularization"] = spec.regularization_coeff * float(
            be.to_numpy(functional.l2_penalty(be, u, v))
        )
        out["gravity"] = spec.gravity_coeff * float(be.to_numpy(functional.gravity(be, u, v)))
    out["total"] = out["observed"] + out.get("regularization", 0.0) + out.get("gravity", 0.0)
    return out


def coefficient_loss(
    be: Any, spec: Any, loss_terms: Callable[..., Any] = losses.mf_loss_terms
) -> Any:
    """`spec`'s loss reading its coefficients from the batch (`cfcore.train.hyper`):
    `loss(params, batch) -> (total, terms)`, the terms `loss_terms(be, spec, params, batch)`
    (an objective of `cfcore.maths.objectives`; default matrix factorization's)."""

    def loss(params: Params, batch: Any) -> tuple[Any, dict[str, Any]]:
        terms = loss_terms(be, with_coefficients(spec, batch), params, batch)
        return terms["total"], terms

    return loss
