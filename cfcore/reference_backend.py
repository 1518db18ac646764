"""The float64 NumPy reference as a registered backend: `get_backend("numpy")`.

It implements the operations of `cfcore.backend.protocol.Backend` in float64 NumPy, as the oracle
the conformance suites compare every backend with, and as the exact host path of retrieval and
fold-in on small problems. It has no automatic differentiation: `value_and_grad` raises, and the
training oracle is `cfcore.reference`, whose gradients are derived by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .backend.loops import python_loop, python_map
from .errors import NotSupportedError

_DTYPES = {"float32": np.float64, "int32": np.int64, "bool": np.bool_}


class _NumpyOps:
    """`ArrayNamespace` on NumPy, float64."""

    sum = staticmethod(np.sum)
    mean = staticmethod(np.mean)
    max = staticmethod(np.max)
    square = staticmethod(np.square)
    sqrt = staticmethod(np.sqrt)
    exp = staticmethod(np.exp)
    log = staticmethod(np.log)
    tanh = staticmethod(np.tanh)
    maximum = staticmethod(np.maximum)
    where = staticmethod(np.where)
    isfinite = staticmethod(np.isfinite)
    all = staticmethod(np.all)
    matmul = staticmethod(np.matmul)
    transpose = staticmethod(np.transpose)
    reshape = staticmethod(np.reshape)
    zeros_like = staticmethod(np.zeros_like)
    full_like = staticmethod(np.full_like)

    @staticmethod
    def take(x: Any, indices: Any, axis: int = 0) -> np.ndarray:
        return np.take(x, indices, axis=axis)

    @staticmethod
    def concat(xs: Sequence[Any], axis: int = 0) -> np.ndarray:
        return np.concatenate(list(xs), axis=axis)

    @staticmethod
    def astype(x: Any, dtype: str) -> np.ndarray:
        return np.asarray(x).astype(_DTYPES[dtype])


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = np.max(x, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return np.log(np.sum(np.exp(x - top), axis=axis)) + np.squeeze(top, axis)


class NumpyBackend:
    """The float64 NumPy oracle (see the module docstring)."""

    name = "numpy"
    xp = _NumpyOps()

    @staticmethod
    def is_available() -> bool:
        return True

    def asarray(self, x: Any, dtype: str | None = None) -> np.ndarray:
        x = np.asarray(x)
        if dtype is not None:
            return x.astype(_DTYPES[dtype])
        if x.dtype.kind == "f":
            return x.astype(np.float64)
        if x.dtype.kind in "iu":
            return x.astype(np.int64)
        return x

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def sync(self, tree: Any) -> Any:
        return tree

    def pair_dot(self, user_emb, item_emb, users, items, method: str = "gather") -> np.ndarray:
        u, v = self.asarray(user_emb), self.asarray(item_emb)
        if method == "dense":
            return (u @ v.T)[np.asarray(users), np.asarray(items)]
        return np.einsum("nd,nd->n", u[np.asarray(users)], v[np.asarray(items)])

    def gramian(self, x) -> np.ndarray:
        x = self.asarray(x)
        return x.T @ x

    def segment_sum(self, data, segment_ids, num_segments: int) -> np.ndarray:
        data = self.asarray(data)
        out = np.zeros((int(num_segments),) + data.shape[1:])
        np.add.at(out, np.asarray(segment_ids), data)
        return out

    def bag_of_words(self, table, ids, weights, combiner: str = "mean") -> np.ndarray:
        table, weights = self.asarray(table), self.asarray(weights)
        if ids is None:
            total = weights @ table
        else:
            total = np.einsum("...l,...ld->...d", weights, table[np.asarray(ids)])
        if combiner == "sum":
            return total
        count = weights.sum(axis=-1, keepdims=True)
        return total / np.where(count > 0, count, 1.0)

    def softmax_cross_entropy(self, query_emb, item_emb, labels) -> np.floating:
        logits = self.asarray(query_emb) @ self.asarray(item_emb).T
        labels = np.asarray(labels)
        picked = logits[np.arange(len(labels)), labels]
        return np.mean(_logsumexp(logits, 1) - picked)

    def sampled_softmax_loss(
        self, query_emb, item_emb, labels, log_q=None, remove_accidental_hits: bool = True
    ) -> np.floating:
        labels = np.asarray(labels)
        logits = self.asarray(query_emb) @ self.asarray(item_emb)[labels].T
        if log_q is not None:
            logits = logits - self.asarray(log_q)[labels][None, :]
        if remove_accidental_hits:
            hit = (labels[:, None] == labels[None, :]) & ~np.eye(len(labels), dtype=bool)
            logits = np.where(hit, -np.inf, logits)
        return np.mean(_logsumexp(logits, 1) - np.diagonal(logits))

    def top_k(self, scores, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = self.asarray(scores)
        # A stable sort of the negated scores keeps the lowest index first among ties; NaN last.
        order = np.argsort(-scores, axis=-1, kind="stable")[..., :k]
        return np.take_along_axis(scores, order, axis=-1), order

    def solve(self, a, b) -> np.ndarray:
        a, b = self.asarray(a), self.asarray(b)
        out = np.full(b.shape, np.nan)
        for i in range(a.shape[0]):
            try:
                chol = np.linalg.cholesky(a[i])
            except np.linalg.LinAlgError:
                continue  # not positive definite: a NaN row, as the contract says
            y = np.linalg.solve(chol, b[i])
            out[i] = np.linalg.solve(chol.T, y)
        return out

    def value_and_grad(self, fn: Callable) -> Callable:
        raise NotSupportedError(
            "the numpy reference backend has no automatic differentiation: train on a framework "
            "backend ('jax', 'tf', 'torch'); the float64 gradients are in cfcore.reference"
        )

    def compile(self, fn: Callable) -> Callable:
        return fn

    def compile_loop(self, body: Callable) -> Callable:
        return python_loop(body)

    def compile_map(self, fn: Callable) -> Callable:  # optional: `backend.capabilities`
        return python_map(fn, np.stack)

    def __repr__(self) -> str:
        return f"NumpyBackend(numpy {np.__version__}, float64)"


backend = NumpyBackend()
