"""t-SNE maps of item embeddings, coloured by genre."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..data.exploration import check_genres, genre_names
from ..errors import ArgumentValueError
from ._style import _GREY, _OTHER, _alt, _figure, _inline
from .embeddings import _catalog_columns, _item_embeddings

if TYPE_CHECKING:  # only for annotations: importing them here would make `import cfcore` heavy
    import altair as alt
    from matplotlib.figure import Figure


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
        raise ArgumentValueError(
            f"perplexity {perplexity} must be positive and below the number of items ({m})"
        )
    if int(max_iter) < 250:
        raise ArgumentValueError(f"max_iter {max_iter} is below scikit-learn's minimum of 250")
    zero = np.linalg.norm(V, axis=1) == 0
    if zero.any():
        raise ArgumentValueError(
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
        raise ArgumentValueError(
            "the ratings have no catalog, so the items have no genres to colour by"
        )
    if genres is None:
        if "genre" not in catalog:
            raise ArgumentValueError(
                f"the catalog has no 'genre' column (it has {list(catalog.columns)})"
            )
        return catalog["genre"].astype(str).to_numpy()
    flags = genre_names(catalog)
    if flags:
        chosen = check_genres(genres, flags)
        label = np.full(len(catalog), _OTHER, dtype=object)
        for g in reversed(chosen):  # earlier genres win for movies of several chosen genres
            label[catalog[g].to_numpy().astype(bool)] = g
        return label
    if "genre" not in catalog:
        raise ArgumentValueError(
            f"the catalog has no genre columns (it has {list(catalog.columns)})"
        )
    valid = sorted(set(catalog["genre"].astype(str)))
    chosen = check_genres(genres, valid)
    label = catalog["genre"].astype(str).to_numpy().astype(object)
    label[~np.isin(label, chosen)] = _OTHER
    return label


def _tsne_frame(coords: Any, ratings: Any, genres: Sequence[str] | None) -> pd.DataFrame:
    r, frame = _catalog_columns(ratings)
    xy = np.asarray(coords, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ArgumentValueError(
            f"t-SNE coordinates have shape {xy.shape}; expected [M, 2] (see tsne())"
        )
    if xy.shape[0] != r.num_items:
        raise ArgumentValueError(
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
        tab10 = colormaps["tab10"]
        palette = [to_hex(tab10(i)) for i in range(tab10.N)]
    else:
        cmap = colormaps["tab20"]
        tab20 = [to_hex(cmap(i)) for i in range(cmap.N)]
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
