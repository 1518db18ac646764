"""The one progress bar of cfcore's long loops (training, batched retrieval), on rich."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any


def progress_bar(enabled: bool, label: str = "training") -> Any:
    """A `rich.progress.Progress` context with `label`, or a null context giving None."""
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        transient=False,
    )
