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
from cfcore.specs import MFSpec, OptimizerSpec  # noqa: E402

from . import losses, scoring, training  # noqa: E402


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
