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

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._registry import get_backend
from ..data.batching import MinibatchSampler
from ..data.ratings import Ratings
from ..init import init_mf_params
from ..maths import objectives as losses
from ..persistence import register_model
from ..specs import MFSpec, MSEMethod, OptimizerSpec
from ..train.hyper import HYPER, hyper_values, spec_key, with_coefficients
from ..train.placement import Placement
from ..train.session import as_ratings, check_steps
from .base import Model, Params, State

if TYPE_CHECKING:
    from ..persistence import StateReader

# Ratings per evaluation call: bounds the memory of the gathered [chunk, d] rows on large data.
EVAL_CHUNK = 1 << 21
# The arrays of a device batch that are one entry per rating (a batch may also hold a "layout").
RATING_KEYS = ("users", "items", "values")


@register_model
class MatrixFactorization(Model):
    """Matrix factorization `A ≈ U·Vᵀ` trained on the MSE of the observed ratings.

    Args:
        embedding_dim: d, the embedding dimension.
        init_stddev: standard deviation of the normal initial embeddings.
        mse: "gather" (default; memory O(|Ω|·d)) or "dense" (the notebook's full U·Vᵀ then
            gather; memory O(N·M)). Same objective, different cost.
    """

    kind = "mf"

    def __init__(
        self, embedding_dim: int = 3, init_stddev: float = 1.0, mse: MSEMethod = "gather"
    ) -> None:
        super().__init__()
        self.spec = MFSpec(embedding_dim=embedding_dim, init_stddev=init_stddev, mse=mse)
        self._shape: tuple[int, int] | None = None
        # The ratings of the last fit: retrieval leaves rated items out, `add_users` extends them.
        self.train_ratings: Ratings | None = None
        self._rated_cache: tuple[Ratings, Any] | None = None

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
        train = as_ratings(train, "train")
        if test is not None:
            test = as_ratings(test, "test")
            if (test.num_users, test.num_items) != (train.num_users, train.num_items):
                raise ValueError(
                    f"test ratings are over {test.num_users} users x {test.num_items} items but train "
                    f"ratings over {train.num_users} x {train.num_items}: they must share a catalog"
                )
        check_steps(steps, eval_every, seed)
        shape = (train.num_users, train.num_items)
        if self._shape is not None and shape != self._shape:
            raise ValueError(
                f"this model has embeddings for {self._shape[0]} users x {self._shape[1]} items; "
                f"cannot continue training on ratings over {shape[0]} x {shape[1]}"
            )
        be = get_backend(backend)

        def start_params() -> Params:
            if self._has_params():
                return self.params_numpy()
            return init_mf_params(self.spec, *shape, seed)

        session = self._train_session(be, optimizer, start_params, devices)
        self._shape = shape
        if train.catalog is not None:
            self.catalog = train.catalog
        self._remember_train(train)
        try:
            _run(
                self.spec,
                session,
                train,
                test,
                steps,
                batch_size,
                seed + session.step,
                eval_every,
                progress,
            )
        finally:
            self.history = pd.DataFrame(session.history_rows)
        return self.history

    # ------------------------------------------------------------------ results

    @property
    def embeddings(self) -> Params:
        """`{"user": float32[N, d], "item": float32[M, d]}` (copies; the model is not changed)."""
        return {k: v.copy() for k, v in self.embeddings_numpy().items()}

    def predict(self, users: Any, items: Any) -> np.ndarray:
        """Predicted ratings ⟨U_u, V_i⟩ for pairs of indices; float32 `[n]` (scalars: one pair)."""
        emb = self.embeddings_numpy()
        users, items = np.atleast_1d(users), np.atleast_1d(items)
        n, m = len(emb["user"]), len(emb["item"])
        Ratings(users, items, np.zeros(len(users)), n, m)  # validates ids and lengths
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
        terms = be.mf_loss_terms(self.spec, self.embeddings_numpy(), as_ratings(ratings, "ratings"))
        return {k: float(be.to_numpy(v)) for k, v in terms.items()}

    # ------------------------------------------------------------------ retrieval, new users, files

    def _remember_train(self, train: Ratings) -> None:
        """Keeps the vocabularies, rating scale and rated items of the training ratings."""
        n, m = train.num_users, train.num_items
        if train.user_ids is not None:
            self.user_ids = np.asarray(train.user_ids)
        elif self.user_ids is None or len(self.user_ids) != n:
            self.user_ids = np.arange(n)
        if train.item_ids is not None:
            self.item_ids = np.asarray(train.item_ids)
        elif self.item_ids is None or len(self.item_ids) != m:
            self.item_ids = np.arange(m)
        self.train_ratings = train
        self._num_train_ratings = len(train)
        self._rating_scale = (float(train.values.min()), float(train.values.max()))

    @property
    def rated_items(self) -> Any:
        """Items each user rated in `train_ratings`, a `cfcore.retrieval.RatedItems` (or None)."""
        from ..retrieval import RatedItems

        if self.train_ratings is None:
            return None
        if self._rated_cache is None or self._rated_cache[0] is not self.train_ratings:
            self._rated_cache = (self.train_ratings, RatedItems.from_ratings(self.train_ratings))
        return self._rated_cache[1]

    def fold_in(self, ratings: Any, *, reg: Any = None, backend: Any = None) -> np.ndarray:
        """Embeddings of new users from their ratings, the item embeddings fixed (no training).

        Solves u = (V_Sᵀ V_S + λ·I + P)⁻¹ V_Sᵀ r_S per new user on the backend (see
        `cfcore.retrieval`). The model is not changed; `add_users` also adds them.

        Args:
            ratings: the new users' ratings: a `Ratings` over this model's items (its users are
                the new users 0..B-1), or a frame / CSV path / mapping `{item id or title:
                rating}` as `cfcore.user_ratings.read_user_ratings` reads (one user, or several
                with a `user_id` column). Ratings must lie in `rating_scale`.
            reg: None for the default (`cfcore.retrieval.fold_in_regularization`: the model's
                own λr and gravity for a regularized model, λ = 0.1·|S| for plain MF), or λ ≥ 0
                (a scalar or one per new user; no gravity prior then).
            backend: a backend name or instance (None: the default), or "numpy".

        Returns:
            float32 `[B, d]`, one row per new user.
        """
        from ..data.user_ratings import fold_in_arrays

        rows, items, values, num, _ = fold_in_arrays(ratings, self)
        return self._fold_in_arrays(rows, items, values, num, reg, backend)

    def _fold_in_arrays(self, rows, items, values, num, reg, backend) -> np.ndarray:
        from ..retrieval import fold_in_regularization, fold_in_solve

        prior = None
        if reg is None:
            reg, prior = fold_in_regularization(self, np.bincount(rows, minlength=num))
        emb = self.embeddings_numpy()
        return fold_in_solve(emb["item"], rows, items, values, num, reg, prior, backend=backend)

    def add_users(
        self, ratings: Any, *, user_ids: Any = None, reg: Any = None, backend: Any = None
    ) -> np.ndarray:
        """Folds new users in (see `fold_in`) and appends them to the model.

        Their embeddings become new rows of the user embeddings, their ids extend `user_ids`,
        and their ratings extend `train_ratings`, so `recommend` leaves out what they rated, and
        `fit(model.train_ratings, ...)` retrains with them included (starting from the folded-in
        rows; the optimizer state restarts, the step count and history continue).

        Args:
            ratings: as in `fold_in`.
            user_ids: original ids of the new users, `[B]`; default the `user_id` column of a
                frame, else (numeric vocabularies) the next free integers after the largest id,
                else "new-0", "new-1", ...
            reg: as in `fold_in`.
            backend: as in `fold_in`.

        Returns:
            The new users' original ids, `[B]`.
        """
        from ..data.user_ratings import fold_in_arrays, new_user_ids

        rows, items, values, num, frame_ids = fold_in_arrays(ratings, self)
        emb = self.embeddings_numpy()
        n, m = emb["user"].shape[0], emb["item"].shape[0]
        old_ids = np.arange(n) if self.user_ids is None else np.asarray(self.user_ids)
        user_ids = new_user_ids(old_ids, num, user_ids, frame_ids)
        new_emb = self._fold_in_arrays(rows, items, values, num, reg, backend)
        # The session's state has N rows: drop it, keep the step count and history to continue.
        self._detach(self._with_new_users(emb, new_emb))
        self._shape = (n + num, m)
        self.user_ids = np.concatenate([old_ids, user_ids])
        if self.train_ratings is not None:
            t = self.train_ratings
            self.train_ratings = Ratings(
                np.concatenate([t.users, rows + n]),
                np.concatenate([t.items, items]),
                np.concatenate([t.values, values]),
                n + num,
                m,
                user_ids=self.user_ids,
                item_ids=t.item_ids,
                catalog=t.catalog,
            )
            self._num_train_ratings = len(self.train_ratings)
        return user_ids

    def _with_new_users(self, params: Params, new: np.ndarray) -> Params:
        """The parameters with the folded-in rows `new` (from `_fold_in_arrays`) appended."""
        return {**params, "user": np.concatenate([params["user"], new])}

    # ------------------------------------------------------------------ file state

    @classmethod
    def _spec_from_dict(cls, fields: dict[str, Any]) -> Any:
        return MFSpec(**fields)

    @classmethod
    def _from_spec(cls, spec: Any) -> MatrixFactorization:
        model = cls(embedding_dim=spec.embedding_dim, init_stddev=spec.init_stddev, mse=spec.mse)
        model.spec = spec
        return model

    @classmethod
    def _own_declared_shapes(cls, meta: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        n, m, d = (int(x) for x in meta["shape"])
        shapes: dict[str, tuple[int, ...]] = {"user_embeddings": (n, d), "item_embeddings": (m, d)}
        k = meta.get("num_train_ratings")
        if meta.get("has_ratings") and isinstance(k, int):
            shapes |= dict.fromkeys(("ratings_users", "ratings_items", "ratings_values"), (k,))
        return shapes

    def _own_state(self, include_ratings: bool) -> State:
        emb = self.embeddings_numpy()
        n, d = emb["user"].shape
        m = emb["item"].shape[0]
        has_ratings = bool(include_ratings and self.train_ratings is not None)
        meta = {"shape": [n, m, d], "has_ratings": has_ratings}
        arrays: dict[str, np.ndarray] = {
            "user_embeddings": np.asarray(emb["user"], np.float32),
            "item_embeddings": np.asarray(emb["item"], np.float32),
        }
        if has_ratings:
            r = self.train_ratings
            assert r is not None
            arrays["ratings_users"] = r.users.astype(np.int32)
            arrays["ratings_items"] = r.items.astype(np.int32)
            arrays["ratings_values"] = r.values.astype(np.float32)
        return meta, arrays

    def _restore_own(
        self, reader: StateReader, meta: dict[str, Any], shape: tuple[int, ...]
    ) -> None:
        n, m, d = shape
        user = np.asarray(reader["user_embeddings"], np.float32)
        item = np.asarray(reader["item_embeddings"], np.float32)
        if user.shape != (n, d) or item.shape != (m, d) or d != self.spec.embedding_dim:
            raise reader.damaged(
                f"embeddings of shapes {user.shape} and {item.shape} do not match the recorded "
                f"shape N={n}, M={m}, d={d} (spec d={self.spec.embedding_dim})"
            )
        self._params = {"user": user, "item": item}
        self._shape = (n, m)

    def _restore_links(self, reader: StateReader, meta: dict[str, Any]) -> None:
        if not meta.get("has_ratings"):
            return
        n, m = self._shape or (0, 0)
        self.train_ratings = Ratings(
            reader["ratings_users"],
            reader["ratings_items"],
            reader["ratings_values"],
            n,
            m,
            user_ids=self.user_ids,
            item_ids=self.item_ids,
            catalog=self.catalog,
        )


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


def history_row(
    step: int, terms: dict[str, float], test_mse: float | None, regularized: bool
) -> dict[str, float]:
    row: dict[str, float] = {"step": step, "train_mse": terms["observed"]}
    if test_mse is not None:
        row["test_mse"] = test_mse
    if regularized:
        row["observed_loss"] = terms["observed"]
        row["regularization_loss"] = terms["regularization"]
        row["gravity_loss"] = terms["gravity"]
        row["total_loss"] = terms["total"]
    return row


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
        out["regularization"] = spec.regularization_coeff * float(be.to_numpy(be.l2_penalty(u, v)))
        out["gravity"] = spec.gravity_coeff * float(be.to_numpy(be.gravity(u, v)))
    out["total"] = out["observed"] + out.get("regularization", 0.0) + out.get("gravity", 0.0)
    return out


def coefficient_loss(be: Any, spec: MFSpec) -> Any:
    """`spec`'s loss reading its coefficients from the batch (`cfcore.train.hyper`)."""

    def loss(params: Params, batch: Any) -> tuple[Any, dict[str, Any]]:
        terms = losses.mf_loss_terms(be, with_coefficients(spec, batch), params, batch)
        return terms["total"], terms

    return loss


def _full_batch(data: Any, x: Any) -> Any:
    return data


def _minibatch(be: Any) -> Any:
    def take(data: dict[str, Any], idx: Any) -> dict[str, Any]:
        # The ratings only: a pair layout describes the whole set, not a minibatch.
        return {k: be.xp.take(data[k], idx) for k in RATING_KEYS}

    return take


def _run(spec, session, train, test, steps, batch_size, seed, eval_every, progress) -> None:
    """Trains `session` on `train` with `spec`'s loss; a history row every `eval_every` steps."""
    be = session.backend
    sampler = None if batch_size is None else MinibatchSampler(len(train), batch_size, seed)
    # Full-batch gather steps read the same pairs every step: the backend's pair layout (if it
    # has one) is built once here. Minibatch steps use the plain gathers: a layout per batch
    # would cost more than it saves at the batch sizes measured (benchmarks/README.md).
    layout = sampler is None and spec.mse == "gather" and session.placement.pair_layout
    # The coefficients go with the data (read at run time): a search over them compiles once.
    hyper = session.placement.data(hyper_values(spec))
    data = {**session.placement.data(be.device_batch(train, pair_layout=layout)), HYPER: hyper}
    test_data = None
    if test is not None:
        test_data = {
            **session.placement.data(be.device_batch(test, pair_layout=layout)),
            HYPER: hyper,
        }
    take = _full_batch if sampler is None else _minibatch(be)
    run_chunk = session.chunk((spec_key(spec), sampler is None), coefficient_loss(be, spec), take)

    def record(_: float | None) -> dict[str, float]:
        terms = evaluate_terms(be, spec, session.params, data, session.placement)
        test_mse = None
        if test_data is not None:
            test_mse = evaluate_terms(be, spec, session.params, test_data, session.placement)[
                "observed"
            ]
        row = history_row(session.step, terms, test_mse, spec.regularized)
        session.history_rows.append(row)
        return row

    def label(row: dict[str, float]) -> str:
        return "  ".join(f"{c}={row[c]:.4f}" for c in ("train_mse", "test_mse") if c in row)

    session.run(
        run_chunk,
        data,
        steps=steps,
        eval_every=eval_every,
        next_xs=None if sampler is None else sampler.take,
        record=record,
        progress=progress,
        label=label,
    )
