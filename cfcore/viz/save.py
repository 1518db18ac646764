"""Saving pictures atomically: Altair charts as HTML or JSON, matplotlib figures as PNG, SVG, PDF."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ArgumentValueError
from ..io.atomic import atomic_write

if TYPE_CHECKING:  # only for annotations: importing them here would make `import cfcore` heavy
    import altair as alt
    from matplotlib.figure import Figure


def save_chart(
    chart: alt.TopLevelMixin, path: str | os.PathLike[str], *, inline: bool = True
) -> Path:
    """Writes an Altair chart atomically: `.html` (standalone page) or `.json` (Vega-Lite spec).

    The HTML page holds the chart's data and, by default, the Vega libraries too (about 900 KB,
    see `cfcore.viz.pages`), so it renders with no network. To put several charts in one page,
    paying for the libraries once, use `save_report`.

    Args:
        chart: the chart.
        path: a `.html` or `.json` path.
        inline: HTML only: False loads the libraries from a CDN instead (a small page that is
            blank when opened offline).

    Returns:
        The path written.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("html", "json"):
        raise ArgumentValueError(
            f"cannot save a chart as {path.name!r}: expected a .html or .json path"
        )
    if fmt == "json":
        return atomic_write(path, lambda p: chart.save(str(p), format=fmt))
    from .pages import chart_title, page_html

    title = chart_title(chart, path.stem)
    text = page_html([(title, chart)], title=title, inline=inline, headings=False)
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 150) -> Path:
    """Writes a matplotlib figure atomically as `.png`, `.svg` or `.pdf` (by the path's suffix).

    Returns:
        The path written.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg", "pdf"):
        raise ArgumentValueError(
            f"cannot save a figure as {path.name!r}: expected a .png, .svg or .pdf path"
        )
    return atomic_write(
        path, lambda p: fig.savefig(p, format=fmt, dpi=dpi, bbox_inches="tight", facecolor="white")
    )
