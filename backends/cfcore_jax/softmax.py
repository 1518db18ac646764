"""The softmax model in JAX: bag-of-words combiner, query tower, full and sampled softmax losses,
and the compiled training chunk (Adagrad, or any cfcore optimizer, through optax).

Shapes: `B` examples, `L` tokens per bag, `d` dimensions, `M` items. A batch is the pytree
`{"ids": {feature: [B, L_f]}, "weights": {feature: [B, L_f]}, "labels": [B]}` built by
`cfcore.data.features`; the same NumPy arrays go to the TensorFlow backend.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax

from cfcore._backend import TrainState
from cfcore.specs import OptimizerSpec, SoftmaxSpec

from .optimizers import to_optax

_HIGHEST = lax.Precision.HIGHEST
_ACTIVATIONS: dict[str | None, Callable] = {
    None: lambda x: x,
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
}


def bag_of_words(table, ids, weights, combiner: str = "mean") -> jax.Array:
    """Weighted bags of embeddings.

    Args:
        table: `[V, d]` float32 embeddings.
        ids: `[..., L]` int32 token ids, or None for dense bags.
        weights: `[..., L]` float32 counts of `ids` (0 on padding), or, with `ids` None,
            `[..., V]` counts of every token.
        combiner: "mean" (`Σ w·T[id] / Σ w`; an empty bag gives zeros) or "sum".

    Returns:
        `[..., d]` float32.
    """
    if ids is None:
        total = jnp.matmul(weights, table, precision=_HIGHEST)
    else:
        emb = jnp.take(table, ids, axis=0)
        total = jnp.einsum("...l,...ld->...d", weights, emb, precision=_HIGHEST)
    if combiner == "sum":
        return total
    count = jnp.sum(weights, axis=-1, keepdims=True)
    return total / jnp.where(count > 0, count, 1.0)


def query_embeddings(spec: SoftmaxSpec, params: dict[str, Any], ids, weights) -> jax.Array:
    """The tower: bags concatenated in `spec.feature_names` order, then the hidden layers.

    Returns:
        `[B, d]` query (user) embeddings.
    """
    x = jnp.concatenate(
        [
            bag_of_words(params[f], ids.get(f), weights[f], spec.combiner)
            for f in spec.feature_names
        ],
        axis=-1,
    )
    act = _ACTIVATIONS[spec.activation]
    for i in range(len(spec.hidden_dims)):
        x = act(jnp.matmul(x, spec.hidden_scale * params[f"hidden_{i}"], precision=_HIGHEST))
    return x


def softmax_cross_entropy(query_emb, item_emb, labels) -> jax.Array:
    """Mean cross-entropy of the full softmax over the catalogue.

    `L = (1/B) Σ_b [logsumexp_j ⟨q_b, V_j⟩ − ⟨q_b, V_{y_b}⟩]`.

    Args:
        query_emb: `[B, d]`.
        item_emb: `[M, d]`.
        labels: `[B]` int32 target items.

    Returns:
        Scalar float32.
    """
    logits = jnp.matmul(query_emb, item_emb.T, precision=_HIGHEST)
    picked = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - picked)


def sampled_softmax_loss(
    query_emb, item_emb, labels, log_q=None, remove_accidental_hits: bool = True
) -> jax.Array:
    """Sampled softmax with in-batch negatives (Yi et al., RecSys 2019).

    The candidates of example `b` are the batch's labels `y_1..y_B`, scored
    `s_bj = ⟨q_b, V_{y_j}⟩ − log Q(y_j)` (logQ correction, `log_q` the log of each item's
    sampling probability, i.e. its share of the labels). With `remove_accidental_hits`, a
    candidate `j ≠ b` with `y_j = y_b` (the positive again) is dropped (score −∞).
    `L = (1/B) Σ_b [logsumexp_j s_bj − s_bb]`.

    Args:
        query_emb: `[B, d]`.
        item_emb: `[M, d]`.
        labels: `[B]` int32.
        log_q: optional `[M]` float32 log sampling probabilities (no correction if None).
        remove_accidental_hits: drop in-batch duplicates of the positive.

    Returns:
        Scalar float32.
    """
    rows = jnp.take(item_emb, labels, axis=0)
    logits = jnp.matmul(query_emb, rows.T, precision=_HIGHEST)
    if log_q is not None:
        logits = logits - jnp.take(log_q, labels)[None, :]
    if remove_accidental_hits:
        n = labels.shape[0]
        hit = (labels[:, None] == labels[None, :]) & ~jnp.eye(n, dtype=bool)
        logits = jnp.where(hit, -jnp.inf, logits)
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - jnp.diagonal(logits))


def loss(spec: SoftmaxSpec, params: dict[str, Any], batch: dict[str, Any], log_q=None) -> jax.Array:
    """The training loss of `spec` on one batch (full or sampled softmax)."""
    query = query_embeddings(spec, params, batch["ids"], batch["weights"])
    items = params[spec.item_feature]
    if spec.loss == "sampled":
        return sampled_softmax_loss(query, items, batch["labels"], log_q)
    return softmax_cross_entropy(query, items, batch["labels"])


@partial(jax.jit, static_argnums=0)
def value_and_grad(spec: SoftmaxSpec, params, batch, log_q=None):
    """`(loss, {name: dL/dparam})` of `spec` on one batch."""
    return jax.value_and_grad(partial(loss, spec))(params, batch, log_q)


def device_bags(ids, weights) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """Bags as int32 ids and float32 weights on the device."""
    return (
        {k: jnp.asarray(v, jnp.int32) for k, v in ids.items()},
        {k: jnp.asarray(v, jnp.float32) for k, v in weights.items()},
    )


def device_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """A batch pytree (`cfcore.data.features.SoftmaxBatch.to_dict()`) on the device."""
    ids, weights = device_bags(batch["ids"], batch["weights"])
    return {"ids": ids, "weights": weights, "labels": jnp.asarray(batch["labels"], jnp.int32)}


def _select(pred, on_true, on_false):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


_chunks: dict[tuple[SoftmaxSpec, OptimizerSpec], Callable] = {}


def make_train_chunk(spec: SoftmaxSpec, optimizer: OptimizerSpec) -> Callable:
    """The compiled training chunk of `(spec, optimizer)`, built once and then reused.

    A model trained again, or a second model of the same spec, reuses the compiled loop.
    See `_make_train_chunk` for the contract.
    """
    key = (spec, optimizer)
    if key not in _chunks:
        _chunks[key] = _make_train_chunk(spec, optimizer)
    return _chunks[key]


def _make_train_chunk(spec: SoftmaxSpec, optimizer: OptimizerSpec) -> Callable:
    """Steps of `optimizer` on `spec`'s loss, many in one compiled `lax.scan`.

    Returns:
        `run(state, prev, batches, log_q=None) -> (state, prev, bad_step, losses)`. `batches` is a
        batch pytree with a leading `[k]` axis (one slice per step); `losses` is `[k]` float32,
        each step's loss before its update. As for MF (`cfcore_jax.training.make_train_chunk`):
        at the first non-finite loss the loop stops updating, `bad_step` is its offset in the
        chunk (else -1) and `prev` holds the last state whose loss was finite.
    """
    tx = to_optax(optimizer)
    grad_fn = jax.value_and_grad(partial(loss, spec))

    def body(carry, batch, log_q):
        state, prev, bad, t = carry
        value, grads = grad_fn(state.params, batch, log_q)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new = TrainState(optax.apply_updates(state.params, updates), opt_state)
        ok = jnp.isfinite(value) & (bad < 0)
        bad = jnp.where((bad < 0) & ~ok, t, bad)
        return (_select(ok, new, state), _select(ok, state, prev), bad, t + 1), value

    @jax.jit
    def run_chunk(state, prev, batches, log_q):
        init = (state, prev, jnp.int32(-1), jnp.int32(0))
        (state, prev, bad, _), losses = lax.scan(
            lambda carry, batch: body(carry, batch, log_q), init, batches
        )
        return state, prev, bad, losses

    def run(state, prev, batches, log_q=None):
        if log_q is not None:
            log_q = jnp.asarray(log_q, jnp.float32)
        return run_chunk(state, prev, device_batch(batches), log_q)

    return run


query_embeddings_jit = jax.jit(query_embeddings, static_argnums=0)
bag_of_words_jit = jax.jit(bag_of_words, static_argnames="combiner")
softmax_cross_entropy_jit = jax.jit(softmax_cross_entropy)
sampled_softmax_loss_jit = jax.jit(sampled_softmax_loss, static_argnames="remove_accidental_hits")
