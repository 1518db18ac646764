"""The PyTorch backend of cfcore: the operations of `cfcore.backend.protocol.Backend` on torch.

Importing this module imports torch (and sets its float32 matmuls to full precision, see `ops`);
`cfcore` itself never does. Select it with `backend="torch"`. Arrays live on the GPU when torch
sees one, else on the CPU. torch runs eagerly here: `compile` is the identity and `compile_loop` a
Python loop (see `transforms`).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import torch

from . import kernels, ops, transforms
from .ops import floats, indices


class TorchBackend:
    """cfcore's `Backend` on PyTorch (contracts in `cfcore.backend.protocol`)."""

    name = "torch"
    xp = ops

    @staticmethod
    def is_available() -> bool:
        return importlib.util.find_spec("torch") is not None

    # ---------------------------------------------------------------- arrays
    def asarray(self, x: Any, dtype: str | None = None) -> torch.Tensor:
        return ops.to_tensor(x, dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
        return np.asarray(x)

    def sync(self, tree: Any) -> Any:
        return transforms.sync(tree)

    # ---------------------------------------------------------------- fused kernels
    def pair_dot(self, user_emb, item_emb, users, items, method: str = "gather"):
        return kernels.pair_dot(
            floats(user_emb), floats(item_emb), indices(users), indices(items), method
        )

    def gramian(self, x):
        return kernels.gramian(floats(x))

    def segment_sum(self, data, segment_ids, num_segments: int):
        return kernels.segment_sum(floats(data), indices(segment_ids), num_segments)

    def bag_of_words(self, table, ids, weights, combiner: str = "mean"):
        ids = None if ids is None else indices(ids)
        return kernels.bag_of_words(floats(table), ids, floats(weights), combiner)

    def softmax_cross_entropy(self, query_emb, item_emb, labels):
        return kernels.softmax_cross_entropy(floats(query_emb), floats(item_emb), indices(labels))

    def sampled_softmax_loss(
        self, query_emb, item_emb, labels, log_q=None, remove_accidental_hits: bool = True
    ):
        log_q = None if log_q is None else floats(log_q)
        return kernels.sampled_softmax_loss(
            floats(query_emb), floats(item_emb), indices(labels), log_q, remove_accidental_hits
        )

    def top_k(self, scores, k: int):
        return kernels.top_k(floats(scores), int(k))

    def solve(self, a, b):
        return kernels.solve(floats(a), floats(b))

    # ---------------------------------------------------------------- transforms
    value_and_grad = staticmethod(transforms.value_and_grad)
    compile = staticmethod(transforms.compile)
    compile_loop = staticmethod(transforms.compile_loop)
    # Optional members (`cfcore.backend.capabilities`); no pair_layout (nothing to precompute)
    # and no native_optimizer (torch.optim keeps its state inside the object).
    compile_map = staticmethod(transforms.compile_map)
    strict_float32 = staticmethod(ops.strict_float32)

    def __repr__(self) -> str:
        return f"TorchBackend(torch {torch.__version__}, {ops.DEVICE})"


backend = TorchBackend()
