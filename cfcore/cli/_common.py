"""What the `cfcore` commands share: the console, error exits, dataset loading and options."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console

console = Console()


class OptimizerKind(enum.StrEnum):
    sgd = "sgd"
    adagrad = "adagrad"
    adam = "adam"


DatasetOpt = Annotated[
    str,
    typer.Option(
        help="100k, 1m, 10m, 20m, 25m, latest, latest-small, or a folder/zip holding one of them."
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(help="Where the release lives (default: $CFCORE_DATA_DIR or the cache)."),
]


def fail(err: BaseException, *, highlight: bool = False) -> typer.Exit:
    """Prints `error: <err>` and returns the exit (code 1) to raise."""
    console.print(f"[red]error:[/] {err}", highlight=highlight)
    return typer.Exit(code=1)


def load_dataset(dataset: str, data_dir: Path | None) -> Any:
    """A release by name (`100k`, `1m`, ...) or from a folder/zip holding one of them."""
    from cfcore.data.movielens import guess_release, release_name
    from cfcore.datasets import load_movielens

    path = Path(dataset)
    try:
        release_name(dataset)
        known = True
    except ValueError:
        known = False
    if not known and path.exists():
        return load_movielens(guess_release(path), data_dir=path)
    return load_movielens(dataset, data_dir=data_dir)


def save_npz(path: Path, emb: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object keeps numpy from appending ".npz" to the temp name
        np.savez(f, **emb)
