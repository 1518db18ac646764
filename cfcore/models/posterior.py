"""Posterior sampling for `BiasedMF`: Gibbs sampling of biased ALS (Bayesian matrix factorization).

`BiasedMF`'s ALS minimises `|Ω|·L(θ)`, a sum of squares: observed squared errors plus ridge terms
λ·|Ω|/N·‖u‖², λb·|Ω|/N·b_u², ... (see `cfcore.models.biased.biased_halves`). Read as a likelihood
with Gaussian noise of precision α (ratings `r = μ + b_u + b_i + ⟨u, v⟩ + ε`, `ε ~ N(0, 1/α)`) and
Gaussian priors, the posterior is `p(θ | R) ∝ exp(−(α/2)·|Ω|·L(θ))`. With the items fixed, each
user row `x = [u, b_u]` is then Gaussian, of precision `α·A` and mean `A⁻¹ b`, where `A x = b` is
exactly the row's ALS system. A Gibbs sweep draws every user row from that conditional, then every
item row, as Salakhutdinov & Mnih's "Bayesian probabilistic matrix factorization using MCMC"
(2008) does with hyper-priors; here the priors are the model's own fixed coefficients, so the
sampler explores the posterior of the very objective that ALS and the gradient trainers minimise.

Each draw is a perturbed ALS solve ("perturb-and-MAP", Papandreou & Yuille 2010): if
`A = Σ_k f_k f_kᵀ + ρ·diag(c)` and each target `y_k` gets noise `ε_k ~ N(0, 1/α)` and the prior
mean 0 gets `m ~ N(0, (α·ρ·diag(c))⁻¹)`, the solution of the perturbed system
`A x = Σ_k (y_k + ε_k) f_k + ρ·c ⊙ m` is distributed as `N(A⁻¹ b, (α A)⁻¹)`. So the sampler is the
ALS half-sweep itself (`cfcore.maths.als.make_half_sweep`, Cholesky) on noisy targets with an extra
right-hand side: no new backend operation, the noise drawn on the host with NumPy's generator.

The predictions are averaged over the kept draws `s = 1..S`:
`μ + mean_s(b_u^s) + mean_s(b_i^s) + (1/S)·Σ_s ⟨u^s, v^s⟩`, which is exactly the prediction of
one `BiasedMF` whose embeddings are the draws side by side, scaled by `1/√S` (`[N, d·S]`). That is
the model `BiasedMF.sample_posterior` returns: it predicts, recommends, saves and loads as any
`BiasedMF`. This module knows the spec, the parameters and the ratings, not the model class: the
model checks its inputs, hands them to `sample_chain` and builds its result from the draws.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..backend.registry import get_backend
from ..data.ratings import Ratings
from ..errors import ArgumentValueError, NumericalError
from ..maths.als import augment, make_half_sweep, ones_column, split_last
from ..specs import BiasedMFSpec
from ..train.hyper import HYPER, hyper_values, spec_key, with_coefficients
from ..train.placement import Placement
from ..train.progress import between_chunks, progress_bar
from ..validate import check_float, check_int
from .base import Params
from .biased_parts import biased_blocks, column_regularization, runtime_column_regularization


def gibbs_halves(be: Any, spec: Any) -> tuple[Any, Any]:
    """The two halves of a Gibbs sweep of a biased model on one device,
    `half(params, data, noise) -> params`: users (items fixed), then items.

    `data` holds `biased_blocks`' `by_user` / `by_item` (device form), and the coefficients λ
    and λb in `hyper` (`cfcore.train.hyper`: read at run time; without it, `spec`'s); `noise`
    holds, per side,
    the targets' noise shaped as each bucket's `values` (`by_user`, `by_item`: lists of
    `[K, B, L]`) and the prior-mean term (`extra_user` `[N, d + 1]`, `extra_item` `[M, d + 1]`),
    as `draw_noise` draws them.
    """
    xp = be.xp
    half = make_half_sweep(be, solver="cholesky", cg_steps=1, offsets=True)
    d1 = spec.embedding_dim + 1

    def solve(params, data, noise, side, other, bias, other_bias, blocks):
        col = runtime_column_regularization(be, spec, with_coefficients(spec, data))
        fixed = augment(be, params[other], ones_column(be, params[other]))
        current = augment(be, params[side], params[bias])
        noisy = {
            **data[blocks],
            "buckets": [
                {**bucket, "values": bucket["values"] + eps}
                for bucket, eps in zip(data[blocks]["buckets"], noise[blocks], strict=True)
            ],
        }
        prior = be.asarray(np.zeros((d1, d1), np.float32))
        new = half(
            fixed, current, noisy, prior, params[other_bias], noise[f"extra_{side}"], col_reg=col
        )
        table, b = split_last(be, xp.astype(new, "float32"))
        return {**params, side: table, bias: b}

    def users(params: dict[str, Any], data: Any, noise: Any) -> dict[str, Any]:
        return solve(params, data, noise, "user", "item", "user_bias", "item_bias", "by_user")

    def items(params: dict[str, Any], data: Any, noise: Any) -> dict[str, Any]:
        return solve(params, data, noise, "item", "user", "item_bias", "user_bias", "by_item")

    return users, items


def gibbs_sweep(be: Any, spec: Any) -> Any:
    """`sweep(params, data, noise) -> params`: one Gibbs sweep (`gibbs_halves`, users then
    items) of a biased model on one device."""
    users, items = gibbs_halves(be, spec)

    def sweep(params: dict[str, Any], data: Any, noise: Any) -> dict[str, Any]:
        return items(users(params, data, noise), data, noise)

    return sweep


def draw_noise(
    rng: np.random.Generator,
    blocks: dict[str, Any],
    row_reg: dict[str, np.ndarray],
    spec: Any,
    precision: float,
) -> dict[str, Any]:
    """One sweep's noise (host, float32): `N(0, 1/α)` for every target slot of both sides'
    buckets (padding slots weigh 0, their noise is ignored) and `√(ρ_r·c/α)·z` for every row's
    prior-mean term, `ρ_r` the row's regularization and `c` the columns' (`column_regularization`)."""
    col = column_regularization(spec).astype(np.float64)
    scale = 1.0 / np.sqrt(precision)
    out: dict[str, Any] = {}
    for side, key in (("user", "by_user"), ("item", "by_item")):
        side_blocks = blocks[key]
        out[key] = [
            (scale * rng.standard_normal(b["values"].shape)).astype(np.float32)
            for b in side_blocks["buckets"]
        ]
        rho = row_reg[key]
        z = rng.standard_normal((len(rho), len(col)))
        out[f"extra_{side}"] = (np.sqrt(rho[:, None] * col[None, :] / precision) * z).astype(
            np.float32
        )
    return out


@dataclass(frozen=True)
class Chain:
    """A checked Gibbs chain's settings (`check_chain`): `spec` (the model's, with the Cholesky
    solver: draws need exact solves), `samples` S ≥ 1, `burn_in` ≥ 0, `thin` ≥ 1 and
    `noise_precision` α > 0 (see `BiasedMF.sample_posterior`)."""

    spec: BiasedMFSpec
    samples: int
    burn_in: int
    thin: int
    noise_precision: float


def check_chain(
    spec: BiasedMFSpec, samples: Any, burn_in: Any, thin: Any, noise_precision: Any
) -> Chain:
    """The chain's settings checked, for a model of `spec` (its gravity must be 0: the gravity
    prior's noise is not drawn)."""
    samples = check_int("samples", samples, minimum=1)
    burn_in = check_int("burn_in", burn_in, minimum=0)
    thin = check_int("thin", thin, minimum=1)
    noise_precision = check_float("noise_precision", noise_precision, exclusive_minimum=0)
    if spec.gravity_coeff != 0:
        raise ArgumentValueError(
            f"sample_posterior needs gravity_coeff=0, got {spec.gravity_coeff!r}: the gravity "
            "prior's noise would need a factor of the whole other table per row"
        )
    # Draws need exact solves: the Cholesky layout whatever the model's own ALS solver.
    exact = dataclasses.replace(spec, solver="cholesky")
    return Chain(exact, samples, burn_in, thin, noise_precision)


def sample_chain(
    chain: Chain,
    start: Params,
    mean: float,
    train: Ratings,
    test: Ratings | None,
    *,
    backend: Any,
    seed: int,
    progress: bool,
) -> tuple[Params, pd.DataFrame]:
    """Runs `chain` from the parameters `start` (host, `[N, d]` tables and biases) with global
    mean `mean`, on ratings already checked against them; one device.

    Returns:
        `(params, history)`: the kept draws averaged as one model's parameters (tables side by
        side scaled by `1/√S`, `[N, d·S]`; biases their means) and one history row per sweep
        (see `BiasedMF.sample_posterior`).

    Raises:
        NumericalError: a sweep drew non-finite parameters.
    """
    spec, samples, burn_in, thin = chain.spec, chain.samples, chain.burn_in, chain.thin
    noise_precision = chain.noise_precision
    n, m = train.num_users, train.num_items
    be = get_backend(backend)
    params = {k: np.asarray(v, np.float32) for k, v in start.items()}
    host = biased_blocks(spec, train, mean)
    # Every row's ρ_r, as `biased_blocks` sets it: |Ω|/N for users, |Ω|/M for items.
    row_reg = {"by_user": np.full(n, len(train) / n), "by_item": np.full(m, len(train) / m)}
    place = Placement(be)
    data = place.data({k: host[k] for k in ("by_user", "by_item")})
    # λ and λb read at run time: a chain of other coefficients on ratings of the same shapes
    # (another fold of a data set) reuses the compiled sweep.
    data[HYPER] = place.data(hyper_values(spec))
    sweep = be.compiled(("biased-gibbs", spec_key(spec)), lambda: gibbs_sweep(be, spec))
    state = place.params(params)
    rng = np.random.default_rng(seed)

    # Running sums of the kept draws' predictions (float64, host) for the history.
    pairs = {"train": train} if test is None else {"train": train, "test": test}
    sums = {k: np.zeros(len(r)) for k, r in pairs.items()}
    users: list[np.ndarray] = []
    items: list[np.ndarray] = []
    user_bias = np.zeros(n)
    item_bias = np.zeros(m)
    rows: list[dict[str, float]] = []
    began = time.perf_counter()
    total = burn_in + samples * thin
    with progress_bar(progress, "sampling") as bar:
        task = bar.add_task("", total=total) if bar is not None else None
        for step in range(1, total + 1):
            noise = place.data(draw_noise(rng, host, row_reg, spec, noise_precision))
            state = sweep(state, data, noise)
            draw = {k: np.asarray(be.to_numpy(v), np.float64) for k, v in state.items()}
            if not all(np.isfinite(v).all() for v in draw.values()):
                raise NumericalError(
                    f"Gibbs sweep {step} drew non-finite parameters: check the ratings and the "
                    f"model's parameters, or raise noise_precision (now {noise_precision!r})"
                )
            after = step - burn_in
            keep = after > 0 and after % thin == 0
            kept = max(0, after) // thin
            row: dict[str, float] = {"sweep": step, "kept": kept}
            for k, r in pairs.items():
                pred = (
                    mean
                    + draw["user_bias"][r.users]
                    + draw["item_bias"][r.items]
                    + np.einsum("nd,nd->n", draw["user"][r.users], draw["item"][r.items])
                )
                if keep:
                    sums[k] += pred
                if kept:
                    pred = sums[k] / kept
                row[f"{k}_mse"] = float(np.mean((pred - r.values) ** 2))
            if keep:
                users.append(draw["user"].astype(np.float32))
                items.append(draw["item"].astype(np.float32))
                user_bias += draw["user_bias"]
                item_bias += draw["item_bias"]
            row["seconds"] = time.perf_counter() - began
            rows.append(row)
            if bar is not None:
                text = "  ".join(f"{k}_mse={row[f'{k}_mse']:.4f}" for k in pairs)
                bar.update(task, advance=1, description=text)
            between_chunks("sampling", step, total)

    scale = np.float32(1.0 / np.sqrt(samples))
    averaged = {
        "user": np.concatenate(users, axis=1) * scale,
        "item": np.concatenate(items, axis=1) * scale,
        "user_bias": (user_bias / samples).astype(np.float32),
        "item_bias": (item_bias / samples).astype(np.float32),
    }
    return averaged, pd.DataFrame(rows)
