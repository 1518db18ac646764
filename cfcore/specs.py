"""Frozen descriptions of models and optimizers, shared by every backend.

A spec says *what* to compute; a backend decides *how*. Specs are plain data so that they can be
saved with a model, compared, and handed to a backend that was written by someone else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

from .errors import ArgumentValueError
from .validate import check_float, check_int

MSEMethod = Literal["gather", "dense"]
MSE_METHODS: tuple[str, ...] = ("gather", "dense")


def _check_positive(obj: Any, name: str, *, allow_zero: bool = False) -> None:
    """Checks `obj.name` with the shared validator and stores it as a Python float."""
    value = getattr(obj, name)
    if allow_zero:
        out = check_float(name, value, minimum=0.0)
    else:
        out = check_float(name, value, exclusive_minimum=0.0)
    object.__setattr__(obj, name, out)


def _check_dim(obj: Any, name: str) -> None:
    """Checks `obj.name` is a positive int (NumPy ints accepted, bools refused); stores an int."""
    object.__setattr__(obj, name, check_int(name, getattr(obj, name), minimum=1))


def check_mse(mse: str) -> MSEMethod:
    """`mse` as an `MSEMethod` ("gather" or "dense"), else a ValueError naming it.

    Example:
        >>> check_mse("dense")
        'dense'
        >>> check_mse("sparse")
        Traceback (most recent call last):
        ...
        cfcore.errors.ArgumentValueError: mse must be one of ('gather', 'dense'), got 'sparse'
    """
    if mse == "gather" or mse == "dense":
        return mse
    raise ArgumentValueError(f"mse must be one of {MSE_METHODS}, got {mse!r}")


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

    embedding_dim: int = 3
    init_stddev: float = 1.0
    mse: MSEMethod = "gather"
    regularization_coeff: float = 0.0
    gravity_coeff: float = 0.0

    # Read at run time (`cfcore.train.hyper`): multipliers of the penalties.
    runtime_fields: ClassVar[tuple[str, ...]] = ("regularization_coeff", "gravity_coeff")

    def __post_init__(self) -> None:
        _check_dim(self, "embedding_dim")
        _check_positive(self, "init_stddev")
        check_mse(self.mse)
        _check_positive(self, "regularization_coeff", allow_zero=True)
        _check_positive(self, "gravity_coeff", allow_zero=True)

    @property
    def regularized(self) -> bool:
        return self.regularization_coeff > 0 or self.gravity_coeff > 0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "mf", **asdict(self)}


REGULARIZED_MF = MFSpec(init_stddev=0.1, regularization_coeff=0.1, gravity_coeff=1.0)
"""The defaults of `cfcore.RegularizedMF` (an `MFSpec`: its files name the kind "mf")."""


ALS_SOLVERS: tuple[str, ...] = ("auto", "cholesky", "cg")
CG_THRESHOLD = 128
"""`solver="auto"` uses Cholesky up to this embedding dimension and conjugate gradient above."""


def _check_solver(solver: str, cg_steps: int) -> None:
    if solver not in ALS_SOLVERS:
        raise ArgumentValueError(f"solver must be one of {ALS_SOLVERS}, got {solver!r}")
    if not isinstance(cg_steps, int) or isinstance(cg_steps, bool) or cg_steps < 1:
        raise ArgumentValueError(f"cg_steps must be a positive int, got {cg_steps!r}")


def _resolve_solver(solver: str, d: int) -> str:
    if solver == "auto":
        return "cholesky" if d <= CG_THRESHOLD else "cg"
    return solver


@dataclass(frozen=True)
class WALSSpec:
    """The regularized MF objective of `MFSpec`, minimised by alternating least squares.

    With the item embeddings `V` fixed the objective is quadratic in each user row, minimised by

        (V_Sᵀ V_S + (λr·|Ω|/N)·I + (λg·|Ω|/(N·M))·VᵀV) u = V_Sᵀ r_S

    (`S` the user's rated items), and symmetrically for the items; a sweep solves every user row,
    then every item row.

    Attributes:
        embedding_dim: d.
        init_stddev: standard deviation of the normal initial embeddings.
        regularization_coeff: λr (> 0: a row with fewer than d ratings needs it).
        gravity_coeff: λg.
        solver: "cholesky" (exact row solves), "cg" (conjugate gradient, warm-started, `cg_steps`
            steps per half-sweep; no `[d, d]` system per row) or "auto" (Cholesky up to d = 128).
        cg_steps: CG steps per half-sweep.
    """

    embedding_dim: int = 3
    init_stddev: float = 0.1
    regularization_coeff: float = 0.1
    gravity_coeff: float = 1.0
    solver: str = "auto"
    cg_steps: int = 3

    # Read at run time (`cfcore.train.hyper`): multipliers of the penalties.
    runtime_fields: ClassVar[tuple[str, ...]] = ("regularization_coeff", "gravity_coeff")

    def __post_init__(self) -> None:
        _check_dim(self, "embedding_dim")
        _check_positive(self, "init_stddev")
        _check_positive(self, "regularization_coeff")
        _check_positive(self, "gravity_coeff", allow_zero=True)
        _check_solver(self.solver, self.cg_steps)

    @property
    def regularized(self) -> bool:
        return True

    @property
    def mse(self) -> str:
        return "gather"

    @property
    def objective(self) -> MFSpec:
        """The `MFSpec` whose objective the sweeps minimise."""
        return MFSpec(
            self.embedding_dim,
            self.init_stddev,
            "gather",
            self.regularization_coeff,
            self.gravity_coeff,
        )

    @property
    def linear_solver(self) -> str:
        """ "cholesky" or "cg" ("auto" resolved by d)."""
        return _resolve_solver(self.solver, self.embedding_dim)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "wals", **asdict(self)}


@dataclass(frozen=True)
class IALSSpec:
    """Implicit-feedback ALS (Hu, Koren & Volinsky 2008; Rendle et al. 2022).

    For positives `S` (user-item pairs with an interaction count `n_ui ≥ 1`), user embeddings `W`
    (`[N, d]`) and item embeddings `H` (`[M, d]`):

        L = Σ_(u,i)∈S c_ui·(⟨w_u, h_i⟩ − 1)² + α₀·Σ_u Σ_i ⟨w_u, h_i⟩²
            + λ·(Σ_u (|S_u| + α₀·M)^ν·‖w_u‖² + Σ_i (|S_i| + α₀·N)^ν·‖h_i‖²)

    with confidence `c_ui = 1 + α·n_ui` (α = 0: every positive weighs 1, as Rendle et al.). The
    second sum runs over all pairs (Rendle et al.'s form) through the Gramians, never the `N × M`
    matrix. With `H` fixed, each user row is the ridge regression

        (Σ_{i∈S_u} c_ui h_i h_iᵀ + α₀·HᵀH + λ·(|S_u| + α₀·M)^ν·I) w_u = Σ_{i∈S_u} c_ui h_i.

    Attributes:
        embedding_dim: d.
        init_stddev: standard deviation of the normal initial embeddings (Rendle et al. use
            0.1/√d).
        regularization_coeff: λ (> 0).
        unobserved_weight: α₀ ≥ 0, the weight of every pair in the all-pairs term.
        regularization_exponent: ν (0: plain λ; 1: λ scaled by each row's frequency).
        confidence: α ≥ 0 (`c = 1 + α·count`).
        solver: "cholesky", "cg" or "auto" (as `WALSSpec`).
        cg_steps: CG steps per half-sweep.
    """

    embedding_dim: int = 64
    init_stddev: float = 0.1
    regularization_coeff: float = 0.01
    unobserved_weight: float = 0.1
    regularization_exponent: float = 1.0
    confidence: float = 0.0

    # Read at run time (`cfcore.train.hyper`): α₀ and λ scale terms;
    # α and ν only shape the sweep's data (its weights and per-row regularization).
    runtime_fields: ClassVar[tuple[str, ...]] = (
        "regularization_coeff",
        "unobserved_weight",
        "confidence",
        "regularization_exponent",
    )
    solver: str = "auto"
    cg_steps: int = 3

    def __post_init__(self) -> None:
        _check_dim(self, "embedding_dim")
        _check_positive(self, "init_stddev")
        _check_positive(self, "regularization_coeff")
        _check_positive(self, "unobserved_weight", allow_zero=True)
        _check_positive(self, "regularization_exponent", allow_zero=True)
        _check_positive(self, "confidence", allow_zero=True)
        _check_solver(self.solver, self.cg_steps)

    @property
    def regularized(self) -> bool:
        return True

    @property
    def linear_solver(self) -> str:
        return _resolve_solver(self.solver, self.embedding_dim)

    def row_regularization(self, counts: Any, other: int) -> Any:
        """λ·(|S_r| + α₀·other)^ν per row, float64 `[R]`, for rows with `counts` positives."""
        import numpy as np

        base = np.asarray(counts, np.float64) + self.unobserved_weight * float(other)
        return self.regularization_coeff * base**self.regularization_exponent

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "ials", **asdict(self)}


@dataclass(frozen=True)
class BiasedMFSpec:
    """Matrix factorization with biases: prediction `μ + b_u + b_i + ⟨u, v⟩`.

    Objective over the training ratings `Ω` (`μ`, their mean, is fixed, not trained):

        L = (1/|Ω|) Σ_Ω (r − μ − b_u − b_i − ⟨u, v⟩)²
            + λ·(ΣU²/N + ΣV²/M) + λb·(Σb_u²/N + Σb_i²/M) + λg·(1/(N·M))·Σ_ij ⟨u_i, v_j⟩²

    Trained by cfcore's gradient optimizers, or by alternating least squares with the biases as
    augmented columns (`[u, b_u]` solved against `[v, 1]`, targets `r − μ − b_i`).

    Attributes:
        embedding_dim: d.
        init_stddev: standard deviation of the normal initial embeddings (biases start at 0).
        regularization_coeff: λ, on the embeddings.
        bias_regularization_coeff: λb, on the biases.
        gravity_coeff: λg (default 0), on the embeddings' dot products.
        solver: the ALS linear solver, "cholesky", "cg" or "auto" (as `WALSSpec`).
        cg_steps: CG steps per half-sweep.
    """

    # Defaults chosen on validation splits of ml-100k (benchmarks/biased_defaults.py).
    embedding_dim: int = 10
    init_stddev: float = 0.1
    regularization_coeff: float = 0.25
    bias_regularization_coeff: float = 0.1
    gravity_coeff: float = 0.0
    solver: str = "auto"
    cg_steps: int = 3

    # Read at run time (`cfcore.train.hyper`): multipliers of the penalties.
    runtime_fields: ClassVar[tuple[str, ...]] = (
        "regularization_coeff",
        "bias_regularization_coeff",
        "gravity_coeff",
    )

    def __post_init__(self) -> None:
        _check_dim(self, "embedding_dim")
        _check_positive(self, "init_stddev")
        _check_positive(self, "regularization_coeff", allow_zero=True)
        _check_positive(self, "bias_regularization_coeff", allow_zero=True)
        _check_positive(self, "gravity_coeff", allow_zero=True)
        _check_solver(self.solver, self.cg_steps)

    @property
    def regularized(self) -> bool:
        return True

    @property
    def linear_solver(self) -> str:
        return _resolve_solver(self.solver, self.embedding_dim + 1)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "biased", **asdict(self)}


@dataclass(frozen=True)
class OptimizerSpec:
    """Base class of cfcore's optimizers: a name and pinned hyper-parameters.

    Every backend implements exactly the update written in the subclass docstring, so that the
    same spec gives the same trajectory on TensorFlow and JAX (framework defaults differ: Keras
    Adam uses eps = 1e-7 and optax 1e-8, for instance).
    """

    learning_rate: float

    def __post_init__(self) -> None:
        _check_positive(self, "learning_rate")

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
        _check_positive(self, "initial_accumulator_value")
        _check_positive(self, "eps", allow_zero=True)


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
            v = check_float(name, getattr(self, name), minimum=0.0, exclusive_maximum=1.0)
            object.__setattr__(self, name, v)
        _check_positive(self, "eps", allow_zero=True)


_OPTIMIZERS: dict[str, type[OptimizerSpec]] = {"sgd": SGD, "adagrad": Adagrad, "adam": Adam}


def make_optimizer(
    optimizer: OptimizerSpec | str, learning_rate: float | None = None
) -> OptimizerSpec:
    """Resolves an optimizer given as a spec or a name ("sgd", "adagrad", "adam")."""
    if isinstance(optimizer, OptimizerSpec):
        return optimizer
    if isinstance(optimizer, str) and optimizer.lower() in _OPTIMIZERS:
        if learning_rate is None:
            raise ArgumentValueError(f"optimizer {optimizer!r} given by name needs a learning_rate")
        return _OPTIMIZERS[optimizer.lower()](learning_rate=learning_rate)
    raise ArgumentValueError(
        f"unknown optimizer {optimizer!r}; expected one of {sorted(_OPTIMIZERS)} "
        "or a cfcore.optimizers spec such as cfcore.optimizers.SGD(learning_rate=10.0)"
    )


SOFTMAX_ACTIVATIONS: tuple[str | None, ...] = (None, "relu", "tanh")
SOFTMAX_COMBINERS: tuple[str, ...] = ("mean", "sum")
SOFTMAX_LOSSES: tuple[str, ...] = ("full", "sampled")


@dataclass(frozen=True)
class SoftmaxSpec:
    """The softmax model of the notebook's section VI: a query tower over bags of words.

    A query (user) is a set of bags of tokens, one per feature (the ids of the movies the user
    rated, their genres, their release years). With `T_f` the `[V_f, d_f]` table of feature `f`
    and `w_fb` the token counts of row `b`'s bag:

        x_b = concat_f( Σ_t w_fbt · T_f[t] / Σ_t w_fbt )           (combiner "mean"; "sum" drops
                                                                    the division), shape `[Σ d_f]`
        h⁰ = x,  hⁱ = σ(hⁱ⁻¹ · (s · Wᵢ))  for the hidden layers    (σ the activation, identity if None)
        ψ(x) = h^L                                                 (the query embedding, `[d]`)
        p̂ = softmax(ψ(x) · Vᵀ),  V = T_item                        (the item feature's table)

    The item feature's input table doubles as the softmax weights, as in the notebook, so the
    output dimension (the last hidden dimension, or `Σ d_f` without hidden layers) must equal the
    item feature's dimension. `s` (`hidden_scale`) reproduces the notebook, which stores each hidden
    matrix `W` and uses `W / 10`: Adagrad's steps on `W` are then ten times smaller in effect.

    Attributes:
        feature_dims: `((name, d_f), ...)`, the features in concatenation order (a dict is
            accepted); the notebook's by default: movie ids 35, genres 3, years 2.
        hidden_dims: output size of each hidden layer (no biases, as in the notebook).
        activation: None (linear, as in the notebook), "relu" or "tanh", after every hidden layer.
        combiner: "mean" (as the notebook's embedding columns) or "sum".
        item_feature: the feature whose table is the item embedding `V`.
        hidden_scale: `s` above; 0.1 is the notebook's.
        loss: "full" softmax over the catalogue, or "sampled" (in-batch negatives with logQ
            correction and accidental hits removed).
    """

    feature_dims: Any = (("movie_id", 35), ("genre", 3), ("year", 2))
    hidden_dims: tuple[int, ...] = (35,)
    activation: str | None = None
    combiner: str = "mean"
    item_feature: str = "movie_id"
    hidden_scale: float = 0.1
    loss: str = "full"

    def __post_init__(self) -> None:
        dims = self.feature_dims
        pairs = tuple(dims.items()) if isinstance(dims, dict) else tuple(tuple(p) for p in dims)
        if not pairs:
            raise ArgumentValueError(
                "feature_dims is empty: give at least the item feature, e.g. {'movie_id': 35}"
            )
        for pair in pairs:
            if len(pair) != 2 or not isinstance(pair[0], str):
                raise ArgumentValueError(
                    f"feature_dims must map feature names to dimensions, got {dims!r}"
                )
            name, d = pair
            check_int(f"the dimension of feature {name!r}", d, minimum=1)
            if name.startswith("hidden_"):
                raise ArgumentValueError(
                    f"feature name {name!r} is reserved (hidden_* names the hidden layers)"
                )
        names = [p[0] for p in pairs]
        if len(set(names)) != len(names):
            raise ArgumentValueError(f"feature names must be distinct, got {names}")
        pairs = tuple((name, int(d)) for name, d in pairs)
        object.__setattr__(self, "feature_dims", pairs)
        hidden = tuple(check_int("each of hidden_dims", h, minimum=1) for h in self.hidden_dims)
        object.__setattr__(self, "hidden_dims", hidden)
        if self.activation not in SOFTMAX_ACTIVATIONS:
            raise ArgumentValueError(
                f"activation must be one of {SOFTMAX_ACTIVATIONS}, got {self.activation!r}"
            )
        if self.combiner not in SOFTMAX_COMBINERS:
            raise ArgumentValueError(
                f"combiner must be one of {SOFTMAX_COMBINERS}, got {self.combiner!r}"
            )
        if self.loss not in SOFTMAX_LOSSES:
            raise ArgumentValueError(f"loss must be one of {SOFTMAX_LOSSES}, got {self.loss!r}")
        _check_positive(self, "hidden_scale")
        if self.item_feature not in names:
            raise ArgumentValueError(
                f"the item feature {self.item_feature!r} is not among the features {names}: its "
                "table is the softmax weights, so it must be an input"
            )
        if self.output_dim != self.item_dim:
            raise ArgumentValueError(
                f"the query embedding dimension {self.output_dim} (the last of hidden_dims "
                f"{hidden}, or the sum of the feature dimensions without hidden layers) must equal "
                f"the item embedding dimension {self.item_dim} (feature_dims[{self.item_feature!r}])"
            )

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(p[0] for p in self.feature_dims)

    @property
    def input_dim(self) -> int:
        """Σ d_f, the width of the concatenated bags."""
        return sum(p[1] for p in self.feature_dims)

    @property
    def output_dim(self) -> int:
        """The query embedding dimension."""
        return self.hidden_dims[-1] if self.hidden_dims else self.input_dim

    @property
    def item_dim(self) -> int:
        return dict(self.feature_dims)[self.item_feature]

    def param_shapes(self, vocab_sizes: dict[str, int]) -> dict[str, tuple[int, int]]:
        """Shapes of the parameters: one table `[V_f, d_f]` per feature, then `hidden_i` `[in, out]`."""
        shapes = {name: (int(vocab_sizes[name]), d) for name, d in self.feature_dims}
        fan_in = self.input_dim
        for i, out in enumerate(self.hidden_dims):
            shapes[f"hidden_{i}"] = (fan_in, out)
            fan_in = out
        return shapes

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["feature_dims"] = dict(self.feature_dims)
        d["hidden_dims"] = list(self.hidden_dims)
        return {"kind": "softmax", **d}
