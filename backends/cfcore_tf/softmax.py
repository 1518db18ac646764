"""The softmax model in TensorFlow 2: bag-of-words combiner, query tower, full and sampled softmax
losses, and the compiled training chunk (cfcore's optimizers written out in `optimizers.py`).

Same functions, shapes and batch pytree as `cfcore_jax.softmax`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from cfcore._backend import TrainState
from cfcore.specs import OptimizerSpec, SoftmaxSpec

from . import optimizers
from .training import JIT_COMPILE

_ACTIVATIONS: dict[str | None, Callable] = {None: lambda x: x, "relu": tf.nn.relu, "tanh": tf.tanh}


def bag_of_words(table, ids, weights, combiner: str = "mean") -> tf.Tensor:
    """Weighted bags of embeddings (see the JAX twin for the arguments); `[..., d]` float32."""
    if ids is None:
        total = tf.tensordot(weights, table, axes=1)
    else:
        total = tf.reduce_sum(weights[..., None] * tf.gather(table, ids), axis=-2)
    if combiner == "sum":
        return total
    count = tf.reduce_sum(weights, axis=-1, keepdims=True)
    return total / tf.where(count > 0, count, tf.ones_like(count))


def query_embeddings(spec: SoftmaxSpec, params: dict[str, Any], ids, weights) -> tf.Tensor:
    """The tower: bags concatenated in `spec.feature_names` order, then the hidden layers; `[B, d]`."""
    x = tf.concat(
        [
            bag_of_words(params[f], ids.get(f), weights[f], spec.combiner)
            for f in spec.feature_names
        ],
        axis=-1,
    )
    act = _ACTIVATIONS[spec.activation]
    for i in range(len(spec.hidden_dims)):
        x = act(tf.matmul(x, spec.hidden_scale * params[f"hidden_{i}"]))
    return x


def softmax_cross_entropy(query_emb, item_emb, labels) -> tf.Tensor:
    """Mean cross-entropy of the full softmax over the catalogue (see the JAX twin); scalar."""
    logits = tf.matmul(query_emb, item_emb, transpose_b=True)
    picked = tf.gather(logits, labels, axis=1, batch_dims=1)
    return tf.reduce_mean(tf.reduce_logsumexp(logits, axis=1) - picked)


def sampled_softmax_loss(
    query_emb, item_emb, labels, log_q=None, remove_accidental_hits: bool = True
) -> tf.Tensor:
    """Sampled softmax with in-batch negatives, logQ correction and accidental hits removed.

    See `cfcore_jax.softmax.sampled_softmax_loss` for the formula; scalar float32.
    """
    rows = tf.gather(item_emb, labels)
    logits = tf.matmul(query_emb, rows, transpose_b=True)
    if log_q is not None:
        logits = logits - tf.gather(log_q, labels)[None, :]
    if remove_accidental_hits:
        n = tf.shape(labels)[0]
        hit = tf.equal(labels[:, None], labels[None, :]) & ~tf.eye(n, dtype=tf.bool)
        logits = tf.where(hit, tf.constant(-float("inf"), logits.dtype), logits)
    return tf.reduce_mean(tf.reduce_logsumexp(logits, axis=1) - tf.linalg.diag_part(logits))


def loss(spec: SoftmaxSpec, params: dict[str, Any], batch: dict[str, Any], log_q=None) -> tf.Tensor:
    """The training loss of `spec` on one batch (full or sampled softmax)."""
    query = query_embeddings(spec, params, batch["ids"], batch["weights"])
    items = params[spec.item_feature]
    if spec.loss == "sampled":
        return sampled_softmax_loss(query, items, batch["labels"], log_q)
    return softmax_cross_entropy(query, items, batch["labels"])


def _grads(spec: SoftmaxSpec, params, batch, log_q):
    with tf.GradientTape() as tape:
        tape.watch(params)
        value = loss(spec, params, batch, log_q)
    grads = tape.gradient(value, params)
    # Gathers give IndexedSlices; the optimizers work on dense tensors.
    return value, {k: tf.convert_to_tensor(g) for k, g in grads.items()}


def _compiled(fn):
    return tf.function(fn, jit_compile=JIT_COMPILE, reduce_retracing=True)


_cache: dict[Any, Callable] = {}


def value_and_grad(spec: SoftmaxSpec, params, batch, log_q=None):
    """`(loss, {name: dL/dparam})` of `spec` on one batch."""
    key = ("vg", spec, log_q is None)
    if key not in _cache:
        _cache[key] = _compiled(lambda p, b, q: _grads(spec, p, b, q))
    return _cache[key](params, batch, log_q)


def query_embeddings_fn(spec: SoftmaxSpec) -> Callable:
    """A compiled `(params, ids, weights) -> [B, d]` for `spec`."""
    key = ("query", spec)
    if key not in _cache:
        _cache[key] = _compiled(lambda p, i, w: query_embeddings(spec, p, i, w))
    return _cache[key]


def device_bags(ids, weights) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
    """Bags as int32 ids and float32 weights, as tensors."""
    return (
        {k: tf.convert_to_tensor(v, tf.int32) for k, v in ids.items()},
        {k: tf.convert_to_tensor(v, tf.float32) for k, v in weights.items()},
    )


def device_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """A batch pytree (`cfcore.data.features.SoftmaxBatch.to_dict()`) as tensors."""
    ids, weights = device_bags(batch["ids"], batch["weights"])
    return {
        "ids": ids,
        "weights": weights,
        "labels": tf.convert_to_tensor(batch["labels"], tf.int32),
    }


def _select(pred, on_true, on_false):
    return tf.nest.map_structure(lambda a, b: tf.where(pred, a, b), on_true, on_false)


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
    """Steps of `optimizer` on `spec`'s loss, many in one compiled `tf.while_loop`.

    Returns:
        `run(state, prev, batches, log_q=None) -> (state, prev, bad_step, losses)`, with the contract
        of `cfcore_jax.softmax.make_train_chunk`.
    """

    def body(state, prev, bad, t, batch, log_q):
        value, grads = _grads(spec, state["params"], batch, log_q)
        new_params, opt = optimizers.update(optimizer, grads, state["opt"], state["params"])
        new = {"params": new_params, "opt": opt}
        ok = tf.math.is_finite(value) & (bad < 0)
        bad = tf.where((bad < 0) & ~ok, t, bad)
        return _select(ok, new, state), _select(ok, state, prev), bad, value

    @tf.function(jit_compile=JIT_COMPILE, reduce_retracing=True)
    def run_chunk(state, prev, batches, log_q):
        num_steps = tf.shape(batches["labels"])[0]
        losses = tf.TensorArray(tf.float32, size=num_steps)

        def cond(state, prev, bad, t, losses):
            return t < num_steps

        def loop(state, prev, bad, t, losses):
            batch = tf.nest.map_structure(lambda a: a[t], batches)
            state, prev, bad, value = body(state, prev, bad, t, batch, log_q)
            return state, prev, bad, t + 1, losses.write(t, value)

        init = (state, prev, tf.constant(-1, tf.int32), tf.constant(0, tf.int32), losses)
        state, prev, bad, _, losses = tf.while_loop(cond, loop, init)
        return state, prev, bad, losses.stack()

    def run(state: TrainState, prev: TrainState, batches, log_q=None):
        batches = device_batch(batches)
        if log_q is not None:
            log_q = tf.convert_to_tensor(log_q, tf.float32)
        pack = lambda s: {"params": s.params, "opt": s.opt_state}  # noqa: E731
        s, p, bad, losses = run_chunk(pack(state), pack(prev), batches, log_q)
        return TrainState(s["params"], s["opt"]), TrainState(p["params"], p["opt"]), bad, losses

    return run


bag_of_words_fn = _compiled(bag_of_words)
softmax_cross_entropy_fn = _compiled(softmax_cross_entropy)
sampled_softmax_loss_fn = _compiled(sampled_softmax_loss)
