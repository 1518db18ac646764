"""What `cfcore.tune` runs: the model family, the validation split, the metric, and the points.

`run_points` is the one step that trains settings: one `fit` after another (a second point of
the same shapes compiles nothing, since the coefficients travel as data), or `batch` points at a
time in one compiled loop (`cfcore.fit_many`), each scored and stopped on its own.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..data.ratings import Ratings
from ..errors import ArgumentTypeError, ArgumentValueError, NotSupportedError
from ..models.base import Model, command_line_models
from ..specs import OptimizerSpec, make_optimizer
from ..train.session import TrainingDivergedError
from ..validate import check_int
from .space import Point

# Hyper-parameters of the fit, not of the constructor, that a gradient-trained family takes.
FIT_HYPER = ("learning_rate", "optimizer")
EXPLICIT_METRICS = ("rmse", "mse", "mae")
_RANKING = re.compile(r"^(recall|ndcg)@([1-9][0-9]*)$")


@dataclass(frozen=True)
class Family:
    """A model class as `tune` trains it.

    Attributes:
        cls: the model class.
        name: its `cfcore train --model` name.
        implicit: trained on positives and scored by ranking (iALS, BPR).
        trains_by: "steps", "sweeps" or "sweeps-or-steps" (its `CommandLine`).
        arguments: the constructor's parameter names.
        defaults: the command line's defaults (`CommandLine.defaults`: --steps, --lr, ...).
    """

    cls: type[Model]
    name: str
    implicit: bool
    trains_by: str
    arguments: tuple[str, ...]
    defaults: Mapping[str, Any]

    @property
    def hyper_parameters(self) -> tuple[str, ...]:
        """What a space may name: the constructor's arguments, and the optimizer's when the
        family can take gradient steps."""
        extra = FIT_HYPER if self.trains_by != "sweeps" else ()
        return self.arguments + extra


def resolve_family(model: Any) -> Family:
    """The `Family` of a model class (or subclass), or of a `--model` or class name.

    Raises:
        ArgumentValueError: an unknown name, or a class that `cfcore train` does not offer.
        NotSupportedError: the softmax model (a model of users' features, not of ratings).
    """
    models = command_line_models()
    if isinstance(model, str):
        by_class = {cls.__name__.lower(): cls for cls in models.values()}
        cls = models.get(model.lower()) or by_class.get(model.lower())
        if cls is None:
            names = sorted({*models, *(c.__name__ for c in models.values())})
            raise ArgumentValueError(f"unknown model {model!r}; expected one of {', '.join(names)}")
    elif isinstance(model, type) and issubclass(model, Model):
        cls = model
    else:
        raise ArgumentTypeError(
            f"model must be a model class (e.g. cfcore.BiasedMF) or its name, got {model!r}"
        )
    # A subclass (a user's own, or a test's) inherits the declaration of the class it extends.
    line = next(
        (c.__dict__["command_line"] for c in cls.__mro__ if "command_line" in c.__dict__), None
    )
    if line is None:
        raise ArgumentValueError(f"{cls.__name__} cannot be tuned: it declares no command line")
    if line.data == "users":
        raise NotSupportedError(
            f"tune searches models of ratings or positives; {cls.__name__} is trained on users' "
            "features (tune its fit by hand)"
        )
    params = inspect.signature(cls.__init__).parameters
    arguments = tuple(p for p in params if p != "self")
    return Family(cls, line.name, line.data == "implicit", line.trains_by, arguments, line.defaults)


@dataclass(frozen=True)
class Metric:
    """The validation metric: its name and which way is better."""

    name: str
    higher_is_better: bool

    @property
    def k(self) -> int | None:
        """The cut-off of a ranking metric."""
        found = _RANKING.match(self.name)
        return int(found.group(2)) if found else None

    def better(self, a: float, b: float) -> bool:
        """Whether `a` beats `b`."""
        return a > b if self.higher_is_better else a < b


def resolve_metric(metric: Any, family: Family) -> Metric:
    """The metric by name, or the family's default (RMSE for ratings, recall@20 for positives).

    Raises:
        ArgumentValueError: a name the family cannot be scored by.
    """
    if metric is None:
        metric = "recall@20" if family.implicit else "rmse"
    if not isinstance(metric, str):
        raise ArgumentTypeError(f"metric must be a name such as 'rmse', got {metric!r}")
    name = metric.lower()
    if family.implicit and _RANKING.match(name):
        return Metric(name, higher_is_better=True)
    if not family.implicit and name in EXPLICIT_METRICS:
        return Metric(name, higher_is_better=False)
    expected = "recall@K or ndcg@K" if family.implicit else ", ".join(EXPLICIT_METRICS)
    raise ArgumentValueError(
        f"metric {metric!r} does not score {family.cls.__name__}: use {expected}"
    )


@dataclass(frozen=True)
class EarlyStopping:
    """Stops a point whose validation metric has not improved for `patience` evaluations.

    Attributes:
        every: steps (or sweeps) between two evaluations of the validation metric.
        patience: evaluations without improvement before the point stops.
    """

    every: int
    patience: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "every", check_int("early_stopping.every", self.every, minimum=1))
        object.__setattr__(
            self, "patience", check_int("early_stopping.patience", self.patience, minimum=1)
        )


@dataclass(frozen=True)
class Validation:
    """What every point trains on, and how a trained model is scored on the validation part.

    Attributes:
        train: the part of the training ratings (or positives) each point fits on.
        score: `score(model)`, the metric's value on the validation part.
        describe: one line saying what the split is.
    """

    train: Ratings
    score: Callable[[Any], float]
    describe: str


def validation_split(
    ratings: Ratings,
    family: Family,
    metric: Metric,
    *,
    share: float,
    seed: int,
    threshold: float,
    backend: Any,
) -> Validation:
    """The validation split carved from `ratings` (the training ratings; nothing else is read).

    Ratings: a seeded holdout of `share` of the ratings (`Ratings.split`). Positives: the
    strong-generalization protocol of `cfcore.eval.implicit`: `share` of the users with enough
    positives above `threshold` held out, each folded in from 80% of their positives and scored
    on the rest.
    """
    if family.implicit:
        from ..eval.implicit import evaluate_strong_generalization, strong_generalization_split

        split = strong_generalization_split(
            ratings, heldout_share=share, seed=seed, threshold=threshold
        )
        k = metric.k
        assert k is not None  # a ranking metric (resolve_metric)

        def rank(model: Any) -> float:
            got = evaluate_strong_generalization(model, split, ks=(k,), backend=backend)
            return float(got[metric.name])

        text = (
            f"{split.num_heldout} validation users of {split.train.num_users + split.num_heldout} "
            f"(positives: ratings > {threshold:g}), folded in, {metric.name}"
        )
        return Validation(split.train, rank, text)
    train, valid = ratings.split(holdout_fraction=share, seed=seed)

    def error(model: Any) -> float:
        return float(model.evaluate(valid)[metric.name])

    text = f"{len(valid)} validation ratings of {len(ratings)} (seed {seed}), {metric.name}"
    return Validation(train, error, text)


@dataclass(frozen=True)
class RunSettings:
    """How every point is fit: steps, optimizer, backend, seed, early stopping, fit options,
    and how many points train together (`batch`: `cfcore.fit_many`)."""

    steps: int
    optimizer: OptimizerSpec | str | None
    learning_rate: float | None
    backend: Any
    seed: int
    early_stopping: EarlyStopping | None
    fit_options: Mapping[str, Any] = field(default_factory=dict)
    batch: int = 1

    def optimizer_for(self, family: Family, point: Point) -> OptimizerSpec | None:
        """The point's optimizer: None for sweeps (a sweep model, or a biased one with neither
        an optimizer nor a learning rate anywhere)."""
        opt = point.get("optimizer", self.optimizer)
        lr = point.get("learning_rate", self.learning_rate)
        if family.trains_by == "sweeps":
            return None
        if family.trains_by == "sweeps-or-steps" and opt is None and "learning_rate" not in point:
            return None
        if opt is None:
            opt = family.defaults.get("--optimizer", "sgd")
        if isinstance(opt, OptimizerSpec):
            return opt if lr is None else dataclasses.replace(opt, learning_rate=lr)
        return make_optimizer(opt, family.defaults.get("--lr", 0.05) if lr is None else lr)


@dataclass(frozen=True)
class PointResult:
    """One point's outcome.

    Attributes:
        point: its hyper-parameters.
        value: the best validation metric of its evaluations (NaN when none was finite).
        steps: steps (or sweeps) run.
        best_step: the step of `value`.
        seconds: wall time of its fits and evaluations.
        status: "ok", "stopped early" or "diverged".
    """

    point: Point
    value: float
    steps: int
    best_step: int
    seconds: float
    status: str


def build_model(family: Family, point: Point) -> Model:
    """The model of a point (its constructor checks the values)."""
    return family.cls(**{k: v for k, v in point.items() if k in family.arguments})


def run_points(
    family: Family,
    points: Sequence[Point],
    validation: Validation,
    metric: Metric,
    settings: RunSettings,
    deadline: float | None = None,
    on_result: Callable[[PointResult], None] | None = None,
    run_point: Callable[..., PointResult] | None = None,
) -> list[PointResult]:
    """Trains and scores each point: one `fit` after another, or `settings.batch` points at a
    time in one `cfcore.fit_many`; no point (or batch) starts after `deadline` (a
    `time.perf_counter()` value), so the list may be shorter than `points`. `on_result` is
    called with each point's result as it comes (the command line prints it). `run_point`
    (`run_point(family, point, validation, metric, settings)`) trains and scores one point in
    place of a cfcore model's fit (a peer's, `cfcore.tuning.peers.run_peer_point`)."""
    out: list[PointResult] = []
    size = 1 if run_point is not None else settings.batch
    for start in range(0, len(points), size):
        if deadline is not None and time.perf_counter() >= deadline:
            break
        group = list(points[start : start + size])
        if size == 1:
            results = [(run_point or _run_point)(family, group[0], validation, metric, settings)]
        else:
            results = _run_batch(family, group, validation, metric, settings)
        for result in results:
            out.append(result)
            if on_result is not None:
                on_result(result)
    return out


class _Progress:
    """One point's evaluations so far: the best value, and whether (and why) it stopped."""

    def __init__(self, point: Point, metric: Metric, settings: RunSettings) -> None:
        self.point, self.metric, self.settings = point, metric, settings
        self.best, self.best_step, self.done, self.stale = math.nan, 0, 0, 0
        self.status = ""

    def scored(self, value: float) -> None:
        """Takes the validation value after `done` steps; sets `status` when the point stops."""
        stop, steps = self.settings.early_stopping, self.settings.steps
        if not math.isfinite(value):
            self.status = "diverged"
            return
        if math.isnan(self.best) or self.metric.better(value, self.best):
            self.best, self.best_step, self.stale = value, self.done, 0
        else:
            self.stale += 1
        if stop is not None and self.stale >= stop.patience and self.done < steps:
            self.status = "stopped early"

    def result(self, seconds: float) -> PointResult:
        status = self.status or "ok"
        return PointResult(dict(self.point), self.best, self.done, self.best_step, seconds, status)


def _fit_arguments(family: Family, point: Point, settings: RunSettings) -> dict[str, Any]:
    fit: dict[str, Any] = {"backend": settings.backend, "seed": settings.seed, "progress": False}
    fit.update(settings.fit_options)
    opt = settings.optimizer_for(family, point)
    if opt is not None:
        fit["optimizer"] = opt
    return fit


def _chunk(settings: RunSettings) -> int:
    stop = settings.early_stopping
    return settings.steps if stop is None else stop.every


def _run_point(
    family: Family, point: Point, validation: Validation, metric: Metric, settings: RunSettings
) -> PointResult:
    start = time.perf_counter()
    model: Any = build_model(family, point)
    fit = _fit_arguments(family, point, settings)
    state = _Progress(point, metric, settings)
    try:
        while state.done < settings.steps and not state.status:
            # A second fit continues the first: the model keeps its session and step count.
            k = min(_chunk(settings), settings.steps - state.done)
            model.fit(validation.train, steps=k, eval_every=k, **fit)
            state.done += k
            state.scored(validation.score(model))
    except TrainingDivergedError as err:
        # That point stops; the search goes on (its last finite evaluation, if any, counts).
        state.status, state.done = "diverged", int(getattr(err, "step", state.done))
    return state.result(time.perf_counter() - start)


def _run_batch(
    family: Family,
    points: list[Point],
    validation: Validation,
    metric: Metric,
    settings: RunSettings,
) -> list[PointResult]:
    """The points trained together (`cfcore.fit_many`: one compiled loop per step structure),
    each scored after every chunk and stopped on its own; each point's `seconds` is its share
    of the batch's wall time."""
    from ..models.many import fit_many

    start = time.perf_counter()
    models: list[Any] = [build_model(family, p) for p in points]
    fits = [_fit_arguments(family, p, settings) for p in points]
    states = [_Progress(p, metric, settings) for p in points]
    common = {k: v for k, v in fits[0].items() if k not in ("optimizer", "seed")}
    while True:
        active = [i for i, s in enumerate(states) if not s.status and s.done < settings.steps]
        if not active:
            break
        k = min(_chunk(settings), settings.steps - states[active[0]].done)
        extra = {}
        if "optimizer" in fits[0]:
            extra["optimizer"] = [fits[i]["optimizer"] for i in active]
        out = fit_many(
            [models[i] for i in active], validation.train, steps=k, eval_every=k,
            seed=[fits[i]["seed"] for i in active], **extra, **common,
        )  # fmt: skip
        for j, i in enumerate(active):
            if j in out.errors:
                states[i].status = "diverged"
                states[i].done = int(out.errors[j].step)
                continue
            states[i].done += k
            states[i].scored(validation.score(models[i]))
    share = (time.perf_counter() - start) / len(points)
    return [s.result(share) for s in states]
