"""The backend boundary: the operations a framework supplies so that cfcore can run on it.

A backend is any object with the members of `Backend` (structural typing: no base class to
inherit). Core writes every model's mathematics, the optimizers' update rules, the non-finite
guard and the training loop once, on top of these operations; a backend supplies only what differs
between frameworks:

* arrays: `xp` (a small array namespace, `ArrayNamespace`), `asarray`, `to_numpy`;
* fused kernels where a framework beats the composition: `pair_dot` (the observed-pair dot, gather
  and dense forms), `gramian`, `segment_sum`, `bag_of_words`, `softmax_cross_entropy`,
  `sampled_softmax_loss`, `top_k`, `solve`;
* transforms: `value_and_grad`, `compile`, `compile_loop`;
* `name` and `is_available()`.

Everything else a backend may offer (`pair_layout`, `native_optimizer`, `sync`, `compile_map`,
`compile_parts`, `concurrent_parts`, `row_sharding`, `strict_float32`) is optional, declared
with its signature in `cfcore.backend.capabilities.Capabilities` and reached through
`capability(be, name)`.

Conventions shared by every member:

* "Array" means the framework's native array type. Every member that takes arrays also accepts
  NumPy arrays and converts them (float data to float32, indices to int32); core validates user
  input (shapes, dtypes, index ranges) *before* dispatch, so backends need not re-check it.
* Floating-point results are float32, computed at full float32 precision (no TF32 or bfloat16
  matmuls: results must match the float64 reference to a relative 1e-5).
* Indices are int32, 0-based. Behaviour on out-of-range indices is undefined at this level: core
  checks ranges on the host before data reaches a backend.
* Non-finite values propagate (NaN in, NaN out); no member raises on them. The trainer's guard
  (core) is what stops at the first non-finite loss.
* A "tree" is a dict (string keys), list or tuple nesting of arrays, or `None`.

`cfcore.testing.BackendConformance` checks every member against the float64 NumPy reference
backend (`get_backend("numpy")`), and `cfcore.testing.check_backend_members` checks that an object
has them all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeAlias, runtime_checkable

import numpy as np

Array: TypeAlias = Any
"""A backend-native array (jax.Array, tf.Tensor, torch.Tensor) or, as input, a NumPy array."""

Tree: TypeAlias = Any
"""Nested dicts (string keys), lists and tuples of `Array` leaves."""

Params: TypeAlias = dict[str, Array]
"""Model parameters: named float32 arrays, e.g. `{"user": [N, d], "item": [M, d]}`."""

LossFn: TypeAlias = Callable[..., tuple[Array, Any]]
"""`loss(params, *args) -> (scalar loss, aux)`: core's losses return their parts as `aux`."""

LoopBody: TypeAlias = Callable[[Tree, Tree, Tree], Tree]
"""`body(carry, data, x) -> carry`: one training step of the trainer's compiled loop."""

MapFn: TypeAlias = Callable[[Tree, Tree], Tree]
"""`fn(data, x) -> tree`: one item of the optional `compile_map` (see `cfcore.backend.capabilities`)."""


@runtime_checkable
class ArrayNamespace(Protocol):
    """The array functions core's mathematics uses: a small subset of the Python array API.

    Besides these, core uses the arithmetic and comparison operators (`+ - * / ** < > ~ &`),
    indexing with `x[i]` by an integer, and the `.shape` attribute of native arrays. Every function
    follows NumPy's semantics for float32 (and bool/int32 where stated); `axis=None` reduces over
    all axes.
    """

    def sum(self, x: Array, axis: int | None = None) -> Array: ...
    def mean(self, x: Array, axis: int | None = None) -> Array: ...
    def max(self, x: Array, axis: int | None = None) -> Array: ...
    def square(self, x: Array) -> Array: ...
    def sqrt(self, x: Array) -> Array: ...
    def exp(self, x: Array) -> Array: ...
    def log(self, x: Array) -> Array: ...
    def tanh(self, x: Array) -> Array: ...
    def maximum(self, x: Array, y: Array | float) -> Array: ...
    def where(self, condition: Array, x: Array, y: Array) -> Array:
        """Element-wise select; `condition` is bool and broadcasts (a scalar selects whole arrays)."""
        ...

    def isfinite(self, x: Array) -> Array: ...
    def all(self, x: Array) -> Array:
        """Whether every element of a bool array is true: a bool scalar."""
        ...

    def matmul(self, a: Array, b: Array) -> Array:
        """`[..., n, k] @ [..., k, m]`, at full float32 precision."""
        ...

    def transpose(self, x: Array) -> Array:
        """The transpose of a 2-D array."""
        ...

    def take(self, x: Array, indices: Array, axis: int = 0) -> Array:
        """Rows (or entries) of `x` at int32 `indices`, as `numpy.take`; differentiable in `x`."""
        ...

    def concat(self, xs: Sequence[Array], axis: int = 0) -> Array: ...
    def reshape(self, x: Array, shape: Sequence[int]) -> Array: ...
    def zeros_like(self, x: Array) -> Array: ...
    def full_like(self, x: Array, value: float) -> Array: ...
    def astype(self, x: Array, dtype: str) -> Array:
        """`x` converted to "float32", "int32" or "bool"."""
        ...


@runtime_checkable
class Backend(Protocol):
    """The operations a cfcore backend implements (16 members; see the module docstring)."""

    name: str
    """The registry name, e.g. "jax"."""

    xp: ArrayNamespace
    """The framework's array functions, as `ArrayNamespace` describes."""

    def is_available(self) -> bool:
        """Whether the framework can be imported, found without importing it."""
        ...

    # ------------------------------------------------------------------ arrays
    def asarray(self, x: Any, dtype: str | None = None) -> Array:
        """A native array from NumPy data, a Python scalar or a native array.

        Args:
            x: the data.
            dtype: "float32", "int32", "bool" or None (keep: float64 NumPy input becomes float32,
                int64 becomes int32).

        Returns:
            A native array on the backend's default device.
        """
        ...

    def to_numpy(self, x: Array) -> np.ndarray:
        """A NumPy copy (or view) of a native array; waits for the computation that produces it."""
        ...

    # ------------------------------------------------------------------ fused kernels
    def pair_dot(
        self,
        user_emb: Array,
        item_emb: Array,
        users: Array,
        items: Array,
        method: str = "gather",
        layout: Tree = None,
    ) -> Array:
        """Dot products of observed pairs: `out[k] = ⟨user_emb[users[k]], item_emb[items[k]]⟩`.

        Differentiable in both tables under `value_and_grad`.

        Args:
            user_emb: float32 `[N, d]`.
            item_emb: float32 `[M, d]`.
            users: int32 `[n]`.
            items: int32 `[n]`.
            method: "gather" gathers the `n` rows of each table and takes row-wise dots (memory
                O(n·d)); "dense" forms `user_emb · item_embᵀ` (`[N, M]`) and gathers from it
                (memory O(N·M)). Same values to float32 rounding.
            layout: what this backend's optional `pair_layout(users, items, N, M)` returned
                for these same `users` and `items` (same order), passed with
                `method="gather"`. The backend may compute through it instead of
                `users`/`items`; values and gradients stay the same to float32 rounding. Core
                passes this argument only when `pair_layout` gave a layout (not None), so a
                backend without `pair_layout` never receives it and may leave it out of its
                signature.

        Returns:
            float32 `[n]`.
        """
        ...

    def gramian(self, x: Array) -> Array:
        """`xᵀx` of a float32 `[n, d]` array: `[d, d]`, full float32 precision; differentiable."""
        ...

    def segment_sum(self, data: Array, segment_ids: Array, num_segments: int) -> Array:
        """Sums of the rows of `data` per segment.

        Args:
            data: float32 `[n, ...]`.
            segment_ids: int32 `[n]` in `[0, num_segments)`, in any order.
            num_segments: S.

        Returns:
            float32 `[S, ...]`; a segment with no rows sums to zero.
        """
        ...

    def bag_of_words(
        self, table: Array, ids: Array, weights: Array, combiner: str = "mean"
    ) -> Array:
        """Weighted bags of `table` rows; differentiable in `table`.

        `out[b] = Σ_t weights[b, t] · table[ids[b, t]]`, divided by `Σ_t weights[b, t]` for
        `combiner="mean"` (a bag whose weights sum to 0 gives a zero row).

        Args:
            table: float32 `[V, d]`.
            ids: int32 `[B, L]` (padding rows have weight 0), or None: `weights` is then dense
                `[B, V]` (one column per token).
            weights: float32 `[B, L]` (or `[B, V]` when `ids` is None), ≥ 0.
            combiner: "mean" or "sum".

        Returns:
            float32 `[B, d]`.
        """
        ...

    def softmax_cross_entropy(self, query_emb: Array, item_emb: Array, labels: Array) -> Array:
        """Mean full-softmax cross-entropy; differentiable in both embeddings.

        `mean_b [logsumexp_j ⟨q_b, v_j⟩ − ⟨q_b, v_{labels[b]}⟩]`.

        Args:
            query_emb: float32 `[B, d]`.
            item_emb: float32 `[M, d]`.
            labels: int32 `[B]` in `[0, M)`.

        Returns:
            float32 scalar.
        """
        ...

    def sampled_softmax_loss(
        self,
        query_emb: Array,
        item_emb: Array,
        labels: Array,
        log_q: Array | None = None,
        remove_accidental_hits: bool = True,
    ) -> Array:
        """Mean in-batch sampled-softmax cross-entropy; differentiable in both embeddings.

        The candidates of row `b` are the batch's labels: logits `s_bc = ⟨q_b, v_{labels[c]}⟩ −
        log_q[labels[c]]` (the logQ correction); with `remove_accidental_hits`, `s_bc` for `c ≠ b` with `labels[c] = labels[b]`
        is −inf. Loss `mean_b [logsumexp_c s_bc − s_bb]`.

        Args:
            query_emb: float32 `[B, d]`.
            item_emb: float32 `[M, d]`.
            labels: int32 `[B]`.
            log_q: float32 `[M]`, the log sampling probability of each item, or None (no
                correction).
            remove_accidental_hits: as above.

        Returns:
            float32 scalar.
        """
        ...

    def top_k(self, scores: Array, k: int) -> tuple[Array, Array]:
        """The `k` largest entries of each row, ties broken by the lowest index.

        Args:
            scores: float32 `[B, M]`; −inf entries come last (and are returned only if fewer than
                `k` entries are finite); NaN entries order as NumPy's sort puts them (last).
            k: 1 ≤ k ≤ M.

        Returns:
            `(values float32 [B, k], indices int32 [B, k])`, values in decreasing order.
        """
        ...

    def solve(self, a: Array, b: Array) -> Array:
        """Batched solves of symmetric positive-definite systems: `x[i] = a[i]⁻¹ b[i]`.

        Args:
            a: float32 `[B, d, d]`, symmetric positive definite (a singular system gives
                non-finite rows, never an exception).
            b: float32 `[B, d]`.

        Returns:
            float32 `[B, d]`.
        """
        ...

    # ------------------------------------------------------------------ transforms
    def value_and_grad(self, fn: LossFn) -> Callable[..., tuple[tuple[Array, Any], Params]]:
        """The value and gradient of `fn` with respect to its first argument.

        Args:
            fn: `fn(params, *args) -> (loss, aux)`, with `params` a dict of float32 arrays, `loss` a
                float32 scalar and `aux` a tree (carried through, not differentiated).

        Returns:
            `g(params, *args) -> ((loss, aux), grads)`, `grads` a dict of dense float32 arrays
            shaped as `params` (never a sparse/IndexedSlices form). Usable inside `compile` and
            `compile_loop`.
        """
        ...

    def compile(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn` compiled for repeated calls with same-shaped array arguments (or `fn` itself).

        `fn` takes and returns trees of arrays; non-array configuration is closed over by the
        caller, never passed as an argument.
        """
        ...

    def compile_loop(self, body: LoopBody) -> Callable[..., Tree]:
        """A compiled loop of training steps, run with no host synchronisation between steps.

        Args:
            body: `body(carry, data, x) -> carry`, pure, carry keeping its structure, shapes and
                dtypes.

        Returns:
            `run(carry, data, xs=None, num_steps=None) -> carry`: with `xs` (a tree whose leaves
            have a leading axis of length k) it applies `body` to `xs[0]`, ..., `xs[k-1]` in order;
            with `xs=None` it applies `body(carry, data, None)` `num_steps` times. `data` is
            passed unchanged to every step (the training set, already on the device: arguments,
            not closure constants, so large data is never baked into a compiled program).
            `run` raises a ValueError when `xs` and `num_steps` are both None.
        """
        ...


BACKEND_MEMBERS: tuple[str, ...] = (
    "name",
    "xp",
    "is_available",
    "asarray",
    "to_numpy",
    "pair_dot",
    "gramian",
    "segment_sum",
    "bag_of_words",
    "softmax_cross_entropy",
    "sampled_softmax_loss",
    "top_k",
    "solve",
    "value_and_grad",
    "compile",
    "compile_loop",
)
"""Every member of `Backend`, in the order above (checked by `cfcore.testing`)."""

XP_FUNCTIONS: tuple[str, ...] = (
    "sum",
    "mean",
    "max",
    "square",
    "sqrt",
    "exp",
    "log",
    "tanh",
    "maximum",
    "where",
    "isfinite",
    "all",
    "matmul",
    "transpose",
    "take",
    "concat",
    "reshape",
    "zeros_like",
    "full_like",
    "astype",
)
"""Every function of `ArrayNamespace`."""
