"""Pictures: data exploration, training curves, embedding norms and t-SNE maps of item embeddings.

Each picture comes twice: an interactive Altair chart (`*_chart`, saved as HTML with
`save_chart`), as in the course notebook, and a static matplotlib figure (`*_figure`, saved as PNG
with `save_figure`) for reports. Every function is pure: it returns a new chart or
`matplotlib.figure.Figure` and touches no global plotting state (no pyplot). matplotlib, Altair
and scikit-learn are imported inside the functions, so `import cfcore` stays light.

Embeddings may be given as an item array `[M, d]`, a mapping with an `"item"` array (what
`model.embeddings` and an `embeddings.npz` from `cfcore train` hold) or a fitted model; several
models as a `{label: embeddings}` mapping or a list.

Example:
    >>> ml = cfcore.datasets.load_movielens("100k")                            # doctest: +SKIP
    >>> save_chart(user_exploration_chart(ml.ratings, ml.users), "users.html")  # doctest: +SKIP
    >>> fig = embedding_norm_figure({"mf": mf, "regularized": reg}, ml.ratings) # doctest: +SKIP
    >>> save_figure(fig, "norms.png")                                           # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ._io import atomic_write
from .exploration import (
    check_genres,
    genre_names,
    item_stats,
    slice_by_genre,
    slice_by_occupation,
    user_stats,
)

if TYPE_CHECKING:  # only for annotations: importing them here would make `import cfcore` heavy
    import altair as alt
    from matplotlib.figure import Figure

__all__ = [
    "METRIC_GROUPS",
    "embedding_norm_chart",
    "embedding_norm_figure",
    "embedding_norms",
    "item_exploration_chart",
    "item_exploration_figure",
    "save_chart",
    "save_figure",
    "training_curves_chart",
    "training_curves_figure",
    "tsne",
    "tsne_chart",
    "tsne_figure",
    "user_exploration_chart",
    "user_exploration_figure",
]

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

_OTHER = "other genres"  # colour label of items outside the highlighted genres
_GREY = "#c8c8c8"
_BLUE = "#4c78a8"


# ---------------------------------------------------------------------------- saving


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


# ---------------------------------------------------------------------------- helpers


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
        {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
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


# ---------------------------------------------------------------------------- exploration


def _nice_log_ticks(top: float) -> list[float]:
    """1, 2, 5, 10, 20, 50, ... up to `top` (at least 1 and 2)."""
    ticks = [m * 10**e for e in range(12) for m in (1, 2, 5)]
    return [float(t) for t in ticks if t <= max(top, 2)]


def _filtered_hist(field: str, title: str, what: str, selection: Any, *, log: bool = False) -> Any:
    """Histogram of `field` over all rows (grey) with the selected rows drawn on top (blue).

    With `log`, `field` holds log10 of a count and the axis is labelled with the counts.
    """
    alt = _alt()
    if log:
        x = alt.X(
            f"{field}:Q",
            bin=alt.Bin(step=0.1),
            title=title,
            axis=alt.Axis(
                values=[float(np.log10(t)) for t in _nice_log_ticks(1e4)],
                labelExpr="format(round(pow(10, datum.value)), 'd')",
            ),
        )
    else:
        x = alt.X(f"{field}:Q", bin=alt.Bin(maxbins=20), title=title)
    # Rows with a null value (no ratings: no mean, no log) are left out rather than binned apart.
    base = (
        alt.Chart()
        .mark_bar()
        .transform_filter(f"isValid(datum['{field}'])")
        .properties(width=300, height=260)
    )
    everything = base.encode(
        x=x, y=alt.Y("count():Q", title=f"{what} (all)"), color=alt.value("lightgray")
    )
    if selection is None:
        return everything.encode(color=alt.value(_BLUE))
    # Independent y scales: a small selected subset would be invisible on the scale of all rows.
    chosen = base.encode(
        x=x,
        y=alt.Y("count():Q", title=f"{what} (selected)"),
        color=alt.value(_BLUE),
        opacity=alt.value(0.8),
    ).transform_filter(selection)
    return alt.layer(everything, chosen).resolve_scale(y="independent")


def _selector(field: str, what: str, selection: Any) -> Any:
    """Bar chart of the rows per `field` value; click (shift-click) to select values."""
    alt = _alt()
    return (
        alt.Chart()
        .mark_bar()
        .encode(
            x=alt.X("count():Q", title=what),
            y=alt.Y(f"{field}:N", sort="-x", title=field),
            # Blue like the selected rows in the histograms, so the two read together.
            color=alt.when(selection).then(alt.value(_BLUE)).otherwise(alt.value("lightgray")),
            tooltip=[
                alt.Tooltip(f"{field}:N"),
                alt.Tooltip("count():Q", title=what),
                alt.Tooltip(
                    "mean(rating_mean):Q", title="mean of their mean ratings", format=".2f"
                ),
            ],
        )
        .add_params(selection)
        .properties(
            width=220,
            height=300,
            title=alt.Title(f"{what} per {field}", subtitle="click to select, shift-click to add"),
        )
    )


def _exploration_chart(
    stats: pd.DataFrame, field: str | None, what: str, count_title: str, mean_title: str
) -> Any:
    alt = _alt()
    selection = None if field is None else alt.selection_point(fields=[field])
    charts = [
        _filtered_hist("log10_count", count_title, what, selection, log=True),
        _filtered_hist("rating_mean", mean_title, what, selection),
    ]
    if field is not None:
        charts.append(_selector(field, what, selection))
    keep = ["rating_count", "rating_mean", "title"] + ([field] if field else [])
    data = stats[[c for c in keep if c in stats]].copy()
    count = data["rating_count"].to_numpy(dtype=np.float64)
    # Counts are skewed (a few users rate hundreds of movies): bin them on a log scale.
    with np.errstate(divide="ignore"):
        data["log10_count"] = np.where(count > 0, np.log10(np.maximum(count, 1.0)), np.nan)
    return alt.hconcat(*charts, data=_inline(data))


def user_exploration_chart(ratings: Any, users: pd.DataFrame | None = None) -> alt.HConcatChart:
    """Interactive histograms of ratings per user and mean user rating, sliced by occupation.

    Clicking an occupation (shift-click for several) draws its users' histograms in blue over
    those of all users (grey), as in the notebook's section I. Without an `occupation` column only
    the two histograms are drawn.

    Args:
        ratings: `Ratings` over N users (or a dataset holding them).
        users: optional user frame with N rows (e.g. `MovieLens.users`).

    Returns:
        An `alt.HConcatChart` whose data has one row per user: `rating_count`, `rating_mean`,
        `occupation` and `log10_count` (null for no ratings).
    """
    stats = user_stats(ratings, users)
    field = "occupation" if "occupation" in stats else None
    return _exploration_chart(
        stats, field, "users", "ratings per user (log scale)", "mean rating of the user"
    )


def item_exploration_chart(ratings: Any, items: pd.DataFrame | None = None) -> alt.HConcatChart:
    """Interactive histograms of ratings per movie and mean movie rating, sliced by genre.

    The slice is the catalog's single `genre` label (the notebook's draw among a movie's genres).
    Movies nobody rated are left out of both histograms (they have no mean and no log count).

    Args:
        ratings: `Ratings` over M items (or a dataset holding them).
        items: optional item frame with M rows (defaults to the catalog).

    Returns:
        An `alt.HConcatChart` whose data has one row per item: `rating_count`, `rating_mean`,
        `title`, `genre` and `log10_count` (null for no ratings).
    """
    stats = item_stats(ratings, items)
    field = "genre" if "genre" in stats else None
    return _exploration_chart(
        stats, field, "movies", "ratings per movie (log scale)", "mean rating of the movie"
    )


def _count_hist(ax: Any, counts: np.ndarray, what: str, color: str) -> None:
    counts = np.asarray(counts)
    rated = counts[counts > 0]
    ax.hist(rated, bins=_log_bins(rated), color=color, edgecolor="white", linewidth=0.5)
    _log_axis(ax, "x")
    ax.set_xlabel(f"ratings per {what} (log scale)")
    ax.set_ylabel(f"{what}s")
    med = float(np.median(counts))
    ax.axvline(max(med, 1.0), color="black", linestyle="--", linewidth=1)
    unrated = int((counts == 0).sum())
    note = f"median {med:g}" + (f"\n{unrated} {what}s without ratings" if unrated else "")
    ax.text(0.97, 0.95, note, transform=ax.transAxes, ha="right", va="top", fontsize=9)


def _mean_hist(ax: Any, means: np.ndarray, what: str, color: str) -> None:
    means = np.asarray(means, dtype=np.float64)
    means = means[np.isfinite(means)]
    ax.hist(means, bins=np.linspace(1.0, 5.0, 33), color=color, edgecolor="white", linewidth=0.5)
    ax.set_xlabel(f"mean rating of the {what}")
    ax.set_ylabel(f"{what}s")
    ax.set_xlim(1.0, 5.0)


def _slice_bars(ax: Any, table: pd.DataFrame, member: str, overall: float) -> None:
    """Horizontal bars of the mean rating per group, best on top, annotated with the group size."""
    table = table.dropna(subset=["mean_rating"]).sort_values("mean_rating")
    y = np.arange(len(table))
    ax.barh(y, table["mean_rating"], color="#72b7b2", height=0.7)
    ax.set_yticks(y, [str(i) for i in table.index], fontsize=8)
    ax.set_ylim(-0.6, len(table) - 0.4)
    ax.axvline(overall, color="black", linestyle="--", linewidth=1, label=f"all: {overall:.2f}")
    lo = float(table["mean_rating"].min())
    hi = float(table["mean_rating"].max())
    ax.set_xlim(max(1.0, lo - 0.25), min(5.0, hi + 0.45))
    for yi, (mean, n) in enumerate(zip(table["mean_rating"], table[member], strict=True)):
        ax.text(
            mean + 0.01,
            yi,
            f"{mean:.2f} ({n})",
            va="center",
            fontsize=7,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.5},
        )
    ax.set_xlabel(f"mean rating (number of {member} in brackets)")
    ax.legend(loc="lower right", fontsize=8)


def user_exploration_figure(ratings: Any, users: pd.DataFrame | None = None) -> Figure:
    """Static counterpart of `user_exploration_chart` for reports.

    Panels: ratings per user (log-spaced bins: a few users rate hundreds of movies), mean rating
    per user, and, with an `occupation` column, the mean rating of each occupation.

    Returns:
        A `matplotlib.figure.Figure`.
    """
    stats = user_stats(ratings, users)
    has_occ = "occupation" in stats
    fig, axes = _figure(3 if has_occ else 2, width=4.6, height=4.2)
    _count_hist(axes[0, 0], stats["rating_count"].to_numpy(), "user", _BLUE)
    _mean_hist(axes[0, 1], stats["rating_mean"].to_numpy(), "user", _BLUE)
    r = _as_ratings(ratings)
    if has_occ:
        _slice_bars(
            axes[0, 2],
            slice_by_occupation(r, users),
            "users",
            float(r.values.astype(np.float64).mean()),
        )
        axes[0, 2].set_title("by occupation", fontsize=10)
    fig.suptitle(f"{r.num_users} users, {len(r)} ratings")
    return fig


def item_exploration_figure(ratings: Any, items: pd.DataFrame | None = None) -> Figure:
    """Static counterpart of `item_exploration_chart` for reports.

    Panels: ratings per movie (log-spaced bins), mean rating per movie, and, with genre flag
    columns, the mean rating of the ratings of each genre's movies (a movie counts in each of its
    genres).

    Returns:
        A `matplotlib.figure.Figure`.
    """
    r = _as_ratings(ratings)
    stats = item_stats(r, items)
    catalog = r.catalog if items is None else items
    has_genres = catalog is not None and bool(genre_names(catalog))
    fig, axes = _figure(3 if has_genres else 2, width=4.6, height=4.2)
    _count_hist(axes[0, 0], stats["rating_count"].to_numpy(), "movie", "#f58518")
    _mean_hist(axes[0, 1], stats["rating_mean"].to_numpy(), "movie", "#f58518")
    if has_genres:
        _slice_bars(
            axes[0, 2],
            slice_by_genre(r, catalog),
            "movies",
            float(r.values.astype(np.float64).mean()),
        )
        axes[0, 2].set_title("by genre (a movie counts in each of its genres)", fontsize=10)
    fig.suptitle(f"{r.num_items} movies, {len(r)} ratings")
    return fig


# ---------------------------------------------------------------------------- training curves


def _curve_groups(history: pd.DataFrame) -> dict[str, list[str]]:
    """The metric groups present in `history`, after checking its columns."""
    if not isinstance(history, pd.DataFrame):
        raise TypeError(f"history must be a pandas DataFrame, got {type(history).__name__}")
    have = list(history.columns)
    if "step" not in history:
        raise ValueError(
            f"history has no 'step' column (it has {have}); expected the history returned by "
            "fit() or the history.csv written by `cfcore train`"
        )
    if len(history) == 0:
        raise ValueError("history is empty: there is nothing to plot")
    groups: dict[str, list[str]] = {}
    for name, cols in METRIC_GROUPS.items():
        present = [c for c in cols if c in history]
        if present and cols[0] not in history:  # a test curve without its training curve
            raise ValueError(
                f"history has {present} but no {cols[0]!r} column (it has {have}); expected the "
                "history returned by fit() or the history.csv written by `cfcore train`"
            )
        if name == "loss parts" and present and len(present) != len(cols):
            missing = [c for c in cols if c not in history]
            raise ValueError(
                f"history has {present} but lacks {missing}: a regularized model's history has all "
                f"of {list(cols)}"
            )
        if present:
            groups[name] = present
    ranking = [str(c) for c in history.columns if _RANKING.match(str(c))]
    if ranking:
        groups["ranking"] = ranking
    if not groups:
        raise ValueError(
            f"history has no metric column to plot (it has {have}); expected 'train_mse' (matrix "
            "factorization: fit() or the history.csv of `cfcore train`) or 'train_loss' (softmax)"
        )
    for cols in groups.values():
        for c in ["step", *cols]:
            if not pd.api.types.is_numeric_dtype(history[c]):
                raise ValueError(f"history column {c!r} is not numeric (dtype {history[c].dtype})")
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


# ---------------------------------------------------------------------------- embeddings


def _as_ratings(data: Any):
    from .training import as_ratings

    return as_ratings(data, "ratings")


def _item_embeddings(model: Any, label: str) -> np.ndarray:
    """The item embedding array `[M, d]` of an array, an embeddings mapping or a fitted model."""
    emb = model
    if hasattr(model, "embeddings") and not isinstance(model, Mapping | np.ndarray):
        emb = model.embeddings  # a fitted MatrixFactorization (raises if not fitted)
    if isinstance(emb, Mapping) or hasattr(emb, "files"):  # dict or np.lib.npyio.NpzFile
        keys = list(emb.files) if hasattr(emb, "files") else list(emb.keys())
        if "item" not in keys:
            raise ValueError(
                f"embeddings {label!r} have no 'item' array (keys: {keys}); expected "
                "{'user': [N, d], 'item': [M, d]} as in model.embeddings or embeddings.npz"
            )
        emb = emb["item"]
    if not isinstance(emb, np.ndarray | list | tuple) and not hasattr(emb, "__array__"):
        raise TypeError(
            f"embeddings {label!r} are a {type(model).__name__}; expected an item array [M, d], "
            "a mapping with an 'item' array, or a fitted model"
        )
    arr = np.asarray(emb)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(
            f"item embeddings {label!r} have shape {arr.shape}; expected [M, d] (2-D, d >= 1)"
        )
    if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
        raise ValueError(f"item embeddings {label!r} hold NaN, infinite or non-numeric values")
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
        raise ValueError("no embeddings given: pass at least one model or item array")
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
            raise ValueError(f"model label {label!r} clashes with a column name; rename it")
        V = _item_embeddings(model, label)
        if V.shape[0] != r.num_items:
            raise ValueError(
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
    chart.params = [shared, *([] if chart.params is alt.Undefined else chart.params)]
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


def tsne(
    item_embeddings: Any,
    *,
    perplexity: float = 40.0,
    seed: int = 0,
    max_iter: int = 400,
    early_exaggeration: float = 10.0,
    verbose: int = 0,
) -> np.ndarray:
    """Projects item embeddings to 2-D with t-SNE under the cosine metric (the notebook's setup).

    Uses `sklearn.manifold.TSNE(metric="cosine", init="pca")`; the same `seed` gives the same map
    (with the PCA initialisation the map depends little, if at all, on the seed).

    Args:
        item_embeddings: item array `[M, d]`, embeddings mapping or fitted model.
        perplexity: effective number of neighbours; must be below M.
        seed: `random_state` of t-SNE.
        max_iter: optimisation iterations (scikit-learn requires at least 250).
        early_exaggeration: the notebook's 10.
        verbose: scikit-learn's verbosity.

    Returns:
        float32 array `[M, 2]`.
    """
    from sklearn.manifold import TSNE

    V = _item_embeddings(item_embeddings, "item")
    m = V.shape[0]
    if not 0 < float(perplexity) < m:
        raise ValueError(
            f"perplexity {perplexity} must be positive and below the number of items ({m})"
        )
    if int(max_iter) < 250:
        raise ValueError(f"max_iter {max_iter} is below scikit-learn's minimum of 250")
    zero = np.linalg.norm(V, axis=1) == 0
    if zero.any():
        raise ValueError(
            f"{int(zero.sum())} item embedding(s) are all zero (first: item "
            f"{int(np.argmax(zero))}); the cosine metric is undefined for them"
        )
    model = TSNE(
        n_components=2,
        perplexity=float(perplexity),
        metric="cosine",
        early_exaggeration=float(early_exaggeration),
        init="pca",
        max_iter=int(max_iter),
        random_state=seed,
        verbose=verbose,
    )
    return model.fit_transform(V).astype(np.float32)


def _genre_labels(catalog: pd.DataFrame | None, genres: Sequence[str] | None) -> np.ndarray:
    """One colour label per item: its `genre`, or the first of `genres` it has (else "other")."""
    if catalog is None:
        raise ValueError("the ratings have no catalog, so the items have no genres to colour by")
    if genres is None:
        if "genre" not in catalog:
            raise ValueError(f"the catalog has no 'genre' column (it has {list(catalog.columns)})")
        return catalog["genre"].astype(str).to_numpy()
    flags = genre_names(catalog)
    if flags:
        chosen = check_genres(genres, flags)
        label = np.full(len(catalog), _OTHER, dtype=object)
        for g in reversed(chosen):  # earlier genres win for movies of several chosen genres
            label[catalog[g].to_numpy().astype(bool)] = g
        return label
    if "genre" not in catalog:
        raise ValueError(f"the catalog has no genre columns (it has {list(catalog.columns)})")
    valid = sorted(set(catalog["genre"].astype(str)))
    chosen = check_genres(genres, valid)
    label = catalog["genre"].astype(str).to_numpy().astype(object)
    label[~np.isin(label, chosen)] = _OTHER
    return label


def _tsne_frame(coords: Any, ratings: Any, genres: Sequence[str] | None) -> pd.DataFrame:
    r, frame = _catalog_columns(ratings)
    xy = np.asarray(coords, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"t-SNE coordinates have shape {xy.shape}; expected [M, 2] (see tsne())")
    if xy.shape[0] != r.num_items:
        raise ValueError(
            f"t-SNE coordinates have {xy.shape[0]} rows but the catalog has {r.num_items} items"
        )
    frame["x"], frame["y"] = xy[:, 0], xy[:, 1]
    frame["genre"] = _genre_labels(r.catalog, genres)
    frame["num_ratings"] = np.bincount(r.items, minlength=r.num_items)
    return frame


def tsne_chart(
    coords: Any, ratings: Any, *, genres: Sequence[str] | None = None, title: str = "t-SNE"
) -> alt.HConcatChart:
    """Interactive t-SNE map of the items coloured by genre, with a genre selector.

    Click a genre in the bar chart (shift-click for several) to keep only its movies coloured;
    hover a point to read its title.

    Args:
        coords: `[M, 2]` coordinates from `tsne`.
        ratings: `Ratings` over M items with a catalog (or a dataset holding them).
        genres: colour only these genres (a movie takes the first of them it has; the rest are
            "other genres"); default: every movie by its single `genre` label.
        title: chart title.

    Returns:
        An `alt.HConcatChart` with columns `x`, `y`, `title`, `genre`, `num_ratings`.
    """
    alt = _alt()
    frame = _tsne_frame(coords, ratings, genres)
    pick = alt.selection_point(fields=["genre"], name="genre_pick")
    palette = _genre_colors(frame["genre"].to_numpy(), genres)
    colors = alt.Color(
        "genre:N",
        scale=alt.Scale(domain=list(palette), range=list(palette.values())),
        legend=None,
    )
    hover = alt.selection_point(
        on="pointerover", nearest=True, encodings=["x", "y"], empty=False, name="hover"
    )
    points = (
        alt.Chart()
        .mark_circle(size=25, opacity=0.8)
        .encode(
            x=alt.X("x:Q", axis=None),
            y=alt.Y("y:Q", axis=None),
            color=alt.when(pick).then(colors).otherwise(alt.value("#e4e4e4")),
            tooltip=[
                alt.Tooltip("title:N"),
                alt.Tooltip("genre:N"),
                alt.Tooltip("num_ratings:Q", title="ratings"),
            ],
        )
        .add_params(hover)
        .properties(width=560, height=560, title=title)
    )
    text = (
        alt.Chart()
        .mark_text(align="left", dx=6, dy=-6, fontSize=11)
        .encode(x="x:Q", y="y:Q", text=alt.when(hover).then("title:N").otherwise(alt.value("")))
    )
    selector = (
        alt.Chart()
        .mark_bar()
        .encode(
            x=alt.X("count():Q", title="movies", axis=alt.Axis(tickCount=5)),
            y=alt.Y("genre:N", sort=list(palette), title="genre"),
            tooltip=[alt.Tooltip("genre:N"), alt.Tooltip("count():Q", title="movies")],
            color=alt.when(pick).then(colors).otherwise(alt.value("lightgray")),
        )
        .add_params(pick)
        .properties(
            height=300,
            title=alt.Title("movies per genre", subtitle="click to select, shift-click to add"),
        )
    )
    return alt.hconcat(alt.layer(points, text), selector, data=_inline(frame))


def _genre_colors(label: np.ndarray, order: Sequence[str] | None = None) -> dict[str, str]:
    """Colour of each genre label, in `order` (default: most frequent first); "other genres" last.

    Up to 10 genres get tab10; more get tab20 with its strong colours first and its pale halves
    after, so that the frequent genres never share a hue (tab20 pairs dark and light blue ...).
    """
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    counts = pd.Series(label).value_counts()
    named = [str(g) for g in (order if order is not None else counts.index) if g != _OTHER]
    named = [g for g in named if g in counts]
    if len(named) <= 10:
        palette = [to_hex(c) for c in colormaps["tab10"].colors]
    else:
        tab20 = [to_hex(c) for c in colormaps["tab20"].colors]
        palette = tab20[0::2] + tab20[1::2]
    colors = {g: palette[i % len(palette)] for i, g in enumerate(named)}
    if _OTHER in counts:
        colors[_OTHER] = _GREY
    return colors


def tsne_figure(
    coords: Any, ratings: Any, *, genres: Sequence[str] | None = None, title: str = "t-SNE"
) -> Figure:
    """Static t-SNE map of the items coloured by genre (see `tsne_chart` for `genres`).

    Movies outside the chosen genres are drawn first, in light grey, so the chosen ones stay
    visible; the legend sits outside the map with the number of movies of each genre.

    Returns:
        A `matplotlib.figure.Figure`.
    """
    frame = _tsne_frame(coords, ratings, genres)
    label = frame["genre"].to_numpy()
    counts = pd.Series(label).value_counts()
    colors = _genre_colors(label, genres)
    named = [g for g in colors if g != _OTHER]  # given order, else most frequent first
    fig, axes = _figure(1, width=8.5, height=6.5)
    ax = axes[0, 0]
    handles = {}
    if _OTHER in counts:
        rest = label == _OTHER
        handles[_OTHER] = ax.scatter(
            frame["x"][rest],
            frame["y"][rest],
            s=5,
            color=_GREY,
            alpha=0.5,
            linewidths=0,
            label=f"{_OTHER} ({counts[_OTHER]})",
        )
    for g in named:  # later genres are drawn on top: by default the rarer ones
        sel = label == g
        handles[g] = ax.scatter(
            frame["x"][sel],
            frame["y"][sel],
            s=9,
            color=colors[g],
            alpha=0.85,
            linewidths=0,
            label=f"{g} ({counts[g]})",
        )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    ax.legend(
        handles=[handles[g] for g in named] + [handles[g] for g in (_OTHER,) if g in handles],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        markerscale=2.0,
        frameon=False,
        title="genre (movies)"
        if genres is None
        else "genre (movies; the first\nlisted genre a movie has)",
    )
    ax.set_aspect("equal", adjustable="datalim")
    return fig
