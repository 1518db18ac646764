"""The pieces of a biased model that its ALS sweeps and its posterior sampler share: centred
ratings, the sweep's host row blocks, the columns' regularization (on the host, and as the
sweeps read it at run time) and the initial values.

(Apart from `cfcore.models.biased` so that `cfcore.models.posterior` builds on them without
importing the model class: the model imports the sampler, not the other way round.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.ratings import Ratings
from ..data.row_blocks import row_blocks
from ..init import init_mf_params
from ..maths.als import gravity_scale
from ..specs import BiasedMFSpec
from ..train.placement import Placement
from .base import Params


def centred(train: Ratings, mean: float) -> dict[str, np.ndarray]:
    """`{"users", "items", "values"}` with the values less the global mean μ (float32)."""
    return {
        "users": train.users,
        "items": train.items,
        "values": (train.values.astype(np.float64) - mean).astype(np.float32),
    }


def biased_blocks(
    spec: BiasedMFSpec, train: Ratings, mean: float, placement: Placement | None = None
) -> dict[str, Any]:
    """The host data of a biased ALS sweep: the centred ratings, their blocks per side (each
    device's own with a sharded `placement`) and `gravity_scale`, |Ω|/(N·M) (float32 scalar).

    The coefficients are not in it: the sweep reads them from the data's `hyper` entry
    (`cfcore.train.hyper`, what `fit` adds), else from `spec`. The rows' ρ (|Ω|/N, |Ω|/M) are
    data, so one compiled sweep serves any coefficients and any ratings of the same shapes."""
    n, m, count = train.num_users, train.num_items, len(train)
    ratings = centred(train, mean)
    ones = np.ones(count, np.float32)
    by_user, by_item = (placement or Placement(None)).side_blocks(
        row_blocks,
        (train.users, train.items, ratings["values"], ones, np.full(n, count / n)),
        (train.items, train.users, ratings["values"], ones, np.full(m, count / m)),
        dim=spec.embedding_dim + 1,
        solver=spec.linear_solver,
    )
    return {
        "ratings": ratings,
        "by_user": by_user,
        "by_item": by_item,
        "gravity_scale": gravity_scale(count, n, m),
    }


def column_regularization(spec: BiasedMFSpec) -> np.ndarray:
    """c of an augmented row `[u, b]`: λ on the embedding columns, λb on the bias (host)."""
    col = np.full(spec.embedding_dim + 1, spec.regularization_coeff, np.float32)
    col[-1] = spec.bias_regularization_coeff
    return col


def runtime_column_regularization(be: Any, spec: BiasedMFSpec, coeffs: Any) -> Any:
    """`column_regularization` from `coeffs` (`with_coefficients`: device scalars read at run
    time, or the spec's numbers), float32 `[d + 1]`: `λ·[1, ..., 1, 0] + λb·[0, ..., 0, 1]`,
    exactly λ and λb in float32 (a product by 1 and a sum with 0 round nothing)."""
    d1 = spec.embedding_dim + 1
    head = np.ones(d1, np.float32)
    head[-1] = 0.0
    return coeffs.regularization_coeff * be.asarray(head) + coeffs.bias_regularization_coeff * (
        be.asarray(1.0 - head)
    )


def init_biased_params(spec: BiasedMFSpec, n: int, m: int, seed: int) -> Params:
    """The embeddings as `init_mf_params` draws them; biases start at zero."""
    params = init_mf_params(spec, n, m, seed)
    params["user_bias"] = np.zeros(n, np.float32)
    params["item_bias"] = np.zeros(m, np.float32)
    return params
