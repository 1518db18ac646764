"""The `cfcore` command line."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Collaborative-filtering embeddings on TensorFlow or JAX.", no_args_is_help=True
)
console = Console()


class ModelKind(enum.StrEnum):
    mf = "mf"
    regularized = "regularized"


class OptimizerKind(enum.StrEnum):
    sgd = "sgd"
    adagrad = "adagrad"
    adam = "adam"


# The notebook's settings for each model; every one can be overridden on the command line.
DEFAULTS = {
    ModelKind.mf: {"dim": 30, "init_stddev": 0.5, "learning_rate": 10.0, "steps": 1000},
    ModelKind.regularized: {"dim": 35, "init_stddev": 0.05, "learning_rate": 20.0, "steps": 2000},
}


@app.callback()
def _main() -> None:
    """cfcore: train and inspect collaborative-filtering embeddings."""


@app.command()
def train(
    model: Annotated[
        ModelKind, typer.Option(help="Plain MF or MF with L2 + gravity regularization.")
    ] = ModelKind.regularized,
    backend: Annotated[
        str | None, typer.Option(help="jax or tf (default: $CFCORE_BACKEND, else jax).")
    ] = None,
    dataset: Annotated[
        str, typer.Option(help="100k, latest-small, or a folder/zip holding one of them.")
    ] = "100k",
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where the release lives (default: $CFCORE_DATA_DIR or the cache)."),
    ] = None,
    dim: Annotated[
        int | None, typer.Option(help="Embedding dimension \\[mf: 30, regularized: 35].")
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Optimizer steps \\[mf: 1000, regularized: 2000].")
    ] = None,
    learning_rate: Annotated[
        float | None,
        typer.Option("--lr", "--learning-rate", help="Learning rate \\[mf: 10, regularized: 20]."),
    ] = None,
    optimizer: Annotated[OptimizerKind, typer.Option(help="Optimizer.")] = OptimizerKind.sgd,
    init_stddev: Annotated[
        float | None,
        typer.Option(help="Std. dev. of the initial embeddings \\[mf: 0.5, regularized: 0.05]."),
    ] = None,
    regularization: Annotated[
        float, typer.Option(help="λr, L2 coefficient (regularized model).")
    ] = 0.1,
    gravity: Annotated[
        float, typer.Option(help="λg, gravity coefficient (regularized model).")
    ] = 1.0,
    mse: Annotated[str, typer.Option(help="gather or dense form of the observed MSE.")] = "gather",
    batch_size: Annotated[
        int | None, typer.Option(help="Ratings per step; default full batch.")
    ] = None,
    holdout: Annotated[float, typer.Option(help="Fraction of ratings held out for testing.")] = 0.1,
    fold: Annotated[
        str | None,
        typer.Option(help="Use a canonical 100k fold (u1..u5, ua, ub) instead of a random split."),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of the split, the initial values and the batches.")
    ] = 0,
    eval_every: Annotated[int, typer.Option(help="Steps between two history rows.")] = 10,
    out: Annotated[Path, typer.Option(help="Folder for history.csv and embeddings.npz.")] = Path(
        "runs/latest"
    ),
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a matrix-factorization model and write its history and embeddings."""
    import cfcore
    from cfcore._io import atomic_write

    d = DEFAULTS[model]
    dim = d["dim"] if dim is None else dim
    steps = d["steps"] if steps is None else steps
    lr = d["learning_rate"] if learning_rate is None else learning_rate
    init = d["init_stddev"] if init_stddev is None else init_stddev
    try:
        ds = _load(dataset, data_dir)
        if fold is not None:
            train_r, test_r = ds.fold(fold)
        else:
            train_r, test_r = ds.ratings.split(holdout_fraction=holdout, seed=seed)
        if model is ModelKind.mf:
            m = cfcore.MatrixFactorization(embedding_dim=dim, init_stddev=init, mse=mse)
        else:
            m = cfcore.RegularizedMF(
                embedding_dim=dim,
                init_stddev=init,
                regularization_coeff=regularization,
                gravity_coeff=gravity,
                mse=mse,
            )
        opt = cfcore.optimizers.make_optimizer(optimizer.value, lr)
        be = cfcore.get_backend(backend)
        console.print(
            f"[bold]{m!r}[/] on {ds.name} ({len(train_r)} train / {len(test_r)} test ratings), backend {be.name}, {opt}"
        )
        history = m.fit(
            train_r,
            test=test_r,
            steps=steps,
            optimizer=opt,
            backend=be,
            seed=seed,
            batch_size=batch_size,
            eval_every=eval_every,
            progress=progress,
        )
    except (ValueError, OSError, FloatingPointError, TypeError) as err:
        console.print(f"[red]error:[/] {err}")
        raise typer.Exit(code=1) from err

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
    emb = m.embeddings
    atomic_write(out / "history.csv", lambda p: history.to_csv(p, index=False))
    atomic_write(out / "embeddings.npz", lambda p: _save_npz(p, emb))
    m.save(out / "model.npz")
    console.print(
        f"wrote {out / 'history.csv'}, {out / 'embeddings.npz'} and {out / 'model.npz'} "
        f"(use it with: cfcore recommend --model {out})"
    )


def _save_npz(path: Path, emb: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object keeps numpy from appending ".npz" to the temp name
        np.savez(f, **emb)


def _load(dataset: str, data_dir: Path | None):
    from cfcore.datasets import load_movielens

    path = Path(dataset)
    if dataset not in ("100k", "ml-100k", "latest-small", "ml-latest-small") and path.exists():
        name = "latest-small" if any(path.rglob("ratings.csv")) or "latest" in path.name else "100k"
        return load_movielens(name, data_dir=path)
    return load_movielens(dataset, data_dir=data_dir)


def _register_commands() -> None:
    # Each group of commands lives in its own module; they all hang off this one app.
    from ._cli_retrieval import register as register_retrieval
    from ._cli_viz import register as register_viz

    register_retrieval(app)
    register_viz(app)


_register_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
