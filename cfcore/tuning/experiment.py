"""`cfcore experiment`: contenders × datasets × seeds, each tuned, refitted and tested once.

A TOML config (see docs/tuning.md, "Experiments") names a protocol and contenders. For each
dataset and seed the protocol splits the data into a training part and a test part; each
contender is tuned by `cfcore.tune` on a validation split carved from the training part, its
best setting refitted on the whole training part and scored on the test part once. The result is
the per-seed table, the mean ± 95% t-interval per contender × dataset × metric, and the paired
differences between contenders over the same seeds.

Protocols:

* "explicit": models of ratings, scored by RMSE/MAE/MSE; the seeds are ml-100k's canonical folds
  (`folds = ["u1", ...]`) or seeded holdouts of `test_share` of a release's ratings.
* "implicit": models of positives, strong generalization (`cfcore.eval.implicit`): `test_share`
  of the users held out, folded in and scored by recall@K / NDCG@K.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import ArgumentTypeError, ArgumentValueError, CfcoreError, MissingFileError
from ..io.atomic import atomic_write
from .peers import Scored, load_adapter, resolve_peer, run_peer_point
from .runner import _RANKING, EXPLICIT_METRICS, EarlyStopping, Family, build_model
from .search import SearchPlan, _check_keys, _check_metric_and_numbers, _point_limit, plan_search
from .space import corner_points, grid_points, normalize_space, space_from_json
from .stats import Interval, paired_interval, t_interval

FORMAT = "cfcore-experiment/1"
"""The `format` field of results.json."""
FILES = ("results.md", "results.json", "report.html")
"""What `ExperimentResult.save` writes into a folder."""
PROTOCOLS = ("explicit", "implicit")
DEFAULT_METRICS = {"explicit": ("rmse", "mae"), "implicit": ("recall@20", "recall@50", "ndcg@100")}
DEFAULT_TEST_SHARE = {"explicit": 0.1, "implicit": 0.2}

_TOP = {"name", "protocol", "contender"}
_PROTOCOL = {"kind", "datasets", "folds", "seeds", "test_share", "validation", "metrics",
             "threshold", "backend", "data_dir"}  # fmt: skip
_DATASET = {"name", "test_share"}
_CONTENDER = {"name", "model", "adapter", "space", "search", "trials", "budget_fits",
              "budget_seconds", "metric", "steps", "optimizer", "learning_rate", "eval_every",
              "patience", "fit_options"}  # fmt: skip
_PEER_REFUSES = ("steps", "optimizer", "learning_rate", "eval_every", "fit_options")


@dataclass(frozen=True)
class Dataset:
    """A dataset of the experiment: its name (a release or a folder) and its test share."""

    name: str
    test_share: float


@dataclass(frozen=True)
class Contender:
    """A contender: its name in the tables, and the search that tunes it (seeded per seed)."""

    name: str
    plan: SearchPlan
    peer: bool


@dataclass(frozen=True)
class Experiment:
    """A checked config (`load_experiment`): nothing read yet but the config itself.

    Attributes:
        name: the experiment's title.
        protocol: "explicit" or "implicit".
        datasets: the datasets, in order.
        seeds: `(label, seed)` pairs: a fold ("u1", seed 1) or a seed ("0", 0).
        folds: whether the seeds are ml-100k's canonical folds.
        metrics: the test metrics.
        threshold: implicit protocol: ratings above it are the positives.
        backend: where cfcore's contenders train and score (None: the default).
        data_dir: where the releases are (None: cfcore's default).
        contenders: in the config's order.
        source: the config file (or "<dict>").
    """

    name: str
    protocol: str
    datasets: tuple[Dataset, ...]
    seeds: tuple[tuple[str, int], ...]
    folds: bool
    metrics: tuple[str, ...]
    threshold: float
    backend: str | None
    data_dir: str | None
    contenders: tuple[Contender, ...]
    source: str


# ------------------------------------------------------------------------------------ config


def load_experiment(config: str | os.PathLike[str] | Mapping[str, Any]) -> Experiment:
    """Reads and checks an experiment's config: a TOML file, or the same as a dict.

    Every key and value, every contender's space (each value built into its model or adapter)
    is checked before any data is read.

    Raises:
        CfcoreError: an unknown key, a bad value, an unknown model or adapter; the message names
            the file and the key.
    """
    if isinstance(config, Mapping):
        doc, source, base = dict(config), "<dict>", None
    else:
        path = Path(config)
        if not path.is_file():
            raise MissingFileError(f"no such experiment config: {str(path)!r}")
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ArgumentValueError(f"{path}: not a TOML file: {err}") from None
        source, base = str(path), path.parent
    try:
        return _parse(doc, source, base)
    except CfcoreError as err:
        text = str(err.args[0]) if err.args else str(err)
        if text.startswith(source):
            raise
        raise type(err)(f"{source}: {text}") from None


def _keys(table: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(table, Mapping):
        raise ArgumentTypeError(f"{where} must be a table, got {table!r}")
    for key in table:
        if key not in allowed:
            raise ArgumentValueError(
                f"unknown key {where}.{key}; expected one of {', '.join(sorted(allowed))}"
            )
    return dict(table)


def _typed(table: Mapping[str, Any], key: str, kind: Any, where: str, default: Any = None) -> Any:
    """`table[key]` (or `default`) when of type `kind` (a bool is no number), or None."""
    value = table.get(key, default)
    if value is None:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ArgumentTypeError(f"{where}.{key} has a bad type: {value!r}")
    return value


def _parse(doc: dict[str, Any], source: str, base: Path | None) -> Experiment:
    top = _keys(doc, _TOP, "the config")
    proto = _keys(top.get("protocol", {}), _PROTOCOL, "protocol")
    kind = proto.get("kind")
    if kind not in PROTOCOLS:
        raise ArgumentValueError(f"protocol.kind must be 'explicit' or 'implicit', got {kind!r}")
    share = _typed(proto, "test_share", (int, float), "protocol", DEFAULT_TEST_SHARE[kind])
    datasets = _datasets(proto.get("datasets"), float(share))
    seeds, folds = _seeds(proto, kind, datasets)
    metrics = tuple(_typed(proto, "metrics", list, "protocol", list(DEFAULT_METRICS[kind])))
    for m in metrics:
        ok = (
            m in EXPLICIT_METRICS
            if kind == "explicit"
            else isinstance(m, str) and _RANKING.match(m)
        )
        if not ok:
            expected = ", ".join(EXPLICIT_METRICS) if kind == "explicit" else "recall@K, ndcg@K"
            raise ArgumentValueError(f"protocol.metrics: {m!r} is not one of {expected}")
    if not metrics:
        raise ArgumentValueError("protocol.metrics is empty")
    validation = _typed(proto, "validation", (int, float), "protocol", 0.1)
    threshold = float(_typed(proto, "threshold", (int, float), "protocol", 3.5))
    backend = _typed(proto, "backend", str, "protocol")
    if backend is not None:
        from ..backend.registry import check_backend_name

        check_backend_name(backend)
    entries = top.get("contender")
    if not isinstance(entries, list) or not entries:
        raise ArgumentValueError("the config has no [[contender]]")
    contenders = tuple(
        _contender(e, i, kind, validation, backend, base) for i, e in enumerate(entries)
    )
    names = [c.name for c in contenders]
    if len(set(names)) != len(names):
        raise ArgumentValueError(f"contender names repeat: {names}; give each a distinct name")
    return Experiment(
        name=str(_typed(top, "name", str, "the config", Path(source).stem)),
        protocol=kind, datasets=datasets, seeds=seeds, folds=folds, metrics=metrics,
        threshold=threshold, backend=backend, data_dir=_typed(proto, "data_dir", str, "protocol"),
        contenders=contenders, source=source,
    )  # fmt: skip


def _datasets(value: Any, share: float) -> tuple[Dataset, ...]:
    if not isinstance(value, list) or not value:
        raise ArgumentValueError(f"protocol.datasets must be a non-empty list, got {value!r}")
    out = []
    for i, entry in enumerate(value):
        where = f"protocol.datasets[{i}]"
        if isinstance(entry, str):
            entry = {"name": entry}
        entry = _keys(entry, _DATASET, where)
        name = _typed(entry, "name", str, where)
        if not name:
            raise ArgumentValueError(f"{where} has no name")
        if not _release(name) and not Path(name).expanduser().exists():
            raise ArgumentValueError(
                f"{where}: {name!r} is neither a release name (100k, latest-small, 1m, ...) nor "
                "a folder or zip holding one"
            )
        test = float(_typed(entry, "test_share", (int, float), where, share))
        if not 0 < test < 1:
            raise ArgumentValueError(f"{where}.test_share must be in (0, 1), got {test}")
        out.append(Dataset(name, test))
    return tuple(out)


def _seeds(
    proto: dict[str, Any], kind: str, datasets: tuple[Dataset, ...]
) -> tuple[tuple[tuple[str, int], ...], bool]:
    from ..data import FOLDS_100K

    folds, seeds = proto.get("folds"), proto.get("seeds")
    if (folds is None) == (seeds is None):
        raise ArgumentValueError("protocol needs either folds (ml-100k's u1..u5) or seeds")
    if folds is not None:
        if kind != "explicit":
            raise ArgumentValueError("protocol.folds: the implicit protocol takes seeds")
        if any(d.name != "100k" for d in datasets):
            raise ArgumentValueError("protocol.folds are ml-100k's: datasets must be ['100k']")
        if not isinstance(folds, list) or not folds:
            raise ArgumentValueError(f"protocol.folds must be a non-empty list, got {folds!r}")
        for f in folds:
            if f not in FOLDS_100K or f in ("ua", "ub"):
                raise ArgumentValueError(f"protocol.folds: unknown fold {f!r}; use u1..u5")
        if len(set(folds)) != len(folds):
            raise ArgumentValueError(f"protocol.folds repeat: {folds}")
        return tuple((f, int(f[1:])) for f in folds), True
    if not isinstance(seeds, list) or not seeds:
        raise ArgumentValueError(f"protocol.seeds must be a non-empty list, got {seeds!r}")
    for s in seeds:
        if not isinstance(s, int) or isinstance(s, bool) or s < 0:
            raise ArgumentValueError(f"protocol.seeds: {s!r} is not an int >= 0")
    if len(set(seeds)) != len(seeds):
        raise ArgumentValueError(f"protocol.seeds repeat: {seeds}")
    return tuple((str(s), s) for s in seeds), False


def _contender(
    entry: Any, index: int, kind: str, validation: Any, backend: str | None, base: Path | None
) -> Contender:
    where = f"contender[{index}]"
    try:
        return _check_contender(entry, where, kind, validation, backend, base)
    except CfcoreError as err:
        text = str(err.args[0]) if err.args else str(err)
        if text.startswith(where):
            raise
        raise type(err)(f"{where}: {text}") from None


def _check_contender(
    entry: Any, where: str, kind: str, validation: Any, backend: str | None, base: Path | None
) -> Contender:
    entry = _keys(entry, _CONTENDER, where)
    if ("model" in entry) == ("adapter" in entry):
        raise ArgumentValueError(f"{where} needs either model (a cfcore model) or adapter")
    if isinstance(entry.get("model"), bool | int | float | list | dict):
        raise ArgumentTypeError(f"{where}.model must be a model name, got {entry['model']!r}")
    space = space_from_json(_typed(entry, "space", dict, where, {}), where=f"{where}.space")
    search = _typed(entry, "search", str, where, "grid")
    numbers = {k: _typed(entry, k, int, where) for k in ("trials", "budget_fits", "steps")}
    seconds = _typed(entry, "budget_seconds", (int, float), where)
    metric = _typed(entry, "metric", str, where)
    if "adapter" in entry:
        spec = entry["adapter"]  # a dict config may give the class itself
        for key in _PEER_REFUSES:
            if key in entry:
                raise ArgumentValueError(f"{where}.{key}: an adapter's fit takes no {key}")
        if not isinstance(spec, type):
            spec = load_adapter(_typed(entry, "adapter", str, where), f"{where}.adapter", base)
        family = resolve_peer(spec, where)
        plan = _peer_plan(family, space, search, numbers, seconds, metric, validation, where)
        name = entry.get("name", family.name)
    else:
        every = _typed(entry, "eval_every", int, where)
        if every is None and "patience" in entry:
            raise ArgumentValueError(f"{where}.patience applies with eval_every (early stopping)")
        stopping = None if every is None else EarlyStopping(every, entry.get("patience", 3))
        plan = plan_search(
            entry["model"], space, search=search, trials=numbers["trials"],
            budget_fits=numbers["budget_fits"], budget_seconds=seconds, metric=metric,
            validation=validation, backend=backend, steps=numbers["steps"],
            optimizer=_typed(entry, "optimizer", str, where),
            learning_rate=_typed(entry, "learning_rate", (int, float), where),
            early_stopping=stopping, fit_options=_typed(entry, "fit_options", dict, where),
        )  # fmt: skip
        name = entry.get("name", plan.family.cls.__name__)
    if plan.family.implicit != (kind == "implicit"):
        what = "positives" if plan.family.implicit else "ratings"
        raise ArgumentValueError(
            f"{where}: {plan.family.name} is a model of {what}; the {kind} protocol takes models "
            f"of {'positives' if kind == 'implicit' else 'ratings'}"
        )
    if not isinstance(name, str) or not name:
        raise ArgumentValueError(f"{where}.name must be a non-empty string, got {name!r}")
    return Contender(name, plan, "adapter" in entry)


def _peer_plan(
    family: Family, space: dict[str, Any], search: str, numbers: dict[str, Any],
    seconds: Any, metric: Any, validation: Any, where: str,
) -> SearchPlan:  # fmt: skip
    """`plan_search` for an adapter: the same checks, each grid point (or each end of every
    range) built into an adapter."""
    from .runner import RunSettings
    from .search import SEARCHES, _optuna

    if search not in SEARCHES:
        raise ArgumentValueError(f"{where}.search must be one of {', '.join(SEARCHES)}")
    dists = normalize_space(space)
    _check_keys(family, dists)
    chosen = _check_metric_and_numbers(
        family, metric, validation, 0, numbers["trials"], numbers["budget_fits"]
    )
    grid = grid_points(dists) if search == "grid" else []
    for point in grid or corner_points(dists):
        try:
            family.cls(**point)
        except (TypeError, ValueError) as err:
            raise ArgumentValueError(f"{where}: {family.name} refuses {point}: {err}") from None
    return SearchPlan(
        family=family, space=dists, metric=chosen,
        settings=RunSettings(1, None, None, None, 0, None), search=search, grid=grid,
        limit=_point_limit(search, numbers["trials"], numbers["budget_fits"], seconds, len(grid)),
        budget_seconds=seconds, validation=float(validation), threshold=3.5,
        optuna=_optuna() if search == "tpe" else None, run_point=run_peer_point,
    )  # fmt: skip


# ------------------------------------------------------------------------------------ running


@dataclass(frozen=True)
class ExperimentResult:
    """What `run_experiment` returns.

    Attributes:
        experiment: the config it ran.
        runs: one row per dataset × seed × contender: `dataset`, `seed`, `contender`, each
            test metric, `validation` (the best validation metric), `best` (the setting, as
            JSON) and `seconds` (its search and refit).
    """

    experiment: Experiment
    runs: pd.DataFrame

    def summary(self) -> pd.DataFrame:
        """Mean ± 95% t-interval over seeds: a row per dataset × contender × metric, with
        `n`, `mean`, `half` (None with one seed), `low`, `high`."""
        rows = []
        for (dataset, contender), group in self.runs.groupby(["dataset", "contender"], sort=False):
            for m in self.experiment.metrics:
                rows.append({"dataset": dataset, "contender": contender, "metric": m,
                             **_fields(t_interval(group[m].tolist()))})  # fmt: skip
        return pd.DataFrame(rows)

    def paired(self) -> pd.DataFrame:
        """Paired differences `a − b` of each metric between each two contenders (in the
        config's order) over the seeds both ran: a row per dataset × pair × metric."""
        names = [c.name for c in self.experiment.contenders]
        rows = []
        for dataset, group in self.runs.groupby("dataset", sort=False):
            for i, a in enumerate(names):
                for b in names[i + 1 :]:
                    left = group[group.contender == a].set_index("seed")
                    right = group[group.contender == b].set_index("seed")
                    seeds = [s for s in left.index if s in right.index]
                    if not seeds:
                        continue
                    for m in self.experiment.metrics:
                        got = paired_interval(left.loc[seeds, m].tolist(),
                                              right.loc[seeds, m].tolist())  # fmt: skip
                        rows.append({"dataset": dataset, "a": a, "b": b, "metric": m,
                                     "seeds": ",".join(map(str, seeds)), **_fields(got)})  # fmt: skip
        return pd.DataFrame(rows)

    def markdown(self) -> str:
        """results.md: the summary table and the paired differences."""
        return _markdown(self)

    def save(self, folder: str | os.PathLike[str]) -> list[Path]:
        """Writes results.md, results.json and report.html into `folder`, each atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        text = self.markdown()
        doc = json.dumps(self.to_json(), indent=2) + "\n"
        return [
            atomic_write(folder / "results.md", lambda p: p.write_text(text, encoding="utf-8")),
            atomic_write(folder / "results.json", lambda p: p.write_text(doc, encoding="utf-8")),
            self.report(folder / "report.html"),
        ]

    def to_json(self) -> dict[str, Any]:
        """results.json's document."""
        e = self.experiment
        return {
            "format": FORMAT, "name": e.name, "config": e.source, "protocol": e.protocol,
            "datasets": [dataclasses.asdict(d) for d in e.datasets],
            "seeds": [label for label, _ in e.seeds], "metrics": list(e.metrics),
            "contenders": [c.name for c in e.contenders],
            "runs": _records(self.runs), "summary": _records(self.summary()),
            "paired": _records(self.paired()),
        }  # fmt: skip

    def report(self, path: str | os.PathLike[str]) -> Path:
        """An offline HTML page: per metric, each contender's mean and 95% interval per dataset
        (`cfcore.viz.experiment_chart`)."""
        from ..viz import save_report
        from ..viz.experiment import experiment_chart

        summary = self.summary()
        charts = [(f"{m}: mean and 95% interval over {len(self.experiment.seeds)} seeds",
                   experiment_chart(summary[summary.metric == m], m))
                  for m in self.experiment.metrics]  # fmt: skip
        return save_report(charts, path, title=f"cfcore experiment: {self.experiment.name}",
                           intro=_intro(self.experiment))  # fmt: skip


def _fields(got: Interval) -> dict[str, Any]:
    return {"n": got.n, "mean": got.mean, "half": got.half, "low": got.low, "high": got.high}


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(frame.to_json(orient="records", double_precision=15))


def run_experiment(
    config: str | os.PathLike[str] | Mapping[str, Any] | Experiment,
    on_run: Callable[[dict[str, Any]], None] | None = None,
    on_start: Callable[[str, str, str], None] | None = None,
    guard: Callable[[], AbstractContextManager[Any]] | None = None,
) -> ExperimentResult:
    """Runs an experiment: for each dataset and seed, each contender tuned on a validation split
    of the training part, refitted on the training part and scored on the test part once.

    Args:
        config: a TOML path, its dict, or a checked `Experiment` (`load_experiment`).
        on_run: called with each run's row as it comes (the command line prints it).
        on_start: called with (dataset, seed, contender) before each run's search.
        guard: a context around each search and refit of a cfcore contender (the command
            line's `deferred`: a signal waits for a safe point between compiled chunks); a
            peer's runs outside it.

    Returns:
        An `ExperimentResult`: `.runs`, `.summary()`, `.paired()`, `.save(folder)`.

    Raises:
        CfcoreError: a bad config (before any data is read), or a data or training error.
    """
    exp = config if isinstance(config, Experiment) else load_experiment(config)
    rows = []
    for dataset in exp.datasets:
        ds = _load_dataset(dataset.name, exp.data_dir)
        for label, seed in exp.seeds:
            train, test = _split(exp, ds, dataset, label, seed)
            for contender in exp.contenders:
                if on_start is not None:
                    on_start(dataset.name, label, contender.name)
                within = nullcontext() if guard is None or contender.peer else guard()
                with within:
                    got = _tune_and_test(exp, contender, train, test, seed)
                row = {"dataset": dataset.name, "seed": label, "contender": contender.name, **got}
                rows.append(row)
                if on_run is not None:
                    on_run(row)
    columns = ["dataset", "seed", "contender", *exp.metrics, "validation", "best", "seconds"]
    return ExperimentResult(exp, pd.DataFrame(rows, columns=columns))


def _release(name: str) -> bool:
    """Whether `name` is a release's name (else a folder or zip holding one)."""
    from ..data.movielens import release_name

    try:
        release_name(name)
    except ValueError:
        return False
    return True


def _load_dataset(name: str, data_dir: str | None) -> Any:
    """A release by name (from `data_dir`, or cfcore's cache) or from a folder or zip."""
    from ..data.movielens import guess_release
    from ..datasets import load_movielens

    if _release(name):
        return load_movielens(name, data_dir=data_dir)
    path = Path(name).expanduser()
    return load_movielens(guess_release(path), data_dir=path)


def _split(exp: Experiment, ds: Any, dataset: Dataset, label: str, seed: int) -> tuple[Any, Any]:
    """(training part, test part): the test part a `Ratings`, or a strong-generalization split
    whose `train` is the training part."""
    if exp.protocol == "implicit":
        from ..eval.implicit import strong_generalization_split

        split = strong_generalization_split(
            ds.ratings, heldout_share=dataset.test_share, seed=seed, threshold=exp.threshold
        )
        return split.train, split
    if exp.folds:
        return ds.fold(label)
    return ds.ratings.split(holdout_fraction=dataset.test_share, seed=seed)


def _tune_and_test(
    exp: Experiment, contender: Contender, train: Any, test: Any, seed: int
) -> dict[str, Any]:
    import time

    start = time.perf_counter()
    plan = contender.plan
    # The seed's search; positives of the implicit protocol's training part are already 1.0.
    plan = dataclasses.replace(
        plan, settings=dataclasses.replace(plan.settings, seed=seed),
        threshold=0.0 if exp.protocol == "implicit" else plan.threshold,
    )  # fmt: skip
    result = plan.run(train)
    best = result.best
    if contender.peer:
        adapter = plan.family.cls(**best)
        adapter.fit(train, seed=seed)  # pyright: ignore[reportAttributeAccessIssue]
        scored: Any = Scored(adapter)
    else:
        scored = build_model(plan.family, best)
        fit: dict[str, Any] = {"backend": exp.backend, "seed": seed, "progress": False,
                               **plan.settings.fit_options}  # fmt: skip
        opt = plan.settings.optimizer_for(plan.family, best)
        if opt is not None:
            fit["optimizer"] = opt
        scored.fit(train, steps=result.best_steps, **fit)
    # The test part's one reading.
    if exp.protocol == "implicit":
        from ..eval.implicit import evaluate_strong_generalization

        ks = tuple(sorted({int(m.split("@")[1]) for m in exp.metrics}))
        got = evaluate_strong_generalization(scored, test, ks, backend=exp.backend)
    else:
        got = scored.evaluate(test)
    settings = result.best_settings() if not contender.peer else best
    return {**{m: float(got[m]) for m in exp.metrics}, "validation": result.best_metric,
            "best": json.dumps(settings, sort_keys=True),
            "seconds": time.perf_counter() - start}  # fmt: skip


# ------------------------------------------------------------------------------------ writing


def _intro(exp: Experiment) -> str:
    seeds = ("folds " if exp.folds else "seeds ") + ", ".join(label for label, _ in exp.seeds)
    sets = ", ".join(f"{d.name} (test share {d.test_share:g})" if not exp.folds else d.name
                     for d in exp.datasets)  # fmt: skip
    protocol = {"explicit": "ratings held out, scored by their error",
                "implicit": "strong generalization: held-out users folded in"}[exp.protocol]  # fmt: skip
    return (
        f"{exp.protocol} protocol ({protocol}); datasets {sets}; {seeds}. Each contender is "
        "tuned on a validation split carved from each seed's training part, refitted on the "
        "training part and scored on the test part once. Intervals: 95% Student t over seeds."
    )


def _markdown(result: ExperimentResult) -> str:
    exp = result.experiment
    summary, paired = result.summary(), result.paired()
    lines = [f"# {exp.name}", "", _intro(exp), ""]
    for dataset in exp.datasets:
        part = summary[summary.dataset == dataset.name]
        lines += [f"## {dataset.name}", "", "| contender | " + " | ".join(exp.metrics) + " |",
                  "|---|" + "---|" * len(exp.metrics)]  # fmt: skip
        for c in exp.contenders:
            cells = []
            for m in exp.metrics:
                r = part[(part.contender == c.name) & (part.metric == m)].iloc[0]
                cells.append(Interval(int(r.n), float(r["mean"]), _none(r.half)).text())
            lines.append(f"| {c.name} | " + " | ".join(cells) + " |")
        diffs = paired[paired.dataset == dataset.name] if len(paired) else paired
        if len(diffs):
            lines += ["", "Paired differences (a − b over the same seeds, mean ± 95% interval):",
                      "", "| a − b | " + " | ".join(exp.metrics) + " |",
                      "|---|" + "---|" * len(exp.metrics)]  # fmt: skip
            for (a, b), pair in diffs.groupby(["a", "b"], sort=False):
                cells = [Interval(int(r.n), float(r["mean"]), _none(r.half)).text()
                         for _, r in pair.set_index("metric").loc[list(exp.metrics)].iterrows()]  # fmt: skip
                lines.append(f"| {a} − {b} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Chosen settings", "", "| dataset | seed | contender | validation | best |",
              "|---|---|---|---|---|"]  # fmt: skip
    for _, r in result.runs.iterrows():
        lines.append(f"| {r.dataset} | {r.seed} | {r.contender} | {r.validation:.4f} | "
                     f"`{r.best}` |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _none(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)
