"""The softmax model of the notebook's section VI, on any backend.

A user is described by bags of words built from the movies they rated (the movie ids, their genres,
their release years; see `cfcore.data.features`). Each bag is embedded with a mean combiner, the
bags are concatenated and go through hidden layers to a query embedding `ψ(x)`; the model predicts
the softmax of `ψ(x)·Vᵀ` over the catalogue, where `V`, the movie-id input table, doubles as the
softmax weights.

Example:
    >>> import cfcore
    >>> ml = cfcore.datasets.load_movielens("100k")                                # doctest: +SKIP
    >>> model = cfcore.SoftmaxModel(feature_dims={"movie_id": 35, "genre": 3, "year": 2},
    ...                             hidden_dims=(35,))
    >>> history = model.fit(ml, steps=3000, optimizer=cfcore.optimizers.Adagrad(8.0),
    ...                     protocol="holdout")                                    # doctest: +SKIP
    >>> model.evaluate(ml, k=10)                                                   # doctest: +SKIP
    {'precision@10': ..., 'recall@10': ..., 'ndcg@10': ..., 'map@10': ..., 'hit_rate@10': ...}
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..backend.checks import _shape, check_k
from ..backend.registry import get_backend
from ..data.features import (
    PROTOCOLS,
    HistoryFeatures,
    Ragged,
    SoftmaxBatcher,
    SoftmaxSplit,
    Vocabulary,
    _ratings_of,
    input_bags,
    split_users,
)
from ..errors import ArgumentValueError, NotFittedError
from ..eval.metrics import ranking_metrics
from ..maths import functional
from ..maths import objectives as losses
from ..persistence import register_model
from ..specs import OptimizerSpec, SoftmaxSpec
from ..train.session import Session
from .base import CommandLine, FitPlan, Model, Params, State

if TYPE_CHECKING:
    from ..persistence import StateReader

__all__ = [
    "SoftmaxModel",
    "check_bag_inputs",
    "check_softmax_inputs",
    "init_softmax_params",
    "label_log_probabilities",
]

NOTEBOOK_FEATURES = dict(SoftmaxSpec().feature_dims)
"""The notebook's input embedding dimensions (`SoftmaxSpec`'s default)."""

# Scores per evaluation call: bounds the `[users, M]` score matrix on large catalogues.
_EVAL_SCORES = 1 << 24

DEFAULT_BATCH_SIZE = 200
"""Training users per step when `fit` is not told otherwise (the notebook's)."""


# ---------------------------------------------------------------------------- argument checks


from ..backend.checks import check_bag_inputs as check_bag_inputs  # noqa: E402
from ..backend.checks import check_softmax_inputs as check_softmax_inputs  # noqa: E402

# ---------------------------------------------------------------------------- initial values


def _truncated_normal(
    rng: np.random.Generator, stddev: float, shape: tuple[int, ...]
) -> np.ndarray:
    # As TensorFlow's truncated normal: values beyond two standard deviations are drawn again.
    x = rng.normal(0.0, stddev, size=shape)
    bad = np.abs(x) > 2.0 * stddev
    while bad.any():
        x[bad] = rng.normal(0.0, stddev, size=int(bad.sum()))
        bad = np.abs(x) > 2.0 * stddev
    return x.astype(np.float32)


def init_softmax_params(
    spec: SoftmaxSpec, vocab_sizes: dict[str, int], seed: int = 0
) -> dict[str, np.ndarray]:
    """Initial parameters of the softmax model, drawn on the host so every backend starts alike.

    As the notebook's TensorFlow code: each feature table `[V_f, d_f]` from a normal with standard
    deviation `1/√d_f` truncated at two standard deviations (`tf.feature_column.embedding_column`'s
    default), and each hidden matrix `[in, out]` from a truncated normal with standard deviation
    `1/√out` (used times `spec.hidden_scale`, the notebook's `/ 10`). Drawn in that order (features
    in `spec.feature_names` order, then the hidden layers) from `numpy.random.default_rng(seed)`.

    Returns:
        float32 arrays by name: the feature names and `hidden_0`, `hidden_1`, ...
    """
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in spec.param_shapes(vocab_sizes).items():
        params[name] = _truncated_normal(rng, 1.0 / np.sqrt(shape[1]), shape)
    return params


def label_log_probabilities(features: HistoryFeatures, users: np.ndarray) -> np.ndarray:
    """`log q(j)`, the log probability that a training label is item `j`: the logQ correction.

    Labels are drawn by picking a training user (each equally often) and then an item of their
    history uniformly, so `q(j) = (1/|U|) Σ_{u ∈ U} [j ∈ H_u] / |H_u|`. Items never drawn get
    the smallest positive probability (they never appear as in-batch negatives anyway).

    Returns:
        float32 `[M]`.
    """
    users = np.asarray(users, dtype=np.int64)
    hist = features.histories
    lengths = hist.lengths[users]
    items = np.concatenate([hist.row(u) for u in users]) if len(users) else np.zeros(0, np.int32)
    q = np.bincount(items, weights=np.repeat(1.0 / lengths, lengths), minlength=features.num_items)
    q /= max(len(users), 1)
    return np.log(np.maximum(q, np.finfo(np.float64).tiny)).astype(np.float32)


# ---------------------------------------------------------------------------- the model


@dataclass
class _EvalData:
    """The test users' inputs and targets, as the evaluation needs them."""

    split: SoftmaxSplit
    ids: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]
    exclude: np.ndarray | None  # bool [n_test, M]
    pair_rows: np.ndarray  # [T] test-user row of each (user, target) pair
    pair_items: np.ndarray  # [T] target item of each pair


@dataclass
class _SoftmaxFit:
    """`SoftmaxModel.fit`'s inputs; `_checked_inputs` fills the protocol, the batch size and
    what it derives: the features, the user split and its seed."""

    dataset: Any
    protocol: str | None
    batch_size: int | None
    k: int
    seed: int
    features: HistoryFeatures | None = None
    split: SoftmaxSplit | None = None
    split_seed: int = 0


@register_model
class SoftmaxModel(Model):
    """The notebook's softmax recommender: bags of words -> tower -> softmax over the catalogue.

    Args:
        feature_dims: input embedding dimension of each feature (`"movie_id"`, `"genre"`,
            `"year"`), in concatenation order. The notebook's: 35, 3, 2.
        hidden_dims: hidden layer sizes (no biases); the last is the query embedding dimension
            and must equal `feature_dims["movie_id"]`, whose table is also the softmax weights.
        activation: None (linear, as the notebook), "relu" or "tanh", after each hidden layer.
        combiner: "mean" (the notebook's) or "sum" for the bags.
        loss: "full" softmax over the catalogue, or "sampled" softmax (in-batch negatives with
            logQ correction and accidental hits removed) for catalogues too large to score whole.
        hidden_scale: the hidden weights are used times this (0.1: the notebook's `w / 10.`).

    Raises:
        ValueError: the dimensions do not fit (the message names both), or a setting is unknown.
    """

    kind = "softmax"
    spec_type = SoftmaxSpec
    trainers = {"softmax": "softmax training"}
    # The notebook's run: Adagrad(8), 3000 steps of 200 users, inputs 35/3/2, one hidden layer
    # of 35 (the query dimension, equal to the movie-id dimension).
    command_line = CommandLine(
        "softmax", "users", "steps",
        options=("--feature-dims", "--hidden-dims", "--activation", "--loss", "--protocol",
                 "--batch-size"),
        defaults={"--feature-dims": "movie_id=35,genre=3,year=2", "--hidden-dims": "35",
                  "--optimizer": "adagrad", "--lr": 8.0, "--steps": 3000, "--batch-size": 200,
                  "--eval-every": 100},
        hints={"--dim": "--feature-dims and --hidden-dims",
               "--init-stddev": "nothing: the tables start as the notebook's",
               "--fold": "--protocol (the softmax model splits users, not ratings)"},
    )  # fmt: skip

    def __init__(
        self,
        feature_dims: dict[str, int] | None = None,
        hidden_dims: tuple[int, ...] = SoftmaxSpec.hidden_dims,
        activation: str | None = SoftmaxSpec.activation,
        combiner: str = SoftmaxSpec.combiner,
        *,
        loss: str = SoftmaxSpec.loss,
        hidden_scale: float = SoftmaxSpec.hidden_scale,
    ) -> None:
        super().__init__()
        self.spec = SoftmaxSpec(
            feature_dims=dict(NOTEBOOK_FEATURES if feature_dims is None else feature_dims),
            hidden_dims=tuple(hidden_dims),
            activation=activation,
            combiner=combiner,
            hidden_scale=hidden_scale,
            loss=loss,
        )
        self._protocol: str | None = None
        self._split_seed: int | None = None
        self._vocab_sizes: dict[str, int] | None = None
        # What retrieval, fold-in and saving need without the dataset: the features of the last
        # fit (histories, vocabularies, each item's tokens; extended by `add_users`).
        self._data: HistoryFeatures | None = None
        self._has_histories = True  # False for a model loaded from a file saved without them
        # Users the split is drawn over (those of the first fit): users added later always train,
        # so adding users never moves anyone between the training and test sides.
        self._split_users: int | None = None
        self._batch_size: int | None = None

    # ------------------------------------------------------------------ set-up

    def _features(self, dataset: Any) -> HistoryFeatures:
        if dataset is None:
            return self._stored_features()
        features = dataset if isinstance(dataset, HistoryFeatures) else None
        if features is None:
            features = HistoryFeatures.from_dataset(dataset)
        features.check_features(self.spec.feature_names)
        sizes = {f: len(features.vocabularies[f]) for f in self.spec.feature_names}
        if self._vocab_sizes is not None and sizes != self._vocab_sizes:
            raise ArgumentValueError(
                f"this model was trained on vocabularies of sizes {self._vocab_sizes}; the dataset "
                f"has {sizes}"
            )
        return features

    def _stored_features(self) -> HistoryFeatures:
        """The features kept from the last `fit` (or the file), for calls without a dataset."""
        if self._data is None:
            raise NotFittedError(
                f"{type(self).__name__} has not been trained yet: call fit() first"
            )
        if not self._has_histories:
            raise ArgumentValueError(
                "this model was saved without its users' rated movies (include_ratings=False), so "
                "it cannot split, evaluate or train on them: pass the dataset"
            )
        return self._data

    def _remember(self, dataset: Any, features: HistoryFeatures) -> None:
        """Keeps the features, catalogue, id vocabularies and rating scale of a `fit` dataset."""
        n, m = features.num_users, features.num_items
        self._data, self._has_histories = features, True
        if isinstance(dataset, HistoryFeatures):
            # Bare features (e.g. `model.features` after `add_users`) carry no ids: keep ours if
            # they still fit.
            if self.user_ids is None or len(self.user_ids) != n:
                self.user_ids = np.arange(n)
            if self.item_ids is None or len(self.item_ids) != m:
                self.item_ids = np.arange(m)
            return
        ratings = _ratings_of(dataset)
        catalog = getattr(dataset, "items", None)
        self.catalog = catalog if isinstance(catalog, pd.DataFrame) else ratings.catalog
        self.user_ids = np.arange(n) if ratings.user_ids is None else np.asarray(ratings.user_ids)
        if ratings.item_ids is not None:
            self.item_ids = np.asarray(ratings.item_ids)
        elif self.catalog is not None and "item_id" in self.catalog.columns:
            self.item_ids = self.catalog["item_id"].to_numpy()
        else:
            self.item_ids = np.arange(m)
        self._num_train_ratings = len(ratings)
        values = ratings.values
        self._rating_scale = (float(values.min()), float(values.max())) if len(values) else None

    def _split(self, features: HistoryFeatures, protocol: str, seed: int) -> SoftmaxSplit:
        """`split_users` over the users of the first fit; any later user is a training user."""
        n0 = features.num_users
        if self._split_users is not None:
            n0 = min(self._split_users, n0)
        if n0 == features.num_users:
            return split_users(features, protocol, seed)
        hist = features.histories
        first = HistoryFeatures(
            Ragged(hist.offsets[: n0 + 1], hist.values[: hist.offsets[n0]]),
            features.num_items,
            features.vocabularies,
            features.item_tokens,
            features.item_feature,
        )
        split = split_users(first, protocol, seed)
        min_len = 2 if protocol == "holdout" else 1
        later = n0 + np.flatnonzero(hist.lengths[n0:] >= min_len)
        return replace(split, train_users=np.concatenate([split.train_users, later]))

    def _eval_data(self, features: HistoryFeatures, split: SoftmaxSplit) -> _EvalData:
        bags = input_bags(features, split, self.spec.feature_names)
        exclude = None
        if split.exclude_inputs:
            exclude = np.zeros((len(split.test_users), features.num_items), bool)
            lengths = split.test_inputs.lengths
            exclude[np.repeat(np.arange(len(lengths)), lengths), split.test_inputs.values] = True
        t_len = split.test_targets.lengths
        return _EvalData(
            split,
            bags.ids,
            bags.weights,
            exclude,
            np.repeat(np.arange(len(t_len)), t_len),
            split.test_targets.values.astype(np.int32),
        )

    # ------------------------------------------------------------------ training

    def fit(
        self,
        dataset: Any,
        *,
        steps: int,
        optimizer: OptimizerSpec,
        backend: Any = None,
        seed: int = 0,
        batch_size: int | None = None,
        progress: bool = True,
        protocol: str | None = None,
        eval_every: int = 100,
        k: int = 10,
        devices: Any = None,
    ) -> pd.DataFrame:
        """Trains for `steps` updates; a second call continues where the first stopped.

        The users are split 90/10 with `seed` on the first call (`cfcore.data.features.split_users`);
        later calls keep that split. Steps run in compiled chunks of `eval_every`; the batches of a
        chunk are built on the host with NumPy (`SoftmaxBatcher`, seeded with `seed` plus the number
        of steps done) and stacked `[k, B, ...]`, so every backend sees the same ones. If the loss
        turns NaN or infinite, training stops with `TrainingDivergedError` and the model keeps the
        last finite parameters.

        A loaded model (`cfcore.load`) continues too, from its parameters, step count and
        history, with a fresh optimizer state (the file keeps no Adagrad/Adam accumulators: they
        are each framework's own structures), on either backend. Users beyond those of the first
        fit (added with `add_users`) are always training users, so the test users stay the same.

        Args:
            dataset: ratings plus item metadata (`cfcore.datasets.load_movielens(...)`), or
                `HistoryFeatures`; None for the features kept from the last fit or the file
                (`model.features`, new users included).
            steps: number of optimizer updates.
            optimizer: a `cfcore.optimizers` spec; the notebook's is `Adagrad(8.0)`.
            backend: "jax", "tf", a backend instance, or None (`CFCORE_BACKEND`, else "jax").
            seed: seeds the split and the initial values (first call) and the batches.
            batch_size: training users per step; None for the last fit's, else 200 (the
                notebook's).
            progress: show a progress bar.
            protocol: "holdout" (leak-free, the default) or "notebook" (the notebook's set-up: the
                label is one of the input movies, so precision@10 is at most 0.1; see
                `split_users`). Fixed by the first call; None means the model's (or "holdout").
            eval_every: steps between two history rows.
            k: cut-off of the ranking metrics recorded in the history.
            devices: None (one device), or an int k / a list of `jax.Device` (JAX) or of
                `tf.config.LogicalDevice` (TensorFlow): every table (the item table included)
                row-sharded (see `cfcore.train.sharding`); on JAX each batch's rows are fetched
                where they live, on TensorFlow DTensor all-gathers the item table per step
                (`docs/multi-device.md`).

        Returns:
            The history so far: one row per evaluation with `step`, `train_loss` (mean loss of the
            chunk's batches, before each update, as the notebook prints; NaN in the first row, of
            step 0, which precedes any batch), `test_loss` (mean
            cross-entropy over the test users' (user, target) pairs) and the ranking metrics at
            `k` on the test users (`precision@k`, `recall@k`, `ndcg@k`, `map@k`, `hit_rate@k`).
        """
        run = (steps, eval_every, seed, backend, devices, progress)
        return self._fit(
            _SoftmaxFit(dataset, protocol, batch_size, k, seed), "softmax", optimizer, *run
        )

    def _checked_inputs(self, inputs: _SoftmaxFit) -> _SoftmaxFit:
        protocol = inputs.protocol
        if protocol is None:
            protocol = self._protocol or "holdout"
        if protocol not in PROTOCOLS:
            raise ArgumentValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if self._protocol is not None and protocol != self._protocol:
            raise ArgumentValueError(
                f"this model was trained under protocol {self._protocol!r}; it cannot continue "
                f"under {protocol!r} (start a new model)"
            )
        features = self._features(inputs.dataset)
        check_k(inputs.k, features.num_items)
        split_seed = inputs.seed if self._split_seed is None else self._split_seed
        split = self._split(features, protocol, split_seed)
        batch_size = inputs.batch_size
        if batch_size is None:
            batch_size = self._batch_size or DEFAULT_BATCH_SIZE
        if not isinstance(batch_size, int | np.integer) or not 1 <= batch_size <= len(
            split.train_users
        ):
            raise ArgumentValueError(
                f"batch_size must be an int in [1, {len(split.train_users)}] (the number of "
                f"training users), got {batch_size!r}"
            )
        return replace(
            inputs,
            protocol=protocol,
            batch_size=int(batch_size),
            features=features,
            split=split,
            split_seed=split_seed,
        )

    def _initial_params(self, inputs: _SoftmaxFit, seed: int) -> Params:
        assert inputs.features is not None
        return init_softmax_params(self.spec, inputs.features.vocab_sizes, seed)

    def _remember_inputs(self, inputs: _SoftmaxFit) -> None:
        features = inputs.features
        assert features is not None
        self._protocol, self._split_seed = inputs.protocol, inputs.split_seed
        self._vocab_sizes = {f: len(features.vocabularies[f]) for f in self.spec.feature_names}
        if inputs.dataset is not None:
            self._remember(inputs.dataset, features)
        if self._split_users is None:
            self._split_users = features.num_users
        self._batch_size = inputs.batch_size

    def _plan(self, session: Session, inputs: _SoftmaxFit, seed: int) -> FitPlan:
        features, split, k = inputs.features, inputs.split, inputs.k
        assert features is not None and split is not None and inputs.protocol is not None
        be = session.backend
        log_q = None
        if self.spec.loss == "sampled":
            log_q = be.asarray(label_log_probabilities(features, split.train_users), "float32")
        batcher = SoftmaxBatcher(
            features,
            split.train_users,
            int(inputs.batch_size or DEFAULT_BATCH_SIZE),
            seed + session.step,
            inputs.protocol,
            self.spec.feature_names,
        )
        eval_data = self._eval_data(features, split)
        run_chunk = session.chunk(self.spec, losses.softmax_loss(be, self.spec), _batch_and_log_q)

        def row(train_loss: float | None) -> dict[str, float]:
            loss = float("nan") if train_loss is None else train_loss
            out = {"step": session.step, "train_loss": loss}
            # The tables as the model sees them (a sharded placement's padding rows left out).
            params, _ = session.placement.view(session.params, None)
            out.update(self._metrics(be, params, eval_data, k))
            return out

        def next_xs(n: int) -> Any:
            return batcher.take(n).to_dict()

        columns = ("train_loss", "test_loss", f"precision@{k}")
        return FitPlan(run_chunk, log_q, row, columns, next_xs)

    # ------------------------------------------------------------------ evaluation

    def _metrics(self, be: Any, params: Any, data: _EvalData, k: int) -> dict[str, float]:
        """Test loss and ranking metrics at k of `params` on the test users."""
        spec = self.spec
        query = functional.softmax_query_embeddings(be, spec, params, data.ids, data.weights)
        items = params[spec.item_feature]
        loss = float(
            be.to_numpy(
                be.softmax_cross_entropy(_take(be, query, data.pair_rows), items, data.pair_items)
            )
        )
        num_items = int(_shape(items)[0])
        rows_per_call = max(1, _EVAL_SCORES // num_items)
        tops = []
        for start in range(0, int(_shape(query)[0]), rows_per_call):
            stop = start + rows_per_call
            scores = functional.score_all(be, query[start:stop], items)
            exclude = None if data.exclude is None else data.exclude[start:stop]
            tops.append(np.asarray(be.to_numpy(be.top_k(scores, k, exclude=exclude)[1])))
        metrics = ranking_metrics(np.concatenate(tops), data.split.test_targets, k)
        return {"test_loss": loss, **metrics}

    def evaluate(
        self, dataset: Any = None, k: int = 10, *, backend: Any = None
    ) -> dict[str, float]:
        """Ranking metrics at `k` on the test users of the split made by the first `fit`.

        Under "holdout" the ranking is over all movies but the test user's input ones and the
        targets are the held-out 20 %; under "notebook" it is over all movies and the target is
        the one random label, so precision@k is TensorFlow's `precision_at_k` (at most 1/k).

        Args:
            dataset: the dataset given to `fit`; None for the features kept by the model (a
                loaded model evaluates without the dataset).
            k: the cut-off, at most the number of items.
            backend: where to compute (default: the one that trained the model).

        Returns:
            `{"precision@k", "recall@k", "ndcg@k", "map@k", "hit_rate@k", "test_loss", "users"}`.
        """
        if self._protocol is None or self._split_seed is None:  # fit sets both
            raise NotFittedError(
                f"{type(self).__name__} has not been trained yet: call fit() first"
            )
        features = self._features(dataset)
        check_k(k, features.num_items)
        split = self._split(features, self._protocol, self._split_seed)
        be = get_backend(backend) if backend is not None else self._backend()
        params = be.params_from_numpy(self.params_numpy())
        out = self._metrics(be, params, self._eval_data(features, split), k)
        metrics = {name: v for name, v in out.items() if name != "test_loss"}
        return {**metrics, "test_loss": out["test_loss"], "users": len(split.test_users)}

    def _backend(self) -> Any:
        return self._session.backend if self._session is not None else get_backend(None)

    # ------------------------------------------------------------------ results

    def embeddings_numpy(self) -> Params:
        """As `embeddings`, without copying (do not modify the arrays)."""
        params = self.params_numpy()
        return {"item": params[self.spec.item_feature], **params}

    @property
    def embeddings(self) -> Params:
        """`{"item": float32 [M, d]}` (the movie-id table, also the softmax weights) plus every
        parameter by name (`"movie_id"`, `"genre"`, `"year"`, `"hidden_0"`, ...); copies."""
        return {k: v.copy() for k, v in self.embeddings_numpy().items()}

    @property
    def protocol(self) -> str | None:
        """The protocol fixed by the first `fit` (None before)."""
        return self._protocol

    def user_embeddings(
        self, dataset: Any = None, users: Any = None, *, backend: Any = None
    ) -> np.ndarray:
        """Query embeddings of `users` (default: all with a rating) from their whole histories.

        Args:
            dataset: the dataset whose users these are; None for the model's own
                (`model.features`: those of the last fit or the file, plus added users).
            users: user rows, `[B]`; each needs at least one rated movie.
            backend: where to compute (default: the one that trained the model, else the
                default backend).

        Returns:
            float32 `[len(users), d]`.
        """
        features = self._features(dataset)
        if users is None:
            users = np.flatnonzero(features.histories.lengths > 0)
        items, valid = features.padded_histories(np.asarray(users))
        bags = features.bags(items, valid, self.spec.feature_names)
        be = get_backend(backend) if backend is not None else self._backend()
        params = be.params_from_numpy(self.params_numpy())
        return np.asarray(
            be.to_numpy(
                functional.softmax_query_embeddings(be, self.spec, params, bags.ids, bags.weights)
            )
        )

    # ------------------------------------------------------------------ retrieval, new users, files

    @property
    def features(self) -> HistoryFeatures | None:
        """The features of the last fit (or of the file), new users included; None before."""
        return self._data

    @property
    def num_users(self) -> int | None:
        """N, the users the model knows (rows of `user_ids`), added ones included."""
        return None if self._data is None else self._data.num_users

    @property
    def rated_items(self) -> Any:
        """The movies each user rated, a `cfcore.retrieval.RatedItems` (None when unknown)."""
        from ..retrieval import RatedItems

        if self._data is None or not self._has_histories:
            return None
        hist = self._data.histories
        return RatedItems(hist.offsets, hist.values, self._data.num_items)

    @property
    def rating_scale(self) -> tuple[float, float] | None:
        """`(lowest, highest)` rating of the training ratings; new ratings must lie inside.

        The softmax model reads only WHICH movies a user rated, not the values; the scale
        only catches typing mistakes in a new user's ratings.
        """
        return self._rating_scale

    def _compute_backend(self, backend: Any) -> Any:
        """The backend to compute on ("numpy" is the registered float64 reference)."""
        return get_backend(backend) if backend is not None else self._backend()

    def _tower(
        self, features: HistoryFeatures, rows: np.ndarray, items: np.ndarray, num_rows: int, be: Any
    ) -> np.ndarray:
        """Query embeddings `[num_rows, d]` of the bags of `(row, item)` input pairs.

        `rows` must be sorted; every row needs a pair. Rows go in chunks so that the dense
        bags of one chunk hold at most `_EVAL_SCORES` counts.
        """
        spec = self.spec
        params = be.params_from_numpy(self.params_numpy())
        width = sum(features.width(f) for f in spec.feature_names)
        per_chunk = max(1, _EVAL_SCORES // max(width, 1))
        out = np.empty((num_rows, spec.output_dim), np.float32)
        bounds = np.searchsorted(rows, np.arange(0, num_rows + per_chunk, per_chunk))
        for c, start in enumerate(range(0, num_rows, per_chunk)):
            stop = min(start + per_chunk, num_rows)
            lo, hi = bounds[c], bounds[c + 1]
            bags = features.bags_from_pairs(
                rows[lo:hi] - start, items[lo:hi], (stop - start,), spec.feature_names
            )
            q = be.to_numpy(
                functional.softmax_query_embeddings(be, spec, params, bags.ids, bags.weights)
            )
            out[start:stop] = np.asarray(q, dtype=np.float32)
        return out

    def query_embeddings(
        self, users: Any = None, *, backend: Any = None, allow_empty: bool = True
    ) -> np.ndarray:
        """Query embeddings of the model's own users, from every movie they rated.

        What `cfcore.retrieval` scores the catalogue with: `ψ(x_u)` of user `u`'s bags of words
        (the movies of `model.features`, new users included).

        Args:
            users: user rows (0-based, as `user_ids`), `[B]`; None for all.
            backend: "jax", "tf", a backend instance, or "numpy" (the float64 reference); None for
                the one that trained the model, else the default.
            allow_empty: a user who rated nothing gets the zero vector (what the tower gives an
                empty bag: every item then scores 0); False raises instead (as does a model
                saved without its users' movies, for the users it does not know the movies of).

        Returns:
            float32 `[B, d]`.

        Raises:
            ValueError: a row is out of range, or (with `allow_empty=False`) a user rated nothing.
        """
        if self._data is None:
            raise NotFittedError(
                f"{type(self).__name__} has not been trained yet: call fit() first"
            )
        features = self._data
        n = features.num_users
        users = np.arange(n) if users is None else np.asarray(users)
        if users.ndim != 1 or (users.size and not np.issubdtype(users.dtype, np.integer)):
            raise ArgumentValueError(
                f"users must be a 1-D array of user rows (ints), got {users!r}"
            )
        bad = (users < 0) | (users >= n)
        if bad.any():
            raise ArgumentValueError(
                f"user index {users[bad][0]} is out of range for {n} users (valid: 0..{n - 1})"
            )
        hist = features.histories
        lengths = hist.lengths[users]
        # Without the saved histories an empty row means "unknown", not "rated nothing": raise.
        if (not allow_empty or not self._has_histories) and (lengths == 0).any():
            u = int(users[np.argmax(lengths == 0)])
            uid = u if self.user_ids is None else np.asarray(self.user_ids)[u].item()
            why = (
                " (this model was saved with include_ratings=False: it kept no user's movies)"
                if not self._has_histories
                else ""
            )
            raise ArgumentValueError(
                f"user {uid} has rated no movies{why}: the softmax model builds a user's query "
                "from the movies they rated. Fold new ratings in with model.fold_in(...) or "
                "model.add_users(...)"
            )
        out = np.zeros((len(users), self.spec.output_dim), np.float32)
        has = np.flatnonzero(lengths > 0)
        if len(has):
            rows, items = _ragged_pairs(hist, users[has])
            out[has] = self._tower(features, rows, items, len(has), self._compute_backend(backend))
        return out

    def _new_user_pairs(self, ratings: Any) -> tuple[np.ndarray, np.ndarray, int, Any, int]:
        """`(rows, items, B, user ids or None, ratings read)` of new users, pairs distinct, sorted."""
        from ..data.user_ratings import UserRatingsError, fold_in_arrays

        if self._data is None:
            raise NotFittedError(
                f"{type(self).__name__} has not been trained yet: call fit() first"
            )
        rows, items, _, num, ids = fold_in_arrays(ratings, self)
        m = self._data.num_items
        # A movie rated twice is in the bag once, as in the training histories.
        keys = np.unique(np.asarray(rows, np.int64) * m + np.asarray(items, np.int64))
        rows, items = keys // m, keys % m
        counts = np.bincount(rows, minlength=num)
        if (counts == 0).any():
            raise UserRatingsError(
                f"new user {int(np.argmax(counts == 0))} has no ratings to fold in"
            )
        return rows, items, num, ids, len(keys)

    def fold_in(self, ratings: Any, *, reg: Any = None, backend: Any = None) -> np.ndarray:
        """Query embeddings of new users from the movies they rated (no training).

        The softmax model's natural fold-in: a new user's bags of words are built from the
        movies they rated (their ids, genres and years, as for any user) and go through the
        tower. Only which movies were rated counts, not the values (the notebook's model reads
        no rating values); values are still checked against `rating_scale`. The model is not
        changed; `add_users` also adds them.

        Args:
            ratings: the new users' ratings: a `Ratings` over this model's items (its users are
                the new users 0..B-1), or a frame / CSV path / mapping `{item id or title:
                rating}` as `cfcore.data.user_ratings.read_user_ratings` reads (one user, or several
                with a `user_id` column).
            reg: must be None: there is nothing to regularize (accepted so that code written for
                `MatrixFactorization.fold_in` runs unchanged).
            backend: "jax", "tf", a backend instance, or "numpy"; None for the model's.

        Returns:
            float32 `[B, d]`, one query embedding per new user: score items with
            `cfcore.retrieval.scores(q, model.embeddings["item"])`.
        """
        _no_reg(reg)
        rows, items, num, _, _ = self._new_user_pairs(ratings)
        assert self._data is not None  # _new_user_pairs raised otherwise
        return self._tower(self._data, rows, items, num, self._compute_backend(backend))

    def add_users(
        self, ratings: Any, *, user_ids: Any = None, reg: Any = None, backend: Any = None
    ) -> np.ndarray:
        """Adds new users from the movies they rated; `recommend` then serves them.

        Their rated movies extend the model's histories (`features`), so their query embeddings
        are their bags of words through the tower (see `fold_in`), `recommend` leaves those
        movies out, and `fit(model.features, ...)` (or `fit(None, ...)`) trains with them as
        training users (the test users stay the same). The parameters are not changed.

        Args:
            ratings: as in `fold_in`.
            user_ids: original ids of the new users, `[B]`; default the `user_id` column of a
                frame, else (numeric vocabularies) the next free integers after the largest id,
                else "new-0", "new-1", ...
            reg: must be None (see `fold_in`).
            backend: unused (the query embeddings are computed when needed); accepted as in
                `MatrixFactorization.add_users`.

        Returns:
            The new users' original ids, `[B]`.
        """
        from ..data.user_ratings import new_user_ids

        del backend
        _no_reg(reg)
        rows, items, num, frame_ids, count = self._new_user_pairs(ratings)
        features = self._data
        assert features is not None  # _new_user_pairs raised otherwise
        n = features.num_users
        old_ids = np.arange(n) if self.user_ids is None else np.asarray(self.user_ids)
        user_ids = new_user_ids(old_ids, num, user_ids, frame_ids)
        hist = features.histories
        counts = np.bincount(rows, minlength=num)
        offsets = np.concatenate([hist.offsets, hist.offsets[-1] + np.cumsum(counts)])
        values = np.concatenate([hist.values, items.astype(np.int32)])
        self._data = HistoryFeatures(
            Ragged(offsets.astype(np.int64), values),
            features.num_items,
            features.vocabularies,
            features.item_tokens,
            features.item_feature,
        )
        self.user_ids = np.concatenate([old_ids, user_ids])
        if self._num_train_ratings is not None:
            self._num_train_ratings += count
        return user_ids

    # ------------------------------------------------------------------ file state

    @classmethod
    def _own_declared_shapes(cls, meta: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        n, m, _ = (int(x) for x in meta["shape"])
        shapes: dict[str, tuple[int, ...]] = {"history_offsets": (n + 1,)}
        for j in range(len(meta.get("token_features", []))):
            shapes[f"tokens_offsets_{j}"] = (m + 1,)
        return shapes

    def _own_state(self, include_ratings: bool) -> State:
        """Everything `evaluate`, `recommend`, `fold_in` and `fit` need without the dataset:
        the parameters, the feature vocabularies and each item's tokens, the users' rated
        movies, and what draws the same split again."""
        params = self.params_numpy()
        features = self.features
        if features is None:  # parameters without features: not produced by fit or load
            raise NotFittedError(f"{type(self).__name__} has no features yet: call fit() first")
        names = list(params)
        feature_names = list(features.feature_names)
        token_features = list(features.item_tokens)
        has_histories = bool(include_ratings and self._has_histories)
        meta = {
            "shape": [features.num_users, features.num_items, int(self.spec.output_dim)],
            "params": names,
            "protocol": self.protocol,
            "split_seed": self._split_seed,
            "split_users": self._split_users,
            "batch_size": self._batch_size,
            "feature_names": feature_names,
            "item_feature": features.item_feature,
            "token_features": token_features,
            "has_histories": has_histories,
        }
        arrays: dict[str, np.ndarray] = {}
        for i, name in enumerate(names):
            arrays[f"param_{i}"] = np.asarray(params[name], np.float32)
        for j, name in enumerate(feature_names):
            arrays[f"vocab_{j}"] = np.asarray(features.vocabularies[name].tokens, dtype=str)
        for j, name in enumerate(token_features):
            tokens = features.item_tokens[name]
            arrays[f"tokens_offsets_{j}"] = tokens.offsets.astype(np.int64)
            arrays[f"tokens_values_{j}"] = tokens.values.astype(np.int32)
        if has_histories:
            arrays["history_offsets"] = features.histories.offsets.astype(np.int64)
            arrays["history_items"] = features.histories.values.astype(np.int32)
        return meta, arrays

    def _restore_own(
        self, reader: StateReader, meta: dict[str, Any], shape: tuple[int, ...]
    ) -> None:
        spec = self.spec
        n, m, d = shape
        if d != spec.output_dim:
            raise reader.damaged(
                f"the recorded query dimension {d} is not the spec's {spec.output_dim}"
            )
        feature_names = [str(f) for f in meta["feature_names"]]
        vocabularies = {
            name: Vocabulary(name, tuple(str(t) for t in np.asarray(reader[f"vocab_{j}"])))
            for j, name in enumerate(feature_names)
        }
        missing = [f for f in spec.feature_names if f not in vocabularies]
        if missing:
            raise reader.damaged(
                f"the spec's feature(s) {missing} have no vocabulary (the file has {feature_names})"
            )
        sizes = {f: len(v) for f, v in vocabularies.items()}
        item_tokens = {
            name: _read_ragged(
                reader,
                f"tokens_offsets_{j}",
                f"tokens_values_{j}",
                m,
                sizes.get(name, 0),
                f"item tokens of feature {name!r}",
            )
            for j, name in enumerate(str(f) for f in meta["token_features"])
        }
        has_histories = bool(meta["has_histories"])
        if has_histories:
            histories = _read_ragged(
                reader, "history_offsets", "history_items", n, m, "rated movies"
            )
        else:
            histories = Ragged(np.zeros(n + 1, np.int64), np.zeros(0, np.int32))
        names = [str(x) for x in meta["params"]]
        shapes = spec.param_shapes(sizes)
        if sorted(names) != sorted(shapes):
            raise reader.damaged(f"its parameters {names} are not the spec's {list(shapes)}")
        params = {}
        for i, name in enumerate(names):
            arr = np.asarray(reader[f"param_{i}"])
            if arr.shape != shapes[name] or arr.dtype != np.float32:
                raise reader.damaged(
                    f"parameter {name!r} is {arr.dtype} {arr.shape}, expected float32 "
                    f"{shapes[name]}"
                )
            params[name] = arr
        if len(vocabularies[spec.item_feature]) != m:
            raise reader.damaged(
                f"the item feature {spec.item_feature!r} has "
                f"{len(vocabularies[spec.item_feature])} tokens for {m} items"
            )
        protocol = meta["protocol"]
        if protocol not in PROTOCOLS:
            raise reader.damaged(f"protocol {protocol!r} is not one of {PROTOCOLS}")
        self._params = params
        self._protocol = protocol
        self._split_seed = int(meta["split_seed"])
        self._split_users = int(meta["split_users"])
        batch_size = meta.get("batch_size")
        self._batch_size = None if batch_size is None else int(batch_size)
        self._vocab_sizes = {f: sizes[f] for f in spec.feature_names}
        self._data = HistoryFeatures(
            histories, m, vocabularies, item_tokens, str(meta["item_feature"])
        )
        self._has_histories = has_histories


def _read_ragged(
    reader: StateReader, offsets_name: str, values_name: str, rows: int, bound: int, what: str
) -> Ragged:
    """CSR rows read back, checked: `rows` rows of values in `[0, bound)`."""
    offsets = np.asarray(reader[offsets_name], np.int64)
    values = np.asarray(reader[values_name])
    if values.dtype.kind not in "iu":
        raise reader.damaged(f"{what} are not integers ({values.dtype})")
    ok = (
        offsets.shape == (rows + 1,)
        and values.ndim == 1
        and offsets[0] == 0
        and offsets[-1] == len(values)
        and bool(np.all(np.diff(offsets) >= 0))
    )
    if not ok:
        raise reader.damaged(
            f"the {what} are not {rows} rows (offsets of shape {offsets.shape} over "
            f"{values.shape} values)"
        )
    if len(values) and (values.min() < 0 or values.max() >= bound):
        bad = int(values.min() if values.min() < 0 else values.max())
        raise reader.damaged(
            f"the {what} hold {bad}, out of range for {bound} (valid: 0..{bound - 1})"
        )
    return Ragged(offsets, values.astype(np.int32))


def _no_reg(reg: Any) -> None:
    if reg is not None:
        raise ArgumentValueError(
            f"reg={reg!r}: the softmax model has no fold-in regularization (it applies to matrix "
            "factorization's ridge solve); a new user's query embedding is the tower over the bags "
            "of words of the movies they rated"
        )


def _ragged_pairs(ragged: Ragged, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(row position [n], value [n])` of every value of `ragged`'s rows `rows`, in order."""
    starts, lengths = ragged.offsets[rows], ragged.lengths[rows]
    first = np.cumsum(lengths) - lengths
    index = np.repeat(starts - first, lengths) + np.arange(int(lengths.sum()))
    return np.repeat(np.arange(len(rows)), lengths), ragged.values[index].astype(np.int64)


def _take(be: Any, x: Any, rows: np.ndarray) -> Any:
    """Rows of a native `[n, d]` array (gathered on the host: evaluation sizes are small)."""
    return np.asarray(be.to_numpy(x))[rows]


def _batch_and_log_q(log_q: Any, batch: Any) -> tuple[Any, Any]:
    return batch, log_q
