"""Item embeddings: their norms against the items' numbers of ratings, and the shared reading of
models, embedding mappings and arrays."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import ArgumentTypeError, ArgumentValueError
from ._style import _BLUE, _alt, _as_ratings, _figure, _inline, _log_axis, _nice_log_ticks

if TYPE_CHECKING:  # only for annotations: importing them here would make `import cfcore` heavy
    import altair as alt
    from matplotlib.figure import Figure


def _item_embeddings(model: Any, label: str) -> np.ndarray:
    """The item embedding array `[M, d]` of an array, an embeddings mapping or a fitted model."""
    emb = model
    if hasattr(model, "embeddings") and not isinstance(model, Mapping | np.ndarray):
        emb = model.embeddings  # a fitted MatrixFactorization (raises if not fitted)
    if isinstance(emb, Mapping):  # a dict, or the NpzFile of np.load("embeddings.npz")
        keys = list(emb.keys())
        if "item" not in keys:
            raise ArgumentValueError(
                f"embeddings {label!r} have no 'item' array (keys: {keys}); expected "
                "{'user': [N, d], 'item': [M, d]} as in model.embeddings or embeddings.npz"
            )
        emb = emb["item"]
    if not isinstance(emb, np.ndarray | list | tuple) and not hasattr(emb, "__array__"):
        raise ArgumentTypeError(
            f"embeddings {label!r} are a {type(model).__name__}; expected an item array [M, d], "
            "a mapping with an 'item' array, or a fitted model"
        )
    arr = np.asarray(emb)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ArgumentValueError(
            f"item embeddings {label!r} have shape {arr.shape}; expected [M, d] (2-D, d >= 1)"
        )
    if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
        raise ArgumentValueError(
            f"item embeddings {label!r} hold NaN, infinite or non-numeric values"
        )
    return arr.astype(np.float64)


def _models(models: Any) -> dict[str, Any]:
    """`{label: model}` from one model, a `{label: model}` mapping or a list of models."""
    if isinstance(models, Mapping) and not (
        "item" in models and np.ndim(models["item"]) == 2
    ):  # a {label: model} mapping, not one embeddings dict
        out = {str(k): v for k, v in models.items()}
    elif isinstance(models, list | tuple):
        out = {f"model {i + 1}": m for i, m in enumerate(models)}
    else:
        out = {"model": models}
    if not out:
        raise ArgumentValueError("no embeddings given: pass at least one model or item array")
    return out


def _catalog_columns(ratings: Any) -> tuple[Any, pd.DataFrame]:
    r = _as_ratings(ratings)
    catalog = r.catalog
    frame = pd.DataFrame({"item": np.arange(r.num_items)})
    if catalog is not None and "title" in catalog:
        frame["title"] = catalog["title"].astype(str).to_numpy()
    else:
        frame["title"] = [f"item {i}" for i in range(r.num_items)]
    if catalog is not None and "genre" in catalog:
        frame["genre"] = catalog["genre"].astype(str).to_numpy()
    return r, frame


def embedding_norms(models: Any, ratings: Any) -> pd.DataFrame:
    """Norm ‖V_j‖ of every item embedding against the item's number of ratings.

    Args:
        models: one model (item array `[M, d]`, embeddings mapping, fitted model), a list of them,
            or a `{label: model}` mapping (labels name the columns).
        ratings: `Ratings` over M items (or a dataset holding them) whose counts are the x axis:
            usually all the ratings, as in the notebook.

    Returns:
        A frame with M rows: `item`, `title`, `genre` (with a catalog), `num_ratings`, then one
        float64 column of norms per model, named by its label.
    """
    r, frame = _catalog_columns(ratings)
    frame["num_ratings"] = np.bincount(r.items, minlength=r.num_items).astype(np.int64)
    for label, model in _models(models).items():
        if label in frame:
            raise ArgumentValueError(f"model label {label!r} clashes with a column name; rename it")
        V = _item_embeddings(model, label)
        if V.shape[0] != r.num_items:
            raise ArgumentValueError(
                f"item embeddings {label!r} have {V.shape[0]} rows but the catalog has "
                f"{r.num_items} items; were they trained on another dataset?"
            )
        frame[label] = np.linalg.norm(V, axis=1)
    return frame


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    return float(pd.Series(x).rank().corr(pd.Series(y).rank()))


def embedding_norm_chart(models: Any, ratings: Any) -> alt.HConcatChart:
    """Interactive scatter of embedding norm against number of ratings, one panel per model.

    As the notebook's `movie_embedding_norm`: drag a rectangle in one panel to highlight the same
    movies in every panel; hover a point to read its title. The x axis is symmetric-log, since
    ratings per movie are heavily skewed.

    Args:
        models: as in `embedding_norms`.
        ratings: as in `embedding_norms`.

    Returns:
        An `alt.HConcatChart` over one data table (`embedding_norms` with the norm columns renamed
        `norm_0`, `norm_1`, ... in the order of the models).
    """
    alt = _alt()
    frame = embedding_norms(models, ratings)
    labels = list(_models(models))
    # Field names with dots, brackets or spaces need escaping in Vega-Lite: use safe names.
    data = frame.rename(columns={lab: f"norm_{i}" for i, lab in enumerate(labels)})
    brush = alt.selection_interval(encodings=["x", "y"], name="brush")
    views = [f"norm_points_{i}" for i in range(len(labels))]
    counts = frame["num_ratings"].to_numpy()
    zeros = bool((counts == 0).any())  # symmetric log only when there are unrated items
    xscale = alt.Scale(type="symlog" if zeros else "log")
    xaxis = alt.Axis(values=([0.0] if zeros else []) + _nice_log_ticks(float(counts.max())))
    charts = []
    for i, label in enumerate(labels):
        field = f"norm_{i}"
        rho = _spearman(frame["num_ratings"].to_numpy(), frame[label].to_numpy())
        nearest = alt.selection_point(
            on="pointerover", nearest=True, encodings=["x", "y"], empty=False, name=f"hover_{i}"
        )
        enc = {
            "x": alt.X(
                "num_ratings:Q", title="number of ratings (log scale)", scale=xscale, axis=xaxis
            ),
            "y": alt.Y(f"{field}:Q", title=f"embedding norm ({label})"),
        }
        points = (
            alt.Chart()
            .mark_circle(size=20)
            .encode(
                **enc,
                color=alt.when(brush).then(alt.value(_BLUE)).otherwise(alt.value("lightgray")),
                tooltip=[
                    alt.Tooltip("title:N"),
                    alt.Tooltip("num_ratings:Q", title="ratings"),
                    alt.Tooltip(f"{field}:Q", title="norm", format=".3f"),
                ],
            )
            .add_params(nearest)
            .properties(name=views[i])
        )
        text = (
            alt.Chart()
            .mark_text(align="left", dx=6, dy=-6, fontSize=11)
            .encode(**enc, text=alt.when(nearest).then("title:N").otherwise(alt.value("")))
        )
        charts.append(
            alt.layer(points, text).properties(
                width=360, height=320, title=f"{label} (Spearman ρ = {rho:.2f})"
            )
        )
    chart = alt.hconcat(*charts, data=_inline(data))
    # One brush drawn in any panel highlights the same movies in all of them (its predicate is on
    # the fields of the panel it was drawn in, and every row carries all the norms). It is
    # declared once, at the top, bound to the named point views; adding it to each panel instead
    # makes Altair merge the copies with a warning and list views that do not exist.
    shared = alt.TopLevelSelectionParameter(
        name=brush.name,
        select=alt.IntervalSelectionConfig(type="interval", encodings=["x", "y"]),
        views=views,
    )
    earlier = chart.params  # a list once set, else alt.Undefined
    chart.params = [shared, *(earlier if isinstance(earlier, list) else [])]
    return chart


def embedding_norm_figure(models: Any, ratings: Any, *, annotate: int = 3) -> Figure:
    """Static scatter of embedding norm against number of ratings, one panel per model.

    Args:
        models: as in `embedding_norms`.
        ratings: as in `embedding_norms`.
        annotate: how many of the largest-norm movies of each panel to label with their titles.

    Returns:
        A `matplotlib.figure.Figure`; each panel's title gives the Spearman rank correlation
        between norm and number of ratings.
    """
    frame = embedding_norms(models, ratings)
    labels = list(_models(models))
    fig, axes = _figure(len(labels), width=4.8, height=4.4)
    x = frame["num_ratings"].to_numpy()
    marks = ["#e45756", "#f58518", "#54a24b", "#b279a2", "#9d755d"]
    for ax, label in zip(axes[0], labels, strict=True):
        y = frame[label].to_numpy()
        ax.scatter(x, y, s=6, alpha=0.45, color=_BLUE, linewidths=0)
        # The largest norms get their own markers and a legend entry, placed by matplotlib where
        # it hides the fewest points: titles written beside the points overlap each other.
        for rank, j in enumerate(np.argsort(-y, kind="stable")[:annotate]):
            ax.scatter(
                x[j],
                y[j],
                s=36,
                facecolors="none",
                edgecolors=marks[rank % len(marks)],
                linewidths=1.4,
                label=f"{_shorten(frame['title'].iloc[j], 30)} ({x[j]})",
            )
        _log_axis(ax, "x", symlog=bool((x == 0).any()))
        ax.set_ylim(bottom=0)
        ax.set_xlabel("number of ratings (log scale)")
        ax.set_ylabel(r"embedding norm $\|V_j\|$")
        ax.set_title(f"{label}\nSpearman ρ = {_spearman(x, y):.2f}", fontsize=10)
        ax.grid(True, alpha=0.3)
        if annotate:
            ax.legend(loc="best", fontsize=7, title="largest norms (ratings)", title_fontsize=7)
    return fig


def _shorten(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
