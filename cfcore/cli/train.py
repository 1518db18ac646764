"""`cfcore train`: fit a matrix-factorization or softmax model and write the run's files.

The command runs in named steps: resolve the options against the notebook's defaults, load and
split the data, build the model, fit it, print its evaluation, write history.csv, embeddings.npz
and model.npz.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from rich.table import Table

from ..errors import ArgumentValueError, CfcoreError
from ..models.base import CommandLine, command_line_models
from ._common import DataDirOpt, DatasetOpt, OptimizerKind, console, fail, load_dataset, save_npz
from ._signals import deferred, kept, output, stage

# What a failed `train` reports as `error: ...` with exit code 1 (anything else is a bug).
_ERRORS = (CfcoreError, ValueError, OSError, FloatingPointError, TypeError, MemoryError)

# The files a run writes into --out.
RUN_FILES = ("history.csv", "embeddings.npz", "model.npz")


# The models `--model` offers: every model class that declares a `command_line` (the
# declaration says how to build, train and evaluate it; the command lists no models itself).
MODELS = command_line_models()
ModelKind = enum.StrEnum("ModelKind", {name: name for name in MODELS})


class ALSSolver(enum.StrEnum):
    auto = "auto"
    cholesky = "cholesky"
    cg = "cg"


class Protocol(enum.StrEnum):
    holdout = "holdout"
    notebook = "notebook"


class SoftmaxLoss(enum.StrEnum):
    full = "full"
    sampled = "sampled"


class Activation(enum.StrEnum):
    none = "none"
    relu = "relu"
    tanh = "tanh"


def _defaults_help(flag: str, names: Any = None) -> str:
    """`\\[mf: 30, regularized: 35, ...]`: each model's command-line default of `flag` (those
    of `names`, default every model), for an option's help."""
    lines = [MODELS[n].command_line for n in (MODELS if names is None else names)]
    pairs = [f"{x.name}: {x.defaults[flag]}" for x in lines if x is not None and flag in x.defaults]
    return "\\[" + ", ".join(pairs) + "]"


def _line(model: str) -> CommandLine:
    """The command-line declaration of `--model`'s class."""
    line = MODELS[str(model)].command_line
    assert line is not None  # MODELS holds only classes that declare one
    return line


SOFTMAX_FEATURES = ("movie_id", "genre", "year")


def register(app: typer.Typer) -> None:
    """Adds the `train` command to `app`."""
    app.command(name="train")(train)


def train(
    ctx: typer.Context,
    model: Annotated[
        ModelKind,  # pyright: ignore[reportInvalidTypeForm]  (built from the model classes)
        typer.Option(
            help="The model (mf: plain MF, regularized: MF with L2 + gravity, softmax: section "
            "VI, wals/ials/biased: ALS, ...): every model class that declares its command line."
        ),
    ] = "regularized",
    backend: Annotated[
        str | None, typer.Option(help="jax or tf (default: $CFCORE_BACKEND, else jax).")
    ] = None,
    dataset: DatasetOpt = "100k",
    data_dir: DataDirOpt = None,
    dim: Annotated[
        int | None,
        typer.Option(help=f"Embedding dimension {_defaults_help('--dim')}."),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            help=f"Optimizer steps, or sweeps of the models trained by sweeps "
            f"{_defaults_help('--steps')}."
        ),
    ] = None,
    learning_rate: Annotated[
        float | None,
        typer.Option(
            "--lr",
            "--learning-rate",
            help=f"Learning rate {_defaults_help('--lr')}.",
        ),
    ] = None,
    optimizer: Annotated[
        OptimizerKind | None,
        typer.Option(help="Optimizer (mf, regularized: sgd; softmax: adagrad)."),
    ] = None,
    init_stddev: Annotated[
        float | None,
        typer.Option(
            help=f"Std. dev. of the initial embeddings {_defaults_help('--init-stddev')}."
        ),
    ] = None,
    regularization: Annotated[
        float | None,
        typer.Option(help=f"λr, L2 coefficient {_defaults_help('--regularization')}."),
    ] = None,
    gravity: Annotated[
        float | None,
        typer.Option(help=f"λg, gravity coefficient {_defaults_help('--gravity')}."),
    ] = None,
    solver: Annotated[
        ALSSolver,
        typer.Option(
            help="wals, ials, biased: linear solver of each row (auto: Cholesky to d 128)."
        ),
    ] = ALSSolver.auto,
    bias_regularization: Annotated[
        float | None, typer.Option(help="biased: λb, L2 coefficient of the biases \\[0.1].")
    ] = None,
    unobserved_weight: Annotated[
        float, typer.Option(help="ials: α₀, the weight of every unobserved pair.")
    ] = 0.1,
    posterior_samples: Annotated[
        int,
        typer.Option(
            help="biased: after training, average this many Gibbs draws of the posterior "
            "(BiasedMF.sample_posterior); 0: off."
        ),
    ] = 0,
    burn_in: Annotated[
        int, typer.Option(help="biased, with --posterior-samples: draws discarded first.")
    ] = 10,
    noise_precision: Annotated[
        float,
        typer.Option(help="biased, with --posterior-samples: α, the precision of the noise."),
    ] = 2.0,
    thin: Annotated[
        int, typer.Option(help="biased, with --posterior-samples: keep one draw in this many.")
    ] = 1,
    threshold: Annotated[
        float, typer.Option(help="ials: ratings above this are the positives.")
    ] = 3.5,
    mse: Annotated[str, typer.Option(help="gather or dense form of the observed MSE.")] = "gather",
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Ratings per step; default full batch (softmax: users per step, default 200)."
        ),
    ] = None,
    holdout: Annotated[float, typer.Option(help="Fraction of ratings held out for testing.")] = 0.1,
    fold: Annotated[
        str | None,
        typer.Option(help="Use a canonical 100k fold (u1..u5, ua, ub) instead of a random split."),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of the split, the initial values and the batches.")
    ] = 0,
    eval_every: Annotated[
        int | None,
        typer.Option(
            help="Steps between two history rows (mf, regularized: 10; softmax: 100; sweep "
            "models: one row after the last)."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for history.csv and embeddings.npz.")] = Path(
        "runs/latest"
    ),
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    feature_dims: Annotated[
        str | None,
        typer.Option(
            help="Softmax: input embedding dimensions, NAME=DIM,... or DIMS in movie_id,genre,year "
            "order \\[default: movie_id=35,genre=3,year=2]."
        ),
    ] = None,
    hidden_dims: Annotated[
        str | None,
        typer.Option(
            help="Softmax: hidden layer sizes, comma-separated, the last equal to the movie_id "
            "dimension, or none \\[default: 35]."
        ),
    ] = None,
    activation: Annotated[
        Activation, typer.Option(help="Softmax: activation after each hidden layer.")
    ] = Activation.none,
    loss: Annotated[
        SoftmaxLoss,
        typer.Option(help="Softmax: full softmax, or sampled (in-batch negatives, logQ)."),
    ] = SoftmaxLoss.full,
    protocol: Annotated[
        Protocol,
        typer.Option(
            help="Softmax: holdout (leak-free, 20% of a test user's movies held out) or notebook "
            "(as the notebook)."
        ),
    ] = Protocol.holdout,
    k: Annotated[
        int, typer.Option("--k", "-k", help="Softmax, ials: cut-off of the ranking metrics.")
    ] = 10,
    report: Annotated[
        bool,
        typer.Option(
            help="Write report.html: the run's training curves, loss parts and embedding norms "
            "in one interactive page that works offline."
        ),
    ] = True,
    tsne: Annotated[
        bool,
        typer.Option(
            help="Add a t-SNE map of the item embeddings to report.html (about 20 s on ml-100k)."
        ),
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            help="Settings from a best.json of cfcore tune (its model and hyper-parameters); "
            "options given on the command line win over it."
        ),
    ] = None,
) -> None:
    """Train a matrix-factorization model and write its history and embeddings.

    With --model softmax, trains the notebook's softmax model instead and prints its ranking
    metrics beside the popularity baseline's. --model wals minimises the regularized objective
    by alternating least squares (steps are sweeps); ials is implicit-feedback ALS on the ratings
    above --threshold (prints recall and NDCG of the held-out positives); biased adds a mean and
    user and item biases (ALS sweeps, or gradient steps with --optimizer); bpr is Bayesian
    personalized ranking on the same positives as ials (gradient steps).
    """
    wish = _ReportWish(report, tsne)  # before training: a bad combination fails at once
    if config is not None:
        try:
            model, cfg = _config_settings(config, ctx, model)
        except _ERRORS as err:
            raise fail(err) from err
        # fmt: off
        dim, steps, learning_rate = cfg.get("dim", dim), cfg.get("steps", steps), cfg.get("learning_rate", learning_rate)
        optimizer, init_stddev, mse = cfg.get("optimizer", optimizer), cfg.get("init_stddev", init_stddev), cfg.get("mse", mse)
        regularization, gravity = cfg.get("regularization", regularization), cfg.get("gravity", gravity)
        bias_regularization = cfg.get("bias_regularization", bias_regularization)
        unobserved_weight, solver = cfg.get("unobserved_weight", unobserved_weight), cfg.get("solver", solver)
        # fmt: on
    line = _line(model)
    try:
        # Every option before the data is read or a framework imported: a mistake must not
        # cost a finished run.
        _check_options(
            line,
            given={
                "--dim": dim, "--lr": learning_rate, "--optimizer": optimizer,
                "--init-stddev": init_stddev, "--regularization": regularization,
                "--gravity": gravity, "--fold": fold, "--feature-dims": feature_dims,
                "--hidden-dims": hidden_dims,
            },
            changed={
                "--posterior-samples": posterior_samples != 0,
                "--solver": solver is not ALSSolver.auto,
                "--activation": activation is not Activation.none,
                "--loss": loss is not SoftmaxLoss.full,
                "--protocol": protocol is not Protocol.holdout,
            },
        )  # fmt: skip
        _check_numbers(
            backend=backend, dim=dim, steps=steps, eval_every=eval_every, batch_size=batch_size,
            seed=seed, k=k, holdout=holdout, fold=fold, mse=mse, threshold=threshold,
            numbers={
                "--lr": learning_rate, "--init-stddev": init_stddev,
                "--regularization": regularization, "--gravity": gravity,
                "--bias-regularization": bias_regularization,
                "--unobserved-weight": unobserved_weight,
            },
            posterior={"samples": posterior_samples, "burn_in": burn_in,
                       "noise_precision": noise_precision, "thin": thin},
        )  # fmt: skip
        # The model now: its constructor's checks too come before any work.
        if line.data == "users":
            _build_softmax(line, feature_dims, hidden_dims, activation, loss)
            mf = None
        else:
            settings = _MFSettings.resolve(
                line,
                dim=dim,
                steps=steps,
                learning_rate=learning_rate,
                init_stddev=init_stddev,
                optimizer=optimizer,
                eval_every=eval_every,
            )
            built = _build_factor(
                line, settings, {
                    "--regularization": regularization, "--gravity": gravity,
                    "--solver": solver.value, "--bias-regularization": bias_regularization,
                    "--unobserved-weight": unobserved_weight, "--mse": mse,
                },
            )  # fmt: skip
            mf = (settings, built)
        _check_out(out)
    except _ERRORS as err:
        raise fail(err) from err
    output(out)
    if mf is None:
        _train_softmax(
            line,
            backend=backend,
            dataset=dataset,
            data_dir=data_dir,
            protocol=protocol,
            optimizer=optimizer,
            learning_rate=learning_rate,
            steps=steps,
            batch_size=batch_size,
            eval_every=eval_every,
            seed=seed,
            k=k,
            out=out,
            progress=progress,
            report=wish,
            build=lambda: _build_softmax(line, feature_dims, hidden_dims, activation, loss),
        )
        return
    settings, m = mf
    _train_factor(
        line,
        m,
        backend=backend,
        dataset=dataset,
        data_dir=data_dir,
        fold=fold,
        holdout=holdout,
        seed=seed,
        settings=settings,
        optimizer_given=optimizer is not None,
        batch_size=batch_size,
        threshold=threshold,
        k=k,
        out=out,
        progress=progress,
        report=wish,
        posterior={
            "samples": posterior_samples,
            "burn_in": burn_in,
            "noise_precision": noise_precision,
            "thin": thin,
        },
    )


# ---------------------------------------------------------------------------- options

# The train parameter of each option a best.json (`cfcore tune`) may set, and how its value is
# read; a setting maps to its option through the model's `CommandLine.arguments`.
_CONFIG_PARAMS: dict[str, tuple[str, Any]] = {
    "--dim": ("dim", int), "--steps": ("steps", int), "--lr": ("learning_rate", float),
    "--optimizer": ("optimizer", OptimizerKind), "--init-stddev": ("init_stddev", float),
    "--regularization": ("regularization", float), "--gravity": ("gravity", float),
    "--solver": ("solver", ALSSolver), "--bias-regularization": ("bias_regularization", float),
    "--unobserved-weight": ("unobserved_weight", float), "--mse": ("mse", str),
}  # fmt: skip
# The settings of a best.json that are not constructor arguments, by option.
_CONFIG_FLAGS = {"learning_rate": "--lr", "optimizer": "--optimizer", "steps": "--steps"}


def _config_settings(config: Path, ctx: typer.Context, model: Any) -> tuple[Any, dict[str, Any]]:
    """The model and the train parameters a best.json sets (`cfcore tune`), those given on the
    command line left out (they win).

    Raises:
        MissingFileError: no such file.
        ArgumentValueError: not such a file, another --model than the one given, or a setting
            that no option of the model takes (naming it).
    """
    from cfcore.tuning import read_best

    def given(param: str) -> bool:
        # By name: Typer may bring its own copy of click, with its own ParameterSource enum.
        source = ctx.get_parameter_source(param)
        return source is not None and source.name == "COMMANDLINE"

    doc = read_best(config)
    name = doc["model"]
    if name not in MODELS:
        raise ArgumentValueError(f"--config {config}: unknown model {name!r}")
    if given("model") and str(model) != name:
        raise ArgumentValueError(
            f"--config {config} holds settings of --model {name}, not --model {model}"
        )
    line = _line(name)
    flags = {**{arg: flag for flag, arg in line.arguments.items()}, **_CONFIG_FLAGS}
    accepted = _accepted(line) | {"--steps"}  # every model takes --steps
    out: dict[str, Any] = {}
    for key, value in doc["settings"].items():
        flag = flags.get(key)
        if flag is None or flag not in accepted or flag not in _CONFIG_PARAMS:
            known = sorted(k for k, f in flags.items() if f in accepted and f in _CONFIG_PARAMS)
            raise ArgumentValueError(
                f"--config {config}: setting {key!r} is no option of cfcore train --model "
                f"{name}; it takes {', '.join(known)}"
            )
        param, kind = _CONFIG_PARAMS[flag]
        if given(param):
            continue  # the command line wins
        try:
            out[param] = kind(value)
        except ValueError:
            raise ArgumentValueError(
                f"--config {config}: setting {key!r} ({flag}) cannot be {value!r}"
            ) from None
    return name, out


# What each model trains by: the options of the others mean nothing to it.
_GRADIENT_ONLY = ("--optimizer", "--lr")


def _accepted(line: CommandLine) -> set[str]:
    """The options a model reads: its own (`arguments`, `options`), the optimizer's when it
    can take gradient steps, the split's when it trains on rating pairs."""
    used = set(line.arguments) | set(line.options)
    if line.trains_by != "sweeps":
        used |= set(_GRADIENT_ONLY)
    if line.data != "users":
        used.add("--fold")
    return used


def _check_options(line: CommandLine, *, given: dict[str, Any], changed: dict[str, bool]) -> None:
    """Refuses options the model does not use, rather than ignoring them.

    Args:
        line: the --model's declaration.
        given: options without a default, by flag: None when not given.
        changed: options with a default, by flag: whether the user changed it.

    Raises:
        ArgumentValueError: naming the option and the model (and the models that read it).
    """
    used = [flag for flag, value in given.items() if value is not None]
    used += [flag for flag, on in changed.items() if on]
    name = f"--model {line.name}"
    accepted = _accepted(line)
    for flag in used:
        if flag in accepted:
            continue
        readers = [n for n, cls in MODELS.items() if flag in _accepted(_line(n))]
        where = f"--model {', '.join(readers)}" if readers else "no model"
        if flag in line.hints:
            why = f"applies to {where}; for {name} use {line.hints[flag]}"
        elif flag in _GRADIENT_ONLY and line.trains_by == "sweeps":
            why = f"applies to gradient training; {name} is trained by ALS sweeps"
        else:
            why = f"applies to {where}, not {name}"
        raise ArgumentValueError(f"{flag} {why}")
    if line.trains_by == "sweeps-or-steps" and "--lr" in used and "--optimizer" not in used:
        raise ArgumentValueError(
            f"--lr applies to gradient training: give --optimizer too (without it {name} is "
            "trained by ALS sweeps)"
        )


def _check_numbers(
    *,
    backend: str | None,
    dim: int | None,
    steps: int | None,
    eval_every: int | None,
    batch_size: int | None,
    seed: int,
    k: int,
    holdout: float,
    fold: str | None,
    mse: str,
    threshold: float,
    numbers: dict[str, float | None],
    posterior: dict[str, Any] | None = None,
) -> None:
    """Refuses, naming the option and its value, a number no run can use (and an unknown
    backend, fold or MSE form): nothing is read or imported first.

    Raises:
        ArgumentValueError: a count below its minimum, a coefficient negative or not finite, a
            holdout outside (0, 1), an unknown fold or MSE form.
        BackendError: no backend of that name.
    """
    from cfcore.backend.registry import check_backend_name
    from cfcore.data import FOLDS_100K
    from cfcore.errors import ArgumentValueError
    from cfcore.specs import check_mse
    from cfcore.validate import check_float, check_int

    if backend is not None:
        check_backend_name(backend)
    for flag, value, minimum in (
        ("--dim", dim, 1),
        ("--steps", steps, 1),
        ("--eval-every", eval_every, 1),
        ("--batch-size", batch_size, 1),
        ("--seed", seed, 0),
        ("--k", k, 1),
    ):
        if value is not None:
            check_int(flag, value, minimum=minimum)
    if posterior is not None:
        check_int("--posterior-samples", posterior["samples"], minimum=0)
        check_int("--burn-in", posterior["burn_in"], minimum=0)
        check_int("--thin", posterior["thin"], minimum=1)
        check_float("--noise-precision", posterior["noise_precision"], exclusive_minimum=0)
    check_float("--holdout", holdout, exclusive_minimum=0, exclusive_maximum=1)
    check_float("--threshold", threshold)
    for flag, value in numbers.items():
        if value is not None:
            if flag == "--lr":
                check_float(flag, value, exclusive_minimum=0)
            else:
                check_float(flag, value, minimum=0)
    if fold is not None and fold not in FOLDS_100K:
        raise ArgumentValueError(f"unknown fold {fold!r}; valid folds are {', '.join(FOLDS_100K)}")
    check_mse(mse)


# ---------------------------------------------------------------------------- steps, shared


def _optimizer_and_backend(optimizer: OptimizerKind, learning_rate: float, backend: str | None):
    """The optimizer, then the backend (which imports its framework)."""
    import cfcore

    opt = cfcore.optimizers.make_optimizer(optimizer.value, learning_rate)
    stage("while starting the backend")
    return opt, cfcore.get_backend(backend)


def _check_out(out: Path) -> None:
    """Refuses, before any training, an --out where the run's files cannot be written.

    Raises:
        FileAccessError: `out` is a file, lies under a file, holds a folder where a file goes,
            or is (or would be created in) a folder this process may not write into.
    """
    from cfcore.io.atomic import check_output_path

    for name in RUN_FILES:
        check_output_path(out / name)


def _write_run(out: Path, history: pd.DataFrame, emb: dict[str, np.ndarray], model: Any) -> None:
    """Writes history.csv, embeddings.npz and model.npz into `out`, each atomically.

    If `out` fails now (it was checked before training, but a disk can fill up or a folder
    change meanwhile), the run is written to a new temporary folder instead, so the trained
    model is never lost; the command then says where it is and exits with code 1.
    """
    stage("while writing the run files")
    kept(f"the run's files in {out} may be incomplete")
    try:
        with deferred():  # a first signal lets the three files be written
            _write_files(out, history, emb, model)
    except _ERRORS as err:
        import tempfile

        try:
            rescue = Path(tempfile.mkdtemp(prefix="cfcore-run-"))
            output(rescue)
            kept(f"the run's files in {rescue} may be incomplete")
            with deferred():
                _write_files(rescue, history, emb, model)
        except _ERRORS as err2:
            console.print(
                f"[red]error:[/] could not write the run to {out} ({err}) nor to a "
                f"temporary folder ({err2}); the trained model is lost"
            )
            raise typer.Exit(code=1) from err2
        console.print(
            f"[red]error:[/] could not write the run to {out}: {err}\n"
            f"The trained model was saved to {rescue} instead (move it where you want it: "
            f"cfcore recommend --model {rescue})."
        )
        raise typer.Exit(code=1) from err
    kept(f"the run is in {out}")
    console.print(
        f"wrote {out / 'history.csv'}, {out / 'embeddings.npz'} and {out / 'model.npz'} "
        f"(use it with: cfcore recommend --model {out})"
    )


def _write_files(out: Path, history: pd.DataFrame, emb: dict[str, np.ndarray], model: Any) -> None:
    from cfcore.io.atomic import atomic_write

    # The model first: it is what a rerun would cost.
    model.save(out / "model.npz")
    atomic_write(out / "embeddings.npz", lambda p: save_npz(p, emb))
    atomic_write(out / "history.csv", lambda p: history.to_csv(p, index=False))


@dataclass(frozen=True)
class _ReportWish:
    """Whether to write report.html, and whether it gets a t-SNE map."""

    write: bool
    tsne: bool

    def __post_init__(self) -> None:
        if self.tsne and not self.write:
            raise typer.BadParameter("--tsne draws into report.html: it needs --report")


def _write_report(
    out: Path,
    wish: _ReportWish,
    history: pd.DataFrame,
    emb: dict[str, np.ndarray],
    ds: Any,
    label: str,
) -> None:
    """Writes report.html: training curves (with the loss parts), norms and optionally t-SNE."""
    if not wish.write:
        return
    from cfcore import viz

    stage("while writing report.html")

    try:
        sections = [
            ("training curves", viz.training_curves_chart(history)),
            (
                "embedding norm against number of ratings",
                viz.embedding_norm_chart({label: emb}, ds.ratings),
            ),
        ]
        if wish.tsne:
            with console.status(f"t-SNE of {len(emb['item'])} item embeddings ..."):
                xy = viz.tsne(emb)
            sections.append(
                ("t-SNE of the item embeddings", viz.tsne_chart(xy, ds.ratings, title=label))
            )
        path = viz.save_report(
            sections,
            out / "report.html",
            title=f"cfcore run {out.name}: {label} on {ds.name}",
            intro=f"{len(history)} history rows, last step {int(history['step'].iloc[-1])}.",
        )
    except _ERRORS as err:
        raise fail(err) from err
    console.print(
        f"report: {path} (open {path.resolve().as_uri()} in a browser; it works offline)",
        highlight=False,
        soft_wrap=True,
    )


# ---------------------------------------------------------------------------- steps, MF


@dataclass(frozen=True)
class _MFSettings:
    """The options of a factor model's run, each given on the command line or the model's
    declared default (`CommandLine.defaults`; None: its constructor's)."""

    dim: int | None
    steps: int
    learning_rate: float
    init_stddev: float | None
    optimizer: OptimizerKind
    eval_every: int

    @classmethod
    def resolve(
        cls,
        line: CommandLine,
        *,
        dim: int | None,
        steps: int | None,
        learning_rate: float | None,
        init_stddev: float | None,
        optimizer: OptimizerKind | None,
        eval_every: int | None,
    ) -> _MFSettings:
        d = line.defaults
        sweeps_or_steps: int = d.get("--steps", 100) if steps is None else steps
        # Gradient steps are cheap: a row every 10. Each row of a sweep model costs a pass over
        # the data and a wait for the device, as much as its sweeps on small data: by default
        # one row after the last sweep.
        every = d.get("--eval-every", 10 if line.trains_by == "steps" else sweeps_or_steps)
        return cls(
            dim=d.get("--dim") if dim is None else dim,
            steps=sweeps_or_steps,
            learning_rate=d.get("--lr", 0.05) if learning_rate is None else learning_rate,
            init_stddev=d.get("--init-stddev") if init_stddev is None else init_stddev,
            optimizer=OptimizerKind(d.get("--optimizer", "sgd"))
            if optimizer is None
            else optimizer,
            eval_every=every if eval_every is None else eval_every,
        )


def _load_split(dataset: str, data_dir: Path | None, fold: str | None, holdout: float, seed: int):
    """The dataset and its (train, test) ratings: a canonical fold, or a seeded random split."""
    stage("while loading the data")
    ds = load_dataset(dataset, data_dir)
    if fold is not None:
        train_r, test_r = ds.fold(fold)
    else:
        train_r, test_r = ds.ratings.split(holdout_fraction=holdout, seed=seed)
    return ds, train_r, test_r


def _build_factor(line: CommandLine, settings: _MFSettings, values: dict[str, Any]) -> Any:
    """The model of `line` built from the options it declares (`line.arguments`): each given
    value, else its declared default, else the constructor's (its constructor checks them).

    Args:
        line: the --model's declaration.
        settings: the resolved shared options (--dim, --init-stddev).
        values: the other options by flag (None: not given).
    """
    from cfcore.specs import check_mse

    values = {"--dim": settings.dim, "--init-stddev": settings.init_stddev, **values}
    if values.get("--mse") is not None:
        values["--mse"] = check_mse(values["--mse"])  # free text: checked as the model would
    kwargs = {}
    for flag, argument in line.arguments.items():
        value = line.defaults.get(flag) if values.get(flag) is None else values[flag]
        if value is not None:
            kwargs[argument] = value
    return MODELS[line.name](**kwargs)


# History columns named `*_loss` that are not a part of the objective.
NOT_PARTS = ("total_loss", "train_loss")


def _print_loss_parts(history: pd.DataFrame) -> None:
    """The last row's loss parts (every `<part>_loss` column but the total), if any."""
    parts = [c for c in history.columns if c.endswith("_loss") and c not in NOT_PARTS]
    if parts and len(history):
        last = history.iloc[-1]
        text = ", ".join(
            f"{c.removesuffix('_loss').replace('_', ' ')} {last[c]:.4f}" for c in parts
        )
        console.print(f"loss parts: {text}")


def _print_mf_evaluation(m: Any, train_r: Any, test_r: Any, history: pd.DataFrame) -> None:
    """The MSE, RMSE and MAE on both splits, and the last loss parts of a regularized model."""
    stage("while evaluating the model")
    table = Table(title=f"after {m.step} steps")
    table.add_column("split")
    for col in ("MSE", "RMSE", "MAE", "ratings"):
        table.add_column(col, justify="right")
    for name, r in (("train", train_r), ("test", test_r)):
        ev = m.evaluate(r)
        table.add_row(
            name, f"{ev['mse']:.4f}", f"{ev['rmse']:.4f}", f"{ev['mae']:.4f}", str(ev["n"])
        )
    console.print(table)
    _print_loss_parts(history)


# ---------------------------------------------------------------------------- steps, ALS


def _train_factor(
    line: CommandLine,
    m: Any,
    *,
    backend: str | None,
    dataset: str,
    data_dir: Path | None,
    fold: str | None,
    holdout: float,
    seed: int,
    settings: _MFSettings,
    optimizer_given: bool,
    batch_size: int | None,
    threshold: float,
    k: int,
    out: Path,
    progress: bool,
    report: _ReportWish,
    posterior: dict[str, Any],
) -> None:
    """`cfcore train` of a factor model: gradient steps or sweeps as it declares (`line`), on
    ratings or on the positives above --threshold, with --posterior-samples the posterior
    average after them, the evaluation, the run's files."""
    import cfcore

    implicit = line.data == "implicit"
    try:
        ds, train_r, test_r = _load_split(dataset, data_dir, fold, holdout, seed)
        fit: dict[str, Any] = {"steps": settings.steps, "seed": seed, "progress": progress}
        fit["eval_every"] = settings.eval_every
        how = "ALS sweeps"
        if line.trains_by == "steps" or optimizer_given:
            fit["optimizer"], be = _optimizer_and_backend(
                settings.optimizer, settings.learning_rate, backend
            )
            how = str(fit["optimizer"])
        else:
            stage("while starting the backend")
            be = cfcore.get_backend(backend)
        if "--batch-size" in line.options:
            fit["batch_size"] = batch_size
        if implicit:
            train_r, test_r = train_r.to_implicit(threshold), test_r.to_implicit(threshold)
            how += f", positives: ratings > {threshold:g}"
        else:
            fit["test"] = test_r
        console.print(
            f"[bold]{m!r}[/] on {ds.name} ({len(train_r)} train / {len(test_r)} test "
            f"{'positives' if implicit else 'ratings'}), backend {be.name}, {how}"
        )
        stage("during training")
        with deferred():
            history = m.fit(train_r, backend=be, **fit)
        if posterior["samples"]:
            console.print(
                f"posterior average: {posterior['samples']} Gibbs draws after "
                f"{posterior['burn_in']} of burn-in (one in {posterior['thin']} kept), noise "
                f"precision {posterior['noise_precision']:g}"
            )
            stage("during posterior sampling")
            with deferred():
                m = m.sample_posterior(
                    train_r, test=test_r, backend=be, seed=seed, progress=progress, **posterior
                )
            history = m.history
        if implicit:
            _print_implicit_evaluation(m, train_r, test_r, k, be, line)
    except _ERRORS as err:
        raise fail(err, highlight=True) from err
    if not implicit:
        _print_mf_evaluation(m, train_r, test_r, history)
    _write_run(out, history, m.embeddings, m)
    if line.trains_by == "steps":  # a history of sweeps or draws has no curves worth a page
        _write_report(out, report, history, m.embeddings, ds, f"{line.name} ({be.name})")


def _print_implicit_evaluation(
    m: Any, train_r: Any, test_r: Any, k: int, be: Any, line: CommandLine
) -> None:
    """Recall and NDCG at k of the held-out positives, training positives left out."""
    stage("while evaluating the model")
    from cfcore.eval.metrics import ranking_metrics
    from cfcore.retrieval import batch_recommend

    users = np.unique(test_r.users)
    _, top = batch_recommend(m, users, k=k, backend=be)
    order = np.argsort(test_r.users, kind="stable")
    targets = np.split(test_r.items[order], np.cumsum(np.bincount(test_r.users)[users])[:-1])
    got = ranking_metrics(top, targets, k)
    unit = "steps" if line.trains_by == "steps" else "sweeps"
    table = Table(
        title=f"after {m.step} {unit}: ranking on {len(users)} users with held-out positives"
    )
    table.add_column("metric")
    table.add_column(line.name, justify="right")
    for name in ("recall", "ndcg", "precision", "hit_rate"):
        table.add_row(f"{name}@{k}", f"{got[f'{name}@{k}']:.4f}")
    console.print(table)
    _print_loss_parts(m.history)


# ---------------------------------------------------------------------------- steps, softmax


def _parse_feature_dims(text: str) -> dict[str, int]:
    """`"movie_id=35,genre=3,year=2"` (or `"35,3,2"`, in `SOFTMAX_FEATURES` order) as a dict."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    named = ["=" in p for p in parts]
    expected = "NAME=DIM pairs such as movie_id=35,genre=3,year=2, or DIMS such as 35,3,2"
    if (
        not parts
        or (any(named) and not all(named))
        or (not any(named) and len(parts) > len(SOFTMAX_FEATURES))
    ):
        raise ArgumentValueError(f"--feature-dims expects {expected}; got {text!r}")
    pairs = (
        [tuple(x.strip() for x in p.split("=", 1)) for p in parts]
        if all(named)
        else list(zip(SOFTMAX_FEATURES, parts, strict=False))
    )
    dims = {}
    for name, value in pairs:
        try:
            dims[name] = int(value)
        except ValueError:
            raise ArgumentValueError(
                f"--feature-dims: the dimension of {name!r} must be an int, got {value!r} "
                f"(expected {expected})"
            ) from None
    return dims


def _parse_hidden_dims(text: str) -> tuple[int, ...]:
    """`"35"` or `"64,35"` as a tuple; `"none"` or `""` for no hidden layer."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(int(p) for p in text.split(","))
    except ValueError:
        raise ArgumentValueError(
            f"--hidden-dims expects comma-separated ints such as 35 or 64,35 (or 'none'), got "
            f"{text!r}"
        ) from None


def _train_softmax(
    line: CommandLine,
    *,
    backend: str | None,
    dataset: str,
    data_dir: Path | None,
    protocol: Protocol,
    optimizer: OptimizerKind | None,
    learning_rate: float | None,
    steps: int | None,
    batch_size: int | None,
    eval_every: int | None,
    seed: int,
    k: int,
    out: Path,
    progress: bool,
    report: _ReportWish,
    build: Any,
) -> None:
    """`cfcore train --model softmax` (a model of the users' features, `line.data == "users"`):
    fit, print ranking metrics beside the popularity baseline's, write the run's files."""
    from cfcore.eval.popularity import evaluate_popularity

    d = line.defaults
    try:
        m = build()
        opt, be = _optimizer_and_backend(
            OptimizerKind(d["--optimizer"]) if optimizer is None else optimizer,
            d["--lr"] if learning_rate is None else learning_rate,
            backend,
        )
        stage("while loading the data")
        ds = load_dataset(dataset, data_dir)
        console.print(
            f"[bold]{m!r}[/] on {ds.name} ({ds.ratings.num_users} users, {len(ds.ratings)} "
            f"ratings; {protocol.value} protocol), backend {be.name}, {opt}"
        )
        stage("during training")
        with deferred():
            history = m.fit(
                ds,
                steps=d["--steps"] if steps is None else steps,
                optimizer=opt,
                backend=be,
                seed=seed,
                batch_size=d["--batch-size"] if batch_size is None else batch_size,
                protocol=protocol.value,
                eval_every=d["--eval-every"] if eval_every is None else eval_every,
                k=k,
                progress=progress,
            )
        stage("while evaluating the model")
        got = m.evaluate(k=k)
        baseline = evaluate_popularity(m.features, k=k, protocol=protocol.value, seed=seed)
    except _ERRORS as err:
        raise fail(err) from err
    _print_ranking(m, got, baseline, k, line.name)
    emb = _softmax_embeddings(m)
    _write_run(out, history, emb, m)
    _write_report(out, report, history, emb, ds, f"{line.name} ({be.name})")


def _build_softmax(
    line: CommandLine,
    feature_dims: str | None,
    hidden_dims: str | None,
    activation: Activation,
    loss: SoftmaxLoss,
) -> Any:
    d = line.defaults
    cls: Any = MODELS[line.name]  # a model of users' features: the softmax model's arguments
    return cls(
        _parse_feature_dims(d["--feature-dims"] if feature_dims is None else feature_dims),
        _parse_hidden_dims(d["--hidden-dims"] if hidden_dims is None else hidden_dims),
        None if activation is Activation.none else activation.value,
        loss=loss.value,
    )


def _print_ranking(
    m: Any, got: dict[str, Any], baseline: dict[str, Any], k: int, name: str
) -> None:
    """The model's ranking metrics beside the popularity baseline's, and its test loss."""
    table = Table(title=f"after {m.step} steps: ranking on {got['users']} test users")
    table.add_column("metric", justify="left")
    table.add_column(name, justify="right")
    table.add_column("popularity", justify="right")
    for name in ("precision", "recall", "ndcg", "map", "hit_rate"):
        key = f"{name}@{k}"
        table.add_row(key, f"{got[key]:.4f}", f"{baseline[key]:.4f}")
    table.add_row("test loss", f"{got['test_loss']:.4f}", "")
    console.print(table)


def _softmax_embeddings(m: Any) -> dict[str, np.ndarray]:
    """Item embeddings and every user's query (zero for a user without ratings), as for MF,
    then the other parameters under their own names."""
    params = m.embeddings
    item_feature = m.spec.item_feature
    emb = {"item": params["item"], "user": m.query_embeddings()}
    emb.update({name: v for name, v in params.items() if name not in ("item", item_feature)})
    return emb
