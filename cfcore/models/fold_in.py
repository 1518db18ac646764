"""Fold-in by a model's own loss: a new user's row is the minimiser of the model's objective over
that row, every other parameter (the item side) fixed.

A model with a closed form for that minimiser keeps it (squared loss: `RatingModel` solves
`(V_Sᵀ V_S + λ·I + P) u = V_Sᵀ r_S`; iALS its weighted form). Any other model gets it from
`FactorModel._fold_in_arrays`, which calls `minimise_rows` with the model's loss (`_loss`) and
the new users' data (`_fold_in_batch`): gradient descent on the host in float64, the value and
gradient of the loss computed by the backend (float32, compiled once per fold-in), with
Barzilai-Borwein step sizes and an Armijo backtracking line search (no step size to tune). The
objective of a new row is convex for the models that use it (BPR: softplus of linear functions
of the row plus an L2 term), so the descent reaches its minimum; it stops when the gradient has
shrunk by `TOLERANCE` or after `MAX_STEPS` steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..train.placement import Placement

MAX_STEPS = 500
"""The most gradient steps of one fold-in."""
TOLERANCE = 1e-4
"""Stop once the gradient's norm is this fraction of its norm at the start."""
_ARMIJO = 1e-4  # sufficient decrease of the line search (the usual constant)


def minimise_rows(
    be: Any,
    loss: Callable[[dict[str, Any], Any], tuple[Any, Any]],
    fixed: dict[str, np.ndarray],
    start: np.ndarray,
    batch: Any,
    *,
    max_steps: int = MAX_STEPS,
    tolerance: float = TOLERANCE,
) -> np.ndarray:
    """The rows `user` that minimise `loss({**fixed, "user": user}, batch)`.

    Args:
        be: a backend with gradients (`value_and_grad`).
        loss: the model's `loss(params, batch) -> (total, terms)`.
        fixed: the other parameters (float32 host arrays), held fixed.
        start: float32 `[B, d]`, the rows the descent starts from.
        batch: the new users' data as `loss` reads it (host arrays; users 0..B-1).
        max_steps: the most gradient steps.
        tolerance: stop when the gradient's norm falls below this fraction of its first.

    Returns:
        float32 `[B, d]`.
    """
    place = Placement(be)
    data = {"fixed": place.params(fixed), "batch": place.data(batch)}

    def row_loss(p: dict[str, Any], d: dict[str, Any]) -> tuple[Any, Any]:
        return loss({**d["fixed"], "user": p["user"]}, d["batch"])

    grad = be.compile(be.value_and_grad(row_loss))

    def at(x: np.ndarray) -> tuple[float, np.ndarray]:
        (value, _), g = grad(place.params({"user": x.astype(np.float32)}), data)
        return float(be.to_numpy(value)), np.asarray(be.to_numpy(g["user"]), np.float64)

    x = np.asarray(start, np.float64)
    f, g = at(x)
    first = float(np.linalg.norm(g))
    t = 1.0 / max(first, 1e-30)  # a first step of unit length
    for _ in range(max_steps):
        gg = float(np.vdot(g, g))
        if np.sqrt(gg) <= tolerance * first:
            break
        while True:
            x_new = x - t * g
            f_new, g_new = at(x_new)
            if f_new <= f - _ARMIJO * t * gg or t < 1e-20:
                break
            t *= 0.5
        if f_new > f:  # no decrease left at float32 resolution: at the minimum
            break
        s, y = x_new - x, g_new - g
        sy = float(np.vdot(s, y))
        t = float(np.vdot(s, s)) / sy if sy > 0 else 2.0 * t  # Barzilai-Borwein
        x, f, g = x_new, f_new, g_new
    return x.astype(np.float32)
