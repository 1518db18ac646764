"""The search space's vocabulary: grids, draws, the JSON form and the --grid option."""

from __future__ import annotations

import numpy as np
import pytest

import cfcore
from cfcore.tuning.space import (
    Choice,
    LogUniform,
    grid_points,
    normalize_space,
    parse_grid,
    random_point,
    space_from_json,
)


def test_a_grid_is_every_combination_last_name_fastest() -> None:
    points = grid_points({"a": [1, 2], "b": cfcore.tune.intrange(2, 11, 3), "c": "x"})
    assert points == [{"a": a, "b": b, "c": "x"} for a in (1, 2) for b in (2, 5, 8, 11)]


def test_draws_stay_inside_their_ranges() -> None:
    space = normalize_space({"lr": cfcore.tune.loguniform(1e-4, 1e-1),
                             "w": cfcore.tune.uniform(-1.0, 1.0),
                             "d": cfcore.tune.intrange(8, 64, 8), "s": ["a", "b"]})  # fmt: skip
    rng = np.random.default_rng(0)
    draws = [random_point(space, rng) for _ in range(300)]
    lr = np.array([p["lr"] for p in draws])
    assert lr.min() >= 1e-4 and lr.max() <= 1e-1
    # Log-uniform: about as many draws in each decade.
    per_decade = np.histogram(np.log10(lr), bins=[-4, -3, -2, -1])[0]
    assert per_decade.min() > 60, per_decade
    assert {p["d"] for p in draws} == set(range(8, 65, 8))
    assert {p["s"] for p in draws} == {"a", "b"}
    assert all(-1.0 <= p["w"] <= 1.0 for p in draws)
    assert all(type(p["d"]) is int and type(p["lr"]) is float for p in draws)


def test_the_json_form() -> None:
    space = space_from_json({"d": [16, 32], "lam": {"loguniform": [0.001, 0.1]},
                             "k": {"intrange": [1, 5, 2]}, "s": {"choice": ["cg", "cholesky"]},
                             "fixed": 3})  # fmt: skip
    dists = normalize_space(space)
    assert dists["d"] == Choice((16, 32)) and dists["lam"] == LogUniform(0.001, 0.1)
    assert dists["k"].grid("k") == [1, 3, 5] and dists["fixed"] == Choice((3,))
    for bad, match in (({"lam": {"normal": [0, 1]}}, "'lam'"),
                       ({"lam": {"loguniform": [1]}}, "'lam'.*low, high"),
                       ({"lam": {"uniform": 0.5}}, "'lam'.*takes a list"),
                       ([1, 2], "JSON object")):  # fmt: skip
        with pytest.raises(cfcore.CfcoreError, match=match):
            space_from_json(bad)


def test_the_grid_option() -> None:
    assert parse_grid("regularization_coeff=0.1, 1,2e-3") == (
        "regularization_coeff",
        [0.1, 1, 0.002],
    )
    assert parse_grid("solver=cg,cholesky") == ("solver", ["cg", "cholesky"])
    assert parse_grid("item_bias=true,false") == ("item_bias", [True, False])
    for bad in ("regularization_coeff", "=1", "d="):
        with pytest.raises(cfcore.CfcoreError, match="NAME=VALUE"):
            parse_grid(bad)
