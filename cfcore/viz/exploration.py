"""Pictures of the data: ratings per user and per movie and mean ratings, sliced by occupation or
genre (the notebook's section I)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..data.exploration import (
    genre_names,
    item_stats,
    slice_by_genre,
    slice_by_occupation,
    user_stats,
)
from ._style import (
    _BLUE,
    _alt,
    _as_ratings,
    _figure,
    _inline,
    _log_axis,
    _log_bins,
    _nice_log_ticks,
)

if TYPE_CHECKING:  # only for annotations: importing them here would make `import cfcore` heavy
    import altair as alt
    from matplotlib.figure import Figure


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
    # Occupations come from the user frame alone (user_stats appends its columns).
    occupations = users if users is not None and "occupation" in users else None
    r = _as_ratings(ratings)
    by = None if occupations is None else (slice_by_occupation(r, occupations), "by occupation")
    return _stats_figure(r, stats, "user", _BLUE, by)


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
    by = None
    if catalog is not None and genre_names(catalog):
        by = (slice_by_genre(r, catalog), "by genre (a movie counts in each of its genres)")
    return _stats_figure(r, stats, "movie", "#f58518", by)


def _stats_figure(
    r: Any, stats: pd.DataFrame, member: str, colour: str, by: tuple[pd.DataFrame, str] | None
) -> Figure:
    """Ratings per `member` and mean rating per `member`, then the bars of `by` (table, title)."""
    fig, axes = _figure(2 if by is None else 3, width=4.6, height=4.2)
    _count_hist(axes[0, 0], stats["rating_count"].to_numpy(), member, colour)
    _mean_hist(axes[0, 1], stats["rating_mean"].to_numpy(), member, colour)
    if by is not None:
        table, title = by
        _slice_bars(axes[0, 2], table, f"{member}s", float(r.values.astype(np.float64).mean()))
        axes[0, 2].set_title(title, fontsize=10)
    count = r.num_users if member == "user" else r.num_items
    fig.suptitle(f"{count} {member}s, {len(r)} ratings")
    return fig
