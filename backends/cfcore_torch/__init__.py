"""The PyTorch backend of cfcore: the operations of `cfcore.backend.protocol.Backend` on torch.

Importing this module imports torch (and sets its float32 matmuls to full precision, see `ops`);
`cfcore` itself never does. Select it with `backend="torch"`. Arrays live on the GPU when torch
sees one, else on the CPU. torch runs eagerly here: `compile` is the identity and `compile_loop` a
Python loop (see `transforms`).

The gather form of `pair_dot` has two kernels: the plain gathers (`kernels.pair_dot`) and the
sparse-layout kernel (`pair_kernel`), which needs a layout precomputed once per training set
(`pair_layout`) and is several times faster on the CPU. Which one full-batch training uses is
`TorchBackend(pair_kernel=...)`, else the environment variable `CFCORE_TORCH_PAIR_KERNEL`:
"sparse", "gather", or "auto" (the default: sparse on the CPU, the plain gathers on a GPU, where
it has not been measured).

ALS half-sweeps run on the rows compressed (CSR), not on padded blocks: conjugate gradient
through `row_dots` and `row_sums` (`torch.sparse.sampled_addmm` and a CSR × dense product),
Cholesky through `row_grams` too (each row's system from one CSR × dense product).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import numpy as np
import torch

from cfcore.errors import ArgumentValueError

from . import kernels, ops, pair_kernel, transforms
from .ops import floats, indices

PAIR_KERNEL_ENV = "CFCORE_TORCH_PAIR_KERNEL"
PAIR_KERNELS = ("auto", "sparse", "gather")


def _pair_kernel_choice(value: str, what: str) -> str:
    if value not in PAIR_KERNELS:
        raise ArgumentValueError(f"{what} must be one of {PAIR_KERNELS}, got {value!r}")
    return value


class TorchBackend:
    """cfcore's `Backend` on PyTorch (contracts in `cfcore.backend.protocol`)."""

    name = "torch"
    xp = ops

    def __init__(self, pair_kernel: str | None = None) -> None:
        """Args: pair_kernel: "auto", "sparse", "gather", or None (`$CFCORE_TORCH_PAIR_KERNEL`)."""
        if pair_kernel is not None:
            _pair_kernel_choice(pair_kernel, "pair_kernel")
        self._pair_kernel = pair_kernel

    def gather_kernel(self) -> str:
        """The gather kernel full-batch training uses here: "sparse" or "gather"."""
        choice = self._pair_kernel
        if choice is None:
            choice = _pair_kernel_choice(os.environ.get(PAIR_KERNEL_ENV, "auto"), PAIR_KERNEL_ENV)
        if choice == "auto":
            # Measured faster on the CPU only; on a GPU the plain gathers until measured there.
            choice = "sparse" if ops.DEVICE.type == "cpu" else "gather"
        return choice

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
    def pair_dot(self, user_emb, item_emb, users, items, method: str = "gather", layout=None):
        # Inside `vmap` (models trained together) the plain gathers: the sparse products have
        # no batching rule, and the layout only makes the same values faster.
        if layout is not None and method == "gather" and not transforms._MAPPED.get():
            return pair_kernel.pair_dot_layout(floats(user_emb), floats(item_emb), layout)
        return kernels.pair_dot(
            floats(user_emb), floats(item_emb), indices(users), indices(items), method,
            chunked=not transforms._MAPPED.get(),
        )  # fmt: skip

    def pair_layout(self, users: Any, items: Any, num_users: int, num_items: int) -> Any:
        if self.gather_kernel() != "sparse" or np.shape(users)[0] == 0:
            return None
        layout = pair_kernel.make_pair_layout(users, items, num_users, num_items)
        return {k: torch.from_numpy(v).to(ops.DEVICE) for k, v in layout.items()}

    def row_dots(self, csr, table, x):
        # Inside `vmap` (models trained together) the gathers: the sparse products have no
        # batching rule.
        return kernels.row_dots(
            indices(csr["starts"]), indices(csr["rows"]), indices(csr["cols"]), floats(table),
            floats(x), sparse=not transforms._MAPPED.get(),
        )  # fmt: skip

    def row_sums(self, csr, values, table):
        return _row_reduce(kernels.row_sums, csr, values, table)

    def row_grams(self, csr, values, table):
        return _row_reduce(kernels.row_grams, csr, values, table)

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
    vmap = staticmethod(transforms.vmap)  # optional: `cfcore.backend.capabilities`
    # Optional members (`cfcore.backend.capabilities`): pair_layout, row_dots, row_sums and
    # row_grams above; no native_optimizer
    # (torch.optim keeps its state inside the object).
    compile_map = staticmethod(transforms.compile_map)
    strict_float32 = staticmethod(ops.strict_float32)

    def __repr__(self) -> str:
        return f"TorchBackend(torch {torch.__version__}, {ops.DEVICE})"


def _row_reduce(kernel, csr, values, table):
    """`kernel` (`kernels.row_sums` or `row_grams`) on a CSR layout's device arrays: the sparse
    form, or the gathers inside `vmap`."""
    starts = indices(csr["starts"])
    return kernel(
        starts, indices(csr["rows"]), indices(csr["cols"]), floats(values), floats(table),
        int(starts.shape[0]) - 1, sparse=not transforms._MAPPED.get(),
    )  # fmt: skip


backend = TorchBackend()
