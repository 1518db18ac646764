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
from ._common import DataDirOpt, DatasetOpt, OptimizerKind, console, fail, load_dataset, save_npz
from ._signals import deferred, kept, output, stage

# What a failed `train` reports as `error: ...` with exit code 1 (anything else is a bug).
_ERRORS = (CfcoreError, ValueError, OSError, FloatingPointError, TypeError, MemoryError)

# The files a run writes into --out.
RUN_FILES = ("history.csv", "embeddings.npz", "model.npz")


class ModelKind(enum.StrEnum):
    mf = "mf"
    regularized = "regularized"
    softmax = "softmax"
    wals = "wals"
    ials = "ials"
    biased = "biased"


class ALSSolver(enum.StrEnum):
    auto = "auto"
    cholesky = "cholesky"
    cg = "cg"


# The models trained by sweeps (steps are sweeps, no optimizer unless --optimizer for biased).
ALS_MODELS = (ModelKind.wals, ModelKind.ials, ModelKind.biased)
# λ and λg of each model when not given (the regularized model's are the notebook's).
REGULARIZATION = {ModelKind.ials: 0.01}
GRAVITY = {ModelKind.biased: 0.0}


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


# The notebook's settings for each model; every one can be overridden on the command line.
DEFAULTS = {
    ModelKind.mf: {"dim": 30, "init_stddev": 0.5, "learning_rate": 10.0, "steps": 1000},
    ModelKind.regularized: {"dim": 35, "init_stddev": 0.05, "learning_rate": 20.0, "steps": 2000},
    ModelKind.wals: {"dim": 35, "init_stddev": 0.1, "learning_rate": 0.05, "steps": 20},
    ModelKind.biased: {"dim": 35, "init_stddev": 0.1, "learning_rate": 0.05, "steps": 20},
    ModelKind.ials: {"dim": 64, "init_stddev": 0.1, "learning_rate": 0.05, "steps": 15},
}

# The notebook's softmax model: Adagrad(8), 3000 steps of 200 users, inputs 35/3/2, one hidden
# layer of 35 (the query dimension, equal to the movie-id dimension).
SOFTMAX_DEFAULTS = {
    "feature_dims": "movie_id=35,genre=3,year=2",
    "hidden_dims": "35",
    "optimizer": OptimizerKind.adagrad,
    "learning_rate": 8.0,
    "steps": 3000,
    "batch_size": 200,
    "eval_every": 100,
}
SOFTMAX_FEATURES = ("movie_id", "genre", "year")


def register(app: typer.Typer) -> None:
    """Adds the `train` command to `app`."""
    app.command(name="train")(train)


def train(
    model: Annotated[
        ModelKind,
        typer.Option(
            help="Plain MF, MF with L2 + gravity, softmax (section VI), or ALS: wals, ials, biased."
        ),
    ] = ModelKind.regularized,
    backend: Annotated[
        str | None, typer.Option(help="jax or tf (default: $CFCORE_BACKEND, else jax).")
    ] = None,
    dataset: DatasetOpt = "100k",
    data_dir: DataDirOpt = None,
    dim: Annotated[
        int | None,
        typer.Option(
            help="Embedding dimension \\[mf: 30, regularized: 35] (wals, biased: 35; ials: 64)."
        ),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            help="Optimizer steps \\[mf: 1000, regularized: 2000] (softmax: 3000); sweeps for "
            "wals, ials, biased (20, 15, 20)."
        ),
    ] = None,
    learning_rate: Annotated[
        float | None,
        typer.Option(
            "--lr",
            "--learning-rate",
            help="Learning rate \\[mf: 10, regularized: 20] (softmax: 8).",
        ),
    ] = None,
    optimizer: Annotated[
        OptimizerKind | None,
        typer.Option(help="Optimizer (mf, regularized: sgd; softmax: adagrad)."),
    ] = None,
    init_stddev: Annotated[
        float | None,
        typer.Option(help="Std. dev. of the initial embeddings \\[mf: 0.5, regularized: 0.05]."),
    ] = None,
    regularization: Annotated[
        float | None,
        typer.Option(help="λr, L2 coefficient (regularized model) \\[0.1; ials: 0.01]."),
    ] = None,
    gravity: Annotated[
        float | None,
        typer.Option(help="λg, gravity coefficient (regularized model) \\[1.0; biased: 0]."),
    ] = None,
    solver: Annotated[
        ALSSolver,
        typer.Option(
            help="wals, ials, biased: linear solver of each row (auto: Cholesky to d 128)."
        ),
    ] = ALSSolver.auto,
    bias_regularization: Annotated[
        float, typer.Option(help="biased: λb, L2 coefficient of the biases.")
    ] = 0.01,
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
        typer.Option(help="Steps between two history rows (mf, regularized: 10; softmax: 100)."),
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
) -> None:
    """Train a matrix-factorization model and write its history and embeddings.

    With --model softmax, trains the notebook's softmax model instead and prints its ranking
    metrics beside the popularity baseline's. --model wals minimises the regularized objective
    by alternating least squares (steps are sweeps); ials is implicit-feedback ALS on the ratings
    above --threshold (prints recall and NDCG of the held-out positives); biased adds a mean and
    user and item biases (ALS sweeps, or gradient steps with --optimizer).
    """
    wish = _ReportWish(report, tsne)  # before training: a bad combination fails at once
    try:
        # Every option before the data is read or a framework imported: a mistake must not
        # cost a finished run.
        _check_options(
            model,
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
        if model is ModelKind.softmax:
            _build_softmax(feature_dims, hidden_dims, activation, loss)
            mf = None
        else:
            settings = _MFSettings.resolve(
                model,
                dim=dim,
                steps=steps,
                learning_rate=learning_rate,
                init_stddev=init_stddev,
                optimizer=optimizer,
                eval_every=1 if eval_every is None and model in ALS_MODELS else eval_every,
            )
            regularization = (
                REGULARIZATION.get(model, 0.1) if regularization is None else regularization
            )
            gravity = GRAVITY.get(model, 1.0) if gravity is None else gravity
            if model in ALS_MODELS:
                built: Any = _build_als(
                    model, settings, regularization=regularization, gravity=gravity,
                    solver=solver.value, bias_regularization=bias_regularization,
                    unobserved_weight=unobserved_weight,
                )  # fmt: skip
            else:
                built = _build_mf(model, settings, regularization, gravity, mse)
            mf = (settings, built)
        _check_out(out)
    except _ERRORS as err:
        raise fail(err) from err
    output(out)
    if mf is None:
        _train_softmax(
            backend=backend,
            dataset=dataset,
            data_dir=data_dir,
            dim=dim,
            init_stddev=init_stddev,
            fold=fold,
            feature_dims=feature_dims,
            hidden_dims=hidden_dims,
            activation=activation,
            loss=loss,
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
        )
        return
    settings, m = mf
    if model in ALS_MODELS:
        _train_als(
            model,
            backend=backend,
            dataset=dataset,
            data_dir=data_dir,
            fold=fold,
            holdout=holdout,
            seed=seed,
            settings=settings,
            optimizer_given=optimizer is not None,
            m=m,
            threshold=threshold,
            k=k,
            out=out,
            progress=progress,
            posterior={
                "samples": posterior_samples,
                "burn_in": burn_in,
                "noise_precision": noise_precision,
                "thin": thin,
            },  # fmt: skip
        )
        return
    try:
        ds, train_r, test_r = _load_split(dataset, data_dir, fold, holdout, seed)
        opt, be = _optimizer_and_backend(settings.optimizer, settings.learning_rate, backend)
        console.print(
            f"[bold]{m!r}[/] on {ds.name} ({len(train_r)} train / {len(test_r)} test ratings), backend {be.name}, {opt}"
        )
        stage("during training")
        with deferred():
            history = m.fit(
                train_r,
                test=test_r,
                steps=settings.steps,
                optimizer=opt,
                backend=be,
                seed=seed,
                batch_size=batch_size,
                eval_every=settings.eval_every,
                progress=progress,
            )
    except _ERRORS as err:
        raise fail(err, highlight=True) from err
    _print_mf_evaluation(m, train_r, test_r, history)
    _write_run(out, history, m.embeddings, m)
    _write_report(out, wish, history, m.embeddings, ds, f"{model.value} ({be.name})")


# ---------------------------------------------------------------------------- options

# What each model trains by: the options of the others mean nothing to it.
_GRADIENT_ONLY = ("--optimizer", "--lr")
_SOFTMAX_ONLY = ("--feature-dims", "--hidden-dims", "--activation", "--loss", "--protocol")


def _check_options(model: ModelKind, *, given: dict[str, Any], changed: dict[str, bool]) -> None:
    """Refuses options the model does not use, rather than ignoring them.

    Args:
        model: the --model.
        given: options without a default, by flag: None when not given.
        changed: options with a default, by flag: whether the user changed it.

    Raises:
        ArgumentValueError: naming the option and the model.
    """
    from cfcore.errors import ArgumentValueError

    used = {flag for flag, value in given.items() if value is not None}
    used |= {flag for flag, on in changed.items() if on}

    def refuse(flags: tuple[str, ...], why: str) -> None:
        for flag in flags:
            if flag in used:
                raise ArgumentValueError(f"{flag} {why}")

    name = f"--model {model.value}"
    if model is not ModelKind.biased:
        refuse(("--posterior-samples",), f"applies to --model biased, not {name}")
    if model is ModelKind.softmax:
        for flag, instead in (
            ("--dim", "--feature-dims and --hidden-dims"),
            ("--init-stddev", "nothing: the tables start as the notebook's"),
            ("--fold", "--protocol (the softmax model splits users, not ratings)"),
        ):
            refuse((flag,), f"applies to the matrix-factorization models; for {name} use {instead}")
        refuse(("--regularization", "--gravity", "--solver"), f"does not apply to {name}")
        return
    refuse(_SOFTMAX_ONLY, f"applies to --model softmax, not {name}")
    if model in (ModelKind.wals, ModelKind.ials):
        refuse(_GRADIENT_ONLY, f"applies to gradient training; {name} is trained by ALS sweeps")
    if model is ModelKind.biased and "--optimizer" not in used:
        refuse(("--lr",), "applies to gradient training: give --optimizer too (without it "
               "--model biased is trained by ALS sweeps)")  # fmt: skip
    if model is ModelKind.mf:
        refuse(("--regularization", "--gravity"), "applies to --model regularized, wals, "
               "ials and biased; --model mf has no penalty")  # fmt: skip
    if model is ModelKind.ials:
        refuse(("--gravity",), "does not apply to --model ials")
    if model not in ALS_MODELS:
        refuse(("--solver",), f"applies to --model wals, ials and biased, not {name}")


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
    """The options of an MF run, each given on the command line or the notebook's default."""

    dim: int
    steps: int
    learning_rate: float
    init_stddev: float
    optimizer: OptimizerKind
    eval_every: int

    @classmethod
    def resolve(
        cls,
        model: ModelKind,
        *,
        dim: int | None,
        steps: int | None,
        learning_rate: float | None,
        init_stddev: float | None,
        optimizer: OptimizerKind | None,
        eval_every: int | None,
    ) -> _MFSettings:
        d = DEFAULTS[model]
        return cls(
            dim=d["dim"] if dim is None else dim,
            steps=d["steps"] if steps is None else steps,
            learning_rate=d["learning_rate"] if learning_rate is None else learning_rate,
            init_stddev=d["init_stddev"] if init_stddev is None else init_stddev,
            optimizer=OptimizerKind.sgd if optimizer is None else optimizer,
            eval_every=10 if eval_every is None else eval_every,
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


def _build_mf(
    model: ModelKind, settings: _MFSettings, regularization: float, gravity: float, mse: str
) -> Any:
    import cfcore
    from cfcore.specs import check_mse

    method = check_mse(mse)  # the option is free text: checked here, as the model would
    if model is ModelKind.mf:
        return cfcore.MatrixFactorization(
            embedding_dim=settings.dim, init_stddev=settings.init_stddev, mse=method
        )
    return cfcore.RegularizedMF(
        embedding_dim=settings.dim,
        init_stddev=settings.init_stddev,
        regularization_coeff=regularization,
        gravity_coeff=gravity,
        mse=method,
    )


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
    if "observed_loss" in history:
        last = history.iloc[-1]
        console.print(
            f"loss parts: observed {last['observed_loss']:.4f}, regularization {last['regularization_loss']:.4f}, "
            f"gravity {last['gravity_loss']:.4f}"
        )


# ---------------------------------------------------------------------------- steps, ALS


def _train_als(
    model: ModelKind,
    *,
    backend: str | None,
    dataset: str,
    data_dir: Path | None,
    fold: str | None,
    holdout: float,
    seed: int,
    settings: _MFSettings,
    optimizer_given: bool,
    m: Any,
    threshold: float,
    k: int,
    out: Path,
    progress: bool,
    posterior: dict[str, Any],
) -> None:
    """`cfcore train --model wals|ials|biased`: sweeps (or gradient steps for biased with
    --optimizer), for biased with --posterior-samples the posterior average after them, the
    evaluation, the run's files."""
    import cfcore

    try:
        ds, train_r, test_r = _load_split(dataset, data_dir, fold, holdout, seed)
        fit: dict[str, Any] = {"steps": settings.steps, "seed": seed, "progress": progress}
        fit["eval_every"] = settings.eval_every
        stage("while starting the backend")
        be = cfcore.get_backend(backend)
        how = "ALS sweeps"
        if model is ModelKind.biased and optimizer_given:
            fit["optimizer"] = cfcore.optimizers.make_optimizer(
                settings.optimizer.value, settings.learning_rate
            )
            how = str(fit["optimizer"])
        if model is ModelKind.ials:
            train_r, test_r = train_r.to_implicit(threshold), test_r.to_implicit(threshold)
            how += f", positives: ratings > {threshold:g}"
        else:
            fit["test"] = test_r
        console.print(
            f"[bold]{m!r}[/] on {ds.name} ({len(train_r)} train / {len(test_r)} test "
            f"{'positives' if model is ModelKind.ials else 'ratings'}), backend {be.name}, {how}"
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
        if model is ModelKind.ials:
            _print_implicit_evaluation(m, train_r, test_r, k, be)
    except _ERRORS as err:
        raise fail(err, highlight=True) from err
    if model is not ModelKind.ials:
        _print_mf_evaluation(m, train_r, test_r, history)
    _write_run(out, history, m.embeddings, m)


def _build_als(
    model: ModelKind,
    settings: _MFSettings,
    *,
    regularization: float,
    gravity: float,
    solver: str,
    bias_regularization: float,
    unobserved_weight: float,
) -> Any:
    """The WALS, BiasedMF or IALS model of the options (its constructor checks them)."""
    import cfcore

    common = {"embedding_dim": settings.dim, "init_stddev": settings.init_stddev}
    if model is ModelKind.wals:
        return cfcore.WALS(
            **common, regularization_coeff=regularization, gravity_coeff=gravity, solver=solver
        )
    if model is ModelKind.biased:
        return cfcore.BiasedMF(
            **common, regularization_coeff=regularization,
            bias_regularization_coeff=bias_regularization, gravity_coeff=gravity, solver=solver,
        )  # fmt: skip
    return cfcore.IALS(
        **common, regularization_coeff=regularization, unobserved_weight=unobserved_weight,
        solver=solver,
    )  # fmt: skip


def _print_implicit_evaluation(m: Any, train_r: Any, test_r: Any, k: int, be: Any) -> None:
    """Recall and NDCG at k of the held-out positives, training positives left out."""
    stage("while evaluating the model")
    from cfcore.eval.metrics import ranking_metrics
    from cfcore.retrieval import batch_recommend

    users = np.unique(test_r.users)
    _, top = batch_recommend(m, users, k=k, backend=be)
    order = np.argsort(test_r.users, kind="stable")
    targets = np.split(test_r.items[order], np.cumsum(np.bincount(test_r.users)[users])[:-1])
    got = ranking_metrics(top, targets, k)
    table = Table(
        title=f"after {m.step} sweeps: ranking on {len(users)} users with held-out positives"
    )
    table.add_column("metric")
    table.add_column("ials", justify="right")
    for name in ("recall", "ndcg", "precision", "hit_rate"):
        table.add_row(f"{name}@{k}", f"{got[f'{name}@{k}']:.4f}")
    console.print(table)
    last = m.history.iloc[-1]
    console.print(
        f"loss parts: observed {last['observed_loss']:.4f}, unobserved "
        f"{last['unobserved_loss']:.4f}, regularization {last['regularization_loss']:.4f}"
    )


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
    *,
    backend: str | None,
    dataset: str,
    data_dir: Path | None,
    dim: int | None,
    init_stddev: float | None,
    fold: str | None,
    feature_dims: str | None,
    hidden_dims: str | None,
    activation: Activation,
    loss: SoftmaxLoss,
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
) -> None:
    """`cfcore train --model softmax`: fit, print ranking metrics, write the run's files."""
    from cfcore.eval.popularity import evaluate_popularity

    d = SOFTMAX_DEFAULTS
    try:
        _refuse_mf_options(dim=dim, init_stddev=init_stddev, fold=fold)
        m = _build_softmax(feature_dims, hidden_dims, activation, loss)
        opt, be = _optimizer_and_backend(
            d["optimizer"] if optimizer is None else optimizer,
            d["learning_rate"] if learning_rate is None else learning_rate,
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
                steps=d["steps"] if steps is None else steps,
                optimizer=opt,
                backend=be,
                seed=seed,
                batch_size=d["batch_size"] if batch_size is None else batch_size,
                protocol=protocol.value,
                eval_every=d["eval_every"] if eval_every is None else eval_every,
                k=k,
                progress=progress,
            )
        stage("while evaluating the model")
        got = m.evaluate(k=k)
        baseline = evaluate_popularity(m.features, k=k, protocol=protocol.value, seed=seed)
    except _ERRORS as err:
        raise fail(err) from err
    _print_ranking(m, got, baseline, k)
    emb = _softmax_embeddings(m)
    _write_run(out, history, emb, m)
    _write_report(out, report, history, emb, ds, f"softmax ({be.name})")


def _refuse_mf_options(*, dim: int | None, init_stddev: float | None, fold: str | None) -> None:
    """Options of matrix factorization that mean nothing here: refuse rather than ignore."""
    for flag, value, instead in (
        ("--dim", dim, "--feature-dims and --hidden-dims"),
        ("--init-stddev", init_stddev, "nothing: the tables start as the notebook's"),
        ("--fold", fold, "--protocol (the softmax model splits users, not ratings)"),
    ):
        if value is not None:
            raise ArgumentValueError(
                f"{flag} applies to the matrix-factorization models; for --model softmax "
                f"use {instead}"
            )


def _build_softmax(
    feature_dims: str | None, hidden_dims: str | None, activation: Activation, loss: SoftmaxLoss
) -> Any:
    import cfcore

    d = SOFTMAX_DEFAULTS
    return cfcore.SoftmaxModel(
        _parse_feature_dims(d["feature_dims"] if feature_dims is None else feature_dims),
        _parse_hidden_dims(d["hidden_dims"] if hidden_dims is None else hidden_dims),
        None if activation is Activation.none else activation.value,
        loss=loss.value,
    )


def _print_ranking(m: Any, got: dict[str, Any], baseline: dict[str, Any], k: int) -> None:
    """The model's ranking metrics beside the popularity baseline's, and its test loss."""
    table = Table(title=f"after {m.step} steps: ranking on {got['users']} test users")
    table.add_column("metric", justify="left")
    table.add_column("softmax", justify="right")
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
