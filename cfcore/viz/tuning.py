"""A hyper-parameter search's table drawn: the metric against each hyper-parameter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..errors import ArgumentValueError
from ._style import _alt, _inline

if TYPE_CHECKING:  # only for annotations: importing it here would make `import cfcore` heavy
    import altair as alt


def _log_scale(values: pd.Series) -> bool:
    """Whether positive numbers span more than a factor of 10: a log axis spreads them."""
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return False
    v = values.to_numpy(dtype=np.float64)
    v = v[np.isfinite(v)]
    return bool(v.size) and v.min() > 0 and v.max() / v.min() > 10


def tuning_chart(
    table: pd.DataFrame, hyper_parameters: Sequence[str], metric: str
) -> alt.HConcatChart:
    """The metric of each setting against the order it ran in, then against each hyper-parameter.

    Args:
        table: `cfcore.TuneResult.table` (a row per setting).
        hyper_parameters: the columns searched.
        metric: the metric's column.

    Returns:
        An `alt.HConcatChart`, one panel per column; numbers on a linear or (spanning more than
        a factor 10) log axis, other values as categories; tooltips give the whole row.
    """
    alt = _alt()
    for col in (*hyper_parameters, metric):
        if col not in table.columns:
            raise ArgumentValueError(f"the table has no column {col!r}: {list(table.columns)}")
    frame = table.reset_index(drop=True).copy()
    frame.insert(0, "trial", np.arange(len(frame)))
    data = _inline(frame)
    tooltip = [alt.Tooltip(f"{c}:{'Q' if pd.api.types.is_numeric_dtype(frame[c]) else 'N'}")
               for c in frame.columns]  # fmt: skip
    y = alt.Y(f"{metric}:Q", title=metric, scale=alt.Scale(zero=False))
    panels = []
    for col in ("trial", *hyper_parameters):
        values = frame[col]
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        if numeric:
            scale = alt.Scale(type="log") if _log_scale(values) else alt.Scale(zero=False)
            x = alt.X(f"{col}:Q", title=col, scale=scale)
        else:
            x = alt.X(f"{col}:N", title=col)
        panels.append(
            alt.Chart(data)
            .mark_circle(size=60, opacity=0.8)
            .encode(x=x, y=y, color=alt.Color("status:N", title="status"), tooltip=tooltip)
            .properties(width=260, height=220, title=f"{metric} against {col}")
        )
    return alt.hconcat(*panels)
