"""The one progress bar of cfcore's long loops (training, batched retrieval), on rich, and the
safe point those loops pass between two compiled chunks (`between_chunks`)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

safe_point: Callable[[str, int, int], None] | None = None
"""Called by `between_chunks`; None (the library's default) calls nothing.

The command line sets it while a command runs (`cfcore.cli._signals`): it records how far the
loop got and raises `cfcore.errors.Interrupted` there when a SIGINT or SIGTERM arrived during
the chunk, so that an interruption ends training between two chunks, never inside one.
"""


def between_chunks(what: str, done: int, total: int) -> None:
    """Tells `safe_point` (if any) that `done` of `total` units of the loop `what` are done.

    Args:
        what: the loop, as a noun ("training", "sampling", "scoring").
        done: units finished (steps, sweeps, rows), 0 before the first chunk.
        total: units the loop will run.
    """
    hook = safe_point
    if hook is not None:
        hook(what, done, total)


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
