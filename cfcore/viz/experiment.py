"""An experiment's summary drawn: each contender's mean and 95% interval, per dataset."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from ..errors import ArgumentValueError
from ._style import _alt, _inline

if TYPE_CHECKING:  # only for annotations: importing it here would make `import cfcore` heavy
    import altair as alt

_COLUMNS = ("dataset", "contender", "mean", "low", "high", "n")


def experiment_chart(summary: pd.DataFrame, metric: str) -> alt.HConcatChart:
    """One panel per dataset: each contender's mean (a point) and 95% interval (an error bar).

    Args:
        summary: rows of one metric of `cfcore.tuning.ExperimentResult.summary()` (`dataset`,
            `contender`, `mean`, `low`, `high`, `n`; `low` and `high` empty with one seed).
        metric: the metric's name (the y axis' title).

    Returns:
        An `alt.HConcatChart`; a contender with one seed is drawn without a bar.
    """
    alt = _alt()
    missing = [c for c in _COLUMNS if c not in summary.columns]
    if missing:
        raise ArgumentValueError(
            f"the summary has no column {missing[0]!r}: {list(summary.columns)}"
        )
    panels = []
    for dataset, rows in summary.groupby("dataset", sort=False):
        frame = rows.loc[:, list(_COLUMNS)].reset_index(drop=True)
        data = _inline(frame)
        x = alt.X("contender:N", title=None, sort=None)
        y = alt.Y("mean:Q", title=metric, scale=alt.Scale(zero=False))
        tooltip = [alt.Tooltip(f"{c}:{'N' if c in ('dataset', 'contender') else 'Q'}")
                   for c in _COLUMNS]  # fmt: skip
        bars = (
            alt.Chart(data)
            .mark_errorbar(ticks=True)
            .encode(x=x, y=alt.Y("low:Q", title=metric, scale=alt.Scale(zero=False)), y2="high:Q")
        )
        points = (
            alt.Chart(data)
            .mark_point(filled=True, size=80)
            .encode(x=x, y=y, color=alt.Color("contender:N", legend=None), tooltip=tooltip)
        )
        panels.append((bars + points).properties(width=220, height=220, title=str(dataset)))
    return alt.hconcat(*panels)
