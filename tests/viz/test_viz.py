"""Pictures and exploration tables: every number drawn or tabulated is recomputed here with pandas
or NumPy on MovieLens 100K (read-only shared copy), and every file written is read back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import cfcore
from cfcore import exploration as ex
from cfcore import viz

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------- helpers


def resolve(part: dict, spec: dict) -> list[dict]:
    """The records of a (sub)chart's `data`, following a named dataset to the top level."""
    data = part["data"]
    if "values" in data:
        return data["values"]
    return spec["datasets"][data["name"]]


def condition(channel: dict) -> dict:
    """The (first) condition of an encoding channel; Altair writes one as a dict or a list."""
    cond = channel["condition"]
    return cond[0] if isinstance(cond, list) else cond


def records(chart) -> tuple[dict, pd.DataFrame]:
    spec = chart.to_dict()
    return spec, pd.DataFrame(resolve(spec, spec))


def check_png(path: Path, fig) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_MAGIC
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    w, h = fig.get_size_inches() * 150  # save_figure's dpi; bbox "tight" trims or pads a little
    assert 0.6 * h < img.shape[0] < 1.4 * h and 0.6 * w < img.shape[1] < 1.4 * w
    assert img[..., :3].std() > 0.05  # not a blank canvas
    assert not list(path.parent.glob(".*.tmp"))


def frame_of(ml) -> pd.DataFrame:
    # float64 ratings, so that pandas' means are exact references (float32 sums drift by 1e-7).
    return ml.ratings_frame().astype({"rating": np.float64})


def history_frame(regularized: bool = True, n: int = 12) -> pd.DataFrame:
    step = np.arange(n) * 10
    decay = np.exp(-step / 40.0)
    cols = {"step": step, "train_mse": 1.0 + 12 * decay, "test_mse": 1.6 + 11 * decay}
    if regularized:
        cols |= {
            "observed_loss": cols["train_mse"],
            "regularization_loss": 0.8 - 0.7 * decay,
            "gravity_loss": 1.3 - 1.2 * decay,
            "total_loss": cols["train_mse"] + 2.1 - 1.9 * decay,
        }
    return pd.DataFrame(cols)


class FittedStub:
    """Anything with `.embeddings` (a fitted MatrixFactorization's interface)."""

    def __init__(self, item: np.ndarray) -> None:
        self.embeddings = {"user": np.zeros((3, item.shape[1])), "item": item}


# ---------------------------------------------------------------------------- exploration tables


def test_user_stats_match_pandas(ml100k) -> None:
    stats = ex.user_stats(ml100k.ratings, ml100k.users)
    df = frame_of(ml100k)
    expected = df.groupby("user_id")["rating"].agg(["count", "mean"])
    assert len(stats) == 943
    assert (stats["user_id"].to_numpy() == expected.index.to_numpy()).all()
    np.testing.assert_array_equal(stats["rating_count"], expected["count"])
    np.testing.assert_allclose(stats["rating_mean"], expected["mean"], rtol=1e-12)
    assert (stats["occupation"] == ml100k.users["occupation"]).all()


def test_item_stats_cover_unrated_items(ml100k) -> None:
    r = ml100k.ratings
    # A subset in which many items have no rating: they keep a row, count 0 and mean NaN.
    sub = r.subset(r.users < 50)
    stats = ex.item_stats(sub)
    assert len(stats) == 1682 and stats["title"].iloc[0] == "Toy Story (1995)"
    df = pd.DataFrame({"item": sub.items, "rating": sub.values.astype(np.float64)})
    g = df.groupby("item")["rating"].agg(["count", "mean"]).reindex(range(1682))
    np.testing.assert_array_equal(stats["rating_count"], g["count"].fillna(0))
    np.testing.assert_allclose(stats["rating_mean"], g["mean"], rtol=1e-12)
    assert (stats["rating_count"] == 0).sum() > 100
    assert stats.loc[stats["rating_count"] == 0, "rating_mean"].isna().all()


def test_most_and_top_rated_match_pandas(ml100k) -> None:
    df = frame_of(ml100k)
    per = df.groupby("item_id").agg(
        title=("title", "first"), count=("rating", "count"), mean=("rating", "mean")
    )
    per = per.reset_index()
    most = per.sort_values(["count", "item_id"], ascending=[False, True]).head(10)
    got = ex.most_rated(ml100k.ratings, 10)
    assert list(got.index) == list(range(1, 11))
    assert got["title"].tolist() == most["title"].tolist()
    assert got["title"].iloc[0] == "Star Wars (1977)"
    np.testing.assert_array_equal(got["rating_count"], most["count"])
    np.testing.assert_allclose(got["rating_mean"], most["mean"], rtol=1e-12)
    assert (
        got["all_genres"].iloc[0]
        == ml100k.items.set_index("title").loc["Star Wars (1977)", "all_genres"]
    )

    for min_count in (20, 100):
        kept = per[per["count"] >= min_count]
        top = kept.sort_values(["mean", "count", "item_id"], ascending=[False, False, True])
        got = ex.top_rated(ml100k.ratings, 7, min_count=min_count)
        assert got["title"].tolist() == top["title"].head(7).tolist()
        np.testing.assert_allclose(got["rating_mean"], top["mean"].head(7), rtol=1e-12)
        assert (got["rating_count"] >= min_count).all()
    # Without the filter, movies rated 5 by a single user come first: that is why it exists.
    unfiltered = ex.top_rated(ml100k.ratings, 3, min_count=1)
    assert (unfiltered["rating_mean"] == 5.0).all()
    assert (unfiltered["rating_count"] < 10).all()


def test_slice_by_occupation_matches_pandas(ml100k) -> None:
    df = frame_of(ml100k)
    got = ex.slice_by_occupation(ml100k.ratings, ml100k.users)
    by = df.groupby("occupation")["rating"].agg(["count", "mean"])
    users = ml100k.users.groupby("occupation").size()
    assert got.index.tolist() == sorted(users.index)
    np.testing.assert_array_equal(got["users"], users.loc[got.index])
    np.testing.assert_array_equal(got["ratings"], by.loc[got.index, "count"])
    np.testing.assert_allclose(got["mean_rating"], by.loc[got.index, "mean"], rtol=1e-12)
    np.testing.assert_allclose(got["ratings_per_user"], got["ratings"] / got["users"])
    assert got["users"].sum() == 943 and got["ratings"].sum() == 100_000


def test_slice_by_genre_matches_pandas(ml100k) -> None:
    df = frame_of(ml100k)
    got = ex.slice_by_genre(ml100k.ratings)
    assert got.index.tolist() == ml100k.genres
    for g in ml100k.genres:
        rated = df[df[g] == 1]["rating"]
        assert got.loc[g, "movies"] == ml100k.items[g].sum()
        assert got.loc[g, "ratings"] == len(rated)
        assert got.loc[g, "mean_rating"] == pytest.approx(rated.mean(), rel=1e-12)
    # A multi-genre movie counts in each genre: more genre ratings than ratings.
    assert got["ratings"].sum() > 100_000

    single = ex.slice_by_genre(ml100k.ratings, genres=["Horror", "Drama"], multi=False)
    by = df.groupby("genre")["rating"].agg(["count", "mean"])
    assert single.index.tolist() == ["Horror", "Drama"]
    np.testing.assert_array_equal(single["ratings"], by.loc[["Horror", "Drama"], "count"])
    np.testing.assert_allclose(single["mean_rating"], by.loc[["Horror", "Drama"], "mean"])
    assert single["ratings"].sum() < got.loc[["Horror", "Drama"], "ratings"].sum()


def test_exploration_errors(ml100k) -> None:
    with pytest.raises(
        ValueError, match=r"unknown genre\(s\) \['Horor'\]; valid genres are: .*Horror"
    ):
        ex.slice_by_genre(ml100k.ratings, genres=["Horor"])
    with pytest.raises(ValueError, match="no item has at least min_count=1000 ratings"):
        ex.top_rated(ml100k.ratings, min_count=1000)
    with pytest.raises(ValueError, match="k must be a positive int, got 0"):
        ex.most_rated(ml100k.ratings, 0)
    with pytest.raises(ValueError, match="min_count must be a positive int, got 0"):
        ex.top_rated(ml100k.ratings, min_count=0)
    with pytest.raises(ValueError, match="the user frame has 10 rows but the ratings have 943"):
        ex.user_stats(ml100k.ratings, ml100k.users.head(10))
    no_occ = ml100k.users.drop(columns="occupation")
    with pytest.raises(ValueError, match="no 'occupation' column"):
        ex.slice_by_occupation(ml100k.ratings, no_occ)
    with pytest.raises(TypeError, match="ratings must be cfcore.Ratings"):
        ex.item_stats(np.zeros(3))


def test_summary_and_markdown(ml100k) -> None:
    s = ex.summary(ml100k.ratings)
    assert (s["users"], s["items"], s["ratings"]) == (943, 1682, 100_000)
    assert s["density"] == pytest.approx(100_000 / (943 * 1682))
    assert s["mean_rating"] == pytest.approx(frame_of(ml100k)["rating"].mean())
    table = ex.most_rated(ml100k.ratings, 3)
    md = ex.to_markdown(table).splitlines()
    assert len(md) == 2 + 3
    assert md[0].startswith("| rank | item | item_id | title |")
    assert md[2].startswith("| 1 | 49 | 50 | Star Wars (1977) |")
    assert ex.to_markdown(pd.DataFrame({"a": ["x|y"]})).splitlines()[2] == "| x\\|y |"


# ---------------------------------------------------------------------------- exploration charts


def test_user_exploration_chart_data_and_encodings(ml100k) -> None:
    chart = viz.user_exploration_chart(ml100k.ratings, ml100k.users)
    spec, data = records(chart)
    counts = np.bincount(ml100k.ratings.users, minlength=943)
    np.testing.assert_array_equal(data["rating_count"], counts)
    np.testing.assert_allclose(data["log10_count"], np.log10(counts))
    sums = np.bincount(ml100k.ratings.users, weights=ml100k.ratings.values.astype(float))
    np.testing.assert_allclose(data["rating_mean"], sums / counts)
    assert (data["occupation"] == ml100k.users["occupation"]).all()

    count_hist, mean_hist, selector = spec["hconcat"]
    assert [layer["encoding"]["x"]["field"] for layer in count_hist["layer"]] == ["log10_count"] * 2
    assert mean_hist["layer"][0]["encoding"]["x"]["field"] == "rating_mean"
    assert mean_hist["layer"][0]["encoding"]["x"]["bin"]
    assert count_hist["resolve"] == {"scale": {"y": "independent"}}
    # The second layer draws the selected occupations only.
    (param,) = spec["params"]
    assert param["select"] == {"type": "point", "fields": ["occupation"]}
    assert count_hist["layer"][1]["transform"][-1] == {"filter": {"param": param["name"]}}
    assert selector["encoding"]["y"]["field"] == "occupation"
    assert condition(selector["encoding"]["color"])["param"] == param["name"]


def test_item_exploration_chart_without_slice_when_no_genre(ml100k) -> None:
    chart = viz.item_exploration_chart(ml100k.ratings)
    spec, data = records(chart)
    assert len(spec["hconcat"]) == 3
    np.testing.assert_array_equal(data["rating_count"], np.bincount(ml100k.ratings.items))
    assert (data["genre"] == ml100k.items["genre"]).all()
    bare = cfcore.Ratings(
        ml100k.ratings.users, ml100k.ratings.items, ml100k.ratings.values, 943, 1682
    )
    spec, data = records(viz.item_exploration_chart(bare))
    assert len(spec["hconcat"]) == 2 and "params" not in spec
    assert "genre" not in data


def test_exploration_figures(ml100k, tmp_path: Path) -> None:
    fig = viz.user_exploration_figure(ml100k.ratings, ml100k.users)
    count_ax, mean_ax, occ_ax = fig.axes
    assert sum(p.get_height() for p in count_ax.patches) == 943  # every user in one bin
    assert count_ax.get_xscale() == "log"
    assert sum(p.get_height() for p in mean_ax.patches) == 943
    occ = ex.slice_by_occupation(ml100k.ratings, ml100k.users).sort_values("mean_rating")
    bars = occ_ax.patches
    assert [t.get_text() for t in occ_ax.get_yticklabels()] == occ.index.tolist()
    np.testing.assert_allclose([b.get_width() for b in bars], occ["mean_rating"])
    check_png(viz.save_figure(fig, tmp_path / "users.png"), fig)

    fig = viz.item_exploration_figure(ml100k.ratings)
    count_ax, mean_ax, genre_ax = fig.axes
    assert sum(p.get_height() for p in count_ax.patches) == 1682
    labels = [t.get_text() for t in genre_ax.get_yticklabels()]
    assert sorted(labels) == sorted(ml100k.genres)
    check_png(viz.save_figure(fig, tmp_path / "movies.png"), fig)


# ---------------------------------------------------------------------------- training curves


def test_training_curves_chart_panels_and_data() -> None:
    h = history_frame()
    spec = viz.training_curves_chart(h).to_dict()
    errors, parts = spec["hconcat"]
    assert errors["title"] == "errors" and parts["title"] == "loss parts"
    for panel, cols in (
        (errors, ["train_mse", "test_mse"]),
        (parts, list(viz.METRIC_GROUPS["loss parts"])),
    ):
        got = pd.DataFrame(resolve(panel, spec))
        want = h.melt(id_vars="step", value_vars=cols, var_name="metric", value_name="value")
        pd.testing.assert_frame_equal(got, want, check_dtype=False)
        assert panel["encoding"]["color"]["field"] == "metric"
        assert panel["encoding"]["x"]["field"] == "step"
    # A log axis exactly when a panel's values span more than a factor of 5.
    for panel, cols in ((errors, ["train_mse", "test_mse"]), (parts, ["observed_loss"])):
        values = h[cols].to_numpy()
        assert (panel["encoding"]["y"]["scale"] == {"type": "log"}) == (
            values.max() / values.min() > 5
        )
    assert errors["encoding"]["y"]["scale"] == {"type": "log"}  # 13 down to about 1
    mf = viz.training_curves_chart(history_frame(regularized=False)).to_dict()
    assert len(mf["hconcat"]) == 1


def test_training_curves_figure_lines() -> None:
    h = history_frame()
    fig = viz.training_curves_figure(h)
    assert [ax.get_title() for ax in fig.axes] == ["errors", "loss parts"]
    groups = [viz.METRIC_GROUPS["errors"], viz.METRIC_GROUPS["loss parts"]]
    for ax, cols in zip(fig.axes, groups, strict=True):
        lines = ax.get_lines()
        assert [ln.get_label().split(" ")[0] for ln in lines] == list(cols)
        for ln, c in zip(lines, cols, strict=True):
            np.testing.assert_array_equal(ln.get_xdata(), h["step"])
            np.testing.assert_allclose(ln.get_ydata(), h[c])
    flat = h.assign(train_mse=1.0 + 0.01 * h["step"] / 100, test_mse=1.5)  # spans < 5x: linear
    fig = viz.training_curves_figure(flat[["step", "train_mse", "test_mse"]])
    assert len(fig.axes) == 1 and fig.axes[0].get_yscale() == "linear"


def test_training_curves_of_a_softmax_history() -> None:
    step = np.arange(0, 60, 10)
    h = pd.DataFrame(
        {
            "step": step,
            "train_loss": 7.0 - step / 20,
            "test_loss": 7.2 - step / 25,
            "precision@10": step / 1000,
            "recall@10": step / 300,
            "users": 943,  # not a metric: left out
        }
    )
    spec = viz.training_curves_chart(h).to_dict()
    assert [p["title"] for p in spec["hconcat"]] == ["softmax loss", "ranking"]
    ranking = pd.DataFrame(resolve(spec["hconcat"][1], spec))
    want = h.melt(id_vars="step", value_vars=["precision@10", "recall@10"], var_name="metric")
    pd.testing.assert_frame_equal(ranking, want, check_dtype=False)
    fig = viz.training_curves_figure(h)
    assert [ax.get_title() for ax in fig.axes] == ["softmax loss", "ranking"]
    assert [ln.get_label().split(" ")[0] for ln in fig.axes[0].get_lines()] == [
        "train_loss",
        "test_loss",
    ]


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (history_frame().drop(columns="step"), "history has no 'step' column"),
        (
            history_frame().drop(columns="train_mse"),
            r"history has \['test_mse'\] but no 'train_mse' column",
        ),
        (
            history_frame()[["step", "total_loss"]],
            "history has no metric column to plot .* expected 'train_mse'",
        ),
        (
            history_frame().drop(columns="gravity_loss"),
            r"lacks \['gravity_loss'\]: a regularized model's history has all of",
        ),
        (history_frame().iloc[:0], "history is empty"),
        (history_frame().assign(test_mse="x"), "history column 'test_mse' is not numeric"),
    ],
)
def test_training_curves_bad_history(frame, message) -> None:
    with pytest.raises(ValueError, match=message):
        viz.training_curves_chart(frame)
    with pytest.raises(ValueError, match=message):
        viz.training_curves_figure(frame)


# ---------------------------------------------------------------------------- embedding norms


def test_embedding_norms_accept_arrays_dicts_and_models(ml100k) -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(1682, 5)).astype(np.float32)
    b = rng.normal(size=(1682, 3))
    counts = np.bincount(ml100k.ratings.items, minlength=1682)
    frame = viz.embedding_norms({"mf": {"user": None, "item": a}, "reg": FittedStub(b)}, ml100k)
    assert list(frame.columns) == ["item", "title", "genre", "num_ratings", "mf", "reg"]
    np.testing.assert_array_equal(frame["num_ratings"], counts)
    np.testing.assert_allclose(frame["mf"], np.sqrt((a.astype(np.float64) ** 2).sum(axis=1)))
    np.testing.assert_allclose(frame["reg"], np.sqrt((b**2).sum(axis=1)))
    assert (frame["title"] == ml100k.items["title"]).all()

    single = viz.embedding_norms(a, ml100k.ratings)
    assert list(single.columns)[-1] == "model"
    listed = viz.embedding_norms([a, {"item": b}], ml100k.ratings)
    assert list(listed.columns)[-2:] == ["model 1", "model 2"]
    np.testing.assert_allclose(listed["model 2"], frame["reg"])


def test_embedding_norms_from_a_fitted_model(backend) -> None:
    ratings = cfcore.Ratings([0, 1, 2, 2], [0, 1, 3, 0], [5.0, 3.0, 4.0, 1.0], 3, 4)
    model = cfcore.MatrixFactorization(embedding_dim=2, init_stddev=0.5)
    model.fit(
        ratings,
        steps=2,
        optimizer=cfcore.optimizers.SGD(0.1),
        backend=backend,
        eval_every=1,
        progress=False,
    )
    frame = viz.embedding_norms({"m": model}, ratings)
    np.testing.assert_allclose(
        frame["m"], np.linalg.norm(model.embeddings["item"], axis=1), rtol=1e-6
    )
    np.testing.assert_array_equal(frame["num_ratings"], [2, 1, 0, 1])
    assert frame["title"].tolist() == ["item 0", "item 1", "item 2", "item 3"]


def test_embedding_norms_bad_inputs(ml100k) -> None:
    good = np.ones((1682, 4))
    with pytest.raises(ValueError, match="'b' have 1000 rows but the catalog has 1682 items"):
        viz.embedding_norms({"a": good, "b": np.ones((1000, 4))}, ml100k.ratings)
    with pytest.raises(ValueError, match=r"have shape \(1682,\); expected \[M, d\]"):
        viz.embedding_norms(np.ones(1682), ml100k.ratings)
    with pytest.raises(ValueError, match=r"no 'item' array \(keys: \['user'\]\)"):
        viz.embedding_norms({"x": {"user": good}}, ml100k.ratings)
    bad = good.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN, infinite or non-numeric"):
        viz.embedding_norms(bad, ml100k.ratings)
    with pytest.raises(ValueError, match="clashes with a column name"):
        viz.embedding_norms({"title": good}, ml100k.ratings)
    with pytest.raises(TypeError, match="expected an item array"):
        viz.embedding_norms({"m": "not embeddings"}, ml100k.ratings)


def test_embedding_norm_chart_links_panels(ml100k) -> None:
    rng = np.random.default_rng(1)
    models = {"MF init 0.5": rng.normal(size=(1682, 4)), "reg.": rng.normal(size=(1682, 6))}
    chart = viz.embedding_norm_chart(models, ml100k.ratings)
    spec, data = records(chart)
    for i, V in enumerate(models.values()):
        np.testing.assert_allclose(data[f"norm_{i}"], np.linalg.norm(V, axis=1))
    np.testing.assert_array_equal(data["num_ratings"], np.bincount(ml100k.ratings.items))
    assert len(spec["hconcat"]) == 2
    views = []
    for i, (panel, label) in enumerate(zip(spec["hconcat"], models, strict=True)):
        points, text = panel["layer"]
        assert points["encoding"]["y"]["field"] == f"norm_{i}"
        assert label in points["encoding"]["y"]["title"]
        assert points["encoding"]["x"]["field"] == "num_ratings"
        assert points["encoding"]["x"]["scale"] == {"type": "log"}  # every 100K movie is rated
        assert condition(points["encoding"]["color"])["param"] == "brush"
        assert condition(text["encoding"]["text"])["param"] == f"hover_{i}"
        views.append(points["name"])
    (brush,) = [p for p in spec["params"] if p["name"] == "brush"]
    assert brush["views"] == views  # one brush, drawn in either panel, highlighting both


def test_embedding_norm_figure(ml100k, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    V = rng.normal(size=(1682, 4))
    fig = viz.embedding_norm_figure({"a": V, "b": 2 * V}, ml100k.ratings, annotate=2)
    assert len(fig.axes) == 2
    counts = np.bincount(ml100k.ratings.items)
    for ax, scale in zip(fig.axes, (1, 2), strict=True):
        points = ax.collections[0].get_offsets()
        np.testing.assert_array_equal(points[:, 0], counts)
        np.testing.assert_allclose(points[:, 1], scale * np.linalg.norm(V, axis=1))
        top = np.argsort(-np.linalg.norm(V, axis=1))[:2]
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert len(legend) == 2
        for text, j in zip(legend, top, strict=True):
            assert text.startswith(ml100k.items["title"].iloc[j][:20])
            assert text.endswith(f" ({counts[j]})")
    check_png(viz.save_figure(fig, tmp_path / "norms.png"), fig)


# ---------------------------------------------------------------------------- t-SNE


def clusters(n: int = 60, d: int = 6, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`k` groups told apart by direction only: norms spread log-uniformly over 0.05 to 20."""
    rng = np.random.default_rng(seed)
    dirs = np.linalg.qr(rng.normal(size=(d, k)))[0].T
    group = np.arange(n) % k
    noise = 0.05 * rng.normal(size=(n, d))
    scale = np.exp(rng.uniform(np.log(0.05), np.log(20.0), size=(n, 1)))
    return (dirs[group] + noise) * scale, group


def test_tsne_shape_seed_and_cosine() -> None:
    X, group = clusters()
    a = viz.tsne(X, perplexity=5, seed=3, max_iter=250)
    b = viz.tsne(X, perplexity=5, seed=3, max_iter=250)
    assert a.shape == (60, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    # Cosine metric: each point's nearest neighbour on the map shares its direction group. (With
    # the Euclidean metric the spread of norms mixes the groups: about 78% on this data.)
    dist = np.linalg.norm(a[:, None] - a[None], axis=-1) + np.eye(60) * 1e9
    assert (group[dist.argmin(axis=1)] == group).mean() >= 0.95
    assert viz.tsne({"item": X}, perplexity=5, seed=3, max_iter=250).shape == (60, 2)


def test_tsne_bad_inputs() -> None:
    X, _ = clusters(n=20)
    with pytest.raises(
        ValueError, match=r"perplexity 20 must be positive and below the number of items \(20\)"
    ):
        viz.tsne(X, perplexity=20)
    with pytest.raises(ValueError, match="max_iter 100 is below scikit-learn's minimum of 250"):
        viz.tsne(X, perplexity=5, max_iter=100)
    Z = X.copy()
    Z[4] = 0
    with pytest.raises(ValueError, match=r"1 item embedding\(s\) are all zero \(first: item 4\)"):
        viz.tsne(Z, perplexity=5)


def genre_labels_by_hand(items: pd.DataFrame, genres: list[str]) -> list[str]:
    out = []
    for _, row in items.iterrows():
        out.append(next((g for g in genres if row[g] == 1), "other genres"))
    return out


def test_tsne_chart_and_figure(ml100k, tmp_path: Path) -> None:
    xy = np.random.default_rng(4).normal(size=(1682, 2)).astype(np.float32)
    spec, data = records(viz.tsne_chart(xy, ml100k.ratings, title="map"))
    np.testing.assert_allclose(data[["x", "y"]].to_numpy(), xy, rtol=1e-6)
    assert (data["genre"] == ml100k.items["genre"]).all()
    assert (data["title"] == ml100k.items["title"]).all()
    points = spec["hconcat"][0]["layer"][0]
    assert condition(points["encoding"]["color"])["field"] == "genre"
    assert spec["hconcat"][1]["encoding"]["y"]["field"] == "genre"

    chosen = ["Horror", "Animation", "Children's"]
    _, data = records(viz.tsne_chart(xy, ml100k.ratings, genres=chosen))
    expected = genre_labels_by_hand(ml100k.items, chosen)
    assert data["genre"].tolist() == expected

    fig = viz.tsne_figure(xy, ml100k.ratings, genres=chosen, title="map")
    (ax,) = fig.axes
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    counts = pd.Series(expected).value_counts()
    assert legend == [f"{g} ({counts[g]})" for g in [*chosen, "other genres"]]
    drawn = np.concatenate([c.get_offsets() for c in ax.collections])
    assert len(drawn) == 1682
    check_png(viz.save_figure(fig, tmp_path / "tsne.png"), fig)


def test_tsne_chart_bad_inputs(ml100k) -> None:
    xy = np.zeros((1682, 2))
    with pytest.raises(
        ValueError, match=r"unknown genre\(s\) \['Horor'\]; valid genres are: unknown, Action"
    ):
        viz.tsne_figure(xy, ml100k.ratings, genres=["Horror", "Horor"])
    with pytest.raises(ValueError, match=r"coordinates have shape \(1682, 3\); expected \[M, 2\]"):
        viz.tsne_chart(np.zeros((1682, 3)), ml100k.ratings)
    with pytest.raises(ValueError, match="have 100 rows but the catalog has 1682 items"):
        viz.tsne_figure(np.zeros((100, 2)), ml100k.ratings)
    bare = cfcore.Ratings([0], [0], [1.0], 1, 3)
    with pytest.raises(ValueError, match="no catalog"):
        viz.tsne_figure(np.zeros((3, 2)), bare)


# ---------------------------------------------------------------------------- saving and imports


def test_save_chart_html_and_json(ml100k, tmp_path: Path) -> None:
    chart = viz.embedding_norm_chart(np.ones((1682, 2)) * np.arange(1682)[:, None], ml100k.ratings)
    html = viz.save_chart(chart, tmp_path / "sub" / "norms.html").read_text()
    assert "vegaEmbed" in html and "vega-lite" in html
    spec = chart.to_dict()
    assert json.dumps(spec["params"][0]) in html  # the whole spec is in the page
    assert "Star Wars (1977)" in html  # with its data
    saved = json.loads(viz.save_chart(chart, tmp_path / "norms.json").read_text())
    assert saved["hconcat"] == spec["hconcat"] and saved["datasets"] == spec["datasets"]
    assert not list(tmp_path.rglob(".*.tmp"))
    with pytest.raises(
        ValueError, match=r"cannot save a chart as 'norms.png': expected a .html or .json"
    ):
        viz.save_chart(chart, tmp_path / "norms.png")
    fig = viz.training_curves_figure(history_frame())
    with pytest.raises(
        ValueError, match=r"cannot save a figure as 'c.html': expected a .png, .svg or .pdf"
    ):
        viz.save_figure(fig, tmp_path / "c.html")
    assert viz.save_figure(fig, tmp_path / "c.svg").read_text().lstrip().startswith("<?xml")


def test_pages_are_self_contained_and_give_their_charts_back(tmp_path: Path) -> None:
    curves = viz.training_curves_chart(history_frame())
    norms = viz.embedding_norm_chart(
        np.eye(6, 2) + 1.0,
        cfcore.Ratings(np.array([0, 1]), np.array([0, 5]), np.array([4.0, 5.0]), 2, 6),
    )
    page = viz.save_report(
        [("curves", curves), ("norms </script> & more", norms)],
        tmp_path / "r" / "report.html",
        title="a <run>",
    )
    html = page.read_text()
    assert html.count("vegaEmbed") >= 1 and "cdn.jsdelivr.net" not in html
    assert "<title>a &lt;run&gt;</title>" in html
    # The specs come back whole, in order, under their headings (escaping survives the trip).
    back = viz.read_page(page)
    assert [h for h, _ in back] == ["curves", "norms </script> & more"]
    assert back[0][1] == curves.to_dict() and back[1][1] == norms.to_dict()
    # One bundle however many charts: a second chart adds its data, not another ~900 KB.
    one = viz.save_chart(curves, tmp_path / "one.html")
    assert page.stat().st_size < one.stat().st_size + 200_000
    assert viz.read_page(one)[0][1] == curves.to_dict()
    cdn = viz.save_chart(curves, tmp_path / "cdn.html", inline=False)
    assert "https://cdn.jsdelivr.net/npm/vega-embed@" in cdn.read_text()
    assert cdn.stat().st_size < 50_000 < 500_000 < one.stat().st_size
    with pytest.raises(ValueError, match=r"cannot save a report as 'r.png': expected a .html"):
        viz.save_report([("c", curves)], tmp_path / "r.png", title="t")
    with pytest.raises(ValueError, match="a page needs at least one chart, got none"):
        viz.save_report([], tmp_path / "e.html", title="t")
    (tmp_path / "other.html").write_text("<html></html>")
    with pytest.raises(ValueError, match="holds no chart written by cfcore"):
        viz.read_page(tmp_path / "other.html")


def test_one_colour_per_backend_everywhere() -> None:
    colors = viz.BACKEND_COLORS
    assert len(set(colors.values())) == len(colors)  # no two backends share a colour
    assert viz.backend_color("jax") == colors["jax"]
    assert viz.backend_color("cfcore tf A") == colors["tf"]
    assert viz.backend_color("TensorFlow") == colors["tf"]
    assert viz.backend_color("cfcore torch: chunked fit loop") == colors["torch"]
    assert viz.backend_color("notebook TF1 loop") == colors["notebook"]
    assert viz.backend_color("surprise SVD (fit)") == colors["surprise"]
    with pytest.raises(ValueError, match=r"label 'caffe' names no backend: expected one of"):
        viz.backend_color("caffe")


@pytest.mark.subprocess
def test_imports_stay_light_and_pyplot_free() -> None:
    code = (
        "import sys, cfcore, cfcore.viz, cfcore.exploration, cfcore.cli.viz\n"
        "heavy = [m for m in ('matplotlib', 'altair', 'sklearn', 'jax', 'tensorflow') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "import numpy as np\n"
        "fig = cfcore.viz.training_curves_figure(__import__('pandas').DataFrame("
        "{'step': [0, 1], 'train_mse': [2.0, 1.0]}))\n"
        "assert 'matplotlib' in sys.modules and 'matplotlib.pyplot' not in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
