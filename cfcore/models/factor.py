"""The base of the models of user and item tables trained on `Ratings`: `FactorModel`, and
`RatingModel`, its explicit-rating form (predicted ratings, error metrics).

`FactorModel` fills in the ratings part of `Model`'s `fit` skeleton: `fit`'s train and test
ratings are checked (same catalogue, the model's shape kept), remembered (vocabularies, rating
scale, rated items), and the host layouts a model trains on (row blocks of ALS sweeps, centred
ratings) are built through one method, `_layouts`, which keeps them for later `fit` calls on the
same training set (`LayoutCache`). It also holds what every such model offers after training:
scores, retrieval's rated items, fold-in of new users and `add_users`, and its file state (the
two tables, the training ratings).

A model of this family supplies `spec_type`, a constructor, `fit` (its public signature, calling
`_fit`), `_plan` (its device data, chunk and history row), and where it differs: its initial
parameters (`_initial_params`; default: the normal embeddings of `init_mf_params`), its host
layouts (`_host_layouts`), its fold-in (`_fold_in_arrays`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..backend.registry import get_backend
from ..data.ratings import Ratings, as_ratings
from ..errors import ArgumentValueError, NotSupportedError
from ..init import init_mf_params
from ..maths import functional
from ..train.placement import Placement
from .base import Model, Params, State
from .fold_in import minimise_rows

if TYPE_CHECKING:
    from ..persistence import StateReader


@dataclass
class TrainingSet:
    """`fit`'s inputs of a ratings model.

    Attributes:
        train: the training ratings (or a dataset, before `_checked_inputs`).
        test: held-out ratings over the same catalogue, or None.
        batch_size: ratings per gradient step (None: full batch); unused by sweeps.
        solver: what trains: "gradient" or "als" (for a model that has both).
    """

    train: Any
    test: Any = None
    batch_size: int | None = None
    solver: str = "gradient"


# ---------------------------------------------------------------------------- layout cache


def fingerprint(ratings: Ratings) -> tuple[Any, ...]:
    """A cheap fingerprint of `ratings`' arrays: catalogue size, each array's dtype and shape, and
    a hash of about 4096 evenly strided entries of each (plus the last): a change to the arrays
    that misses every sampled entry goes unseen (make a new `Ratings` after changing one)."""
    digest = hashlib.blake2b(digest_size=16)
    parts: list[Any] = [ratings.num_users, ratings.num_items]
    for a in (ratings.users, ratings.items, ratings.values):
        a = np.asarray(a)
        parts += [a.dtype.str, a.shape]
        stride = max(1, len(a) // 4096)
        digest.update(np.ascontiguousarray(a[::stride]).tobytes())
        digest.update(np.ascontiguousarray(a[-1:]).tobytes())
    return (*parts, digest.hexdigest())


class LayoutCache:
    """Host layouts by training set: the most recent `size` entries, least recently used out.

    An entry is found by the `Ratings` object's identity and the recipe (`key`: the model class,
    its spec, the model's variant), and used only while the object's `fingerprint` is the one it
    had when the layout was built: a `Ratings` whose arrays changed gets a new layout. Each entry
    holds its `Ratings`, so an identity is never reused while its entry lives.
    """

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._entries: OrderedDict[tuple, tuple[Ratings, tuple, Any]] = OrderedDict()

    def get(self, ratings: Ratings, key: Hashable, build: Callable[[], Any]) -> Any:
        """The layout of `ratings` for `key`: the cached one if the data are unchanged, else
        `build()` (then cached)."""
        full = (id(ratings), key)
        stamp = fingerprint(ratings)
        entry = self._entries.get(full)
        if entry is not None and entry[0] is ratings and entry[1] == stamp:
            self._entries.move_to_end(full)
            return entry[2]
        layout = build()
        self._entries[full] = (ratings, stamp, layout)
        self._entries.move_to_end(full)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return layout

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


LAYOUTS = LayoutCache(size=8)
"""The layouts of every ratings model's `fit` (a later `fit` on the same `Ratings` reuses them)."""


# ---------------------------------------------------------------------------- the base


class FactorModel(Model):
    """A model of user and item tables (`user` `[N, d]`, `item` `[M, d]`) trained on `Ratings`.

    Attributes:
        train_ratings: the ratings of the last fit (retrieval leaves rated items out,
            `add_users` extends them), or None.
    """

    # Gradient steps of the model's loss, unless a model declares its own trainers (ALS sweeps).
    trainers = {"gradient": "gradient steps"}

    def __init__(self, spec: Any = None) -> None:
        super().__init__(spec)
        self._shape: tuple[int, int] | None = None
        self.train_ratings: Ratings | None = None
        self._rated_cache: tuple[Ratings, Any] | None = None

    # ------------------------------------------------------------------ fit hooks

    def _checked_inputs(self, inputs: TrainingSet) -> TrainingSet:
        """`inputs` with train and test as `Ratings`, over one catalogue and the model's shape."""
        train = as_ratings(inputs.train, "train")
        test = inputs.test
        if test is not None:
            test = as_ratings(test, "test")
            if (test.num_users, test.num_items) != (train.num_users, train.num_items):
                raise ArgumentValueError(
                    f"test ratings are over {test.num_users} users x {test.num_items} items but "
                    f"train ratings over {train.num_users} x {train.num_items}: they must share "
                    "a catalog"
                )
        shape = (train.num_users, train.num_items)
        if self._shape is not None and shape != self._shape:
            raise ArgumentValueError(
                f"this model has embeddings for {self._shape[0]} users x {self._shape[1]} items; "
                f"cannot continue training on ratings over {shape[0]} x {shape[1]}"
            )
        return TrainingSet(train, test, inputs.batch_size, inputs.solver)

    def _initial_params(self, inputs: TrainingSet, seed: int) -> Params:
        return init_mf_params(self.spec, inputs.train.num_users, inputs.train.num_items, seed)

    def _remember_inputs(self, inputs: TrainingSet) -> None:
        train = inputs.train
        self._shape = (train.num_users, train.num_items)
        if train.catalog is not None:
            self.catalog = train.catalog
        self._remember_train(train)

    def _layouts(self, train: Ratings, placement: Placement, variant: Hashable = None) -> Any:
        """The host layouts this model trains on for `train` (`_host_layouts`), built once per
        training set, spec, backend and `variant` and reused by later fits (`LAYOUTS`). A sharded
        placement builds each device's own blocks (and keeps what it learns of them), so it
        builds them every time."""
        if placement.devices_key is not None:
            return self._host_layouts(train, placement, variant)
        # The backend too: a layout may hold its arrays (a pair layout is the backend's own).
        key = (type(self), self.spec, placement.backend, variant)
        return LAYOUTS.get(train, key, lambda: self._host_layouts(train, placement, variant))

    def _host_layouts(self, train: Ratings, placement: Placement, variant: Any) -> Any:
        """The host (NumPy) data a fit on `train` places on the device (see `_layouts`)."""
        raise NotImplementedError

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

    # ------------------------------------------------------------------ results

    @property
    def embeddings(self) -> Params:
        """`{"user": float32[N, d], "item": float32[M, d]}` (copies; the model is not changed)."""
        return {k: v.copy() for k, v in self.embeddings_numpy().items()}

    def predict(self, users: Any, items: Any) -> np.ndarray:
        """The scores for pairs of indices: the dot products of `scoring_embeddings` (⟨U_u, V_i⟩,
        the predicted ratings of an explicit-rating model); float32 `[n]` (scalars: one pair)."""
        emb = self.scoring_embeddings()
        users, items = np.atleast_1d(users), np.atleast_1d(items)
        n, m = len(emb["user"]), len(emb["item"])
        Ratings(users, items, np.zeros(len(users)), n, m)  # validates ids and lengths
        return np.einsum("nd,nd->n", emb["user"][users], emb["item"][items])

    def scoring_embeddings(self) -> Params:
        """The user and item tables whose dot products rank a user's items (`recommend`,
        `cfcore.retrieval`, `cfcore.eval`): `{"user": [N, d'], "item": [M, d']}`.

        Default: the embeddings. A model whose scores add more overrides it, appending columns
        (an item bias: `{"user": [u, 1], "item": [v, b_i]}`; fold-in rows are extended alike).
        """
        emb = self.embeddings_numpy()
        return {"user": emb["user"], "item": emb["item"]}

    @property
    def rated_items(self) -> Any:
        """Items each user rated in `train_ratings`, a `cfcore.retrieval.RatedItems` (or None)."""
        from ..retrieval import RatedItems

        if self.train_ratings is None:
            return None
        if self._rated_cache is None or self._rated_cache[0] is not self.train_ratings:
            self._rated_cache = (self.train_ratings, RatedItems.from_ratings(self.train_ratings))
        return self._rated_cache[1]

    # ------------------------------------------------------------------ new users

    def fold_in(self, ratings: Any, *, reg: Any = None, backend: Any = None) -> np.ndarray:
        """Embeddings of new users from their ratings, the item embeddings fixed (no training).

        Solves each new user's row of the model's own objective with the items fixed (see each
        model's `_fold_in_arrays`). The model is not changed; `add_users` also adds them.

        Args:
            ratings: the new users' ratings: a `Ratings` over this model's items (its users are
                the new users 0..B-1), or a frame / CSV path / mapping `{item id or title:
                rating}` as `cfcore.data.user_ratings.read_user_ratings` reads (one user, or several
                with a `user_id` column). Ratings must lie in `rating_scale`.
            reg: None for the model's default regularization, or λ ≥ 0 (a scalar or one per
                new user).
            backend: a backend name or instance (None: the default), or "numpy".

        Returns:
            float32 `[B, d]`, one row per new user.
        """
        from ..data.user_ratings import fold_in_arrays

        rows, items, values, num, _ = fold_in_arrays(ratings, self)
        return self._fold_in_arrays(rows, items, values, num, reg, backend)

    def _fold_in_arrays(
        self, rows: Any, items: Any, values: Any, num: int, reg: Any, backend: Any
    ) -> np.ndarray:
        """The new users' rows (`[B, ...]`: what `_with_new_users` appends) from their ratings
        as arrays (`rows` 0..num-1, `items`, `values`).

        Default: minimises the model's own loss (`_loss`) over the new users' rows of "user",
        every other parameter fixed, on the new users' data (`_fold_in_batch`), by
        `cfcore.models.fold_in.minimise_rows` on the backend (it needs gradients: jax, tf or
        torch). `reg` replaces the spec's `regularization_coeff` (a scalar). A model with a
        closed form (squared loss: `RatingModel`, iALS) overrides this.
        """
        spec = self.spec
        if reg is not None:
            if not hasattr(spec, "regularization_coeff") or np.ndim(reg) != 0:
                raise ArgumentValueError(
                    f"reg must be a scalar λ >= 0 for {type(self).__name__}, got {reg!r}"
                )
            spec = dataclasses.replace(spec, regularization_coeff=float(reg))
        be = get_backend(backend)
        if getattr(be, "name", "") == "numpy":
            raise NotSupportedError(
                f"{type(self).__name__}.fold_in minimises its loss by gradients: use a backend "
                "that has them (jax, tf or torch), not 'numpy'"
            )
        batch = self._fold_in_batch(rows, items, values, num)
        fixed = {k: v for k, v in self.params_numpy().items() if k != "user"}
        start = np.zeros((num, spec.embedding_dim), np.float32)
        return minimise_rows(be, self._loss(be, spec), fixed, start, batch)

    def _loss(self, be: Any, spec: Any) -> Callable[[Params, Any], tuple[Any, dict[str, Any]]]:
        """The model's loss `loss(params, batch) -> (total, terms)` under `spec` (its training
        objective; the generic fold-in minimises it over new rows)."""
        raise NotImplementedError

    def _fold_in_batch(self, rows: Any, items: Any, values: Any, num: int) -> Any:
        """The new users' data as `_loss` reads it (host arrays; the new users are 0..num-1)."""
        raise NotImplementedError

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
    def _own_declared_shapes(cls, meta: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        n, m, d = (int(x) for x in meta["shape"])
        shapes: dict[str, tuple[int, ...]] = {"user_embeddings": (n, d), "item_embeddings": (m, d)}
        k = meta.get("num_train_ratings")
        if meta.get("has_ratings") and isinstance(k, int):
            shapes |= dict.fromkeys(("ratings_users", "ratings_items", "ratings_values"), (k,))
        for name, shape in (meta.get("extra_params") or {}).items():
            shapes[str(name)] = tuple(int(x) for x in shape)
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
        # Any parameter beyond the two tables (an item bias, ...) is kept under its own name,
        # its shape recorded: a model adds parameters without writing file code. (Only when
        # there are any: a model of two tables writes the same fields as before.)
        extra = {k: v for k, v in self.params_numpy().items() if k not in ("user", "item")}
        if extra:
            meta["extra_params"] = {k: list(np.shape(v)) for k, v in extra.items()}
        for k, v in extra.items():
            assert k not in arrays, f"parameter {k!r} would overwrite a file entry"
            arrays[k] = np.asarray(v, np.float32)
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
        for k, declared in (meta.get("extra_params") or {}).items():
            value = np.asarray(reader[k], np.float32)
            if list(value.shape) != list(declared):
                raise reader.damaged(f"parameter {k!r} has shape {value.shape}, not {declared}")
            self._params[k] = value
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


class RatingModel(FactorModel):
    """A `FactorModel` of explicit ratings: its predictions are ratings, measured by `evaluate`
    (MSE, RMSE, MAE), and fold-in solves a new user's row of its squared loss."""

    def evaluate(self, ratings: Ratings) -> dict[str, float]:
        """Error of the predictions on `ratings`: `{"mse", "rmse", "mae", "n"}` (float64 on the host)."""
        ratings = as_ratings(ratings, "ratings")
        if self._shape is not None and (ratings.num_users, ratings.num_items) != self._shape:
            raise ArgumentValueError(
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

    def _fold_in_arrays(
        self, rows: Any, items: Any, values: Any, num: int, reg: Any, backend: Any
    ) -> np.ndarray:
        """Solves u = (V_Sᵀ V_S + λ·I + P)⁻¹ V_Sᵀ r_S per new user on the backend, λ and P by
        default `cfcore.retrieval.fold_in_regularization` (the model's own λr and gravity for a
        regularized model, λ = 0.1·|S| for plain MF; no gravity prior with an explicit `reg`)."""
        from ..retrieval import fold_in_regularization, fold_in_solve

        prior = None
        if reg is None:
            reg, prior = fold_in_regularization(self, np.bincount(rows, minlength=num))
        emb = self.embeddings_numpy()
        return fold_in_solve(emb["item"], rows, items, values, num, reg, prior, backend=backend)

    def _objective_terms(self, be: Any, ratings: Ratings) -> dict[str, Any]:
        """The objective's parts on `ratings` as backend scalars (see `loss_terms`)."""
        return functional.mf_loss_terms(be, self.spec, self.embeddings_numpy(), ratings)

    def loss_terms(self, ratings: Ratings, backend: Any = None) -> dict[str, float]:
        """The objective's parts on `ratings`, computed by the backend (as recorded in the history)."""
        be = get_backend(backend)
        terms = self._objective_terms(be, as_ratings(ratings, "ratings"))
        return {k: float(be.to_numpy(v)) for k, v in terms.items()}
