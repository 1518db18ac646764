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

from typing import Any

import numpy as np
import pandas as pd

from ._backend import Batch
from ._registry import get_backend
from .data.ratings import Ratings
from .init import init_mf_params
from .specs import MFSpec, MSEMethod, OptimizerSpec, make_optimizer
from .training import _Session, as_ratings, check_steps, run_training


class MatrixFactorization:
    """Matrix factorization `A ≈ U·Vᵀ` trained on the MSE of the observed ratings.

    Args:
        embedding_dim: d, the embedding dimension.
        init_stddev: standard deviation of the normal initial embeddings.
        mse: "gather" (default; memory O(|Ω|·d)) or "dense" (the notebook's full U·Vᵀ then
            gather; memory O(N·M)). Same objective, different cost.
    """

    def __init__(
        self, embedding_dim: int = 3, init_stddev: float = 1.0, mse: MSEMethod = "gather"
    ) -> None:
        self.spec = MFSpec(embedding_dim=embedding_dim, init_stddev=init_stddev, mse=mse)
        self._session: _Session | None = None
        self._params: dict[str, np.ndarray] | None = None
        self._shape: tuple[int, int] | None = None
        self.catalog: pd.DataFrame | None = None
        self.history = pd.DataFrame()

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.spec.to_dict().items() if k != "kind")
        return f"{type(self).__name__}({fields})"

    # ------------------------------------------------------------------ training

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

        Returns:
            The whole history so far: one row per evaluation with `step`, `train_mse`,
            `test_mse` (with `test`), and for a regularized model `observed_loss`,
            `regularization_loss`, `gravity_loss`, `total_loss`.
        """
        train = as_ratings(train, "train")
        if test is not None:
            test = as_ratings(test, "test")
            if (test.num_users, test.num_items) != (train.num_users, train.num_items):
                raise ValueError(
                    f"test ratings are over {test.num_users} users x {test.num_items} items but train "
                    f"ratings over {train.num_users} x {train.num_items}: they must share a catalog"
                )
        check_steps(steps, eval_every)
        opt = make_optimizer(optimizer)
        shape = (train.num_users, train.num_items)
        if self._shape is not None and shape != self._shape:
            raise ValueError(
                f"this model has embeddings for {self._shape[0]} users x {self._shape[1]} items; "
                f"cannot continue training on ratings over {shape[0]} x {shape[1]}"
            )
        be = get_backend(backend)
        session = self._session
        if session is None or session.backend is not be or session.optimizer != opt:
            if session is not None:
                self._params = self.embeddings_numpy()
            params = (
                self._params
                if self._params is not None
                else init_mf_params(self.spec, *shape, seed)
            )
            state = be.init_train_state(self.spec, params, opt)
            chunk = be.make_train_chunk(self.spec, opt)
            step = session.step if session is not None else 0
            rows = session.history_rows if session is not None else []
            session = _Session(be, opt, state, state, chunk, step, rows)
            self._session = session
        self._shape = shape
        if train.catalog is not None:
            self.catalog = train.catalog
        self._params = None  # the session's state is now the truth
        try:
            run_training(
                self.spec,
                session,
                train,
                test,
                steps=steps,
                batch_size=batch_size,
                seed=seed + session.step,
                eval_every=eval_every,
                progress=progress,
            )
        finally:
            self.history = pd.DataFrame(session.history_rows)
        return self.history

    # ------------------------------------------------------------------ results

    def embeddings_numpy(self) -> dict[str, np.ndarray]:
        if self._session is not None and self._params is None:
            self._params = self._session.backend.params_to_numpy(self._session.state.params)
        if self._params is None:
            raise RuntimeError(f"{type(self).__name__} has no embeddings yet: call fit() first")
        return self._params

    @property
    def embeddings(self) -> dict[str, np.ndarray]:
        """`{"user": float32[N, d], "item": float32[M, d]}` (copies; the model is not changed)."""
        return {k: v.copy() for k, v in self.embeddings_numpy().items()}

    @property
    def step(self) -> int:
        """Number of optimizer updates applied so far."""
        return 0 if self._session is None else self._session.step

    def predict(self, users: Any, items: Any) -> np.ndarray:
        """Predicted ratings ⟨U_u, V_i⟩ for pairs of indices; float32 `[n]`."""
        emb = self.embeddings_numpy()
        users, items = np.asarray(users), np.asarray(items)
        Ratings(users, items, np.zeros(len(users)), *self._shape)  # validates ids and lengths
        return np.einsum("nd,nd->n", emb["user"][users], emb["item"][items])

    def evaluate(self, ratings: Ratings) -> dict[str, float]:
        """Error of the predictions on `ratings`: `{"mse", "rmse", "mae", "n"}` (float64 on the host)."""
        ratings = as_ratings(ratings, "ratings")
        if self._shape is not None and (ratings.num_users, ratings.num_items) != self._shape:
            raise ValueError(
                f"ratings are over {ratings.num_users} x {ratings.num_items} but the model over "
                f"{self._shape[0]} x {self._shape[1]} users x items"
            )
        pred = self.predict(ratings.users, ratings.items).astype(np.float64)
        err = pred - ratings.values.astype(np.float64)
        mse = float(np.mean(err**2))
        return {
            "mse": mse,
            "rmse": float(np.sqrt(mse)),
            "mae": float(np.mean(np.abs(err))),
            "n": len(err),
        }

    def loss_terms(self, ratings: Ratings, backend: Any = None) -> dict[str, float]:
        """The objective's parts on `ratings`, computed by the backend (as recorded in the history)."""
        be = get_backend(backend)
        terms = be.mf_loss_terms(
            self.spec, self.embeddings_numpy(), Batch.from_ratings(as_ratings(ratings, "ratings"))
        )
        return {k: float(be.to_numpy(v)) for k, v in terms.items()}


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

    def __init__(
        self,
        embedding_dim: int = 3,
        init_stddev: float = 0.1,
        regularization_coeff: float = 0.1,
        gravity_coeff: float = 1.0,
        mse: MSEMethod = "gather",
    ) -> None:
        super().__init__(embedding_dim, init_stddev, mse)
        self.spec = MFSpec(
            embedding_dim=embedding_dim,
            init_stddev=init_stddev,
            mse=mse,
            regularization_coeff=regularization_coeff,
            gravity_coeff=gravity_coeff,
        )
