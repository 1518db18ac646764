"""Shared pieces of the pictures: colours, a pyplot-free figure, inline Altair data, log axes."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..data.ratings import Ratings, as_ratings
from ..errors import ArgumentValueError

if TYPE_CHECKING:  # only for annotations: importing them here would make `import cfcore` heavy
    import altair as alt


_OTHER = "other genres"  # colour label of items outside the highlighted genres
_GREY = "#c8c8c8"
_BLUE = "#4c78a8"

BACKEND_COLORS: dict[str, str] = {
    "jax": "#4c78a8",  # blue
    "tf": "#f58518",  # orange (TensorFlow's own colour)
    "torch": "#e45756",  # red (PyTorch's own colour)
    "numpy": "#9467bd",  # purple: the float64 reference
    "notebook": "#7f7f7f",  # grey: the course notebook's own TF1 code
    "surprise": "#54a24b",  # green: scikit-surprise, the peer in benchmarks/peers.py
}
"""One colour per backend (and per outside contender of the benchmarks), the same in every figure.

Every picture and benchmark plot that tells backends apart takes its colours from here, through
`backend_color`, so "TensorFlow" is the same orange in a training-curve figure, a comparison and
each benchmark PNG.
"""

# Names a label may use for a backend, mapped to the key of BACKEND_COLORS.
_ALIASES = {"tensorflow": "tf", "pytorch": "torch", "reference": "numpy", "tf1": "notebook"}


def backend_color(label: str) -> str:
    """The colour of the backend a label names: `"jax"`, `"cfcore tf A"`, `"notebook TF1 loop"`.

    The first word of `label` (split at spaces, colons, slashes, parentheses, dashes and
    underscores) that names a backend, an alias of one, or a contender of `BACKEND_COLORS` decides.

    Raises:
        ValueError: no word of `label` names one.
    """
    for word in re.split(r"[\s:/()_,-]+", str(label).lower()):
        key = _ALIASES.get(word, word)
        if key in BACKEND_COLORS:
            return BACKEND_COLORS[key]
    raise ArgumentValueError(
        f"label {label!r} names no backend: expected one of {sorted(BACKEND_COLORS)} "
        f"(or {sorted(_ALIASES)}) among its words"
    )


def _alt():
    import altair as alt

    return alt


def _figure(ncols: int, *, width: float = 5.0, height: float = 4.0, nrows: int = 1):
    """A new figure with its own Agg canvas, so nothing goes through pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _inline(frame: pd.DataFrame) -> alt.InlineData:
    """Data inlined into the spec, with NaN as null.

    Inline values, unlike a DataFrame, are not subject to Altair's 5,000-row limit (which would
    otherwise stop the 9,742-movie catalog of latest-small) and need no global transformer change.
    """
    alt = _alt()
    clean = frame.astype(object).where(frame.notna(), None)
    records = [
        {str(k): (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
        for row in clean.to_dict("records")
    ]
    return alt.InlineData(values=records)


def _log_bins(counts: np.ndarray, n: int = 24) -> np.ndarray:
    """Log-spaced histogram edges over positive integer counts (which are heavily skewed).

    Edges sit at half-integers so that every integer count falls inside one bin, never on an edge.
    """
    lo, hi = max(float(np.min(counts)), 1.0), max(float(np.max(counts)), 2.0)
    return np.unique(np.round(np.geomspace(lo, hi + 1.0, n + 1))) - 0.5


def _log_axis(ax: Any, which: str, *, symlog: bool = False) -> None:
    """A log (or symmetric-log, for data with zeros) axis labelled 1, 2, 5, 10, 20, ...

    Plain numbers read better than powers of ten alone for counts and losses.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    set_scale = ax.set_xscale if which == "x" else ax.set_yscale
    axis = ax.xaxis if which == "x" else ax.yaxis
    if symlog:
        set_scale("symlog", linthresh=1.0, linscale=0.4)
    else:
        set_scale("log")
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _nice_log_ticks(top: float) -> list[float]:
    """1, 2, 5, 10, 20, 50, ... up to `top` (at least 1 and 2)."""
    ticks = [m * 10**e for e in range(12) for m in (1, 2, 5)]
    return [float(t) for t in ticks if t <= max(top, 2)]


def _as_ratings(data: Any) -> Ratings:
    return as_ratings(data, "ratings")
