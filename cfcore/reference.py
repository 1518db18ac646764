"""The float64 NumPy oracle: every loss with its analytic gradient, and every optimizer update.

Backends are checked against these functions by `cfcore.testing`. They favour clarity over speed;
gradients are derived by hand (not by autodiff) so that they are an independent check.

Shapes: `U` is `[N, d]`, `V` is `[M, d]`, `users`/`items`/`ratings` are `[n]`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ArgumentTypeError
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
    raise ArgumentTypeError(f"unknown optimizer {optimizer!r}")


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
    raise ArgumentTypeError(f"unknown optimizer {optimizer!r}")


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


# ---------------------------------------------------------------------------- softmax model


def bag_of_words(table, ids, weights, combiner: str = "mean") -> np.ndarray:
    """Bags of embeddings by plain loops: row `b` is `Σ_l w_bl · T[ids_bl]`, divided by `Σ_l w_bl`
    for the mean combiner (an empty bag gives zeros).

    Args:
        table: `[V, d]`.
        ids: `[B, L]` token ids, or None for dense bags (then token `l` of row `b` is `l`).
        weights: `[B, L]` counts (`[B, V]` for dense bags).
        combiner: "mean" or "sum".

    Returns:
        `[B, d]` float64.
    """
    table, w = _f64(table), _f64(weights)
    ids = _bag_ids(ids, w)
    out = np.zeros((ids.shape[0], table.shape[1]))
    for b in range(ids.shape[0]):
        for t, wt in zip(ids[b], w[b], strict=True):
            out[b] += wt * table[t]
        if combiner == "mean" and w[b].sum() > 0:
            out[b] /= w[b].sum()
    return out


def _bag_ids(ids, w: np.ndarray) -> np.ndarray:
    # A dense bag lists every token of the vocabulary, in order.
    if ids is None:
        return np.broadcast_to(np.arange(w.shape[-1]), w.shape)
    return np.asarray(ids)


def _bag_backward(grad_table, ids, weights, grad_out, combiner: str) -> None:
    """Adds into `grad_table` `[V, d]` the gradient of `bag_of_words` given `grad_out` `[B, d]`."""
    w = _f64(weights)
    count = w.sum(axis=1, keepdims=True)
    scale = w / np.where(count > 0, count, 1.0) if combiner == "mean" else w
    np.add.at(grad_table, _bag_ids(ids, w), scale[..., None] * grad_out[:, None, :])


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    top = np.max(logits, axis=1, keepdims=True)
    return logits - top - np.log(np.sum(np.exp(logits - top), axis=1, keepdims=True))


def softmax_cross_entropy(Q, V, labels) -> tuple[float, np.ndarray, np.ndarray]:
    """Full softmax cross-entropy and its gradient.

    `L = (1/B) Σ_b [log Σ_j exp⟨Q_b, V_j⟩ − ⟨Q_b, V_{y_b}⟩]`; with `P = softmax(Q·Vᵀ)` and `Y` the
    one-hot labels, `∂L/∂Q = (P − Y)·V / B` and `∂L/∂V = (P − Y)ᵀ·Q / B`.

    Args:
        Q: `[B, d]` query embeddings.
        V: `[M, d]` item embeddings.
        labels: `[B]` target items.

    Returns:
        `(loss, dL/dQ [B, d], dL/dV [M, d])`.
    """
    Q, V = _f64(Q), _f64(V)
    labels = np.asarray(labels)
    B = len(Q)
    logp = _log_softmax(Q @ V.T)
    loss = float(-np.mean(logp[np.arange(B), labels]))
    dlogits = np.exp(logp)
    dlogits[np.arange(B), labels] -= 1.0
    dlogits /= B
    return loss, dlogits @ V, dlogits.T @ Q


def sampled_softmax_loss(
    Q, V, labels, log_q=None, remove_accidental_hits: bool = True
) -> tuple[float, np.ndarray, np.ndarray]:
    """Sampled softmax with in-batch negatives, logQ correction and accidental hits removed.

    Scores `s_bj = ⟨Q_b, V_{y_j}⟩ − log q(y_j)` for the batch's labels `y_1..y_B`; with
    `remove_accidental_hits`, `s_bj = −∞` where `j ≠ b` and `y_j = y_b`.
    `L = (1/B) Σ_b [log Σ_j exp s_bj − s_bb]`; with `P = softmax(s)` row-wise,
    `∂L/∂s = (P − I)/B`, `∂L/∂Q = ∂L/∂s · V_y`, and `∂L/∂V_{y_j} += (∂L/∂s)ᵀ_j · Q`.

    Returns:
        `(loss, dL/dQ [B, d], dL/dV [M, d])`.
    """
    Q, V = _f64(Q), _f64(V)
    labels = np.asarray(labels)
    B = len(Q)
    rows = V[labels]
    logits = Q @ rows.T
    if log_q is not None:
        logits = logits - _f64(log_q)[labels][None, :]
    if remove_accidental_hits:
        hit = (labels[:, None] == labels[None, :]) & ~np.eye(B, dtype=bool)
        logits = np.where(hit, -np.inf, logits)
    logp = _log_softmax(logits)
    loss = float(-np.mean(np.diag(logp)))
    dlogits = (np.exp(logp) - np.eye(B)) / B
    dV = np.zeros_like(V)
    np.add.at(dV, labels, dlogits.T @ Q)
    return loss, dlogits @ rows, dV


_ACT = {
    None: (lambda z: z, lambda z: np.ones_like(z)),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(np.float64)),
    "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
}


def softmax_query_embeddings(spec, params: dict[str, Any], ids, weights) -> np.ndarray:
    """The softmax model's tower (`cfcore.specs.SoftmaxSpec`) in float64: `[B, d]`."""
    return _softmax_forward(spec, params, ids, weights)[0][-1]


def _softmax_forward(spec, params, ids, weights):
    x = np.concatenate(
        [
            bag_of_words(params[f], ids.get(f), weights[f], spec.combiner)
            for f in spec.feature_names
        ],
        axis=1,
    )
    act = _ACT[spec.activation][0]
    xs, zs = [x], []
    for i in range(len(spec.hidden_dims)):
        zs.append(xs[-1] @ (spec.hidden_scale * _f64(params[f"hidden_{i}"])))
        xs.append(act(zs[-1]))
    return xs, zs


def softmax_loss_and_grads(
    spec, params: dict[str, Any], batch: dict[str, Any], log_q=None
) -> tuple[float, dict[str, np.ndarray]]:
    """The softmax model's loss on a batch and its gradient, back-propagated by hand.

    Forward: `x⁰ = concat_f bag_f`, `zⁱ = xⁱ⁻¹·(s·Wᵢ)`, `xⁱ = σ(zⁱ)`, `Q = x^L`, loss full or
    sampled softmax with `V = T_item`. Backward: `δ = ∂L/∂Q`; per layer from the last,
    `δ ← δ ∘ σ'(zⁱ)`, `∂L/∂Wᵢ = s·(xⁱ⁻¹)ᵀ·δ`, `δ ← δ·(s·Wᵢ)ᵀ`; then `δ` split by feature goes to
    each table through its bag (`∂L/∂T_f[t] += (w_bt/Σw_b)·δ_fb`), and `T_item` also gets the
    softmax's `∂L/∂V`.

    Args:
        spec: a `cfcore.specs.SoftmaxSpec`.
        params: tables by feature name and `hidden_i` matrices.
        batch: `{"ids": {f: [B, L_f]}, "weights": {f: [B, L_f]}, "labels": [B]}`.
        log_q: `[M]` log sampling probabilities, for the sampled loss.

    Returns:
        `(loss, grads)` with one float64 gradient per parameter.
    """
    p = {k: _f64(v) for k, v in params.items()}
    ids, weights, labels = batch["ids"], batch["weights"], np.asarray(batch["labels"])
    xs, zs = _softmax_forward(spec, p, ids, weights)
    V = p[spec.item_feature]
    if spec.loss == "sampled":
        loss, delta, dV = sampled_softmax_loss(xs[-1], V, labels, log_q)
    else:
        loss, delta, dV = softmax_cross_entropy(xs[-1], V, labels)
    grads = {k: np.zeros_like(v) for k, v in p.items()}
    grads[spec.item_feature] += dV
    dact = _ACT[spec.activation][1]
    for i in reversed(range(len(spec.hidden_dims))):
        delta = delta * dact(zs[i])
        W = spec.hidden_scale * p[f"hidden_{i}"]
        grads[f"hidden_{i}"] = spec.hidden_scale * xs[i].T @ delta
        delta = delta @ W.T
    start = 0
    for f, d in spec.feature_dims:
        _bag_backward(grads[f], ids.get(f), weights[f], delta[:, start : start + d], spec.combiner)
        start += d
    return loss, grads


def ranking_metrics(top_items, targets, k: int) -> dict[str, float]:
    """Ranking metrics at `k` by plain loops, the oracle of `cfcore.metrics.ranking_metrics`.

    For each user with ranked list `r_1..r_k` and targets `T`, `rel_i = [r_i ∈ T]`:
    precision `Σ rel / k`, recall `Σ rel / |T|`, NDCG `Σ rel_i / log₂(i + 1)` over the ideal
    `Σ_{i ≤ min(k, |T|)} 1 / log₂(i + 1)`, AP `Σ_i rel_i · (Σ_{j ≤ i} rel_j / i) / min(k, |T|)`,
    hit rate `[Σ rel > 0]`; each averaged over users.
    """
    sums = dict.fromkeys(("precision", "recall", "ndcg", "map", "hit_rate"), 0.0)
    for ranked, target in zip(top_items, targets, strict=True):
        target = set(np.asarray(target).tolist())
        hits, dcg, ap = 0, 0.0, 0.0
        for i, item in enumerate(list(ranked)[:k], start=1):
            if int(item) in target:
                hits += 1
                dcg += 1.0 / np.log2(i + 1)
                ap += hits / i
        ideal = sum(1.0 / np.log2(i + 1) for i in range(1, min(k, len(target)) + 1))
        sums["precision"] += hits / k
        sums["recall"] += hits / len(target)
        sums["ndcg"] += dcg / ideal
        sums["map"] += ap / min(k, len(target))
        sums["hit_rate"] += float(hits > 0)
    n = len(top_items)
    return {f"{name}@{k}": total / n for name, total in sums.items()}


# ---------------------------------------------------------------------------- alternating least squares


def als_rows(
    fixed,
    rows,
    cols,
    weights,
    targets,
    num_rows: int,
    row_reg,
    col_reg,
    prior,
    *,
    solver: str = "cholesky",
    x0=None,
    cg_steps: int = 3,
    extra=None,
    rounding: np.random.Generator | None = None,
) -> np.ndarray:
    """One row at a time, the rows of an ALS half-sweep (`cfcore.maths.als.row_solve`).

    Row `r` solves `A_r x = b_r` with `A_r = Σ_{k: rows_k = r} w_k f_k f_kᵀ + ρ_r·diag(c) + P`
    and `b_r = Σ_{k: rows_k = r} w_k y_k f_k` (`f_k = fixed[cols_k]`), plus `extra[r]` when given
    (`[num_rows, d]`, Cholesky only): exactly with `np.linalg.solve` ("cholesky"), or by
    `cg_steps` steps of textbook conjugate gradient from `x0[r]` ("cg").

    With `rounding`, every operation's result is perturbed as float32 rounding would perturb it
    (`float32_rounding`): the same computation in Monte Carlo arithmetic, whose spread over a
    few draws measures how far a float32 run may land from the exact rows (`rounding_spread`).

    Returns:
        float64 `[num_rows, d]`.
    """
    F = _f64(fixed)
    rows, cols = np.asarray(rows), np.asarray(cols)
    w, y = _f64(weights), _f64(targets)
    row_reg = np.broadcast_to(_f64(row_reg), (num_rows,))
    c, P = _f64(col_reg), _f64(prior)
    d = F.shape[1]

    def fl(x: Any, terms: int = 1) -> Any:
        return float32_rounding(x, rounding, terms)

    # The prior is a Gramian of the whole fixed table: a sum of len(F) products.
    F, y, P = fl(F), fl(y), fl(P, len(F))
    out = np.zeros((num_rows, d))
    for r in range(num_rows):
        sel = rows == r
        f, wr = F[cols[sel]], w[sel]
        count = int(np.count_nonzero(sel))
        a = fl(fl(f * wr[:, None]).T @ f + row_reg[r] * np.diag(c), count + 1) + P
        b = fl(f.T @ fl(wr * y[sel]), count)
        if extra is not None:
            b = fl(b + _f64(extra)[r])
        if solver == "cholesky":
            # A backward-stable solve: the exact solution of a system perturbed by O(d) roundings.
            out[r] = fl(np.linalg.solve(fl(a, 3 * d), b), d)
            continue
        x = _f64(x0)[r].copy()
        res = fl(b - fl(a @ x, d))
        p = res.copy()
        rs = fl(res @ res, d)
        for _ in range(cg_steps):
            ap = fl(a @ p, d)
            pap = fl(p @ ap, d)
            alpha = fl(rs / pap) if pap > 0 else 0.0
            x = fl(x + fl(alpha * p))
            res = fl(res - fl(alpha * ap))
            rs_new = fl(res @ res, d)
            beta = fl(rs_new / rs) if rs > 0 else 0.0
            p = fl(res + fl(beta * p))
            rs = rs_new
        out[r] = x
    return out


FLOAT32_UNIT_ROUNDOFF = 2.0**-24


def float32_rounding(x: Any, rng: np.random.Generator | None, terms: int = 1) -> Any:
    """`x` as one float32 operation's rounding may leave it (Monte Carlo arithmetic), or `x`
    itself without `rng`.

    Each entry is scaled by `1 + δ`, `δ` uniform in `±u·√terms` with `u` = 2⁻²⁴: one rounding
    for `terms` = 1, and for a sum of `terms` products the probabilistic bound of Higham and
    Mary (2019), whose error grows as √terms (not the worst case's `terms`) with high
    probability, whatever order a CPU's kernel sums in.
    """
    if rng is None:
        return x
    arr = np.asarray(x, dtype=np.float64)
    delta = rng.uniform(-1.0, 1.0, arr.shape) * (FLOAT32_UNIT_ROUNDOFF * np.sqrt(terms))
    return arr * (1.0 + delta)


def wals_sweep(
    spec, params: dict[str, Any], users, items, ratings, rounding=None
) -> dict[str, np.ndarray]:
    """One WALS sweep (`cfcore.WALSSpec`): every user row, then every item row, float64.

    User rows: `(V_Sᵀ V_S + (λr·|Ω|/N)·I + (λg·|Ω|/(N·M))·VᵀV) u = V_Sᵀ r_S`; items likewise.
    `rounding`: see `als_rows`.
    """
    U, V = _f64(params["user"]), _f64(params["item"])
    users, items, r = np.asarray(users), np.asarray(items), _f64(ratings)
    n, m, count = len(U), len(V), len(r)
    lr, grav = spec.regularization_coeff, spec.gravity_coeff * count / (n * m)
    solver, steps = spec.linear_solver, spec.cg_steps
    ones, c = np.ones(count), np.ones(U.shape[1])
    U = als_rows(V, users, items, ones, r, n, lr * count / n, c, grav * V.T @ V,
                 solver=solver, x0=U, cg_steps=steps, rounding=rounding)  # fmt: skip
    V = als_rows(U, items, users, ones, r, m, lr * count / m, c, grav * U.T @ U,
                 solver=solver, x0=V, cg_steps=steps, rounding=rounding)  # fmt: skip
    return {"user": U, "item": V}


def ials_objective(spec, params: dict[str, Any], users, items, counts) -> dict[str, float]:
    """The iALS objective of `cfcore.IALSSpec` by its definition (all-pairs sum over `U·Vᵀ`)."""
    U, V = _f64(params["user"]), _f64(params["item"])
    users, items = np.asarray(users), np.asarray(items)
    n, m = len(U), len(V)
    conf = 1.0 + spec.confidence * _f64(counts)
    pred = np.einsum("kd,kd->k", U[users], V[items])
    observed = float(np.sum(conf * (pred - 1.0) ** 2))
    unobserved = float(spec.unobserved_weight * np.sum((U @ V.T) ** 2))
    ru = spec.row_regularization(np.bincount(users, minlength=n), m)
    ri = spec.row_regularization(np.bincount(items, minlength=m), n)
    reg = float(np.sum(ru[:, None] * U**2) + np.sum(ri[:, None] * V**2))
    total = observed + unobserved + reg
    return {"observed": observed, "unobserved": unobserved, "regularization": reg, "total": total}


def ials_sweep(
    spec, params: dict[str, Any], users, items, counts, rounding=None
) -> dict[str, np.ndarray]:
    """One iALS sweep (`cfcore.IALSSpec`), float64: user rows
    `(Σ_S c h hᵀ + α₀·HᵀH + λ(|S_u| + α₀·M)^ν·I) w = Σ_S c h`, then item rows
    (`rounding`: see `als_rows`)."""
    U, V = _f64(params["user"]), _f64(params["item"])
    users, items = np.asarray(users), np.asarray(items)
    n, m = len(U), len(V)
    conf = 1.0 + spec.confidence * _f64(counts)
    ones, c, a0 = np.ones(len(conf)), np.ones(U.shape[1]), spec.unobserved_weight
    ru = spec.row_regularization(np.bincount(users, minlength=n), m)
    ri = spec.row_regularization(np.bincount(items, minlength=m), n)
    solver, steps = spec.linear_solver, spec.cg_steps
    U = als_rows(V, users, items, conf, ones, n, ru, c, a0 * V.T @ V,
                 solver=solver, x0=U, cg_steps=steps, rounding=rounding)  # fmt: skip
    V = als_rows(U, items, users, conf, ones, m, ri, c, a0 * U.T @ U,
                 solver=solver, x0=V, cg_steps=steps, rounding=rounding)  # fmt: skip
    return {"user": U, "item": V}


def biased_mf_objective(
    spec, params: dict[str, Any], users, items, ratings, mean: float
) -> dict[str, float]:
    """The parts of `cfcore.BiasedMFSpec`'s objective, float64."""
    U, V = _f64(params["user"]), _f64(params["item"])
    bu, bi = _f64(params["user_bias"]), _f64(params["item_bias"])
    users, items = np.asarray(users), np.asarray(items)
    n, m = len(U), len(V)
    pred = mean + bu[users] + bi[items] + np.einsum("kd,kd->k", U[users], V[items])
    observed = float(np.mean((_f64(ratings) - pred) ** 2))
    terms = {
        "observed": observed,
        "regularization": spec.regularization_coeff * (np.sum(U**2) / n + np.sum(V**2) / m),
        "bias_regularization": spec.bias_regularization_coeff
        * (np.sum(bu**2) / n + np.sum(bi**2) / m),
        "gravity": spec.gravity_coeff * float(np.mean((U @ V.T) ** 2)),
    }
    terms["total"] = sum(terms.values())
    return {k: float(v) for k, v in terms.items()}


def biased_als_sweep(
    spec, params: dict[str, Any], users, items, ratings, mean: float, noise=None, rounding=None
) -> dict[str, np.ndarray]:
    """One biased ALS sweep (`cfcore.BiasedMF`, `solver="als"`), float64.

    User rows `[u, b_u]` regressed on `[v, 1]` with targets `r − μ − b_i`, column
    regularization `(λ, …, λ, λb)·|Ω|/N` and the prior `λg·|Ω|/(N·M)·VᵀV` on the embedding
    block; then item rows likewise.

    With `noise`, one Gibbs sweep of `BiasedMF.sample_posterior` given its noise (exact solves):
    user row r solves `A_r x = Σ_k (y_k + ε_k) f_k + e_r`, `ε` = `noise["user_obs"]` (`[n]`, one
    per rating) and `e` = `noise["extra_user"]` (`[N, d + 1]`); then the item rows with
    `noise["item_obs"]` and `noise["extra_item"]`. `rounding`: see `als_rows`.
    """
    U, V = _f64(params["user"]), _f64(params["item"])
    bu, bi = _f64(params["user_bias"]), _f64(params["item_bias"])
    users, items, r = np.asarray(users), np.asarray(items), _f64(ratings) - mean
    n, m, count = len(U), len(V), len(r)
    d = U.shape[1]
    c = np.full(d + 1, spec.regularization_coeff)
    c[-1] = spec.bias_regularization_coeff
    grav = spec.gravity_coeff * count / (n * m)
    solver, steps = spec.linear_solver, spec.cg_steps

    def half(table, bias, fixed, other_bias, rows, cols, size, side):
        aug = np.concatenate([fixed, np.ones((len(fixed), 1))], 1)
        prior = np.zeros((d + 1, d + 1))
        prior[:d, :d] = grav * fixed.T @ fixed
        x0 = np.concatenate([table, bias[:, None]], 1)
        targets, extra = float32_rounding(r - other_bias[cols], rounding), None
        if noise is not None:
            targets, extra = targets + _f64(noise[f"{side}_obs"]), noise[f"extra_{side}"]
        out = als_rows(aug, rows, cols, np.ones(count), targets, size, count / size, c, prior,
                       solver=solver, x0=x0, cg_steps=steps, extra=extra,
                       rounding=rounding)  # fmt: skip
        return out[:, :d], out[:, d]

    U, bu = half(U, bu, V, bi, users, items, n, "user")
    V, bi = half(V, bi, U, bu, items, users, m, "item")
    return {"user": U, "item": V, "user_bias": bu, "item_bias": bi}
