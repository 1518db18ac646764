"""Every model's objective, written once on the backend's operations (`cfcore.backend.protocol`).

These functions take a backend `be` and native arrays; they run eagerly, or traced inside
`be.compile` / `be.value_and_grad` / `be.compile_loop`. The float64 oracle of each formula is in
`cfcore.reference`, with hand-derived gradients.
"""

from __future__ import annotations

from typing import Any

from ..backend.capabilities import raw_ops
from ..specs import BiasedMFSpec, IALSSpec, MFSpec, SoftmaxSpec

Params = dict[str, Any]


def sparse_mse(
    be: Any,
    user_emb: Any,
    item_emb: Any,
    users: Any,
    items: Any,
    ratings: Any,
    method: str = "gather",
    layout: Any = None,
) -> Any:
    """`(1/n) Σ_k (r_k − ⟨U[users[k]], V[items[k]]⟩)²`: float32 scalar.

    Args:
        be: the backend.
        user_emb: `[N, d]`.
        item_emb: `[M, d]`.
        users, items: int32 `[n]`.
        ratings: float32 `[n]`.
        method: "gather" or "dense" (see `Backend.pair_dot`).
        layout: the backend's `pair_layout` of these pairs, or None.
    """
    xp = be.xp
    if layout is not None and method == "gather":
        pred = raw_ops(be).pair_dot(user_emb, item_emb, users, items, method=method, layout=layout)
    else:
        # Backends without a layout are never passed the argument (see `Backend.pair_dot`).
        pred = raw_ops(be).pair_dot(user_emb, item_emb, users, items, method=method)
    return xp.mean(xp.square(pred - ratings))


def softplus(xp: Any, x: Any) -> Any:
    """`log(1 + exp(x))` element-wise, without overflow: `max(x, 0) + log(1 + exp(−|x|))`.

    Built from the `ArrayNamespace` functions every backend has (so a backend needs no
    `log1p`/`softplus` of its own); its gradient is the logistic sigmoid on each side of 0, and
    at 0 it is ½ on every backend. `softplus(−x)` is `−log σ(x)`, the logistic loss.
    """
    return xp.maximum(x, 0.0) + xp.log(1.0 + xp.exp(-xp.maximum(x, -x)))


def l2_penalty(be: Any, user_emb: Any, item_emb: Any) -> Any:
    """`ΣU²/N + ΣV²/M`: float32 scalar."""
    xp = be.xp
    # Row counts from the static shapes (every backend compiles per shape): exact, in double.
    n, m = float(user_emb.shape[0]), float(item_emb.shape[0])
    return xp.sum(xp.square(user_emb)) / n + xp.sum(xp.square(item_emb)) / m


def gravity(be: Any, user_emb: Any, item_emb: Any) -> Any:
    """`(1/(N·M)) Σ_ij ⟨U_i, V_j⟩²` through the `[d, d]` Gramians: float32 scalar.

    Σ_ij ⟨U_i, V_j⟩² = Σ (UᵀU) ∘ (VᵀV), so the `N × M` matrix is never formed. N·M is formed in
    floating point: at ML-20M shape it overflows int32.
    """
    scale = 1.0 / (float(user_emb.shape[0]) * float(item_emb.shape[0]))
    return be.xp.sum(raw_ops(be).gramian(user_emb) * raw_ops(be).gramian(item_emb)) * scale


def mf_loss_terms(be: Any, spec: MFSpec, params: Params, batch: dict[str, Any]) -> dict[str, Any]:
    """The parts of `spec`'s objective on `batch`.

    Args:
        be: the backend.
        spec: the model.
        params: `{"user": [N, d], "item": [M, d]}`.
        batch: `{"users": int32 [n], "items": int32 [n], "values": float32 [n]}`, and optionally
            `"layout"`, the backend's `pair_layout` of these pairs (`device_batch(...,
            pair_layout=True)`).

    Returns:
        `{"observed", "total"}`, plus `"regularization"` and `"gravity"` (already multiplied by
        their coefficients) for a regularized spec; float32 scalars.
    """
    u, v = params["user"], params["item"]
    observed = sparse_mse(
        be, u, v, batch["users"], batch["items"], batch["values"], spec.mse, batch.get("layout")
    )
    terms = {"observed": observed}
    total = observed
    if spec.regularized:
        terms["regularization"] = spec.regularization_coeff * l2_penalty(be, u, v)
        terms["gravity"] = spec.gravity_coeff * gravity(be, u, v)
        total = total + terms["regularization"] + terms["gravity"]
    terms["total"] = total
    return terms


def mf_loss(be: Any, spec: MFSpec) -> Any:
    """`loss(params, batch) -> (total, parts)` of `spec`, as the trainer takes it."""

    def loss(params: Params, batch: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        terms = mf_loss_terms(be, spec, params, batch)
        return terms["total"], terms

    return loss


def biased_predictions(be: Any, params: Params, users: Any, items: Any, layout: Any = None) -> Any:
    """`b_u + b_i + ⟨u, v⟩` per pair (without μ): float32 `[n]`.

    The biases ride along as augmented columns, `⟨[u, b_u, 1], [v, 1, b_i]⟩`, through the one
    fused pair kernel: their gradients come out of its backward pass with the embeddings' (dense
    rows of the augmented tables), never from a separate scatter into a one-wide bias table.
    `layout`: the backend's `pair_layout` of these pairs, or None.
    """
    xp = be.xp
    u, v = params["user"], params["item"]
    bu = xp.reshape(params["user_bias"], (-1, 1))
    bi = xp.reshape(params["item_bias"], (-1, 1))
    user_aug = xp.concat([u, bu, xp.full_like(bu, 1.0)], axis=1)
    item_aug = xp.concat([v, xp.full_like(bi, 1.0), bi], axis=1)
    if layout is not None:
        # Backends without a layout are never passed the argument (see `Backend.pair_dot`).
        return raw_ops(be).pair_dot(user_aug, item_aug, users, items, layout=layout)
    return raw_ops(be).pair_dot(user_aug, item_aug, users, items)


def biased_mf_loss_terms(
    be: Any, spec: BiasedMFSpec, params: Params, batch: dict[str, Any]
) -> dict[str, Any]:
    """The parts of `spec`'s objective on `batch`, whose values are centred (`r − μ`).

    Args:
        be: the backend.
        spec: the model.
        params: `{"user": [N, d], "item": [M, d], "user_bias": [N], "item_bias": [M]}`.
        batch: `{"users", "items", "values"}`, values `r − μ`.

    Returns:
        `{"observed", "regularization", "bias_regularization", "gravity", "total"}` (the
        penalties already multiplied by their coefficients); float32 scalars.
    """
    xp = be.xp
    pred = biased_predictions(be, params, batch["users"], batch["items"], batch.get("layout"))
    observed = xp.mean(xp.square(batch["values"] - pred))
    u, v = params["user"], params["item"]
    bu, bi = params["user_bias"], params["item_bias"]
    n, m = float(u.shape[0]), float(v.shape[0])
    terms = {
        "observed": observed,
        "regularization": spec.regularization_coeff * l2_penalty(be, u, v),
        "bias_regularization": spec.bias_regularization_coeff
        * (xp.sum(xp.square(bu)) / n + xp.sum(xp.square(bi)) / m),
        "gravity": spec.gravity_coeff * gravity(be, u, v),
    }
    terms["total"] = (
        observed + terms["regularization"] + terms["bias_regularization"] + terms["gravity"]
    )
    return terms


def biased_mf_loss(be: Any, spec: BiasedMFSpec) -> Any:
    """`loss(params, batch) -> (total, parts)` of a `BiasedMFSpec`, as the trainer takes it."""

    def loss(params: Params, batch: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        terms = biased_mf_loss_terms(be, spec, params, batch)
        return terms["total"], terms

    return loss


def ials_loss_terms(
    be: Any, spec: IALSSpec, params: Params, data: dict[str, Any]
) -> dict[str, Any]:
    """The parts of the iALS objective (`IALSSpec`), sums as written there (not means).

    Args:
        be: the backend.
        spec: the model.
        params: `{"user": [N, d], "item": [M, d]}`.
        data: `{"users", "items", "values"}` (the positives, values their counts), and
            `"user_reg"` `[N]`, `"item_reg"` `[M]`: each row's λ·(|S_r| + α₀·other)^ν.

    Returns:
        `{"observed", "unobserved", "regularization", "total"}`: float32 scalars.
    """
    xp = be.xp
    u, v = params["user"], params["item"]
    pred = raw_ops(be).pair_dot(u, v, data["users"], data["items"])
    conf = 1.0 + spec.confidence * data["values"]
    observed = xp.sum(conf * xp.square(pred - 1.0))
    unobserved = spec.unobserved_weight * xp.sum(raw_ops(be).gramian(u) * raw_ops(be).gramian(v))
    reg = xp.sum(xp.reshape(data["user_reg"], (-1, 1)) * xp.square(u)) + xp.sum(
        xp.reshape(data["item_reg"], (-1, 1)) * xp.square(v)
    )
    return {
        "observed": observed,
        "unobserved": unobserved,
        "regularization": reg,
        "total": observed + unobserved + reg,
    }


_ACTIVATIONS = {
    None: lambda xp, x: x,
    "relu": lambda xp, x: xp.maximum(x, 0.0),
    "tanh": lambda xp, x: xp.tanh(x),
}


def softmax_query_embeddings(
    be: Any, spec: SoftmaxSpec, params: Params, ids: dict[str, Any], weights: dict[str, Any]
) -> Any:
    """The softmax model's tower (see `SoftmaxSpec`): `[B, d]` query embeddings.

    Args:
        be: the backend.
        spec: the model.
        params: the feature tables and `hidden_i` matrices.
        ids: `{feature: int32 [B, L_f]}` (a feature may be missing: dense weights then).
        weights: `{feature: float32 [B, L_f]}` (or `[B, V_f]` without ids).
    """
    xp = be.xp
    bags = [
        raw_ops(be).bag_of_words(params[f], ids.get(f), weights[f], combiner=spec.combiner)
        for f in spec.feature_names
    ]
    x = xp.concat(bags, axis=-1) if len(bags) > 1 else bags[0]
    act = _ACTIVATIONS[spec.activation]
    for i in range(len(spec.hidden_dims)):
        x = act(xp, xp.matmul(x, spec.hidden_scale * params[f"hidden_{i}"]))
    return x


def softmax_loss(be: Any, spec: SoftmaxSpec) -> Any:
    """`loss(params, (batch, log_q)) -> (loss, {"loss": loss})` of `spec` on one batch."""

    def loss(params: Params, batch_and_log_q: tuple[dict[str, Any], Any]) -> tuple[Any, dict]:
        batch, log_q = batch_and_log_q
        query = softmax_query_embeddings(be, spec, params, batch["ids"], batch["weights"])
        items = params[spec.item_feature]
        if spec.loss == "sampled":
            value = raw_ops(be).sampled_softmax_loss(query, items, batch["labels"], log_q)
        else:
            value = raw_ops(be).softmax_cross_entropy(query, items, batch["labels"])
        return value, {"loss": value}

    return loss
