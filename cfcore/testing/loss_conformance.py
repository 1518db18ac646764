"""One conformance check for any model's loss: every backend against a float64 reference, and
the backends against each other.

A model's objective is written once on the backend's operations (`loss(be, params, batch) ->
terms`, as in `cfcore.maths.objectives`); its float64 reference is plain NumPy (`reference(params,
batch) -> terms`, float64 arrays in, floats out). `check_loss` evaluates both on a `LossProblem`
(small float32 parameters and a batch of host arrays) and checks

* every term on every backend against the reference (relative `rtol`),
* the gradient of the total on every backend against central finite differences of the
  reference's total in float64 (so no gradient has to be derived by hand; the NumPy reference
  backend cannot differentiate), element-wise within `grad_rtol · max|reference gradient|`,
* every backend's terms and gradients against every other's.

Example, from a test module::

    from cfcore.testing import LossProblem, check_loss

    def test_my_loss():
        check_loss(["jax", "tf", "torch"], LossProblem(my_terms, my_reference, params, batch))
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend.registry import get_backend
from ..train.placement import Placement
from .conformance import assert_array_close, assert_scalar_close

TermsFn = Callable[[Any, dict[str, Any], Any], dict[str, Any]]
"""`terms(be, params, batch) -> {name: scalar}`, with a "total" entry (the loss)."""
ReferenceFn = Callable[[dict[str, np.ndarray], Any], dict[str, float]]
"""`reference(params, batch) -> {name: float}` in float64 NumPy, with a "total" entry."""


@dataclass
class LossProblem:
    """A loss to check and the point to check it at.

    Attributes:
        terms: the loss written on the backend's operations (`TermsFn`).
        reference: its float64 NumPy reference (`ReferenceFn`).
        params: float32 host parameters by name (small: the finite differences take two
            reference evaluations per entry).
        batch: the batch as the loss reads it, a dict of host arrays (ints are indices).
        name: for messages.
    """

    terms: TermsFn
    reference: ReferenceFn
    params: dict[str, np.ndarray]
    batch: dict[str, np.ndarray]
    name: str = "loss"


def reference_gradient(
    reference: ReferenceFn, params: dict[str, np.ndarray], batch: Any, eps: float = 1e-6
) -> dict[str, np.ndarray]:
    """Central finite differences of `reference(...)["total"]` in float64, per parameter entry."""
    p64 = {k: np.asarray(v, np.float64) for k, v in params.items()}
    grads = {}
    for name, value in p64.items():
        g = np.zeros_like(value)
        for i in np.ndindex(value.shape):
            old = value[i]
            value[i] = old + eps
            up = reference(p64, batch)["total"]
            value[i] = old - eps
            down = reference(p64, batch)["total"]
            value[i] = old
            g[i] = (up - down) / (2 * eps)
        grads[name] = g
    return grads


def backend_terms(be: Any, problem: LossProblem) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """`problem`'s terms and the gradient of its total on backend `be`, as host float64."""
    place = Placement(be)

    def loss(params: dict[str, Any], batch: Any) -> tuple[Any, dict[str, Any]]:
        terms = problem.terms(be, params, batch)
        return terms["total"], terms

    grad = be.value_and_grad(loss)
    (_, terms), grads = grad(place.params(problem.params), place.data(problem.batch))
    values = {k: float(be.to_numpy(v)) for k, v in terms.items()}
    return values, {k: np.asarray(be.to_numpy(v), np.float64) for k, v in grads.items()}


def check_loss(
    backends: Sequence[Any],
    problem: LossProblem,
    *,
    rtol: float = 1e-5,
    grad_rtol: float = 1e-4,
) -> dict[str, Any]:
    """Checks `problem`'s loss on every backend against its float64 reference and each other.

    Args:
        backends: backend names or instances (each needs `value_and_grad`).
        problem: the loss, its reference and the point (`LossProblem`).
        rtol: relative tolerance of each term (float32 against float64).
        grad_rtol: tolerance of each gradient entry, relative to the largest reference entry
            (the finite differences carry about 1e-9 of their own).

    Returns:
        `{"reference": terms, "gradient": finite differences, backend name: (terms, gradient)}`.

    Raises:
        AssertionError: a term or gradient beyond its tolerance (the message names the
            backend, the term or parameter, and both values).
    """
    p64 = {k: np.asarray(v, np.float64) for k, v in problem.params.items()}
    expected = problem.reference(p64, problem.batch)
    expected_grad = reference_gradient(problem.reference, problem.params, problem.batch)
    out: dict[str, Any] = {"reference": expected, "gradient": expected_grad}
    for b in backends:
        be = get_backend(b)
        values, grads = backend_terms(be, problem)
        name = getattr(be, "name", str(b))
        assert set(values) == set(expected), f"{name}: terms {sorted(values)} vs {sorted(expected)}"
        for k, v in expected.items():
            assert_scalar_close(values[k], v, rtol, what=f"{problem.name} {k} on {name}")
        for k, g in expected_grad.items():
            assert_array_close(grads[k], g, grad_rtol, what=f"{problem.name} d/d{k} on {name}")
        out[name] = (values, grads)
    names = [n for n in out if n not in ("reference", "gradient")]
    for a, b in itertools.combinations(names, 2):
        for k in expected:
            assert_scalar_close(out[a][0][k], out[b][0][k], rtol, f"{problem.name} {k}: {a}/{b}")
        for k in expected_grad:
            assert_array_close(
                out[a][1][k], out[b][1][k], grad_rtol, f"{problem.name} d/d{k}: {a} vs {b}"
            )
    return out
