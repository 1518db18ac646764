"""Frozen descriptions of models and optimizers, shared by every backend.

A spec says *what* to compute; a backend decides *how*. Specs are plain data so that they can be
saved with a model, compared, and handed to a backend that was written by someone else.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

MSEMethod = Literal["gather", "dense"]
MSE_METHODS: tuple[str, ...] = ("gather", "dense")


def _check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not (isinstance(value, int | float) and math.isfinite(value) and ok):
        expected = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise ValueError(f"{name} must be {expected}, got {value!r}")


@dataclass(frozen=True)
class MFSpec:
    """Matrix factorization with optional L2 and gravity regularization.

    The objective, for user embeddings `U` of shape `[N, d]` and item embeddings `V` of shape
    `[M, d]`, over the observed ratings `Ω`:

        L = (1/|Ω|) Σ_(i,j)∈Ω (A_ij − ⟨U_i, V_j⟩)²
            + λr · (ΣU²/N + ΣV²/M)
            + λg · (1/(N·M)) · Σ_i Σ_j ⟨U_i, V_j⟩²

    The gravity sum is computed through the Gramian identity
    Σ_ij ⟨U_i, V_j⟩² = Σ((UᵀU) ∘ (VᵀV)), never forming the `N × M` matrix.

    Attributes:
        embedding_dim: d.
        init_stddev: standard deviation of the normal initial embeddings.
        mse: "gather" (gather the observed rows, row-wise dot: memory O(|Ω|·d)) or "dense"
            (full U·Vᵀ, then gather: memory O(N·M)). Same value, different cost.
        regularization_coeff: λr.
        gravity_coeff: λg.
    """

    embedding_dim: int
    init_stddev: float = 1.0
    mse: MSEMethod = "gather"
    regularization_coeff: float = 0.0
    gravity_coeff: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.embedding_dim, int) or self.embedding_dim <= 0:
            raise ValueError(f"embedding_dim must be a positive int, got {self.embedding_dim!r}")
        _check_positive("init_stddev", self.init_stddev)
        if self.mse not in MSE_METHODS:
            raise ValueError(f"mse must be one of {MSE_METHODS}, got {self.mse!r}")
        _check_positive("regularization_coeff", self.regularization_coeff, allow_zero=True)
        _check_positive("gravity_coeff", self.gravity_coeff, allow_zero=True)

    @property
    def regularized(self) -> bool:
        return self.regularization_coeff > 0 or self.gravity_coeff > 0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "mf", **asdict(self)}


@dataclass(frozen=True)
class OptimizerSpec:
    """Base class of cfcore's optimizers: a name and pinned hyper-parameters.

    Every backend implements exactly the update written in the subclass docstring, so that the
    same spec gives the same trajectory on TensorFlow and JAX (framework defaults differ: Keras
    Adam uses eps = 1e-7 and optax 1e-8, for instance).
    """

    learning_rate: float

    def __post_init__(self) -> None:
        _check_positive("learning_rate", self.learning_rate)

    @property
    def name(self) -> str:
        return type(self).__name__.lower()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> OptimizerSpec:
        d = dict(d)
        cls = _OPTIMIZERS[d.pop("name")]
        return cls(**d)


@dataclass(frozen=True)
class SGD(OptimizerSpec):
    """Plain gradient descent: `θ ← θ − η·g`.

    Args:
        learning_rate: η (no default: the notebook uses 10 for MF and 20 for regularized MF).
    """


@dataclass(frozen=True)
class Adagrad(OptimizerSpec):
    """Adagrad (Duchi et al., 2011) with a positive initial accumulator.

    Per parameter, with `a₀ = initial_accumulator_value`:

        a ← a + g²
        θ ← θ − η · g / √(a + ε)

    Defaults: `initial_accumulator_value = 0.1` (as TF1's AdagradOptimizer used by the notebook),
    `eps = 1e-7` (as `optax.adagrad`). TF1 had no ε; the difference is below 1e-6 relative since a ≥ 0.1.

    Args:
        learning_rate: η.
        initial_accumulator_value: a₀ > 0.
        eps: ε ≥ 0, added under the square root.
    """

    initial_accumulator_value: float = 0.1
    eps: float = 1e-7

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive("initial_accumulator_value", self.initial_accumulator_value)
        _check_positive("eps", self.eps, allow_zero=True)


@dataclass(frozen=True)
class Adam(OptimizerSpec):
    """Adam (Kingma & Ba, 2015, Algorithm 1), bias-corrected, ε outside the square root.

    At step t = 1, 2, ... with m₀ = v₀ = 0:

        m ← β₁·m + (1 − β₁)·g
        v ← β₂·v + (1 − β₂)·g²
        θ ← θ − η · (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)

    Defaults `β₁ = 0.9`, `β₂ = 0.999`, `ε = 1e-8` (the paper's and optax's; Keras uses 1e-7 and a
    different placement of ε, so its numbers differ slightly).

    Args:
        learning_rate: η.
        b1: β₁ in [0, 1).
        b2: β₂ in [0, 1).
        eps: ε ≥ 0.
    """

    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("b1", "b2"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {v!r}")
        _check_positive("eps", self.eps, allow_zero=True)


_OPTIMIZERS: dict[str, type[OptimizerSpec]] = {"sgd": SGD, "adagrad": Adagrad, "adam": Adam}


def make_optimizer(
    optimizer: OptimizerSpec | str, learning_rate: float | None = None
) -> OptimizerSpec:
    """Resolves an optimizer given as a spec or a name ("sgd", "adagrad", "adam")."""
    if isinstance(optimizer, OptimizerSpec):
        return optimizer
    if isinstance(optimizer, str) and optimizer.lower() in _OPTIMIZERS:
        if learning_rate is None:
            raise ValueError(f"optimizer {optimizer!r} given by name needs a learning_rate")
        return _OPTIMIZERS[optimizer.lower()](learning_rate=learning_rate)
    raise ValueError(
        f"unknown optimizer {optimizer!r}; expected one of {sorted(_OPTIMIZERS)} "
        "or a cfcore.optimizers spec such as cfcore.optimizers.SGD(learning_rate=10.0)"
    )
