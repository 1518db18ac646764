"""Peers of `cfcore experiment`: adapters (`cfcore.tuning.peers`) for models cfcore does not train.

A config names one by "module:Class", e.g. `adapter = "benchmarks.experiment_peers:SurpriseSVD"`
(run from the repository's root), and its space searches the constructor's arguments. cfcore never
imports this file.

* `SurpriseSVD` (ratings): scikit-surprise's `SVD` (biased MF by per-rating SGD), predictions
  clipped to [1, 5] as surprise clips its own.
* `ImplicitALS` (positives): `implicit`'s CPU `AlternatingLeastSquares`, held-out users folded in
  by its own `recalculate_user`.
* `EASE` (positives): Steck 2019's EASE^R, `B = I − P·diag(1/diag(P))`, `P = (XᵀX + λI)⁻¹`,
  scores `x_u·B`.
* `Popularity` (positives): items by their number of training users.
* `BiasedPosterior` (ratings): cfcore's own `BiasedMF.sample_posterior` (a few ALS sweeps, then
  Gibbs-sampled biased ALS, the kept draws' predictions averaged). Not a peer: an adapter only
  because a posterior average is not a `fit` that `tune` can stop early.
"""

from __future__ import annotations

import os
from typing import Any

# implicit's solver runs its own threads; a multi-threaded BLAS under them oversubscribes the
# cores (implicit warns about it). Set before numpy loads its BLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np


def csr(rows: Any, num_items: int):
    """A `cfcore.retrieval.RatedItems` (or its `indptr`/`indices`) as a SciPy CSR of ones."""
    import scipy.sparse as sp

    data = np.ones(len(rows.indices), np.float32)
    indptr = np.asarray(rows.indptr) - rows.indptr[0]
    return sp.csr_matrix((data, rows.indices, indptr), shape=(len(indptr) - 1, num_items))


def train_csr(train: Any):
    """Positives (`cfcore.Ratings`) as the SciPy CSR of ones `implicit` and EASE train on."""
    import scipy.sparse as sp

    return sp.csr_matrix(
        (np.ones(len(train), np.float32), (train.users, train.items)),
        shape=(train.num_users, train.num_items),
    )


def implicit_model(factors: int, regularization: float, alpha: float, iterations: int, seed: int):
    """`implicit`'s CPU `AlternatingLeastSquares` on 2 threads."""
    from implicit.cpu.als import AlternatingLeastSquares

    return AlternatingLeastSquares(
        factors=factors,
        regularization=regularization,
        alpha=alpha,
        iterations=iterations,
        random_state=seed,
        num_threads=2,
    )


class SurpriseSVD:
    """scikit-surprise's SVD; its defaults are surprise's (`SVD()`)."""

    kind = "ratings"

    def __init__(self, n_factors: int = 100, n_epochs: int = 20, lr_all: float = 0.005,
                 reg_all: float = 0.02) -> None:  # fmt: skip
        self.params = {"n_factors": n_factors, "n_epochs": n_epochs, "lr_all": lr_all,
                       "reg_all": reg_all}  # fmt: skip
        for name, value in self.params.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")

    def fit(self, train: Any, *, seed: int) -> None:
        import pandas as pd
        from surprise import SVD, Dataset, Reader

        frame = pd.DataFrame({"u": train.users, "i": train.items, "r": train.values.astype(float)})
        trainset = Dataset.load_from_df(frame, Reader(rating_scale=(1, 5))).build_full_trainset()
        self.algo = SVD(random_state=seed, **self.params)
        self.algo.fit(trainset)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.array([self.algo.predict(u, i).est
                         for u, i in zip(users.tolist(), items.tolist(), strict=True)])  # fmt: skip


class ImplicitALS:
    """`implicit`'s ALS (Hu et al. 2008, conjugate gradient), at `implicit`'s defaults."""

    kind = "positives"

    def __init__(self, factors: int = 100, regularization: float = 0.01, alpha: float = 1.0,
                 iterations: int = 15) -> None:  # fmt: skip
        if factors < 1 or iterations < 1 or regularization < 0 or alpha <= 0:
            raise ValueError(
                f"bad ALS setting: factors={factors}, iterations={iterations}, "
                f"regularization={regularization}, alpha={alpha}"
            )
        self.params = (factors, regularization, alpha, iterations)

    def fit(self, train: Any, *, seed: int) -> None:
        self.model = implicit_model(*self.params, seed=seed)
        self.model.fit(train_csr(train), show_progress=False)
        self.items = np.asarray(self.model.item_factors)

    def scores(self, fold_in: Any) -> np.ndarray:
        x = csr(fold_in, self.items.shape[0])
        return self.model.recalculate_user(np.arange(fold_in.num_rows), x) @ self.items.T


class EASE:
    """EASE^R with its L2 weight `lam`."""

    kind = "positives"

    def __init__(self, lam: float = 500.0) -> None:
        if not lam > 0:
            raise ValueError(f"lam must be positive, got {lam!r}")
        self.lam = lam

    def fit(self, train: Any, *, seed: int) -> None:
        x = train_csr(train)
        gram = (x.T @ x).toarray().astype(np.float64)
        # B = I − P·diag(1/diag(P)), P = (XᵀX + λI)⁻¹ (symmetric positive definite), diag(B) = 0.
        p = np.linalg.inv(gram + self.lam * np.eye(len(gram)))
        b = -p / np.diag(p)[None, :]
        np.fill_diagonal(b, 0.0)
        self.weights = b.astype(np.float32)

    def scores(self, fold_in: Any) -> np.ndarray:
        return csr(fold_in, self.weights.shape[0]) @ self.weights


class Popularity:
    """Items by their number of training users (no hyper-parameter)."""

    kind = "positives"

    def fit(self, train: Any, *, seed: int) -> None:
        from cfcore.eval.popularity import PopularityScorer

        self.scorer = PopularityScorer.from_ratings(train)

    def scores(self, fold_in: Any) -> np.ndarray:
        return self.scorer(fold_in)


class BiasedPosterior:
    """`cfcore.BiasedMF`'s Bayesian average: `warm` ALS sweeps at the prior's λ, then
    `BiasedMF.sample_posterior` (`burn_in` draws discarded, `samples` kept, noise precision
    `noise_precision`); predictions not clipped, as `BiasedMF`'s own."""

    kind = "ratings"

    def __init__(self, embedding_dim: int = 40, regularization_coeff: float = 0.1,
                 bias_regularization_coeff: float = 0.02, noise_precision: float = 2.0,
                 samples: int = 200, burn_in: int = 5, warm: int = 5,
                 backend: str = "jax") -> None:  # fmt: skip
        import cfcore

        self.params = {"embedding_dim": embedding_dim,
                       "regularization_coeff": regularization_coeff,
                       "bias_regularization_coeff": bias_regularization_coeff}  # fmt: skip
        cfcore.BiasedMF(**self.params)  # refuses a bad value before any data is read
        if samples < 1 or burn_in < 0 or warm < 0 or not noise_precision > 0:
            raise ValueError(
                f"bad chain: samples={samples}, burn_in={burn_in}, warm={warm}, "
                f"noise_precision={noise_precision}"
            )
        self.chain = {"samples": samples, "burn_in": burn_in, "noise_precision": noise_precision}
        self.warm, self.backend = warm, backend

    def fit(self, train: Any, *, seed: int) -> None:
        import cfcore

        model = cfcore.BiasedMF(**self.params)
        if self.warm:
            model.fit(train, steps=self.warm, solver="als", backend=self.backend, seed=seed,
                      progress=False)  # fmt: skip
        self.posterior = model.sample_posterior(train, **self.chain, backend=self.backend,
                                                seed=seed, progress=False)  # fmt: skip

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.asarray(self.posterior.predict(users, items), np.float64)
