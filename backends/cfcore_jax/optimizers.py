"""cfcore optimizer specs as optax gradient transformations (same update rules as the docstrings)."""

from __future__ import annotations

import optax

from cfcore.specs import SGD, Adagrad, Adam, OptimizerSpec


def to_optax(optimizer: OptimizerSpec) -> optax.GradientTransformation:
    """The optax transformation that implements `optimizer` exactly.

    `optax.adagrad` scales by `1/√(a + ε)` with `a` accumulated from `initial_accumulator_value`,
    and `optax.adam` with `eps_root=0` is the paper's update: both match cfcore's formulas.
    """
    if isinstance(optimizer, SGD):
        return optax.sgd(optimizer.learning_rate)
    if isinstance(optimizer, Adagrad):
        return optax.adagrad(
            optimizer.learning_rate,
            initial_accumulator_value=optimizer.initial_accumulator_value,
            eps=optimizer.eps,
        )
    if isinstance(optimizer, Adam):
        return optax.adam(
            optimizer.learning_rate,
            b1=optimizer.b1,
            b2=optimizer.b2,
            eps=optimizer.eps,
            eps_root=0.0,
        )
    raise TypeError(f"the jax backend does not know optimizer {optimizer!r}")
