"""BPR: Bayesian personalized ranking from implicit feedback (Rendle et al., 2009).

Every rating of the training set is a positive `(u, i)`. At each gradient step every positive
gets one negative item `j` drawn uniformly over the catalogue on the host (a seeded NumPy
generator: the same seed gives the same negatives, and a continued `fit` draws on from where
it stopped), and the objective is

    L = (1/|Ω|) Σ_(u,i,j) softplus(−x_uij) + λ·(ΣU²/N + ΣV²/M + Σb²/M),
    x_uij = ⟨U_u, V_i − V_j⟩ + b_i − b_j

(`softplus(−x) = −ln σ(x)`, the item bias `b` optional). A negative that happens to be one of
the user's positives is kept: it is rare on sparse data (|I_u|/M) and only wastes its term.

Example:
    >>> import cfcore
    >>> ds = cfcore.datasets.load_movielens("100k")                       # doctest: +SKIP
    >>> train, test = ds.ratings.split(holdout_fraction=0.1, seed=0)     # doctest: +SKIP
    >>> model = cfcore.BPR(embedding_dim=32)
    >>> model.fit(train.to_implicit(3.5), steps=200,
    ...           optimizer=cfcore.optimizers.Adam(0.05))                # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ..errors import ArgumentTypeError
from ..maths.objectives import l2_penalty, softplus
from ..persistence import register_model
from ..train.hyper import HYPER, hyper_values, spec_key
from ..validate import check_float, check_int
from .base import FACTOR_ARGUMENTS, CommandLine, FitPlan, Params
from .factor import FactorModel, TrainingSet
from .mf import coefficient_loss

COMMAND_LINE = CommandLine(
    "bpr", "implicit", "steps",
    arguments={**FACTOR_ARGUMENTS, "--regularization": "regularization_coeff"},
    defaults={"--dim": 32, "--init-stddev": 0.1, "--optimizer": "adam", "--lr": 0.05,
              "--steps": 200, "--regularization": 0.01},
)  # fmt: skip
"""`cfcore train --model bpr`: the positives above --threshold, Adam steps, ranking metrics."""
FOLD_IN_NEGATIVES = 20
"""Negatives drawn per positive of a new user (fold-in), from a generator seeded with 0."""


@dataclass(frozen=True)
class BPRSpec:
    """BPR's hyper-parameters (see the module docstring for the objective).

    Attributes:
        embedding_dim: d.
        init_stddev: standard deviation of the normal initial embeddings (biases start at 0).
        regularization_coeff: λ.
        item_bias: whether the scores have an item bias `b_i`.
    """

    embedding_dim: int = 32
    init_stddev: float = 0.1
    regularization_coeff: float = 0.01
    item_bias: bool = True

    runtime_fields: ClassVar[tuple[str, ...]] = ("regularization_coeff",)

    def __post_init__(self) -> None:
        if not isinstance(self.item_bias, bool | np.bool_):
            raise ArgumentTypeError(f"item_bias must be a bool, got {self.item_bias!r}")
        checked = {
            "embedding_dim": check_int("embedding_dim", self.embedding_dim, minimum=1),
            "init_stddev": check_float("init_stddev", self.init_stddev, exclusive_minimum=0.0),
            "regularization_coeff": check_float(
                "regularization_coeff", self.regularization_coeff, minimum=0.0
            ),
            "item_bias": bool(self.item_bias),
        }
        for name, value in checked.items():  # frozen: store the checked plain values
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "bpr", **asdict(self)}


def bpr_loss_terms(be: Any, spec: Any, params: Params, batch: dict[str, Any]) -> dict[str, Any]:
    """BPR's objective on `batch`, written once on the backend's operations.

    Args:
        be: the backend.
        spec: a `BPRSpec` (or its run-time `Coefficients`).
        params: `{"user": [N, d], "item": [M, d]}`, and `"item_bias": [M]` with `spec.item_bias`.
        batch: int32 `[n]` arrays `"users"`, `"items"` (the positives) and `"negatives"`.

    Returns:
        `{"ranking", "regularization", "total"}`, float32 scalars.
    """
    xp = be.xp
    u = xp.take(params["user"], batch["users"])
    diff = xp.take(params["item"], batch["items"]) - xp.take(params["item"], batch["negatives"])
    x = xp.sum(u * diff, axis=1)
    penalty = l2_penalty(be, params["user"], params["item"])
    if spec.item_bias:
        b = params["item_bias"]
        x = x + xp.take(b, batch["items"]) - xp.take(b, batch["negatives"])
        penalty = penalty + xp.sum(xp.square(b)) / float(b.shape[0])
    ranking = xp.mean(softplus(xp, -x))
    regularization = spec.regularization_coeff * penalty
    return {"ranking": ranking, "regularization": regularization, "total": ranking + regularization}


@register_model
class BPR(FactorModel):
    """Bayesian personalized ranking (see the module docstring), trained by gradient steps.

    Args:
        embedding_dim: d.
        init_stddev: standard deviation of the normal initial embeddings.
        regularization_coeff: λ.
        item_bias: give each item a bias `b_i` (in `embeddings["item_bias"]`).
    """

    kind = "bpr"
    spec_type = BPRSpec
    command_line = COMMAND_LINE

    def __init__(
        self,
        embedding_dim: int = BPRSpec.embedding_dim,
        init_stddev: float = BPRSpec.init_stddev,
        regularization_coeff: float = BPRSpec.regularization_coeff,
        item_bias: bool = BPRSpec.item_bias,
    ) -> None:
        super().__init__(BPRSpec(embedding_dim, init_stddev, regularization_coeff, item_bias))

    # fmt: off
    def fit(self, train: Any, *, steps: int, optimizer: Any, backend: Any = None, seed: int = 0,
            eval_every: int = 10, progress: bool = True, devices: Any = None) -> pd.DataFrame:
        # fmt: on
        """Trains for `steps` gradient steps (each over every positive, with fresh negatives);
        a second call continues.

        Args:
            train: the positives, `Ratings` (e.g. `ratings.to_implicit(3.5)`; values unused).
            steps: gradient steps.
            optimizer: a `cfcore.optimizers` spec or the framework's own optimizer, as
                `MatrixFactorization.fit`.
            backend: a backend name or instance, or None.
            seed: seeds the initial embeddings (first fit only) and the negatives.
            eval_every: steps between two history rows.
            progress: show a progress bar.
            devices: as `MatrixFactorization.fit`.

        Returns:
            The whole history: `step` and `train_loss` (the mean objective of the steps since
            the previous row).
        """
        run = (steps, eval_every, seed, backend, devices, progress)
        return self._fit(TrainingSet(train), "gradient", optimizer, *run)

    def _initial_params(self, inputs: TrainingSet, seed: int) -> Params:
        params = super()._initial_params(inputs, seed)
        if self.spec.item_bias:
            params["item_bias"] = np.zeros(inputs.train.num_items, np.float32)
        return params

    def _loss(self, be: Any, spec: Any) -> Any:
        return coefficient_loss(be, spec, bpr_loss_terms)

    def _plan(self, session: Any, inputs: TrainingSet, seed: int) -> FitPlan:
        spec, place, train = self.spec, session.placement, inputs.train
        data = {**place.data({"users": train.users, "items": train.items})}
        data[HYPER] = place.data(hyper_values(spec))
        # Seeded by the seed and the step the fit starts from: a continued fit draws on.
        rng = np.random.default_rng([seed, session.step])

        def negatives(k: int) -> np.ndarray:
            return rng.integers(0, train.num_items, (k, len(train))).astype(np.int32)

        def take(d: dict[str, Any], neg: Any) -> dict[str, Any]:
            return {"users": d["users"], "items": d["items"], "negatives": neg}

        chunk = session.chunk((spec_key(spec), "bpr"), self._loss(session.backend, spec), take)

        def row(loss: float | None) -> dict[str, float]:
            return {"step": session.step, **({} if loss is None else {"train_loss": loss})}

        return FitPlan(chunk, data, row, ("train_loss",), negatives)

    def _fold_in_batch(self, rows: Any, items: Any, values: Any, num: int) -> Any:
        rng = np.random.default_rng(0)
        m, n = self.embeddings_numpy()["item"].shape[0], len(rows)
        return {
            "users": np.tile(rows, FOLD_IN_NEGATIVES),
            "items": np.tile(items, FOLD_IN_NEGATIVES),
            "negatives": rng.integers(0, m, n * FOLD_IN_NEGATIVES),
        }

    def scoring_embeddings(self) -> Params:
        """`{"user": [u, 1], "item": [v, b_i]}` with the item bias (else the embeddings)."""
        p = self.params_numpy()
        if not self.spec.item_bias:
            return {"user": p["user"], "item": p["item"]}
        ones = np.ones((len(p["user"]), 1), np.float32)
        return {
            "user": np.concatenate([p["user"], ones], 1),
            "item": np.concatenate([p["item"], p["item_bias"][:, None]], 1),
        }
