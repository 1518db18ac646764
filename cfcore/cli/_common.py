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


def fail(err: BaseException | str, *, highlight: bool = False) -> typer.Exit:
    """Prints `error: <err>` and returns the exit (code 1) to raise."""
    console.print(f"[red]error:[/] {err}", highlight=highlight)
    return typer.Exit(code=1)


def load_dataset(dataset: str, data_dir: Path | None) -> Any:
    """A release by name (`100k`, `1m`, ...) or from a folder/zip holding one of them."""
    from cfcore.data import DatasetError
    from cfcore.data.movielens import guess_release, release_name
    from cfcore.datasets import load_movielens

    path = Path(dataset).expanduser()
    try:
        release_name(dataset)
        known = True
    except ValueError as err:
        known = False
        if not path.exists() and _looks_like_path(dataset):
            raise DatasetError(
                f"no such folder or zip: {dataset!r}. --dataset takes a release name ({err}) or "
                "a folder or zip holding one"
            ) from None
    if not known and path.exists():
        return load_movielens(guess_release(path), data_dir=path)
    return load_movielens(dataset, data_dir=data_dir)


def _looks_like_path(text: str) -> bool:
    return any(c in text for c in "/\\") or text.startswith(("~", ".")) or text.endswith(".zip")


def save_npz(path: Path, emb: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object keeps numpy from appending ".npz" to the temp name
        # numpy's stub lets `**emb` fill `allow_pickle` (a NumPy >= 2.1 parameter, so not passed
        # here); the keys are "user" and "item".
        np.savez(f, **emb)  # pyright: ignore[reportArgumentType]
