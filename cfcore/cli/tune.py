"""`cfcore tune`: search a model's hyper-parameters on a validation split of the training data.

The command checks every option (the space included, each value built into its model) before
the data is read, loads the split like `cfcore train` (`--fold`, or a seeded `--holdout`), hands
only the training part to `cfcore.tune` and writes tune.csv, best.json and report.html into
--out. `cfcore train --config OUT/best.json` trains the best setting.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..errors import ArgumentValueError
from ._common import DataDirOpt, DatasetOpt, OptimizerKind, console, fail
from ._signals import deferred, kept, output, stage
from .train import _ERRORS, ModelKind, _load_split

TUNE_FILES = ("tune.csv", "best.json", "report.html")
"""The files a search writes into --out."""


class SearchKind(enum.StrEnum):
    grid = "grid"
    random = "random"
    tpe = "tpe"


def register(app: typer.Typer) -> None:
    """Adds the `tune` command to `app`."""
    app.command(name="tune")(tune)


def tune(
    model: Annotated[
        ModelKind,  # pyright: ignore[reportInvalidTypeForm]  (built from the model classes)
        typer.Option(help="The model family to search (as cfcore train --model)."),
    ] = "biased",
    grid: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME=V1,V2",
            help="NAME=VALUE,VALUE,...: the values of one hyper-parameter (a constructor "
            "argument such as regularization_coeff or embedding_dim, or learning_rate); repeat "
            "for each.",
        ),
    ] = None,
    space: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help='A JSON file {name: \\[values] | value | {"loguniform": \\[low, high]} | '
            '{"uniform": \\[low, high]} | {"intrange": \\[low, high]}} (with --grid: both, '
            "each name in one of them).",
        ),
    ] = None,
    search: Annotated[
        SearchKind, typer.Option(help="grid (every point), random, or tpe (needs cfcore[tune]).")
    ] = SearchKind.grid,
    trials: Annotated[
        int | None, typer.Option(help="Points of a random or tpe search \\[default: 20].")
    ] = None,
    budget_fits: Annotated[int | None, typer.Option(help="At most this many points.")] = None,
    budget_seconds: Annotated[
        float | None, typer.Option(help="No point starts after this many seconds.")
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(help="rmse, mse or mae (ratings); recall@K or ndcg@K (ials, bpr)."),
    ] = None,
    validation: Annotated[
        float,
        typer.Option(
            help="Share of the training data held out for validation (users for ials, bpr)."
        ),
    ] = 0.1,
    steps: Annotated[
        int | None, typer.Option(help="Steps or sweeps per point \\[default: the model's].")
    ] = None,
    optimizer: Annotated[
        OptimizerKind | None,
        typer.Option(help="Optimizer of a gradient-trained model (biased: gradient steps)."),
    ] = None,
    learning_rate: Annotated[
        float | None,
        typer.Option("--lr", "--learning-rate", help="Learning rate, unless searched."),
    ] = None,
    eval_every: Annotated[
        int | None,
        typer.Option(
            help="Early stopping: evaluate every this many steps and stop a point after "
            "--patience evaluations without improvement \\[default: one evaluation at the end]."
        ),
    ] = None,
    patience: Annotated[int, typer.Option(help="Early stopping: see --eval-every.")] = 3,
    threshold: Annotated[
        float, typer.Option(help="ials, bpr: ratings above this are the positives.")
    ] = 3.5,
    backend: Annotated[
        str | None, typer.Option(help="jax, tf or torch (default: $CFCORE_BACKEND, else jax).")
    ] = None,
    batch: Annotated[
        int,
        typer.Option(help="Points trained together in one compiled loop (worth it on a GPU)."),
    ] = 1,
    dataset: DatasetOpt = "100k",
    data_dir: DataDirOpt = None,
    fold: Annotated[
        str | None,
        typer.Option(help="Tune on a canonical 100k fold's training part (u1..u5, ua, ub)."),
    ] = None,
    holdout: Annotated[
        float,
        typer.Option(help="Without --fold: the test share set aside first (never searched on)."),
    ] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of the splits, the search and the fits.")] = 0,
    out: Annotated[
        Path, typer.Option(help="Folder for tune.csv, best.json and report.html.")
    ] = Path("runs/tune"),
) -> None:
    """Search a model's hyper-parameters on a validation split of the training data.

    Only the training part of the split (--fold's, or the rest after --holdout) is read by the
    search; its validation part is carved from it (a seeded holdout of ratings; for ials and bpr,
    held-out users folded in). Writes tune.csv (a row per setting), best.json (train it with
    cfcore train --config OUT/best.json) and report.html (the metric against each
    hyper-parameter).
    """
    from cfcore.tuning import EarlyStopping, plan_search

    try:
        # Every option, the whole space included, before the data is read.
        chosen = _space(grid, space)
        _check_split(backend, fold, holdout, eval_every)
        plan = plan_search(
            str(model), chosen, search=search.value, trials=trials, budget_fits=budget_fits,
            budget_seconds=budget_seconds, metric=metric, validation=validation, seed=seed,
            backend=backend, steps=steps, optimizer=None if optimizer is None else optimizer.value,
            learning_rate=learning_rate, threshold=threshold, batch=batch,
            early_stopping=None if eval_every is None else EarlyStopping(eval_every, patience),
        )  # fmt: skip
        _check_out(out)
    except _ERRORS as err:
        raise fail(err) from err
    output(out)
    try:
        ds, train_r, _test_never_read = _load_split(dataset, data_dir, fold, holdout, seed)
        console.print(
            f"[bold]{plan.family.cls.__name__}[/] on {ds.name}: {search.value} search over "
            f"{', '.join(plan.space) or 'no hyper-parameter'} on {len(train_r)} training "
            f"ratings, {plan.settings.steps} steps per point"
        )
        stage("during the search")
        with deferred():  # a signal waits for the next safe point between compiled chunks
            result = plan.run(train_r, on_result=_print_point)
    except _ERRORS as err:
        raise fail(err, highlight=True) from err
    _print_table(result)
    # The same split as the search's: train splits the same way with the same options.
    where = f"--dataset {dataset}" + (f" --fold {fold}" if fold else f" --holdout {holdout:g}")
    where += f" --seed {seed}" if seed else ""
    _write(out, result, f"cfcore train --config {out / 'best.json'} {where}")


def _space(grid: list[str] | None, path: Path | None) -> dict[str, Any]:
    """The space of --space's JSON file and the --grid options (a name in both refused)."""
    from cfcore.tuning.result import read_json
    from cfcore.tuning.space import parse_grid, space_from_json

    chosen: dict[str, Any] = {}
    if path is not None:
        chosen = space_from_json(read_json(path, "--space file"), where=f"--space {path}")
    for option in grid or ():
        name, values = parse_grid(option)
        if name in chosen:
            raise ArgumentValueError(f"--grid {option!r}: {name} is already in the space")
        chosen[name] = values
    return chosen


def _check_split(backend: str | None, fold: str | None, holdout: float, eval_every: Any) -> None:
    from cfcore.backend.registry import check_backend_name
    from cfcore.data import FOLDS_100K
    from cfcore.validate import check_float, check_int

    if backend is not None:
        check_backend_name(backend)
    if fold is not None and fold not in FOLDS_100K:
        raise ArgumentValueError(f"unknown fold {fold!r}; valid folds are {', '.join(FOLDS_100K)}")
    check_float("--holdout", holdout, exclusive_minimum=0, exclusive_maximum=1)
    if eval_every is not None:
        check_int("--eval-every", eval_every, minimum=1)


def _check_out(out: Path) -> None:
    from cfcore.io.atomic import check_output_path

    for name in TUNE_FILES:
        check_output_path(out / name)


def _print_point(res: Any) -> None:
    values = ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in res.point.items()
    )
    console.print(
        f"  {values or 'defaults'}: {res.value:.4f} at step {res.best_step} ({res.status}, "
        f"{res.seconds:.1f} s)",
        highlight=False,
    )


def _print_table(result: Any) -> None:
    """The best settings first (at most 10)."""
    table = result.table.sort_values(result.metric, ascending=not result.higher_is_better)
    shown = Table(title=f"{len(table)} settings, best {result.metric} first")
    for col in table.columns:
        shown.add_column(str(col), justify="right")
    for _, row in table.head(10).iterrows():
        shown.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    console.print(shown)


def _write(out: Path, result: Any, retrain: str) -> None:
    """tune.csv and best.json, then report.html, each atomically."""
    stage("while writing the search's files")
    kept(f"the search's files in {out} may be incomplete")
    try:
        with deferred():
            result.to_csv(out / "tune.csv")
            result.save_best(out / "best.json")
        kept(f"tune.csv and best.json are in {out}")
        stage("while writing report.html")
        result.report(out / "report.html")
    except _ERRORS as err:
        raise fail(err) from err
    kept(f"the search's files are in {out}")
    console.print(
        f"best {result.metric} {result.best_metric:.4f}: {result.best_settings()}\n"
        f"wrote {out / 'tune.csv'}, {out / 'best.json'} and {out / 'report.html'} (train it "
        f"with: {retrain})",
        highlight=False,
        soft_wrap=True,
    )
