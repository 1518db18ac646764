"""The JAX backend of cfcore (jax + optax).

Importing this module imports jax; `cfcore` itself never does. Select it with `backend="jax"`.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cfcore._backend import Batch, TrainState
from cfcore._checks import check_embeddings, check_pairs
from cfcore.specs import MFSpec, OptimizerSpec

from . import losses, scoring, training

jax.tree_util.register_dataclass(TrainState, data_fields=["params", "opt_state"], meta_fields=[])
jax.tree_util.register_dataclass(Batch, data_fields=["users", "items", "values"], meta_fields=[])


class JaxBackend:
    """cfcore's `Backend` implemented with jax.jit and optax."""

    name = "jax"

    @staticmethod
    def is_available() -> bool:
        return all(importlib.util.find_spec(m) is not None for m in ("jax", "optax"))

    # ---------------------------------------------------------------- conversion
    def asarray(self, x: Any, dtype: Any = None) -> jax.Array:
        return jnp.asarray(x, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def params_from_numpy(self, params: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}

    def params_to_numpy(self, params: dict[str, Any]) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in params.items()}

    def device_batch(self, batch: Batch) -> Batch:
        return Batch(
            jnp.asarray(batch.users, jnp.int32),
            jnp.asarray(batch.items, jnp.int32),
            jnp.asarray(batch.values, jnp.float32),
        )

    # ---------------------------------------------------------------- losses
    def sparse_mse(self, user_emb, item_emb, users, items, ratings, method: str = "gather"):
        check_pairs(user_emb, item_emb, users, items, ratings)
        return _sparse_mse(
            jnp.asarray(user_emb, jnp.float32),
            jnp.asarray(item_emb, jnp.float32),
            jnp.asarray(users, jnp.int32),
            jnp.asarray(items, jnp.int32),
            jnp.asarray(ratings, jnp.float32),
            method,
        )

    def l2_penalty(self, user_emb, item_emb):
        check_embeddings(user_emb, item_emb)
        return _l2(jnp.asarray(user_emb, jnp.float32), jnp.asarray(item_emb, jnp.float32))

    def gravity(self, user_emb, item_emb):
        check_embeddings(user_emb, item_emb)
        return _gravity(jnp.asarray(user_emb, jnp.float32), jnp.asarray(item_emb, jnp.float32))

    def mf_loss_terms(self, spec: MFSpec, params, batch: Batch) -> dict[str, jax.Array]:
        return _terms(spec, self.params_from_numpy(params), self.device_batch(batch))

    def value_and_grad(self, spec: MFSpec, params, batch: Batch):
        return _value_and_grad(spec, self.params_from_numpy(params), self.device_batch(batch))

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
        return scoring.predict(
            p["user"], p["item"], jnp.asarray(users, jnp.int32), jnp.asarray(items, jnp.int32)
        )

    def score_all(self, query_emb, item_emb):
        return scoring.score_all(
            jnp.asarray(query_emb, jnp.float32), jnp.asarray(item_emb, jnp.float32)
        )

    def top_k(self, scores, k: int, exclude=None):
        return scoring.top_k(scores, k, exclude)

    def __repr__(self) -> str:
        return f"JaxBackend(jax {jax.__version__}, devices={[d.platform for d in jax.devices()]})"


_sparse_mse = jax.jit(losses.sparse_mse, static_argnames="method")
_l2 = jax.jit(losses.l2_penalty)
_gravity = jax.jit(losses.gravity)


def _total(spec, params, batch):
    return _terms_of(spec, params, batch)["total"]


_value_and_grad = jax.jit(jax.value_and_grad(_total, argnums=1), static_argnums=0)


def _terms_of(spec, params, batch):
    return losses.mf_loss_terms(spec, params, batch.users, batch.items, batch.values)


_terms = jax.jit(_terms_of, static_argnums=0)

backend = JaxBackend()
