"""The float64 NumPy oracle: every loss with its analytic gradient, and every optimizer update.

Backends are checked against these functions by `cfcore.testing`. They favour clarity over speed;
gradients are derived by hand (not by autodiff) so that they are an independent check.

Shapes: `U` is `[N, d]`, `V` is `[M, d]`, `users`/`items`/`ratings` are `[n]`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .specs import SGD, Adagrad, Adam, MFSpec, OptimizerSpec


def _f64(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def sparse_mse(U, V, users, items, ratings) -> tuple[float, np.ndarray, np.ndarray]:
    """MSE over the observed pairs and its gradient.

    L = (1/n) Σ_k (⟨U_{u_k}, V_{i_k}⟩ − r_k)²;
    ∂L/∂U_u = (2/n) Σ_{k: u_k = u} e_k · V_{i_k}, and symmetrically for V.

    Returns:
        `(loss, dL/dU [N, d], dL/dV [M, d])`.
    """
    U, V, r = _f64(U), _f64(V), _f64(ratings)
    users, items = np.asarray(users), np.asarray(items)
    n = len(r)
    e = np.einsum("kd,kd->k", U[users], V[items]) - r
    loss = float(np.mean(e**2))
    dU = np.zeros_like(U)
    dV = np.zeros_like(V)
    np.add.at(dU, users, (2.0 / n) * e[:, None] * V[items])
    np.add.at(dV, items, (2.0 / n) * e[:, None] * U[users])
    return loss, dU, dV


def dense_mse(U, V, users, items, ratings) -> float:
    """The same MSE computed the notebook's first way: full `U·Vᵀ` (`[N, M]`), then gather."""
    pred = _f64(U) @ _f64(V).T
    e = pred[np.asarray(users), np.asarray(items)] - _f64(ratings)
    return float(np.mean(e**2))


def l2_penalty(U, V) -> tuple[float, np.ndarray, np.ndarray]:
    """r(U, V) = ΣU²/N + ΣV²/M, gradient (2U/N, 2V/M)."""
    U, V = _f64(U), _f64(V)
    N, M = len(U), len(V)
    return float(np.sum(U**2) / N + np.sum(V**2) / M), 2.0 * U / N, 2.0 * V / M


def gravity(U, V) -> tuple[float, np.ndarray, np.ndarray]:
    """g(U, V) = (1/(N·M)) Σ((UᵀU) ∘ (VᵀV)) and its gradient (2·U·VᵀV, 2·V·UᵀU) / (N·M)."""
    U, V = _f64(U), _f64(V)
    scale = 1.0 / (float(len(U)) * float(len(V)))
    gu, gv = U.T @ U, V.T @ V
    return float(np.sum(gu * gv) * scale), 2.0 * scale * U @ gv, 2.0 * scale * V @ gu


def gravity_brute_force(U, V) -> float:
    """g(U, V) from its definition, the mean of ⟨U_i, V_j⟩² over all N·M pairs (O(N·M) memory)."""
    return float(np.mean((_f64(U) @ _f64(V).T) ** 2))


def mf_objective(
    spec: MFSpec, params: dict[str, Any], users, items, ratings
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The full MF objective of `spec`, its parts and its gradient.

    Returns:
        `(terms, grads)`: terms has "observed", "regularization", "gravity" (already multiplied by
        their coefficients) and "total"; grads has "user" `[N, d]` and "item" `[M, d]`.
    """
    U, V = params["user"], params["item"]
    obs, dU, dV = sparse_mse(U, V, users, items, ratings)
    reg, rU, rV = l2_penalty(U, V)
    grav, gU, gV = gravity(U, V)
    lr, lg = spec.regularization_coeff, spec.gravity_coeff
    terms = {"observed": obs, "regularization": lr * reg, "gravity": lg * grav}
    terms["total"] = obs + lr * reg + lg * grav
    grads = {"user": dU + lr * rU + lg * gU, "item": dV + lr * rV + lg * gV}
    return terms, grads


def init_optimizer_state(optimizer: OptimizerSpec, params: dict[str, Any]) -> dict[str, Any]:
    """The optimizer's initial state for `params` (float64)."""
    if isinstance(optimizer, SGD):
        return {}
    if isinstance(optimizer, Adagrad):
        return {
            "acc": {
                k: np.full_like(_f64(v), optimizer.initial_accumulator_value)
                for k, v in params.items()
            }
        }
    if isinstance(optimizer, Adam):
        zeros = {k: np.zeros_like(_f64(v)) for k, v in params.items()}
        return {"m": zeros, "v": {k: z.copy() for k, z in zeros.items()}, "t": 0}
    raise TypeError(f"unknown optimizer {optimizer!r}")


def optimizer_update(
    optimizer: OptimizerSpec, params: dict[str, Any], grads: dict[str, Any], state: dict[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One update of `optimizer` as written in its docstring. Returns `(new_params, new_state)`."""
    lr = optimizer.learning_rate
    p = {k: _f64(v) for k, v in params.items()}
    g = {k: _f64(v) for k, v in grads.items()}
    if isinstance(optimizer, SGD):
        return {k: p[k] - lr * g[k] for k in p}, state
    if isinstance(optimizer, Adagrad):
        acc = {k: state["acc"][k] + g[k] ** 2 for k in p}
        new = {k: p[k] - lr * g[k] / np.sqrt(acc[k] + optimizer.eps) for k in p}
        return new, {"acc": acc}
    if isinstance(optimizer, Adam):
        t = state["t"] + 1
        m = {k: optimizer.b1 * state["m"][k] + (1 - optimizer.b1) * g[k] for k in p}
        v = {k: optimizer.b2 * state["v"][k] + (1 - optimizer.b2) * g[k] ** 2 for k in p}
        new = {
            k: p[k]
            - lr
            * (m[k] / (1 - optimizer.b1**t))
            / (np.sqrt(v[k] / (1 - optimizer.b2**t)) + optimizer.eps)
            for k in p
        }
        return new, {"m": m, "v": v, "t": t}
    raise TypeError(f"unknown optimizer {optimizer!r}")


def top_k(scores, k: int, exclude=None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k per row of `scores` `[B, M]`, ties broken by the lowest index.

    Args:
        scores: `[B, M]`.
        k: number of items per row.
        exclude: optional boolean mask `[B, M]`; excluded entries score −inf.

    Returns:
        `(values [B, k], indices [B, k])`.
    """
    s = _f64(scores).copy()
    if exclude is not None:
        s[np.asarray(exclude, dtype=bool)] = -np.inf
    # Stable sort of the negated scores keeps equal scores in index order.
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, idx, axis=1), idx
