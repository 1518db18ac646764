"""`cfcore.tune`: grid, random and TPE search of a model family on a validation split."""

from __future__ import annotations

import inspect
import itertools
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..data.ratings import Ratings
from ..errors import ArgumentTypeError, ArgumentValueError, MissingDependencyError
from ..validate import check_float, check_int
from .result import RUN_COLUMNS, TuneResult
from .runner import (
    EarlyStopping,
    Family,
    Metric,
    PointResult,
    RunSettings,
    build_model,
    resolve_family,
    resolve_metric,
    run_points,
    validation_split,
)
from .space import Distribution, Point, corner_points, grid_points, normalize_space
from .space import random_point as draw_point

SEARCHES = ("grid", "random", "tpe")
DEFAULT_TRIALS = 20
"""Points of a random or TPE search given neither `trials` nor a budget."""
RANDOM_ROUND = 8
"""Points a random search hands to the runner at once (the budget is checked between points)."""
TPE_ROUND = 1
"""Points TPE asks for before it learns their metrics (1: each point informs the next)."""


def tune(
    model: Any,
    space: Mapping[str, Any],
    ratings: Ratings,
    *,
    search: str = "grid",
    trials: int | None = None,
    budget_fits: int | None = None,
    budget_seconds: float | None = None,
    metric: str | None = None,
    validation: float = 0.1,
    seed: int = 0,
    backend: Any = None,
    steps: int | None = None,
    optimizer: Any = None,
    learning_rate: float | None = None,
    early_stopping: EarlyStopping | None = None,
    threshold: float = 3.5,
    fit_options: Mapping[str, Any] | None = None,
    batch: int = 1,
) -> TuneResult:
    """Searches a model family's hyper-parameters on a validation split of the training ratings.

    The validation split is carved from `ratings` only (the test ratings are never passed in,
    so they cannot be touched): for a model of ratings (MF, RegularizedMF, BiasedMF, WALS) a
    seeded holdout of `validation` of the ratings; for a model of positives (IALS, BPR) the
    strong-generalization protocol of `cfcore.eval.implicit` on the training users: a share
    `validation` of them held out, folded in from part of their positives, scored on the rest.
    Each point is a new model built from its hyper-parameters, fit on the rest and scored; a
    point whose training diverges is recorded as "diverged" and the search goes on.

    Args:
        model: a model class (`cfcore.BiasedMF`, `cfcore.IALS`, ...) or its name ("biased",
            "BiasedMF").
        space: `{hyper-parameter: values}`: a list (or `choice`), `uniform`, `loguniform`,
            `intrange` or one fixed value (`cfcore.tuning.space`). Hyper-parameters are the
            constructor's arguments, plus `learning_rate` and `optimizer` ("sgd", "adagrad",
            "adam") for a model trained by gradient steps.
        ratings: the training ratings (a `cfcore.Ratings`; explicit ratings, also for IALS and
            BPR, whose positives are the ratings above `threshold`).
        search: "grid" (every combination, in order), "random" (points drawn with `seed`) or
            "tpe" (Optuna's TPE sampler, seeded; needs the `tune` extra: `pip install
            'cfcore[tune]'`).
        trials: points of a random or TPE search (default 20 without a budget; unlimited
            until the budget with one).
        budget_fits: at most this many points (a grid runs its first ones).
        budget_seconds: no point starts after this many seconds of search (counted from the
            validation split; a running point finishes).
        metric: "rmse" (default), "mse" or "mae" for ratings (lower is better); "recall@K"
            (default recall@20) or "ndcg@K" for positives (higher is better).
        validation: the share held out for validation, in (0, 1).
        seed: seeds the split, the search and every fit.
        backend: a backend name or instance, or None (the default backend).
        steps: steps (or sweeps) per point (default: the model's `cfcore train` default).
        optimizer: a `cfcore.optimizers` spec or name, for gradient-trained models (default:
            the model's `cfcore train` default; BiasedMF takes ALS sweeps unless an optimizer or
            a learning rate is given).
        learning_rate: the optimizer's learning rate when the space does not search it.
        early_stopping: evaluate every `early_stopping.every` steps and stop a point after
            `patience` evaluations without improvement (a second `fit` continues the first);
            None: one evaluation after `steps`.
        threshold: positives are the ratings strictly above it (IALS, BPR; give 0 for
            ratings that are already positives of value 1).
        fit_options: other arguments of every point's `fit` (e.g. `{"batch_size": 4096}`).
        batch: points trained together in one compiled loop (`cfcore.fit_many`; each scored
            and stopped on its own). Worth it where one model leaves the device idle (a GPU);
            on a few CPU cores one model already keeps them busy (docs/tuning.md has the
            measurements). A random or TPE search asks for at least this many points a round.

    Returns:
        A `TuneResult`: `.table`, `.best`, `.best_metric`, `.to_csv`, `.save_best`, `.report`.

    Raises:
        ArgumentValueError, ArgumentTypeError: a bad argument, an unknown hyper-parameter or
            a value the model refuses (naming it), before anything is trained.
        MissingDependencyError: search="tpe" without optuna.

    Example:
        >>> import cfcore
        >>> train, test = cfcore.synthetic_ratings(200, 80, 4000, seed=0).split(0.2, seed=0)
        >>> result = cfcore.tune(cfcore.WALS, {"regularization_coeff": [0.1, 1.0]}, train,
        ...                      steps=3, backend="numpy")
        >>> len(result.table), sorted(result.best)
        (2, ['regularization_coeff'])
    """
    # Every keyword but the data, as given: `plan_search` takes the same ones.
    options = {k: v for k, v in locals().items() if k not in ("model", "space", "ratings")}
    plan = plan_search(model, space, **options)
    return plan.run(ratings)


@dataclass(frozen=True)
class SearchPlan:
    """A search checked and ready to run on training ratings (`plan_search`; `tune` is
    `plan_search(...).run(ratings)`): the command line checks every option this way before it
    reads any data."""

    family: Family
    space: dict[str, Distribution]
    metric: Metric
    settings: RunSettings
    search: str
    grid: list[Point]
    limit: int | None
    budget_seconds: float | None
    validation: float
    threshold: float
    optuna: Any = None
    # What trains one point (`runner.run_points`'s `run_point`): None for a cfcore model's fit;
    # a peer's (`cfcore.tuning.peers.run_peer_point`) for a model that cfcore does not train.
    run_point: Callable[..., PointResult] | None = None

    def run(
        self, ratings: Ratings, on_result: Callable[[PointResult], None] | None = None
    ) -> TuneResult:
        """Carves the validation split from `ratings` (the training ratings) and searches;
        `on_result(point_result)` is called after each point."""
        if not isinstance(ratings, Ratings):
            raise ArgumentTypeError(
                f"ratings must be the training cfcore.Ratings (e.g. ds.fold('u1')[0]), got "
                f"{type(ratings).__name__}"
            )
        family, metric, settings, seed = self.family, self.metric, self.settings, self.settings.seed
        data = validation_split(
            ratings, family, metric, share=self.validation, seed=seed,
            threshold=self.threshold, backend=settings.backend,
        )  # fmt: skip
        # The budget is the search's: it starts once the split is made.
        start = time.perf_counter()
        deadline = None if self.budget_seconds is None else start + self.budget_seconds

        def run(batch: list[Point]) -> list[PointResult]:
            return run_points(
                family, batch, data, metric, settings, deadline, on_result, self.run_point
            )

        if self.search == "grid":
            results = run(self.grid[: self.limit])
        elif self.search == "random":
            rng = np.random.default_rng(seed)
            size = max(RANDOM_ROUND, settings.batch)
            results = _rounds(lambda: draw_point(self.space, rng), run, self.limit, size)
        else:
            size = max(TPE_ROUND, settings.batch)
            results = _tpe(self.optuna, self.space, metric, seed, run, self.limit, size)
        return TuneResult(
            table=_table(results, tuple(self.space), metric.name),
            model=family.name,
            metric=metric.name,
            higher_is_better=metric.higher_is_better,
            hyper_parameters=tuple(self.space),
            fixed=_fixed(family, settings, self.space),
            search=self.search,
            seed=seed,
            validation=data.describe,
        )


def plan_search(model: Any, space: Mapping[str, Any], **options: Any) -> SearchPlan:
    """Checks `tune`'s arguments (all but the ratings: the same keywords, the same defaults)
    and returns the search to run.

    Every value a point can take is checked (its model and optimizer built) before any data is
    split or any model trained: a typo must not cost a search.

    Raises:
        ArgumentValueError: as `tune` (also `ArgumentTypeError`, `MissingDependencyError`).
    """
    try:  # `tune`'s keywords, with its defaults
        bound = inspect.signature(tune).bind(model, space, None, **options)
    except TypeError as err:
        raise ArgumentTypeError(f"tune(): {err}") from None
    bound.apply_defaults()
    o = bound.arguments
    search, trials, budget_fits = o["search"], o["trials"], o["budget_fits"]
    budget_seconds, validation, seed = o["budget_seconds"], o["validation"], o["seed"]
    steps, learning_rate, early_stopping = o["steps"], o["learning_rate"], o["early_stopping"]
    if search not in SEARCHES:
        raise ArgumentValueError(f"search must be one of {', '.join(SEARCHES)}, got {search!r}")
    optuna = _optuna() if search == "tpe" else None
    family = resolve_family(model)
    dists = normalize_space(space)
    _check_keys(family, dists)
    chosen = _check_metric_and_numbers(family, o["metric"], validation, seed, trials, budget_fits)
    if budget_seconds is not None:
        budget_seconds = check_float("budget_seconds", budget_seconds, exclusive_minimum=0)
    threshold = check_float("threshold", o["threshold"])
    if search == "grid" and trials is not None:
        raise ArgumentValueError(
            f"trials={trials} applies to random and tpe search; a grid runs every point"
        )
    if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
        raise ArgumentTypeError(
            f"early_stopping must be a cfcore.tuning.EarlyStopping or None, got {early_stopping!r}"
        )
    settings = RunSettings(
        steps=check_int("steps", family.defaults.get("--steps", 100) if steps is None else steps, minimum=1),
        optimizer=o["optimizer"],
        learning_rate=None if learning_rate is None else check_float("learning_rate", learning_rate, exclusive_minimum=0),
        backend=o["backend"],
        seed=seed,
        early_stopping=early_stopping,
        fit_options=_fit_options(family, o["fit_options"]),
        batch=check_int("batch", o["batch"], minimum=1),
    )  # fmt: skip
    grid = grid_points(dists) if search == "grid" else []  # refuses a continuous distribution
    for point in grid or corner_points(dists):
        build_model(family, point)
        settings.optimizer_for(family, point)
    return SearchPlan(
        family=family,
        space=dists,
        metric=chosen,
        settings=settings,
        search=search,
        grid=grid,
        limit=_point_limit(search, trials, budget_fits, budget_seconds, len(grid)),
        budget_seconds=budget_seconds,
        validation=float(validation),
        threshold=threshold,
        optuna=optuna,
    )


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise MissingDependencyError(
            "search='tpe' needs optuna: install the tune extra, pip install 'cfcore[tune]'"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per trial otherwise
    return optuna


# The `fit` arguments that `tune` sets itself.
_RUN_ARGUMENTS = (
    "train",
    "test",
    "steps",
    "eval_every",
    "seed",
    "backend",
    "progress",
    "optimizer",
)


def _fit_options(family: Family, options: Any) -> dict[str, Any]:
    """`fit_options` checked against the family's `fit` (what `tune` sets itself refused)."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ArgumentTypeError(f"fit_options must be a dict of fit arguments, got {options!r}")
    fit = family.cls.fit  # pyright: ignore[reportAttributeAccessIssue]  (each model's own)
    params = inspect.signature(fit).parameters
    allowed = [p for p in params if p != "self" and p not in _RUN_ARGUMENTS]
    for key in options:
        if key not in allowed:
            raise ArgumentValueError(
                f"fit_options: {family.cls.__name__}.fit has no argument {key!r} that tune leaves "
                f"to you; it takes {', '.join(allowed) or 'none'}"
            )
    return dict(options)


def _check_keys(family: Family, dists: dict[str, Distribution]) -> None:
    allowed = family.hyper_parameters
    for name in dists:
        if name not in allowed:
            raise ArgumentValueError(
                f"{family.cls.__name__} has no hyper-parameter {name!r}; a space may name "
                f"{', '.join(allowed)}"
            )


def _check_metric_and_numbers(
    family: Family,
    metric: Any,
    validation: Any,
    seed: Any,
    trials: Any,
    budget_fits: Any,
) -> Metric:
    chosen = resolve_metric(metric, family)
    check_float("validation", validation, exclusive_minimum=0, exclusive_maximum=1)
    check_int("seed", seed, minimum=0)
    for name, value in (("trials", trials), ("budget_fits", budget_fits)):
        if value is not None:
            check_int(name, value, minimum=1)
    return chosen


def _point_limit(
    search: str, trials: int | None, fits: int | None, seconds: float | None, grid: int
) -> int | None:
    """The most points the search may run (None: until the time budget)."""
    if search == "grid":
        wanted = grid
    elif trials is not None:
        wanted = trials
    elif fits is None and seconds is None:
        wanted = DEFAULT_TRIALS
    else:
        wanted = None
    candidates = [n for n in (wanted, fits) if n is not None]
    return min(candidates) if candidates else None


def _counter(limit: int | None) -> Iterator[int]:
    return itertools.count() if limit is None else iter(range(limit))


def _rounds(
    draw: Callable[[], Point],
    run: Callable[[list[Point]], list[PointResult]],
    limit: int | None,
    size: int,
) -> list[PointResult]:
    """Runs drawn points in rounds of `size` until `limit` points or the deadline."""
    results: list[PointResult] = []
    remaining = _counter(limit)
    while True:
        batch = [draw() for _ in itertools.islice(remaining, size)]
        if not batch:
            return results
        got = run(batch)
        results += got
        if len(got) < len(batch):  # the time budget ran out
            return results


def _tpe(
    optuna: Any,
    dists: dict[str, Distribution],
    metric: Metric,
    seed: int,
    run: Callable[[list[Point]], list[PointResult]],
    limit: int | None,
    size: int = TPE_ROUND,
) -> list[PointResult]:
    """Optuna's TPE sampler through its ask-and-tell interface, in rounds of `size` points."""
    sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(
        direction="maximize" if metric.higher_is_better else "minimize", sampler=sampler
    )
    results: list[PointResult] = []
    remaining = _counter(limit)
    while True:
        trials = [study.ask() for _ in itertools.islice(remaining, size)]
        if not trials:
            return results
        batch = [{name: d.suggest(t, name) for name, d in dists.items()} for t in trials]
        got = run(batch)
        for trial, res in zip(trials, got, strict=False):
            if math.isfinite(res.value):
                study.tell(trial, res.value)
            else:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
        results += got
        if len(got) < len(batch):
            for trial in trials[len(got) :]:  # never ran: not evidence either way
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return results


def _table(results: list[PointResult], names: tuple[str, ...], metric: str) -> pd.DataFrame:
    rows = [
        {
            **{n: r.point[n] for n in names},
            metric: r.value,
            "steps": r.steps,
            "best_step": r.best_step,
            "seconds": r.seconds,
            "status": r.status,
        }
        for r in results
    ]
    return pd.DataFrame(rows, columns=[*names, metric, *RUN_COLUMNS])


def _fixed(family: Family, settings: RunSettings, dists: dict[str, Distribution]) -> dict[str, Any]:
    """The optimizer and learning rate every point shared (what a re-run needs besides the
    best point), for a gradient-trained model."""
    probe = {name: d.corners()[0] for name, d in dists.items()}
    opt = settings.optimizer_for(family, probe)
    if opt is None:
        return {}
    out: dict[str, Any] = {}
    if "optimizer" not in dists:
        out["optimizer"] = type(opt).__name__.lower()
    if "learning_rate" not in dists:
        out["learning_rate"] = float(opt.learning_rate)
    return out
