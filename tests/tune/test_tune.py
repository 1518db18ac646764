"""`cfcore.tune`: searches, budgets, early stopping, the validation split and the result's files."""

from __future__ import annotations

import itertools
import math
import sys

import numpy as np
import pandas as pd
import pytest

import cfcore
from cfcore.tuning import EarlyStopping, TuneResult, read_best
from cfcore.viz import read_page

from ..conftest import require_backend

DIM = 4  # one shape everywhere: a point of the same shapes compiles nothing


@pytest.fixture(scope="module")
def split() -> tuple[cfcore.Ratings, cfcore.Ratings]:
    ratings = cfcore.synthetic_ratings(
        120, 200, 3000, seed=0, distinct=True, user_activity_sigma=0.6
    )
    return ratings.split(holdout_fraction=0.2, seed=0)


def wals(space, train, **kw) -> TuneResult:
    space = {"embedding_dim": DIM, **space}
    return cfcore.tune(cfcore.WALS, space, train, steps=2, backend="jax", **kw)


def test_grid_runs_every_point_in_order(split):
    train, _ = split
    regs, gravities = [0.05, 0.5, 5.0], [0.0, 1.0]
    result = wals({"regularization_coeff": regs, "gravity_coeff": gravities}, train)
    got = list(
        zip(result.table["regularization_coeff"], result.table["gravity_coeff"], strict=True)
    )
    assert got == list(itertools.product(regs, gravities))
    assert (result.table["status"] == "ok").all() and (result.table["steps"] == 2).all()
    # Different coefficients give different validation errors: each point really trained.
    assert result.table["rmse"].nunique() == len(got)


def test_best_is_the_tables_argmin_and_argmax(split):
    train, _ = split
    result = wals({"regularization_coeff": [0.01, 0.3, 3.0, 30.0]}, train)
    i = int(np.argmin(result.table["rmse"].to_numpy()))
    assert result.best == {
        "regularization_coeff": result.table["regularization_coeff"][i],
        "embedding_dim": DIM,
    }
    assert result.best_metric == result.table["rmse"][i]
    ials = cfcore.tune(cfcore.IALS, {"embedding_dim": DIM, "regularization_coeff": [1e-3, 1.0, 30.0]},
                       train, steps=2, backend="jax", metric="ndcg@10")  # fmt: skip
    assert ials.higher_is_better
    j = int(np.argmax(ials.table["ndcg@10"].to_numpy()))
    assert ials.best["regularization_coeff"] == ials.table["regularization_coeff"][j]
    assert ials.best_metric == pytest.approx(ials.table["ndcg@10"].max())


def test_random_search_is_reproducible_by_seed(split):
    train, _ = split
    space = {
        "regularization_coeff": cfcore.tune.loguniform(1e-3, 10.0),
        "gravity_coeff": [0.0, 1.0],
    }
    a = wals(space, train, search="random", trials=3, seed=1)
    b = wals(space, train, search="random", trials=3, seed=1)
    c = wals(space, train, search="random", trials=3, seed=2)
    cols = ["regularization_coeff", "gravity_coeff", "rmse"]
    pd.testing.assert_frame_equal(a.table[cols], b.table[cols])
    assert not np.allclose(a.table["regularization_coeff"], c.table["regularization_coeff"])
    assert a.table["regularization_coeff"].between(1e-3, 10.0).all()


def test_tpe_search_is_reproducible_by_seed(split):
    if not _ci():  # CI installs the tune extra: there the test must run
        pytest.importorskip("optuna")
    train, _ = split
    space = {"regularization_coeff": cfcore.tune.loguniform(1e-3, 10.0),
             "embedding_dim": cfcore.tune.intrange(DIM, DIM)}  # fmt: skip
    a = wals(space, train, search="tpe", trials=3, seed=5)
    b = wals(space, train, search="tpe", trials=3, seed=5)
    assert len(a.table) == 3
    pd.testing.assert_frame_equal(
        a.table[["regularization_coeff", "rmse"]], b.table[["regularization_coeff", "rmse"]]
    )


def _ci() -> bool:
    import os

    return bool(os.environ.get("CI") or os.environ.get("CFCORE_REQUIRE_BACKENDS"))


def test_tpe_without_optuna_names_the_extra(split, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    with pytest.raises(cfcore.MissingDependencyError, match=r"cfcore\[tune\]"):
        wals({"regularization_coeff": [0.1]}, split[0], search="tpe", trials=1)


def test_budget_in_fits(split):
    train, _ = split
    grid = wals({"regularization_coeff": [0.1, 0.2, 0.4]}, train, budget_fits=2)
    assert list(grid.table["regularization_coeff"]) == [0.1, 0.2]
    space = {"regularization_coeff": cfcore.tune.uniform(0.1, 1.0)}
    assert len(wals(space, train, search="random", trials=9, budget_fits=4).table) == 4
    assert len(wals(space, train, search="random", budget_fits=3).table) == 3


def test_budget_in_seconds_starts_no_point_after_it(split):
    train, _ = split
    budget = 0.5
    space = {"regularization_coeff": cfcore.tune.uniform(0.1, 1.0)}
    result = wals(
        space, train, search="random", budget_seconds=budget
    )  # no trials: the budget ends it
    seconds = result.table["seconds"].to_numpy()
    assert len(seconds) >= 1
    # Every point but the last started before the budget ran out.
    assert seconds[:-1].sum() < budget


def test_early_stopping_stops_a_point_that_stopped_improving(split):
    train, _ = split
    # Plain MF with no penalty and a large Adam step overfits the small training part at once.
    stop = EarlyStopping(every=10, patience=2)
    result = cfcore.tune(cfcore.MatrixFactorization, {"embedding_dim": [16], "init_stddev": [0.5]}, train,
                         steps=400, optimizer="adam", learning_rate=0.05, early_stopping=stop,
                         backend="jax")  # fmt: skip
    row = result.table.iloc[0]
    assert row["status"] == "stopped early"
    assert row["steps"] < 400
    assert row["steps"] == row["best_step"] + stop.every * stop.patience
    # Without it, the point runs every step and ends worse than its best evaluation.
    full = cfcore.tune(cfcore.MatrixFactorization, {"embedding_dim": [16], "init_stddev": [0.5]}, train,
                       steps=400, optimizer="adam", learning_rate=0.05, backend="jax")  # fmt: skip
    assert full.table["steps"].iloc[0] == 400
    assert full.best_metric > result.best_metric


def test_a_diverging_point_is_recorded_and_the_search_goes_on(split):
    train, _ = split
    result = cfcore.tune(cfcore.MatrixFactorization, {"embedding_dim": DIM, "learning_rate": [1e6, 1.0]},
                         train, steps=20, optimizer="sgd", backend="jax")  # fmt: skip
    assert list(result.table["status"]) == ["diverged", "ok"]
    assert math.isnan(result.table["rmse"].iloc[0])
    assert result.best["learning_rate"] == 1.0


class Spy(cfcore.BiasedMF):
    """Records every (user, item) pair this model is fit on or evaluated on."""

    seen: list[np.ndarray] = []

    def fit(self, train, **kw):
        Spy.seen.append(_pairs(train))
        return super().fit(train, **kw)

    def evaluate(self, ratings):
        Spy.seen.append(_pairs(ratings))
        return super().evaluate(ratings)


def _pairs(r: cfcore.Ratings) -> np.ndarray:
    return r.users.astype(np.int64) * r.num_items + r.items


def test_the_test_split_is_never_touched(split):
    train, test = split
    Spy.seen.clear()
    result = cfcore.tune(Spy, {"embedding_dim": DIM, "regularization_coeff": [0.1, 1.0]}, train,
                         steps=2, backend="jax")  # fmt: skip
    assert len(result.table) == 2 and len(Spy.seen) == 4  # a fit and an evaluation per point
    seen = np.concatenate(Spy.seen)
    assert not np.isin(_pairs(test), seen).any()
    assert np.isin(seen, _pairs(train)).all()  # fit and validation both inside the training part
    fits, evals = np.concatenate(Spy.seen[0::2]), np.concatenate(Spy.seen[1::2])
    assert not np.isin(evals, fits).any()  # validation ratings are held out of every fit


def test_csv_and_json_round_trip(split, tmp_path):
    train, _ = split
    result = cfcore.tune(cfcore.BiasedMF, {"embedding_dim": DIM, "regularization_coeff": [0.1, 1.0]}, train,
                         steps=20, optimizer="adam", learning_rate=0.05, backend="jax")  # fmt: skip
    back = pd.read_csv(result.to_csv(tmp_path / "tune.csv"))
    pd.testing.assert_frame_equal(back, result.table)
    doc = read_best(result.save_best(tmp_path / "best.json"))
    assert doc["model"] == "biased" and doc["metric"] == "rmse"
    assert doc["settings"] == {
        **result.best,
        "optimizer": "adam",
        "learning_rate": 0.05,
        "steps": result.best_steps,
    }
    assert doc["value"] == result.best_metric


def test_report_draws_the_metric_against_each_hyper_parameter(split, tmp_path):
    train, _ = split
    result = wals({"regularization_coeff": [0.1, 10.0], "gravity_coeff": [0.0, 1.0]}, train)
    ((heading, spec),) = read_page(result.report(tmp_path / "report.html"))
    assert "rmse" in heading
    titles = [p["title"] for p in spec["hconcat"]]
    assert titles == [
        f"rmse against {c}"
        for c in ("trial", "embedding_dim", "regularization_coeff", "gravity_coeff")
    ]


@pytest.mark.parametrize(
    ("model", "space", "kw", "match"),
    [
        ("WALS", {"learning_rate": [0.1]}, {}, "no hyper-parameter 'learning_rate'"),
        ("WALS", {"regularization_coef": [0.1]}, {}, "'regularization_coef'"),
        ("WALS", {"regularization_coeff": []}, {}, "regularization_coeff.*at least one value"),
        ("WALS", {"regularization_coeff": [0.1, -2.0]}, {}, "-2"),
        (
            "WALS",
            {"regularization_coeff": cfcore.tune.uniform(0.1, 1.0)},
            {},
            "regularization_coeff.*continuous",
        ),
        ("WALS", {"regularization_coeff": {"low": 1}}, {}, "regularization_coeff"),
        ("WALS", {}, {"metric": "ndcg@10"}, "'ndcg@10'"),
        ("IALS", {}, {"metric": "rmse"}, "'rmse'"),
        ("WALS", {}, {"search": "bayes"}, "'bayes'"),
        ("WALS", {}, {"search": "grid", "trials": 3}, "trials=3"),
        ("WALS", {}, {"validation": 1.5}, "1.5"),
        ("nope", {}, {}, "'nope'"),
        ("MF", {"learning_rate": [0.1, -1.0]}, {}, "-1"),
        ("SoftmaxModel", {}, {}, "users' features"),
        ("WALS", {}, {"fit_options": {"steps": 3}}, "'steps'"),
        ("MF", {}, {"fit_options": {"batch_sise": 3}}, "'batch_sise'"),
    ],
)
def test_bad_spaces_and_settings_are_refused_naming_the_value(split, model, space, kw, match):
    with pytest.raises(cfcore.CfcoreError, match=match):
        cfcore.tune(getattr(cfcore, model, model), space, split[0], steps=2, **kw)


def test_bad_distributions_are_refused():
    for make, match in ((lambda: cfcore.tune.loguniform(0, 1), "0 < low"),
                        (lambda: cfcore.tune.uniform(2, 1), "low < high"),
                        (lambda: cfcore.tune.intrange(3, 1), "low <= high"),
                        (lambda: cfcore.tune.uniform("a", 1), "'a'")):  # fmt: skip  # pyright: ignore[reportArgumentType]
        with pytest.raises(cfcore.CfcoreError, match=match):
            make()


def test_another_backend_finds_the_same_grid(split):
    require_backend("torch")
    train, _ = split
    space = {"regularization_coeff": [0.1, 3.0]}
    jax, torch = (
        wals(space, train),
        cfcore.tune(cfcore.WALS, {"embedding_dim": DIM, **space}, train, steps=2, backend="torch"),
    )
    np.testing.assert_allclose(torch.table["rmse"], jax.table["rmse"], rtol=1e-4)


@pytest.mark.parametrize("model", [cfcore.WALS, cfcore.BiasedMF])
def test_a_second_point_of_the_same_shapes_compiles_nothing(split, model):
    import jax

    train, _ = split
    compiles: list[int] = [0]

    def listen(event: str, duration: float, **kwargs) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compiles[-1] += 1

    per_point: list[int] = []

    def done(_result) -> None:
        per_point.append(compiles[-1])
        compiles.append(0)

    # A dimension no other test uses: the first point compiles whatever the test order.
    space = {"embedding_dim": 5, "regularization_coeff": [0.05, 0.5, 5.0]}
    plan = cfcore.tuning.plan_search(model, space, steps=2, backend="jax")
    jax.monitoring.register_event_duration_secs_listener(listen)  # pyright: ignore[reportArgumentType]
    try:
        plan.run(train, on_result=done)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)  # pyright: ignore[reportArgumentType]
    assert per_point[0] > 0, "the counter must see the first point compile"
    assert per_point[1:] == [0, 0]


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_points_trained_together_score_as_alone(split, backend):
    """`batch`: the same table (values, steps, statuses) as one point at a time, with points
    stopping early, diverging and running to the end in one batch."""
    require_backend(backend)
    train, _ = split
    space = {"embedding_dim": 16, "init_stddev": 0.5, "learning_rate": [1e6, 15.0, 5.0, 1.0]}
    kw = dict(steps=100, optimizer="sgd", early_stopping=EarlyStopping(every=10, patience=2),
              backend=backend)  # fmt: skip
    alone = cfcore.tune(cfcore.MatrixFactorization, space, train, **kw)
    together = cfcore.tune(cfcore.MatrixFactorization, space, train, batch=4, **kw)
    statuses = list(alone.table["status"])
    assert statuses[0] == "diverged" and "stopped early" in statuses and "ok" in statuses
    assert list(together.table["status"]) == statuses
    for col in ("steps", "best_step"):
        assert list(together.table[col]) == list(alone.table[col])
    np.testing.assert_allclose(together.table["rmse"], alone.table["rmse"], rtol=1e-5)
