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

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ._checks import _shape
from ._registry import get_backend
from .data.features import (
    PROTOCOLS,
    HistoryFeatures,
    SoftmaxBatcher,
    SoftmaxSplit,
    input_bags,
    split_users,
)
from .metrics import ranking_metrics
from .specs import OptimizerSpec, SoftmaxSpec, make_optimizer
from .training import TrainingDivergedError, _progress, _Session, check_steps

__all__ = [
    "SoftmaxModel",
    "check_bag_inputs",
    "check_softmax_inputs",
    "init_softmax_params",
    "label_log_probabilities",
]

NOTEBOOK_FEATURES = {"movie_id": 35, "genre": 3, "year": 2}
"""The notebook's input embedding dimensions."""

# Scores per evaluation call: bounds the `[users, M]` score matrix on large catalogues.
_EVAL_SCORES = 1 << 24


# ---------------------------------------------------------------------------- argument checks


def _host_ints(x: Any) -> np.ndarray | None:
    # Arrays already on a device are not pulled back to check (that would sync); host ones are.
    return np.asarray(x) if isinstance(x, np.ndarray | list | tuple) else None


def check_softmax_inputs(query_emb: Any, item_emb: Any, labels: Any, log_q: Any = None) -> None:
    """Shapes of a softmax loss's arguments, and host labels in range.

    Raises:
        ValueError: naming the bad shape or label and what was expected.
    """
    sq, sv, sl = _shape(query_emb), _shape(item_emb), _shape(labels)
    if len(sq) != 2 or len(sv) != 2:
        raise ValueError(
            f"query and item embeddings must be 2-D [rows, d]; got query {sq} and item {sv}"
        )
    if sq[1] != sv[1]:
        raise ValueError(
            f"the query embedding dimension {sq[1]} (query embeddings {sq}) must equal the item "
            f"embedding dimension {sv[1]} (item embeddings {sv})"
        )
    if len(sl) != 1 or sl[0] != sq[0]:
        raise ValueError(f"labels must be 1-D with one label per query row ({sq[0]}), got {sl}")
    if sq[0] == 0:
        raise ValueError("the batch is empty: the mean loss over no examples is undefined")
    if log_q is not None and tuple(_shape(log_q)) != (sv[0],):
        raise ValueError(
            f"log_q must have one entry per item, shape ({sv[0]},), got {_shape(log_q)}"
        )
    host = _host_ints(labels)
    if host is not None:
        _check_index_range(host, sv[0], "label", "items")


def check_bag_inputs(table: Any, ids: Any, weights: Any, combiner: str = "mean") -> None:
    """Shapes of a bag-of-words lookup, host ids in range, and the combiner's name.

    `ids` and `weights` are `[..., L]`; or `ids` is None and `weights` `[..., V]` (dense bags).
    """
    st, sw = _shape(table), _shape(weights)
    if len(st) != 2:
        raise ValueError(f"the embedding table must be 2-D [vocabulary, d], got {st}")
    if combiner not in ("mean", "sum"):
        raise ValueError(f"combiner must be 'mean' or 'sum', got {combiner!r}")
    if ids is None:
        if len(sw) < 1 or sw[-1] != st[0]:
            raise ValueError(
                f"dense bags need weights [..., {st[0]}] (one count per token of the table {st}), "
                f"got {sw}"
            )
        return
    si = _shape(ids)
    if si != sw or len(si) < 1:
        raise ValueError(f"ids and weights must have one shape [..., L], got {si} and {sw}")
    host = _host_ints(ids)
    if host is not None:
        _check_index_range(host, st[0], "token id", "tokens in the vocabulary")


def _check_index_range(idx: np.ndarray, size: int, what: str, of: str) -> None:
    if idx.size and (idx.min() < 0 or idx.max() >= size):
        bad = int(idx.min() if idx.min() < 0 else idx.max())
        raise ValueError(f"{what} {bad} is out of range for {size} {of} (valid: 0..{size - 1})")


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


class SoftmaxModel:
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

    def __init__(
        self,
        feature_dims: dict[str, int] | None = None,
        hidden_dims: tuple[int, ...] = (35,),
        activation: str | None = None,
        combiner: str = "mean",
        *,
        loss: str = "full",
        hidden_scale: float = 0.1,
    ) -> None:
        self.spec = SoftmaxSpec(
            feature_dims=dict(NOTEBOOK_FEATURES if feature_dims is None else feature_dims),
            hidden_dims=tuple(hidden_dims),
            activation=activation,
            combiner=combiner,
            hidden_scale=hidden_scale,
            loss=loss,
        )
        self._session: _Session | None = None
        self._params: dict[str, np.ndarray] | None = None
        self._protocol: str | None = None
        self._split_seed: int | None = None
        self._vocab_sizes: dict[str, int] | None = None
        self.history = pd.DataFrame()

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.spec.to_dict().items() if k != "kind")
        return f"{type(self).__name__}({fields})"

    # ------------------------------------------------------------------ set-up

    def _features(self, dataset: Any) -> HistoryFeatures:
        features = dataset if isinstance(dataset, HistoryFeatures) else None
        if features is None:
            features = HistoryFeatures.from_dataset(dataset)
        features.check_features(self.spec.feature_names)
        sizes = {f: len(features.vocabularies[f]) for f in self.spec.feature_names}
        if self._vocab_sizes is not None and sizes != self._vocab_sizes:
            raise ValueError(
                f"this model was trained on vocabularies of sizes {self._vocab_sizes}; the dataset "
                f"has {sizes}"
            )
        return features

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
        batch_size: int = 200,
        progress: bool = True,
        protocol: str = "holdout",
        eval_every: int = 100,
        k: int = 10,
    ) -> pd.DataFrame:
        """Trains for `steps` updates; a second call continues where the first stopped.

        The users are split 90/10 with `seed` on the first call (`cfcore.data.features.split_users`);
        later calls keep that split. Steps run in compiled chunks of `eval_every`; the batches of a
        chunk are built on the host with NumPy (`SoftmaxBatcher`, seeded with `seed` plus the number
        of steps done) and stacked `[k, B, ...]`, so every backend sees the same ones. If the loss
        turns NaN or infinite, training stops with `TrainingDivergedError` and the model keeps the
        last finite parameters.

        Args:
            dataset: ratings plus item metadata (`cfcore.datasets.load_movielens(...)`).
            steps: number of optimizer updates.
            optimizer: a `cfcore.optimizers` spec; the notebook's is `Adagrad(8.0)`.
            backend: "jax", "tf", a backend instance, or None (`CFCORE_BACKEND`, else "jax").
            seed: seeds the split and the initial values (first call) and the batches.
            batch_size: training users per step (the notebook's 200).
            progress: show a progress bar.
            protocol: "holdout" (leak-free, the default) or "notebook" (the notebook's set-up: the
                label is one of the input movies, so precision@10 is at most 0.1; see
                `split_users`). Fixed by the first call.
            eval_every: steps between two history rows.
            k: cut-off of the ranking metrics recorded in the history.

        Returns:
            The history so far: one row per evaluation with `step`, `train_loss` (mean loss of the
            chunk's batches, before each update, as the notebook prints; NaN in the first row, of
            step 0, which precedes any batch), `test_loss` (mean
            cross-entropy over the test users' (user, target) pairs) and the ranking metrics at
            `k` on the test users (`precision@k`, `recall@k`, `ndcg@k`, `map@k`, `hit_rate@k`).
        """
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if self._protocol is not None and protocol != self._protocol:
            raise ValueError(
                f"this model was trained under protocol {self._protocol!r}; it cannot continue "
                f"under {protocol!r} (start a new model)"
            )
        check_steps(steps, eval_every)
        opt = make_optimizer(optimizer)
        features = self._features(dataset)
        _check_k_catalogue(k, features.num_items)
        split_seed = seed if self._split_seed is None else self._split_seed
        split = split_users(features, protocol, split_seed)
        if not isinstance(batch_size, int | np.integer) or not 1 <= batch_size <= len(
            split.train_users
        ):
            raise ValueError(
                f"batch_size must be an int in [1, {len(split.train_users)}] (the number of "
                f"training users), got {batch_size!r}"
            )
        be = get_backend(backend)
        session = self._session
        if session is None or session.backend is not be or session.optimizer != opt:
            if session is not None:
                self._params = self.params_numpy()
            params = (
                self._params
                if self._params is not None
                else init_softmax_params(self.spec, features.vocab_sizes, seed)
            )
            state = be.init_train_state(self.spec, params, opt)
            chunk = be.make_softmax_train_chunk(self.spec, opt)
            step = session.step if session is not None else 0
            rows = session.history_rows if session is not None else []
            session = _Session(be, opt, state, state, chunk, step, rows)
            self._session = session
        self._protocol, self._split_seed = protocol, split_seed
        self._vocab_sizes = {f: len(features.vocabularies[f]) for f in self.spec.feature_names}
        self._params = None  # the session's state is now the truth
        log_q = None
        if self.spec.loss == "sampled":
            log_q = label_log_probabilities(features, split.train_users)
        batcher = SoftmaxBatcher(
            features,
            split.train_users,
            int(batch_size),
            seed + session.step,
            protocol,
            self.spec.feature_names,
        )
        eval_data = self._eval_data(features, split)
        try:
            self._run(session, batcher, eval_data, log_q, steps, eval_every, k, progress)
        finally:
            self.history = pd.DataFrame(session.history_rows)
        return self.history

    def _run(self, session, batcher, eval_data, log_q, steps, eval_every, k, progress) -> None:
        be = session.backend

        def record(train_loss: float) -> dict[str, float]:
            row = {"step": session.step, "train_loss": train_loss}
            row.update(self._metrics(be, session.state.params, eval_data, k))
            session.history_rows.append(row)
            return row

        if session.step == 0 and not session.history_rows:
            record(float("nan"))
        done = 0
        with _progress(progress, steps) as bar:
            task = bar.add_task("", total=steps) if bar is not None else None
            batches = batcher.take(min(eval_every, steps)).to_dict()
            while done < steps:
                n = min(eval_every, steps - done)
                state, prev, bad, losses = session.chunk(
                    session.state, session.prev, batches, log_q
                )
                # Build the next chunk's batches while the device runs this one (JAX dispatches
                # asynchronously), then wait for it.
                ahead = min(eval_every, steps - done - n)
                batches = batcher.take(ahead).to_dict() if ahead else None
                bad = int(be.to_numpy(bad))
                if bad >= 0:
                    at = session.step + bad
                    session.state = prev if at > 0 else session.state
                    session.prev = session.state
                    session.step = max(at - 1, 0)
                    raise TrainingDivergedError(
                        f"the training loss became NaN or infinite at step {at}; stopped there and "
                        f"kept the parameters of step {session.step}, the last with a finite loss. "
                        f"Lower the learning rate (now {session.optimizer.learning_rate:g}).",
                        step=at,
                        history=pd.DataFrame(session.history_rows),
                    )
                session.state, session.prev = state, prev
                session.step += n
                done += n
                row = record(float(np.mean(be.to_numpy(losses))))
                if bar is not None:
                    desc = "  ".join(
                        f"{c}={row[c]:.4f}" for c in ("train_loss", "test_loss", f"precision@{k}")
                    )
                    bar.update(task, advance=n, description=desc)

    # ------------------------------------------------------------------ evaluation

    def _metrics(self, be: Any, params: Any, data: _EvalData, k: int) -> dict[str, float]:
        """Test loss and ranking metrics at k of `params` on the test users."""
        spec = self.spec
        query = be.softmax_query_embeddings(spec, params, data.ids, data.weights)
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
            scores = be.score_all(query[start:stop], items)
            exclude = None if data.exclude is None else data.exclude[start:stop]
            tops.append(np.asarray(be.to_numpy(be.top_k(scores, k, exclude=exclude)[1])))
        metrics = ranking_metrics(np.concatenate(tops), data.split.test_targets, k)
        return {"test_loss": loss, **metrics}

    def evaluate(self, dataset: Any, k: int = 10, *, backend: Any = None) -> dict[str, float]:
        """Ranking metrics at `k` on the test users of the split made by the first `fit`.

        Under "holdout" the ranking is over all movies but the test user's input ones and the
        targets are the held-out 20 %; under "notebook" it is over all movies and the target is
        the one random label, so precision@k is TensorFlow's `precision_at_k` (at most 1/k).

        Args:
            dataset: the dataset given to `fit`.
            k: the cut-off, at most the number of items.
            backend: where to compute (default: the one that trained the model).

        Returns:
            `{"precision@k", "recall@k", "ndcg@k", "map@k", "hit_rate@k", "test_loss", "users"}`.
        """
        if self._protocol is None:
            raise RuntimeError(f"{type(self).__name__} has not been trained yet: call fit() first")
        features = self._features(dataset)
        _check_k_catalogue(k, features.num_items)
        split = split_users(features, self._protocol, self._split_seed)
        be = get_backend(backend) if backend is not None else self._backend()
        params = be.params_from_numpy(self.params_numpy())
        out = self._metrics(be, params, self._eval_data(features, split), k)
        metrics = {name: v for name, v in out.items() if name != "test_loss"}
        return {**metrics, "test_loss": out["test_loss"], "users": len(split.test_users)}

    def _backend(self) -> Any:
        return self._session.backend if self._session is not None else get_backend(None)

    # ------------------------------------------------------------------ results

    def params_numpy(self) -> dict[str, np.ndarray]:
        """All parameters as float32 NumPy arrays (the feature tables and `hidden_i`)."""
        if self._session is not None and self._params is None:
            self._params = self._session.backend.params_to_numpy(self._session.state.params)
        if self._params is None:
            raise RuntimeError(f"{type(self).__name__} has no parameters yet: call fit() first")
        return self._params

    @property
    def embeddings(self) -> dict[str, np.ndarray]:
        """`{"item": float32 [M, d]}` (the movie-id table, also the softmax weights) plus every
        parameter by name (`"movie_id"`, `"genre"`, `"year"`, `"hidden_0"`, ...); copies."""
        params = self.params_numpy()
        return {
            "item": params[self.spec.item_feature].copy(),
            **{k: v.copy() for k, v in params.items()},
        }

    @property
    def step(self) -> int:
        """Number of optimizer updates applied so far."""
        return 0 if self._session is None else self._session.step

    @property
    def protocol(self) -> str | None:
        """The protocol fixed by the first `fit` (None before)."""
        return self._protocol

    def user_embeddings(
        self, dataset: Any, users: Any = None, *, backend: Any = None
    ) -> np.ndarray:
        """Query embeddings of `users` (default: all with a rating) from their whole histories.

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
            be.to_numpy(be.softmax_query_embeddings(self.spec, params, bags.ids, bags.weights))
        )


def _take(be: Any, x: Any, rows: np.ndarray) -> Any:
    """Rows of a native `[n, d]` array (gathered on the host: evaluation sizes are small)."""
    return np.asarray(be.to_numpy(x))[rows]


def _check_k_catalogue(k: Any, num_items: int) -> None:
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if k > num_items:
        raise ValueError(f"k={k} is larger than the catalogue of {num_items} items")
