"""Fused kernels of the TensorFlow backend (contracts in `cfcore.backend.protocol`)."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import tensorflow as tf
from tensorflow.experimental import dtensor

from . import rows as _rows

_NEG_INF = float("-inf")


def pair_dot(user_emb, item_emb, users, items, method: str = "gather"):
    """`⟨U[users[k]], V[items[k]]⟩` for each observed pair: `[n]` float32. In a step on DTensors
    (`DTENSOR_MESH` set) the rows are fetched where they live (`rows.take_rows`), in chunks
    of at most `PAIR_FLOATS` floats a side (`_sharded_pair_dot`)."""
    mesh = DTENSOR_MESH.get()
    if mesh is not None and method == "gather" and _shardable(mesh, user_emb, item_emb):
        return replicated(_sharded_pair_dot(mesh, user_emb, item_emb, users, items))
    if method == "dense":
        full = tf.matmul(user_emb, item_emb, transpose_b=True)
        return tf.gather_nd(full, tf.stack([users, items], axis=1))
    return tf.reduce_sum(tf.gather(user_emb, users) * tf.gather(item_emb, items), axis=1)


# The most floats of one `[c, d]` array of rows that `pair_dot` looks up at a time in a step on
# DTensors (64 MiB of float32): more pairs are taken in chunks of c = PAIR_FLOATS // d.
PAIR_FLOATS = 1 << 24


def _sharded_pair_dot(mesh, user_emb, item_emb, users, items):
    """`pair_dot` on row-sharded tables: `[n]`, whole on every device.

    `take_rows` holds O(n·d) per device (the `[n, d]` rows of each side whole on every device,
    and its part of the `[n, k, d]` partial rows), and all the logical devices of a CPU are one
    process. Above `PAIR_FLOATS // d` pairs the lookups are made in chunks, each chunk's ids
    made to wait for the previous chunk's products (`_after`): without that TensorFlow's
    executor (DTensor runs the step without XLA) starts every chunk at once, and a control
    dependency alone did not hold them back (dropped somewhere in DTensor's passes: the same
    peak). An iALS objective over 2.2M positives (34.6k x 6.7k, d 64, 2 logical CPU devices)
    peaked at 7.3 GiB resident with one lookup of them all and at 2.1 GiB in chunks of 2^18
    pairs, in the same time (2.8 s a call). Each pair's product is the same either way. (A
    gradient step's backward pass, one scatter-add per chunk, is not held back so.)"""
    n, d = int(users.shape[0]), int(_rows.padded(user_emb)[0].shape[1])
    chunk = max(1, PAIR_FLOATS // max(d, 1))
    if n <= chunk:
        u = _rows.take_rows(mesh, user_emb, users)
        v = _rows.take_rows(mesh, item_emb, items)
        return tf.reduce_sum(u * v, axis=1)
    whole = replicated_layout(mesh, 1)
    users, items = dtensor.relayout(users, whole), dtensor.relayout(items, whole)
    parts = []
    for start in range(0, n, chunk):
        us, its = users[start : start + chunk], items[start : start + chunk]
        if parts:
            us, its = _after(us, parts[-1]), _after(its, parts[-1])
        u = _rows.take_rows(mesh, user_emb, us)
        v = _rows.take_rows(mesh, item_emb, its)
        parts.append(replicated(tf.reduce_sum(u * v, axis=1)))
    return tf.concat(parts, axis=0)


def _after(ids, prev):
    """`ids`, unchanged, but computed only once `prev` is: a data dependency that no graph
    optimization removes (`min(ids, ids + [any of prev is NaN])` is `ids` whatever prev holds)."""
    late = tf.cast(tf.math.is_nan(tf.reduce_sum(prev)), ids.dtype)
    return tf.minimum(ids, ids + late)


def _shardable(mesh, *tables) -> bool:
    # Tables as the placement lays them out (rows split evenly, 2-D): the sharded kernels apply.
    return all(_rows.padded(t)[0].shape.rank == 2 and _rows.splits(mesh, t) for t in tables)


def _take(table, ids):
    """`table[ids]` for `ids` `[n]`: in a step on DTensors fetched where the rows live, whole on
    every device (`rows.take_rows`); else `tf.gather`."""
    mesh = DTENSOR_MESH.get()
    if mesh is not None and _shardable(mesh, table):
        return _rows.take_rows(mesh, table, ids)
    return tf.gather(table, ids)


def gramian(x):
    """`xᵀx`: `[d, d]` for `[n, d]` (a `rows.PaddedRows`: of its padded table, whose zero rows
    add nothing: no slice that would make it whole)."""
    if isinstance(x, _rows.PaddedRows):
        x = x.padded
    return tf.matmul(x, x, transpose_a=True)


def segment_sum(data, segment_ids, num_segments: int):
    """Row sums per segment: `[S, ...]`."""
    return tf.math.unsorted_segment_sum(data, segment_ids, num_segments)


def bag_of_words(table, ids, weights, combiner: str = "mean"):
    """Weighted bags of `table` rows: `[B, d]`."""
    mesh = DTENSOR_MESH.get()
    if ids is None:
        full, rows = _rows.padded(table)
        if mesh is not None and rows != full.shape[0]:
            # Dense weights [B, V] over a padded table: zero weights for the padding rows.
            # (Whole on every device around the pad: DTensor cannot expand a pad whose input
            # and output layouts differ, TF 2.21.)
            whole = replicated_layout(mesh, 2)
            weights = tf.pad(dtensor.relayout(weights, whole), [[0, 0], [0, full.shape[0] - rows]])
            weights = dtensor.relayout(weights, whole)
            table = full
        total = tf.tensordot(weights, table, axes=1)
    elif mesh is not None and _shardable(mesh, table):
        flat = _take(table, tf.reshape(ids, [-1]))
        looked = tf.reshape(flat, [*ids.shape, int(flat.shape[-1])])
        total = tf.reduce_sum(weights[..., None] * looked, axis=-2)
    else:
        total = tf.reduce_sum(weights[..., None] * tf.gather(table, ids), axis=-2)
    if combiner == "sum":
        return replicated(total)
    count = tf.reduce_sum(weights, axis=-1, keepdims=True)
    return replicated(total / tf.where(count > 0, count, tf.ones_like(count)))


def replicated(x):
    """`x`, in a step on DTensors (`DTENSOR_MESH` set), fixed to be whole on every device; else
    `x` unchanged.

    The softmax tower concatenates its bags (`[B, 4] ++ [B, 2] ++ [B, 2]`) and feeds them to the
    row-sharded hidden layer, and DTensor's layout propagation (TF 2.21) shards the
    concatenation's columns over the mesh from there, failing on a bag whose width the mesh does
    not divide ("The sharding spec for axis 1 splits among 4 values, which does not evenly divide
    the length of that axis (2)"). A bag is `[B, d_f]`, a batch's worth: the bags and their
    concatenation (`ops.concat` of replicated pieces) are fixed whole instead.
    """
    mesh = DTENSOR_MESH.get()
    if mesh is None:
        return x
    return dtensor.relayout(x, replicated_layout(mesh, x.shape.rank))


def is_replicated(x) -> bool:
    """Whether `x` is the result of `replicated` in a step on DTensors being traced."""
    mesh = DTENSOR_MESH.get()
    op = getattr(x, "op", None)
    if mesh is None or op is None or op.type != "Relayout":
        return False
    return op.get_attr("layout").decode() == replicated_layout(mesh, x.shape.rank).to_string()


def replicated_layout(mesh, rank: int):
    """The `dtensor.Layout` of a rank-`rank` tensor whole on every device of `mesh`."""
    return dtensor.Layout([dtensor.UNSHARDED] * rank, mesh)  # pyright: ignore[reportCallIssue]


def softmax_cross_entropy(query_emb, item_emb, labels):
    """Mean full-softmax cross-entropy: scalar."""
    mesh = DTENSOR_MESH.get()
    if mesh is not None and _shardable(mesh, item_emb):
        return _sharded_softmax_cross_entropy(mesh, query_emb, item_emb, labels)
    logits = tf.matmul(query_emb, item_emb, transpose_b=True)
    picked = tf.gather(logits, labels, axis=1, batch_dims=1)
    return tf.reduce_mean(tf.reduce_logsumexp(logits, axis=1) - picked)


def sampled_softmax_loss(query_emb, item_emb, labels, log_q=None, remove_accidental_hits=True):
    """Mean in-batch sampled-softmax cross-entropy: scalar."""
    logits = tf.matmul(query_emb, _take(item_emb, labels), transpose_b=True)
    if log_q is not None:
        logits = logits - tf.gather(log_q, labels)[None, :]
    if remove_accidental_hits:
        n = tf.shape(labels)[0]
        same = tf.equal(labels[:, None], labels[None, :])
        hit = tf.logical_and(same, tf.logical_not(tf.eye(n, dtype=tf.bool)))
        logits = tf.where(hit, tf.constant(_NEG_INF, logits.dtype), logits)
    return tf.reduce_mean(tf.reduce_logsumexp(logits, axis=1) - _diagonal(logits))


def _sharded_softmax_cross_entropy(mesh, query_emb, item_emb, labels):
    """`softmax_cross_entropy` over a row-sharded item table: each device's logits are those of
    its own items (`[B, M/k]`, the padding items masked to -inf), the log-sum-exp over the items
    is reduced across devices (`[B]` vectors), the labels' logits are `⟨q, V[label]⟩` with the
    rows fetched where they live: the table and the `[B, M]` logits never move."""
    table, num_items = _rows.padded(item_emb)
    logits = tf.matmul(query_emb, table, transpose_b=True)
    logits = dtensor.relayout(logits, _rows.layout(mesh, 2, 1))
    if num_items != table.shape[0]:
        real = tf.range(int(table.shape[0])) < num_items
        real = dtensor.relayout(real, _rows.layout(mesh, 1, 0))
        logits = tf.where(real[None, :], logits, tf.constant(_NEG_INF, logits.dtype))
    picked = tf.reduce_sum(query_emb * _take(item_emb, labels), axis=1)
    return tf.reduce_mean(tf.reduce_logsumexp(logits, axis=1) - picked)


def _diagonal(x):
    """The diagonal of a square `[n, n]`: `[n]`. On DTensors a masked row sum, since DTensor
    (TF 2.21) has no layout propagation for `MatrixDiagPartV3` (`tf.linalg.diag_part`); exact
    (the other entries add zeros; a `-inf` hit off the diagonal is selected away, not multiplied)."""
    if not ON_DTENSORS.get():
        return tf.linalg.diag_part(x)
    eye = tf.eye(tf.shape(x)[0], dtype=tf.bool)
    return tf.reduce_sum(tf.where(eye, x, tf.zeros_like(x)), axis=1)


def top_k(scores, k: int):
    """`tf.math.top_k` documents lowest-index-first ties for equal values, as the contract asks."""
    out = tf.math.top_k(scores, k=k, sorted=True)
    return out.values, out.indices


# True while a step on DTensors is traced (`sharding.TFRowSharding.scope`): DTensor (TF 2.21)
# has no layout propagation for `MatrixTriangularSolve` ("does not implement layout
# propagation"), so `solve` then substitutes with elementwise ops instead.
ON_DTENSORS: ContextVar[bool] = ContextVar("cfcore_tf_on_dtensors", default=False)
# The mesh of that step (`dtensor.Mesh`, set with ON_DTENSORS), for ops that fix a layout.
DTENSOR_MESH: ContextVar[Any] = ContextVar("cfcore_tf_dtensor_mesh", default=None)


def solve(a, b):
    """Batched Cholesky solves; under XLA a non-positive-definite system gives NaN rows."""
    if ON_DTENSORS.get():
        return _substitution_solve(tf.linalg.cholesky(a), b)
    chol = _cholesky(a)
    return _substitute(chol, _substitute(chol, b, backward=False), backward=True)


# Not `tf.linalg.cholesky` + `cholesky_solve` off DTensors: TF 2.21's XLA bridge expands both into
# HLO (JAX's XLA calls LAPACK), whose Cholesky loop took 6.1 s of an iALS Cholesky sweep at ML-1M
# shape, d 64 (JAX: 0.55 s the sweep), and whose triangular solves took 2.5 s of a 5 s first
# ml-100k BiasedMF fit to compile. Three `tf.while_loop`s over the d columns instead: 1.05 s the
# sweep, 2.4 s the first fit. (One loop carrying both L and L⁻¹b ran the sweep in 1.57 s.)


def _cholesky(a):
    """The lower Cholesky factor `L` (`[..., d, d]`, zero above the diagonal) of `a`
    (`[..., d, d]`, symmetric positive definite), one column per step of a loop over the d
    columns (left-looking: column j is a's column j less `L Lⱼᵀ`, over the columns found so far).

    A pivot `≤ 0` (a system that is not positive definite) makes that system's L non-finite
    from there on (NaN from a negative one, NaN or inf from a zero one), so its solution too:
    NaN rows, as `tf.linalg.cholesky` under XLA gives (tests/backends/test_tf_ops.py).
    """
    d = tf.shape(a)[-1]
    slots = tf.range(d)

    def column(j, chol):
        row = tf.gather(chol, j, axis=-2)  # [..., d]: L[j, :j] and zeros (columns j on unset)
        v = tf.gather(a, j, axis=-1) - tf.linalg.matvec(chol, row)
        pivot = tf.sqrt(tf.gather(v, j, axis=-1))[..., None]
        here = tf.equal(slots, j)
        col = tf.where(slots > j, v / pivot, tf.where(here, pivot, tf.zeros_like(v)))
        return j + 1, tf.where(here, tf.expand_dims(col, -1), chol)  # column j set

    return tf.while_loop(lambda j, _: j < d, column, (tf.constant(0), tf.zeros_like(a)))[1]


def _substitute(chol, b, *, backward: bool):
    """One triangular solve with the lower factor `chol` `[..., d, d]` and `b` `[..., d]`: `L x = b`
    from the first entry (each step reads row i of L), or with `backward` `Lᵀ x = b` from the
    last (column i of L, row i of Lᵀ). The entries not found yet are zero, so each step's sum over
    the whole row meets only the ones found so far. (On DTensors `_substitution_solve` does the
    same unrolled: DTensor's passes break on a `tf.while_loop`.)"""
    d = tf.shape(chol)[-1]
    slots = tf.range(d)

    def entry(i, x):
        line = tf.gather(chol, i, axis=-1 if backward else -2)  # [..., d]
        xi = (tf.gather(b, i, axis=-1) - tf.reduce_sum(line * x, axis=-1)) / tf.gather(
            line, i, axis=-1
        )
        return i + (-1 if backward else 1), tf.where(tf.equal(slots, i), xi[..., None], x)

    def more(i, _):
        return i >= 0 if backward else i < d

    start = d - 1 if backward else tf.constant(0)
    return tf.while_loop(more, entry, (start, tf.zeros_like(b)))[1]


def _substitution_solve(chol, b):
    """`(L Lᵀ)⁻¹ b` by forward then backward substitution, one column at a time (d static):
    `chol` `[..., d, d]` lower triangular, `b` `[..., d]`; returns `[..., d]`.

    The entries of L are taken apart by d + 1 unstacks, not d² slices: `tf.vectorized_map` (the
    sharded ALS half-sweep) converts every slice on its own (about 5 ms each, TF 2.21), an
    unstack once. The arithmetic is that of the plain row-by-row substitution, in its order
    (the sweeps' float32 rounding, to which the ALS tests' tolerances are sensitive).
    """
    d = int(chol.shape[-1])
    el = [tf.unstack(row, axis=-1) for row in tf.unstack(chol, axis=-2)]  # el[i][j] = L[i, j]
    bs = tf.unstack(b, axis=-1)
    y = []
    for i in range(d):
        acc = bs[i]
        for j in range(i):
            acc = acc - el[i][j] * y[j]
        y.append(acc / el[i][i])
    x = [None] * d
    for i in reversed(range(d)):
        acc = y[i]
        for j in range(i + 1, d):
            acc = acc - el[j][i] * x[j]
        x[i] = acc / el[i][i]
    return tf.stack(x, axis=-1)
