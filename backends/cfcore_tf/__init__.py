"""The TensorFlow 2 backend of cfcore (tf.function + XLA; no tf.compat.v1).

Importing this module imports tensorflow; `cfcore` itself never does. Select it with `backend="tf"`.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

# Quiets TensorFlow's C++ warnings (users can still raise the level). A few start-up lines are
# printed by absl before the variable is read and still appear.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from cfcore._backend import Batch, TrainState
from cfcore._checks import check_embeddings, check_pairs  # noqa: E402
from cfcore.retrieval import check_k  # noqa: E402
from cfcore.specs import MFSpec, OptimizerSpec  # noqa: E402

from . import linalg, losses, scoring, training  # noqa: E402


class TFBackend:
    """cfcore's `Backend` implemented with TensorFlow 2."""

    name = "tf"

    @staticmethod
    def is_available() -> bool:
        return importlib.util.find_spec("tensorflow") is not None

    # ---------------------------------------------------------------- conversion
    def asarray(self, x: Any, dtype: Any = None) -> tf.Tensor:
        return tf.convert_to_tensor(x, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.numpy() if hasattr(x, "numpy") else np.asarray(x)

    def params_from_numpy(self, params: dict[str, Any]) -> dict[str, tf.Tensor]:
        return {k: tf.convert_to_tensor(v, tf.float32) for k, v in params.items()}

    def params_to_numpy(self, params: dict[str, Any]) -> dict[str, np.ndarray]:
        return {k: self.to_numpy(v) for k, v in params.items()}

    def device_batch(self, batch: Batch) -> Batch:
        return Batch(
            tf.convert_to_tensor(batch.users, tf.int32),
            tf.convert_to_tensor(batch.items, tf.int32),
            tf.convert_to_tensor(batch.values, tf.float32),
        )

    # ---------------------------------------------------------------- losses
    def sparse_mse(self, user_emb, item_emb, users, items, ratings, method: str = "gather"):
        check_pairs(user_emb, item_emb, users, items, ratings)
        if method not in ("gather", "dense"):
            raise ValueError(f"method must be 'gather' or 'dense', got {method!r}")
        fn = _sparse_mse_gather if method == "gather" else _sparse_mse_dense
        return fn(*self._f32(user_emb, item_emb), *self._i32(users, items), self._f32(ratings)[0])

    def l2_penalty(self, user_emb, item_emb):
        check_embeddings(user_emb, item_emb)
        return _l2(*self._f32(user_emb, item_emb))

    def gravity(self, user_emb, item_emb):
        check_embeddings(user_emb, item_emb)
        return _gravity(*self._f32(user_emb, item_emb))

    def mf_loss_terms(self, spec: MFSpec, params, batch: Batch) -> dict[str, tf.Tensor]:
        b = self.device_batch(batch)
        return _terms_fn(spec)(self.params_from_numpy(params), b.users, b.items, b.values)

    def value_and_grad(self, spec: MFSpec, params, batch: Batch):
        b = self.device_batch(batch)
        return _value_and_grad_fn(spec)(self.params_from_numpy(params), b.users, b.items, b.values)

    # ---------------------------------------------------------------- training
    def init_train_state(self, spec: MFSpec, params, optimizer: OptimizerSpec) -> TrainState:
        return training.init_train_state(spec, params, optimizer)

    def make_train_step(self, spec: MFSpec, optimizer: OptimizerSpec):
        return training.make_train_step(spec, optimizer)

    def make_train_chunk(self, spec: MFSpec, optimizer: OptimizerSpec):
        return training.make_train_chunk(spec, optimizer)

    # ---------------------------------------------------------------- scoring
    def predict(self, params, users, items):
        p = self.params_from_numpy(params)
        return scoring.predict(p["user"], p["item"], *self._i32(users, items))

    def score_all(self, query_emb, item_emb):
        return scoring.score_all(*self._f32(query_emb, item_emb))

    def top_k(self, scores, k: int, exclude=None):
        return scoring.top_k(scores, k, exclude)

    @staticmethod
    def _f32(*xs):
        return [tf.convert_to_tensor(x, tf.float32) for x in xs]

    @staticmethod
    def _i32(*xs):
        return [tf.convert_to_tensor(x, tf.int32) for x in xs]

    # ---------------------------------------------------------------- retrieval
    def fold_in_solve(self, item_emb, rows, items, ratings, num_rows: int, reg, prior=None):
        """New users' embeddings by ridge regression on fixed items; `[num_rows, d]` (see cfcore.retrieval)."""
        (item_emb,) = self._f32(item_emb)
        d = int(item_emb.shape[1])
        reg = tf.broadcast_to(tf.convert_to_tensor(reg, tf.float32), (int(num_rows),))
        prior = tf.zeros((d, d), tf.float32) if prior is None else self._f32(prior)[0]
        return linalg.fold_in_solve(
            item_emb,
            *self._i32(rows, items),
            self._f32(ratings)[0],
            reg,
            prior,
            tf.constant(int(num_rows), tf.int32),
        )

    def measure_scores(self, query_emb, item_emb, query_power=0.0, item_power=0.0):
        """`⟨q, v⟩ / (‖q‖^query_power · ‖v‖^item_power)`: `[B, M]` for `[B, d]` and `[M, d]`."""
        check_embeddings(query_emb, item_emb)
        return linalg.measure_scores(*self._f32(query_emb, item_emb, query_power, item_power))

    def batched_top_k(
        self, query_emb, item_emb, k: int, exclude=None, query_power=0.0, item_power=0.0
    ):
        """Top-k items of `measure_scores` per query row: `(values [B, k], indices [B, k])`."""
        check_embeddings(query_emb, item_emb)
        check_k(k, int(item_emb.shape[0]))
        query_emb, item_emb = self._f32(query_emb, item_emb)
        shape = (int(query_emb.shape[0]), int(item_emb.shape[0]))
        exclude = (
            tf.zeros(shape, tf.bool)
            if exclude is None
            else tf.reshape(tf.convert_to_tensor(exclude, tf.bool), shape)
        )
        return linalg.batched_top_k(
            query_emb, item_emb, exclude, *self._f32(query_power, item_power), k=int(k)
        )

    # ---------------------------------------------------------------- softmax model
    # Thin wrappers: the math is in softmax.py (imported here, on first use of the model).
    def bag_of_words(self, table, ids, weights, combiner: str = "mean"):
        """Weighted bags of `table` rows: `[..., d]` for `ids`/`weights` `[..., L]` (mean or sum)."""
        from cfcore.softmax import check_bag_inputs

        from . import softmax

        check_bag_inputs(table, ids, weights, combiner)
        return softmax.bag_of_words_fn(
            tf.convert_to_tensor(table, tf.float32),
            None if ids is None else tf.convert_to_tensor(ids, tf.int32),
            tf.convert_to_tensor(weights, tf.float32),
            combiner,
        )

    def softmax_cross_entropy(self, query_emb, item_emb, labels):
        """Mean full-softmax cross-entropy of `[B, d]` queries over `[M, d]` items; scalar."""
        from cfcore.softmax import check_softmax_inputs

        from . import softmax

        check_softmax_inputs(query_emb, item_emb, labels)
        return softmax.softmax_cross_entropy_fn(
            tf.convert_to_tensor(query_emb, tf.float32),
            tf.convert_to_tensor(item_emb, tf.float32),
            tf.convert_to_tensor(labels, tf.int32),
        )

    def sampled_softmax_loss(
        self, query_emb, item_emb, labels, log_q=None, remove_accidental_hits: bool = True
    ):
        """In-batch sampled softmax with logQ correction and accidental hits removed; scalar."""
        from cfcore.softmax import check_softmax_inputs

        from . import softmax

        check_softmax_inputs(query_emb, item_emb, labels, log_q)
        return softmax.sampled_softmax_loss_fn(
            tf.convert_to_tensor(query_emb, tf.float32),
            tf.convert_to_tensor(item_emb, tf.float32),
            tf.convert_to_tensor(labels, tf.int32),
            None if log_q is None else tf.convert_to_tensor(log_q, tf.float32),
            remove_accidental_hits,
        )

    def softmax_query_embeddings(self, spec, params, ids, weights):
        """The softmax model's tower: `[B, d]` query embeddings of bags `ids`/`weights`."""
        from . import softmax

        return softmax.query_embeddings_fn(spec)(
            self.params_from_numpy(params), *softmax.device_bags(ids, weights)
        )

    def softmax_value_and_grad(self, spec, params, batch, log_q=None):
        """`(loss, grads)` of the softmax model on one batch pytree (see softmax.py)."""
        from . import softmax

        return softmax.value_and_grad(
            spec,
            self.params_from_numpy(params),
            softmax.device_batch(batch),
            None if log_q is None else tf.convert_to_tensor(log_q, tf.float32),
        )

    def make_softmax_train_chunk(self, spec, optimizer: OptimizerSpec):
        """`run(state, prev, batches, log_q=None) -> (state, prev, bad_step, losses)`."""
        from . import softmax

        return softmax.make_train_chunk(spec, optimizer)

    def __repr__(self) -> str:
        return f"TFBackend(tensorflow {tf.__version__})"


def _compiled(fn):
    return tf.function(fn, jit_compile=training.JIT_COMPILE, reduce_retracing=True)


_sparse_mse_gather = _compiled(lambda u, v, us, it, r: losses.sparse_mse(u, v, us, it, r, "gather"))
_sparse_mse_dense = _compiled(lambda u, v, us, it, r: losses.sparse_mse(u, v, us, it, r, "dense"))
_l2 = _compiled(losses.l2_penalty)
_gravity = _compiled(losses.gravity)
_cache: dict[tuple[str, MFSpec], Any] = {}


def _terms_fn(spec: MFSpec):
    key = ("terms", spec)
    if key not in _cache:
        _cache[key] = _compiled(
            lambda params, us, it, r: losses.mf_loss_terms(spec, params, us, it, r)
        )
    return _cache[key]


def _value_and_grad_fn(spec: MFSpec):
    key = ("vg", spec)
    if key not in _cache:

        def vg(params, us, it, r):
            with tf.GradientTape() as tape:
                tape.watch(params)
                total = losses.mf_loss_terms(spec, params, us, it, r)["total"]
            grads = tape.gradient(total, params)
            return total, {k: tf.convert_to_tensor(g) for k, g in grads.items()}

        _cache[key] = _compiled(vg)
    return _cache[key]


backend = TFBackend()
