"""Saving pictures atomically: Altair charts as HTML or JSON, matplotlib figures as PNG, SVG, PDF."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..io.atomic import atomic_write

if TYPE_CHECKING:  # only for annotations: importing them here would make `import cfcore` heavy
    import altair as alt
    from matplotlib.figure import Figure


def save_chart(chart: alt.TopLevelMixin, path: str | os.PathLike[str]) -> Path:
    """Writes an Altair chart atomically: `.html` (standalone page) or `.json` (Vega-Lite spec).

    The HTML page loads the Vega libraries from a CDN when opened; the data is inside the page.

    Returns:
        The path written.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("html", "json"):
        raise ValueError(f"cannot save a chart as {path.name!r}: expected a .html or .json path")
    return atomic_write(path, lambda p: chart.save(str(p), format=fmt))


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 150) -> Path:
    """Writes a matplotlib figure atomically as `.png`, `.svg` or `.pdf` (by the path's suffix).

    Returns:
        The path written.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg", "pdf"):
        raise ValueError(
            f"cannot save a figure as {path.name!r}: expected a .png, .svg or .pdf path"
        )
    return atomic_write(
        path, lambda p: fig.savefig(p, format=fmt, dpi=dpi, bbox_inches="tight", facecolor="white")
    )
