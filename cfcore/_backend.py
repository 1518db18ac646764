"""The backend boundary: what a framework must implement for cfcore to train on it.

A backend is any object with these members; it need not inherit from anything (structural typing).
`cfcore.testing` checks an implementation against the float64 NumPy reference.

Conventions shared by every member:
    * Embedding parameters are a dict `{"user": [N, d], "item": [M, d]}` of float32 arrays.
    * Index arrays are int32 of shape `[n]`, ratings float32 of shape `[n]`.
    * Losses are mean-reduced float32 scalars in the backend's native type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .specs import MFSpec, OptimizerSpec

Params = dict[str, Any]


@dataclass(frozen=True)
class Batch:
    """Observed ratings as arrays, host (NumPy) or device (native).

    Attributes:
        users: int32 `[n]`.
        items: int32 `[n]`.
        values: float32 `[n]`.
    """

    users: Any
    items: Any
    values: Any

    @classmethod
    def from_ratings(cls, ratings: Any) -> Batch:
        return cls(ratings.users, ratings.items, ratings.values)


@dataclass
class TrainState:
    """Parameters and optimizer state, both backend-native pytrees.

    Attributes:
        params: `{"user": [N, d], "item": [M, d]}`.
        opt_state: the optimizer's state (accumulators, moments, step count).
    """

    params: Any
    opt_state: Any


@dataclass(frozen=True)
class ChunkResult:
    """What one compiled chunk of training steps returns.

    Attributes:
        state: the state after the chunk, or after the last step whose loss was finite.
        bad_step: -1 if every loss was finite, else the 0-based offset within the chunk of the
            first step whose loss was NaN or infinite (no update was applied from then on).
    """

    state: TrainState
    bad_step: int


@runtime_checkable
class Backend(Protocol):
    """The members a cfcore backend implements."""

    name: str

    def is_available(self) -> bool:
        """Whether the framework can be imported (without importing it)."""
        ...

    # conversion
    def asarray(self, x: Any, dtype: Any = None) -> Any: ...
    def to_numpy(self, x: Any) -> np.ndarray: ...
    def params_from_numpy(self, params: dict[str, np.ndarray]) -> Params: ...
    def params_to_numpy(self, params: Params) -> dict[str, np.ndarray]: ...

    # losses (pure; take NumPy or native arrays; return a native float32 scalar)
    def sparse_mse(
        self,
        user_emb: Any,
        item_emb: Any,
        users: Any,
        items: Any,
        ratings: Any,
        method: str = "gather",
    ) -> Any: ...
    def l2_penalty(self, user_emb: Any, item_emb: Any) -> Any: ...
    def gravity(self, user_emb: Any, item_emb: Any) -> Any: ...
    def mf_loss_terms(self, spec: MFSpec, params: Params, batch: Batch) -> dict[str, Any]: ...
    def value_and_grad(self, spec: MFSpec, params: Params, batch: Batch) -> tuple[Any, Params]: ...

    # training
    def init_train_state(
        self, spec: MFSpec, params: dict[str, np.ndarray], optimizer: OptimizerSpec
    ) -> TrainState: ...
    def make_train_step(self, spec: MFSpec, optimizer: OptimizerSpec) -> Any: ...
    def make_train_chunk(self, spec: MFSpec, optimizer: OptimizerSpec) -> Any: ...
    def device_batch(self, batch: Batch) -> Batch: ...

    # scoring
    def predict(self, params: Params, users: Any, items: Any) -> Any: ...
    def score_all(self, query_emb: Any, item_emb: Any) -> Any: ...
    def top_k(self, scores: Any, k: int, exclude: Any = None) -> tuple[Any, Any]: ...

    # retrieval (formulas in cfcore.retrieval; checked by cfcore.testing.retrieval_conformance)
    def fold_in_solve(
        self,
        item_emb: Any,
        rows: Any,
        items: Any,
        ratings: Any,
        num_rows: int,
        reg: Any,
        prior: Any = None,
    ) -> Any:
        """`[num_rows, d]`: u_b = (V_Sᵀ V_S + reg_b·I + prior)⁻¹ V_Sᵀ r_b per new user b."""
        ...

    def measure_scores(
        self, query_emb: Any, item_emb: Any, query_power: float = 0.0, item_power: float = 0.0
    ) -> Any:
        """`[B, M]`: ⟨q, v⟩ / (‖q‖^query_power · ‖v‖^item_power), zero norms counted as 1."""
        ...

    def batched_top_k(
        self,
        query_emb: Any,
        item_emb: Any,
        k: int,
        exclude: Any = None,
        query_power: float = 0.0,
        item_power: float = 0.0,
    ) -> tuple[Any, Any]:
        """Top-k of `measure_scores` per row, `exclude` `[B, M]` masked: `([B, k], [B, k])`."""
        ...

    # softmax model (checked by cfcore.testing.softmax_conformance; needed only by SoftmaxModel)
    def bag_of_words(self, table: Any, ids: Any, weights: Any, combiner: str = "mean") -> Any:
        """Weighted bags of `table` rows: `[..., d]` for `ids`/`weights` `[..., L]`."""
        ...

    def softmax_cross_entropy(self, query_emb: Any, item_emb: Any, labels: Any) -> Any:
        """Mean full-softmax cross-entropy of `[B, d]` queries over `[M, d]` items; scalar."""
        ...

    def sampled_softmax_loss(
        self,
        query_emb: Any,
        item_emb: Any,
        labels: Any,
        log_q: Any = None,
        remove_accidental_hits: bool = True,
    ) -> Any:
        """In-batch sampled softmax with logQ correction and accidental hits removed; scalar."""
        ...

    def softmax_query_embeddings(self, spec: Any, params: Any, ids: Any, weights: Any) -> Any:
        """The softmax tower: `[B, d]` query embeddings of the feature bags."""
        ...

    def softmax_value_and_grad(self, spec: Any, params: Any, batch: Any, log_q: Any = None) -> Any:
        """`(loss, grads)` of the softmax model on one batch."""
        ...

    def make_softmax_train_chunk(self, spec: Any, optimizer: OptimizerSpec) -> Any:
        """`run(state, prev, batches, log_q=None) -> (state, prev, bad_step, losses)`."""
        ...
