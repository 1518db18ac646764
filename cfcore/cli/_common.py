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
    str, typer.Option(help="100k, latest-small, or a folder/zip holding one of them.")
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
    """A release by name (`100k`, `latest-small`) or from a folder/zip holding one of them."""
    from cfcore.datasets import load_movielens

    path = Path(dataset)
    if dataset not in ("100k", "ml-100k", "latest-small", "ml-latest-small") and path.exists():
        name = "latest-small" if any(path.rglob("ratings.csv")) or "latest" in path.name else "100k"
        return load_movielens(name, data_dir=path)
    return load_movielens(dataset, data_dir=data_dir)


def save_npz(path: Path, emb: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object keeps numpy from appending ".npz" to the temp name
        # numpy's stub lets `**emb` fill `allow_pickle` (a NumPy >= 2.1 parameter, so not passed
        # here); the keys are "user" and "item".
        np.savez(f, **emb)  # pyright: ignore[reportArgumentType]
