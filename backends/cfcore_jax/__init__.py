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
from cfcore.retrieval import check_k
from cfcore.specs import MFSpec, OptimizerSpec

from . import linalg, losses, scoring, training

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

    # ---------------------------------------------------------------- retrieval
    def fold_in_solve(self, item_emb, rows, items, ratings, num_rows: int, reg, prior=None):
        """New users' embeddings by ridge regression on fixed items; `[num_rows, d]` (see cfcore.retrieval)."""
        item_emb = jnp.asarray(item_emb, jnp.float32)
        d = item_emb.shape[1]
        reg = jnp.broadcast_to(jnp.asarray(reg, jnp.float32), (int(num_rows),))
        prior = jnp.zeros((d, d), jnp.float32) if prior is None else jnp.asarray(prior, jnp.float32)
        return linalg.fold_in_solve(
            item_emb,
            jnp.asarray(rows, jnp.int32),
            jnp.asarray(items, jnp.int32),
            jnp.asarray(ratings, jnp.float32),
            reg,
            prior,
            num_rows=int(num_rows),
        )

    def measure_scores(self, query_emb, item_emb, query_power=0.0, item_power=0.0):
        """`⟨q, v⟩ / (‖q‖^query_power · ‖v‖^item_power)`: `[B, M]` for `[B, d]` and `[M, d]`."""
        check_embeddings(query_emb, item_emb)
        return linalg.measure_scores(
            jnp.asarray(query_emb, jnp.float32),
            jnp.asarray(item_emb, jnp.float32),
            jnp.float32(query_power),
            jnp.float32(item_power),
        )

    def batched_top_k(
        self, query_emb, item_emb, k: int, exclude=None, query_power=0.0, item_power=0.0
    ):
        """Top-k items of `measure_scores` per query row: `(values [B, k], indices [B, k])`."""
        check_embeddings(query_emb, item_emb)
        check_k(k, item_emb.shape[0])
        query_emb = jnp.asarray(query_emb, jnp.float32)
        shape = (query_emb.shape[0], item_emb.shape[0])
        exclude = (
            jnp.zeros(shape, bool) if exclude is None else jnp.asarray(exclude, bool).reshape(shape)
        )
        return linalg.batched_top_k(
            query_emb,
            jnp.asarray(item_emb, jnp.float32),
            exclude,
            jnp.float32(query_power),
            jnp.float32(item_power),
            k=int(k),
        )

    # ---------------------------------------------------------------- softmax model
    # Thin wrappers: the math is in softmax.py (imported here, on first use of the model).
    def bag_of_words(self, table, ids, weights, combiner: str = "mean"):
        """Weighted bags of `table` rows: `[..., d]` for `ids`/`weights` `[..., L]` (mean or sum)."""
        from cfcore.softmax import check_bag_inputs

        from . import softmax

        check_bag_inputs(table, ids, weights, combiner)
        return softmax.bag_of_words_jit(
            jnp.asarray(table, jnp.float32),
            None if ids is None else jnp.asarray(ids, jnp.int32),
            jnp.asarray(weights, jnp.float32),
            combiner=combiner,
        )

    def softmax_cross_entropy(self, query_emb, item_emb, labels):
        """Mean full-softmax cross-entropy of `[B, d]` queries over `[M, d]` items; scalar."""
        from cfcore.softmax import check_softmax_inputs

        from . import softmax

        check_softmax_inputs(query_emb, item_emb, labels)
        return softmax.softmax_cross_entropy_jit(
            jnp.asarray(query_emb, jnp.float32),
            jnp.asarray(item_emb, jnp.float32),
            jnp.asarray(labels, jnp.int32),
        )

    def sampled_softmax_loss(
        self, query_emb, item_emb, labels, log_q=None, remove_accidental_hits: bool = True
    ):
        """In-batch sampled softmax with logQ correction and accidental hits removed; scalar."""
        from cfcore.softmax import check_softmax_inputs

        from . import softmax

        check_softmax_inputs(query_emb, item_emb, labels, log_q)
        return softmax.sampled_softmax_loss_jit(
            jnp.asarray(query_emb, jnp.float32),
            jnp.asarray(item_emb, jnp.float32),
            jnp.asarray(labels, jnp.int32),
            None if log_q is None else jnp.asarray(log_q, jnp.float32),
            remove_accidental_hits=remove_accidental_hits,
        )

    def softmax_query_embeddings(self, spec, params, ids, weights):
        """The softmax model's tower: `[B, d]` query embeddings of bags `ids`/`weights`."""
        from . import softmax

        return softmax.query_embeddings_jit(
            spec, self.params_from_numpy(params), *softmax.device_bags(ids, weights)
        )

    def softmax_value_and_grad(self, spec, params, batch, log_q=None):
        """`(loss, grads)` of the softmax model on one batch pytree (see softmax.py)."""
        from . import softmax

        return softmax.value_and_grad(
            spec,
            self.params_from_numpy(params),
            softmax.device_batch(batch),
            None if log_q is None else jnp.asarray(log_q, jnp.float32),
        )

    def make_softmax_train_chunk(self, spec, optimizer: OptimizerSpec):
        """`run(state, prev, batches, log_q=None) -> (state, prev, bad_step, losses)`."""
        from . import softmax

        return softmax.make_train_chunk(spec, optimizer)

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
