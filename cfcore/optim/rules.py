"""The update rules of cfcore's optimizers, written once in the backend's array namespace.

Each rule is the formula of its spec's docstring (`cfcore.optimizers`), as a pure pair
`init(params) -> state` and `update(grads, state, params) -> (params, state)` over dicts of
arrays, so the same spec gives the same trajectory on every backend. A framework's own optimizer
(an optax transformation on JAX, a Keras 3 optimizer on TensorFlow) is turned into the same
pair by the backend's `native_optimizer`: accepted, but not cross-backend identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend.capabilities import capability
from ..errors import ArgumentValueError
from ..specs import SGD, Adagrad, Adam, OptimizerSpec, make_optimizer

Params = dict[str, Any]


@dataclass(frozen=True)
class Rule:
    """An optimizer as the pure pair the trainer calls.

    Attributes:
        init: `init(params) -> state`.
        update: `update(grads, state, params) -> (new_params, new_state)`.
        spec: the cfcore spec (None for a framework's own optimizer).
        learning_rate: for messages (None when unknown).
        key: what the compiled step depends on, for its cache: a cfcore spec's rule keeps its
            numbers (learning rate, betas, eps) in the optimizer state, read at run time, so
            its key is the rule's name alone and a learning-rate search compiles once. None: the
            optimizer object itself (a framework's own, whose numbers are traced in).
    """

    init: Any
    update: Any
    spec: OptimizerSpec | None = None
    learning_rate: float | None = None
    key: Any = None


def _hyper(be: Any, **values: float) -> dict[str, Any]:
    """The rule's numbers as float32 scalars of the optimizer state (each computed in Python
    first, as the constants it replaces were), so that the compiled step reads them at run time:
    a spec that differs only in its numbers reuses the compiled chunk (`Rule.key`)."""
    return {k: be.asarray(np.float32(v)) for k, v in values.items()}


def _sgd(be: Any, opt: SGD) -> Rule:
    def init(params: Params) -> dict:
        return {"hyper": _hyper(be, lr=opt.learning_rate)}

    def update(grads: Params, state: dict, params: Params) -> tuple[Params, dict]:
        lr = state["hyper"]["lr"]
        return {k: params[k] - lr * grads[k] for k in params}, state

    return Rule(init, update, opt, opt.learning_rate, key=("SGD",))


def _adagrad(be: Any, opt: Adagrad) -> Rule:
    xp = be.xp

    def init(params: Params) -> dict:
        return {
            "acc": {k: xp.full_like(p, opt.initial_accumulator_value) for k, p in params.items()},
            "hyper": _hyper(be, lr=opt.learning_rate, eps=opt.eps),
        }

    def update(grads: Params, state: dict, params: Params) -> tuple[Params, dict]:
        lr, eps = state["hyper"]["lr"], state["hyper"]["eps"]
        acc = {k: state["acc"][k] + xp.square(grads[k]) for k in params}
        new = {k: params[k] - lr * (grads[k] / xp.sqrt(acc[k] + eps)) for k in params}
        return new, {"acc": acc, "hyper": state["hyper"]}

    return Rule(init, update, opt, opt.learning_rate, key=("Adagrad",))


def _adam(be: Any, opt: Adam) -> Rule:
    xp = be.xp

    def init(params: Params) -> dict:
        zeros = {k: xp.zeros_like(p) for k, p in params.items()}
        # `1 - b` in Python (float64) then float32, as the constants folded before were.
        hyper = _hyper(
            be, lr=opt.learning_rate, b1=opt.b1, b2=opt.b2, c1=1.0 - opt.b1, c2=1.0 - opt.b2,
            eps=opt.eps,
        )  # fmt: skip
        # The step count t as float32: exact up to 2²⁴ steps, and b ** t needs a float exponent.
        return {"m": zeros, "v": dict(zeros), "t": be.asarray(np.float32(0.0)), "hyper": hyper}

    def update(grads: Params, state: dict, params: Params) -> tuple[Params, dict]:
        h = state["hyper"]
        lr, b1, b2, eps = h["lr"], h["b1"], h["b2"], h["eps"]
        t = state["t"] + 1.0
        m = {k: b1 * state["m"][k] + h["c1"] * grads[k] for k in params}
        v = {k: b2 * state["v"][k] + h["c2"] * xp.square(grads[k]) for k in params}
        c1, c2 = 1.0 - b1**t, 1.0 - b2**t
        new = {k: params[k] - lr * ((m[k] / c1) / (xp.sqrt(v[k] / c2) + eps)) for k in params}
        return new, {"m": m, "v": v, "t": t, "hyper": h}

    return Rule(init, update, opt, opt.learning_rate, key=("Adam",))


_RULES = {SGD: _sgd, Adagrad: _adagrad, Adam: _adam}


def make_rule(be: Any, optimizer: Any) -> Rule:
    """The update rule of `optimizer` on backend `be`.

    Args:
        be: a backend (its `xp` and `asarray` are used).
        optimizer: a `cfcore.optimizers` spec, or a framework's own optimizer object that the
            backend's `native_optimizer` recognises (optax on JAX, Keras 3 on TensorFlow).

    Raises:
        ValueError: for anything else (a name without a learning rate, an unknown object),
            naming what is accepted.
    """
    if isinstance(optimizer, OptimizerSpec):
        for cls, rule in _RULES.items():
            if isinstance(optimizer, cls):
                return rule(be, optimizer)
    wrap = None if isinstance(optimizer, str) else capability(be, "native_optimizer")
    native = None if wrap is None else wrap(optimizer)
    if native is None:
        try:
            make_optimizer(optimizer)  # its errors name the accepted specs and names
        except ValueError as err:
            raise ArgumentValueError(
                f"{err}; or an optimizer object of the {be.name!r} backend's framework "
                "(an optax GradientTransformation on jax, a Keras 3 optimizer on tf; none yet on "
                "torch)"
            ) from None
        raise ArgumentValueError(
            f"optimizer {optimizer!r} has no update rule on backend {be.name!r}"
        )
    lr = getattr(optimizer, "learning_rate", None)
    return Rule(native.init, native.update, None, lr if isinstance(lr, int | float) else None)
