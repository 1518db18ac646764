"""Training curves: one panel per group of history columns (`METRIC_GROUPS`)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..errors import ArgumentTypeError, ArgumentValueError
from ._style import _alt, _figure, _inline, _log_axis

if TYPE_CHECKING:  # only for annotations: importing them here would make `import cfcore` heavy
    import altair as alt
    from matplotlib.figure import Figure


_GROUP_AXIS = {
    "errors": "mean squared error",
    "loss parts": "loss term",
    "softmax loss": "cross-entropy",
    "ranking": "metric on the test users",
}

METRIC_GROUPS: dict[str, tuple[str, ...]] = {
    "errors": ("train_mse", "test_mse"),
    "loss parts": ("observed_loss", "regularization_loss", "gravity_loss"),
    "softmax loss": ("train_loss", "test_loss"),
}
"""History columns drawn together, one panel per group (as the notebook's `CFModel.train`).

A fourth panel, "ranking", gathers the softmax model's `precision@k`, `recall@k`, `ndcg@k`,
`map@k` and `hit_rate@k` columns.
"""

_RANKING = re.compile(r"^(precision|recall|ndcg|map|hit_rate)@\d+$")

LOSS_PART_LAYOUTS: dict[str, tuple[str, ...]] = {
    "unobserved_loss": ("observed_loss", "unobserved_loss", "regularization_loss"),
    "bias_regularization_loss": (
        "observed_loss",
        "regularization_loss",
        "bias_regularization_loss",
        "gravity_loss",
    ),
}
"""The "loss parts" of `cfcore.IALS` and `cfcore.BiasedMF` histories, told apart by the column
named by the key; any other history's loss parts are `METRIC_GROUPS["loss parts"]`."""


def _curve_groups(history: pd.DataFrame) -> dict[str, list[str]]:
    """The metric groups present in `history`, after checking its columns."""
    if not isinstance(history, pd.DataFrame):
        raise ArgumentTypeError(f"history must be a pandas DataFrame, got {type(history).__name__}")
    have = list(history.columns)
    if "step" not in history:
        raise ArgumentValueError(
            f"history has no 'step' column (it has {have}); expected the history returned by "
            "fit() or the history.csv written by `cfcore train`"
        )
    if len(history) == 0:
        raise ArgumentValueError("history is empty: there is nothing to plot")
    groups: dict[str, list[str]] = {}
    for name, cols in METRIC_GROUPS.items():
        if name == "loss parts":
            cols = next((v for k, v in LOSS_PART_LAYOUTS.items() if k in history), cols)
        present = [c for c in cols if c in history]
        if present and cols[0] not in history:  # a test curve without its training curve
            raise ArgumentValueError(
                f"history has {present} but no {cols[0]!r} column (it has {have}); expected the "
                "history returned by fit() or the history.csv written by `cfcore train`"
            )
        if name == "loss parts" and present and len(present) != len(cols):
            missing = [c for c in cols if c not in history]
            raise ArgumentValueError(
                f"history has {present} but lacks {missing}: a regularized model's history has all "
                f"of {list(cols)}"
            )
        if present:
            groups[name] = present
    ranking = [str(c) for c in history.columns if _RANKING.match(str(c))]
    if ranking:
        groups["ranking"] = ranking
    if not groups:
        raise ArgumentValueError(
            f"history has no metric column to plot (it has {have}); expected 'train_mse' (matrix "
            "factorization: fit() or the history.csv of `cfcore train`) or 'train_loss' (softmax)"
        )
    for cols in groups.values():
        for c in ["step", *cols]:
            if not pd.api.types.is_numeric_dtype(history[c]):
                raise ArgumentValueError(
                    f"history column {c!r} is not numeric (dtype {history[c].dtype})"
                )
    return groups


def _skewed(values: np.ndarray) -> bool:
    """Whether positive curves span a factor above 5: then a log axis keeps their tails readable."""
    v = values[np.isfinite(values)]
    return bool(v.size) and v.min() > 0 and v.max() / v.min() > 5


def training_curves_chart(history: pd.DataFrame) -> alt.HConcatChart:
    """Interactive training curves, one panel per metric group of `METRIC_GROUPS`.

    Args:
        history: frame with a `step` column and the metric columns of `fit()` (`train_mse`, and
            optionally `test_mse` and the three loss parts of a regularized model).

    Returns:
        An `alt.HConcatChart`; each panel's data is in long form (`step`, `metric`, `value`).
        Panels zoom and pan with the mouse; a log y axis is used when a curve spans a decade.
    """
    alt = _alt()
    groups = _curve_groups(history)
    charts = []
    for i, (name, cols) in enumerate(groups.items()):
        long = history.melt(id_vars="step", value_vars=cols, var_name="metric", value_name="value")
        scale = (
            alt.Scale(type="log") if _skewed(long["value"].to_numpy()) else alt.Scale(zero=False)
        )
        # One unit chart per panel with an explicitly named parameter: Altair merges parameters
        # that look alike across panels (or layers) into one, which Vega rejects as a duplicate.
        zoom = alt.selection_interval(bind="scales", encodings=["x"], name=f"zoom_{i}")
        charts.append(
            alt.Chart(_inline(long))
            .mark_line(point=alt.OverlayMarkDef(size=18, filled=True))
            .encode(
                x=alt.X("step:Q", title="step", axis=alt.Axis(tickCount=6, labelOverlap=True)),
                y=alt.Y("value:Q", title=_GROUP_AXIS.get(name, name), scale=scale),
                color=alt.Color("metric:N", sort=list(cols), title=None),
                tooltip=[
                    alt.Tooltip("step:Q"),
                    alt.Tooltip("metric:N"),
                    alt.Tooltip("value:Q", format=".4f"),
                ],
            )
            .add_params(zoom)
            .properties(width=380, height=280, title=name)
        )
    return alt.hconcat(*charts).resolve_scale(color="independent")


def training_curves_figure(history: pd.DataFrame) -> Figure:
    """Static training curves, one panel per metric group (see `training_curves_chart`).

    Returns:
        A `matplotlib.figure.Figure` with one axes per group present in `history`.
    """
    groups = _curve_groups(history)
    fig, axes = _figure(len(groups), width=5.2, height=3.8)
    step = history["step"].to_numpy()
    for ax, (name, cols) in zip(axes[0], groups.items(), strict=True):
        for c in cols:
            values = history[c].to_numpy(dtype=np.float64)
            ax.plot(step, values, label=f"{c} (last {values[-1]:.3f})", linewidth=1.6)
        log = _skewed(history[cols].to_numpy(dtype=np.float64))
        if log:
            _log_axis(ax, "y")
        ax.set_xlabel("step")
        ax.set_ylabel(_GROUP_AXIS.get(name, name) + (" (log scale)" if log else ""))
        ax.set_title(name)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return fig
