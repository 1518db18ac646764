"""The `explore` and `plot` commands, run in process on a bare Typer app with `register(app)`,
reading the shared MovieLens 100K copy (read-only) and writing into a temporary folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from cfcore.cli.viz import register

from ..conftest import DATA_DIR

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

app = typer.Typer(no_args_is_help=True)


@app.callback()
def _main() -> None:
    """Test app."""


register(app)
runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args), env={"COLUMNS": "200", "FORCE_COLOR": None})
    return result, " ".join(ANSI.sub("", result.output).split())


def assert_ok(result, text: str) -> None:
    assert result.exit_code == 0, (text, result.exception)


def assert_fails(result, text: str, *needles: str) -> None:
    assert result.exit_code == 1, text
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in text and "error:" in text
    for needle in needles:
        assert needle in text, f"{needle!r} not in {text!r}"


def assert_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_MAGIC
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200


def assert_html(path: Path, *needles: str, section: str) -> str:
    """Checks that the page holds the chart under heading `section` (its spec, data included)
    with every needle in it, and that the page needs no network; returns that chart's spec."""
    from cfcore import viz

    html = path.read_text()
    assert "vegaEmbed" in html and "cdn.jsdelivr.net" not in html  # the libraries are inline
    sections = dict(viz.read_page(path))
    assert section in sections, (section, list(sections))
    spec = json.dumps(sections[section])
    assert '"$schema": "https://vega.github.io/schema/vega-lite/' in spec
    for needle in needles:
        assert needle in spec, needle
    return spec


def history_csv(path: Path, regularized: bool = True) -> Path:
    step = np.arange(0, 110, 10)
    h = pd.DataFrame({"step": step, "train_mse": 5 / (1 + step), "test_mse": 6 / (1 + step) + 1})
    if regularized:
        h["observed_loss"] = h["train_mse"]
        h["regularization_loss"] = 0.5 + step / 1000
        h["gravity_loss"] = 1.0 + step / 500
        h["total_loss"] = h[["observed_loss", "regularization_loss", "gravity_loss"]].sum(axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    h.to_csv(path, index=False)
    return path


def embeddings_npz(path: Path, items: int = 1682, d: int = 4, seed: int = 0, **extra) -> Path:
    rng = np.random.default_rng(seed)
    arrays = {"user": rng.normal(size=(943, d)), "item": rng.normal(size=(items, d))} | extra
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


# ---------------------------------------------------------------------------- explore


def test_explore_writes_charts_and_tables(ml100k, tmp_path: Path) -> None:
    out = tmp_path / "explore"
    result, text = invoke(
        "explore",
        "--data-dir",
        str(DATA_DIR),
        "--out",
        str(out),
        "--top",
        "5",
        "--min-ratings",
        "50",
    )
    assert_ok(result, text)
    for name in ("users", "movies"):
        assert_png(out / f"{name}.png")
    report = out / "report.html"
    assert_html(report, '"occupation"', "log10_count", section="ratings per user, by occupation")
    assert_html(report, "Star Wars (1977)", section="ratings per movie, by genre")
    assert not list(out.glob(".*.tmp"))

    df = ml100k.ratings_frame().astype({"rating": np.float64})
    per = df.groupby(["item_id", "title"])["rating"].agg(["count", "mean"]).reset_index()
    most = pd.read_csv(out / "most_rated.csv")
    expected = per.sort_values(["count", "item_id"], ascending=[False, True]).head(5)
    assert most["rank"].tolist() == [1, 2, 3, 4, 5]
    assert most["title"].tolist() == expected["title"].tolist()
    assert most["rating_count"].tolist() == expected["count"].tolist()
    top = pd.read_csv(out / "top_rated.csv")
    kept = per[per["count"] >= 50].sort_values(
        ["mean", "count", "item_id"], ascending=[False, False, True]
    )
    assert top["title"].tolist() == kept["title"].head(5).tolist()
    np.testing.assert_allclose(top["rating_mean"], kept["mean"].head(5), rtol=1e-12)

    occ = pd.read_csv(out / "by_occupation.csv", index_col="occupation")
    by = df.groupby("occupation")["rating"].agg(["count", "mean"])
    np.testing.assert_array_equal(occ["ratings"], by.loc[occ.index, "count"])
    np.testing.assert_allclose(occ["mean_rating"], by.loc[occ.index, "mean"], rtol=1e-12)
    genres = pd.read_csv(out / "by_genre.csv", index_col="genre")
    assert genres.loc["Horror", "mean_rating"] == pytest.approx(
        df.loc[df["Horror"] == 1, "rating"].mean(), rel=1e-12
    )

    md = (out / "tables.md").read_text()
    assert "943 users, 1682 movies, 100000 ratings" in md
    assert "## 5 top-rated movies (at least 50 ratings)" in md
    assert f"| 1 | {expected['item_id'].iloc[0] - 1} | {expected['item_id'].iloc[0]} | " in md
    assert "5 most-rated movies" in text and expected["title"].iloc[0] in text
    # 2 PNG, the 2 charts in report.html, 4 CSV, tables.md
    assert f"wrote 8 files into {out}" in text and report.resolve().as_uri() in text


def test_explore_png_only(ml100k, tmp_path: Path) -> None:
    result, text = invoke(
        "explore", "--data-dir", str(DATA_DIR), "--out", str(tmp_path), "--no-html"
    )
    assert_ok(result, text)
    assert sorted(p.name for p in tmp_path.glob("*.html")) == []
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["movies.png", "users.png"]


def test_explore_errors(tmp_path: Path) -> None:
    result, text = invoke("explore", "--data-dir", str(DATA_DIR), "--top", "0")
    assert_fails(result, text, "--top must be at least 1, got 0")
    result, text = invoke(
        "explore", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path)
    )
    assert_fails(result, text, "nowhere does not exist")
    assert not list(tmp_path.glob("*.png"))


# ---------------------------------------------------------------------------- plot


def test_plot_curves_and_norms(ml100k, tmp_path: Path) -> None:
    reg = history_csv(tmp_path / "reg" / "history.csv")
    mf = history_csv(tmp_path / "mf" / "history.csv", regularized=False)
    a = embeddings_npz(tmp_path / "mf" / "embeddings.npz", seed=1)
    b = embeddings_npz(tmp_path / "reg" / "embeddings.npz", seed=2, d=6)
    out = tmp_path / "plots"
    result, text = invoke(
        "plot",
        *("--history", str(mf), "--history", str(reg)),
        *("--embeddings", str(a), "--embeddings", str(b)),
        *("--data-dir", str(DATA_DIR), "--out", str(out), "--no-tsne"),
    )
    assert_ok(result, text)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [*(f"{n}.png" for n in ("curves_mf", "curves_reg", "norms")), "report.html"]
    )
    for n in ("curves_mf", "curves_reg", "norms"):
        assert_png(out / f"{n}.png")
    report = out / "report.html"
    assert_html(report, "gravity_loss", "regularization_loss", section="training curves: reg")
    assert "gravity_loss" not in assert_html(report, "train_mse", section="training curves: mf")
    html = assert_html(
        report,
        *("norm_0", "norm_1", "embedding norm (mf)", "embedding norm (reg)"),
        section="embedding norm against number of ratings",
    )
    # The norms drawn are those of the files' item embeddings (checked on the first movie).
    with np.load(a) as f:
        first = float(np.linalg.norm(f["item"][0]))
    assert f'"norm_0": {json.dumps(first)}' in html, first
    assert "wrote 4 files" in text


@pytest.mark.slow  # t-SNE of 1,682 movies: about 10 s alone, 20 s on a busy machine
def test_plot_tsne_with_genres(ml100k, tmp_path: Path) -> None:
    emb = embeddings_npz(tmp_path / "run" / "embeddings.npz", d=3)
    result, text = invoke(
        "plot",
        *("--embeddings", str(emb), "--label", "my model"),
        *("--data-dir", str(DATA_DIR), "--out", str(tmp_path / "p")),
        *("--perplexity", "5", "--tsne-iter", "250", "--genre", "Horror", "--genre", "Animation"),
        "--no-progress",
    )
    assert_ok(result, text)
    assert_png(tmp_path / "p" / "tsne_my_model.png")
    html = assert_html(
        tmp_path / "p" / "report.html",
        "t-SNE of the item embeddings: my model",
        section="t-SNE of the item embeddings: my model",
    )
    assert '"genre": "Horror"' in html and '"genre": "other genres"' in html
    assert '"genre": "Drama"' not in html  # only the chosen genres are named


def test_plot_errors(ml100k, tmp_path: Path) -> None:
    good = embeddings_npz(tmp_path / "good" / "embeddings.npz")
    short = embeddings_npz(tmp_path / "short" / "embeddings.npz", items=1000)
    no_item = tmp_path / "no_item.npz"
    with open(no_item, "wb") as f:
        np.savez(f, user=np.ones((943, 2)))
    bad_hist = tmp_path / "bad.csv"
    pd.DataFrame({"step": [0, 10], "loss": [1.0, 0.5]}).to_csv(bad_hist, index=False)
    data = ("--data-dir", str(DATA_DIR), "--out", str(tmp_path / "out"))
    cases = [
        ((), ["nothing to plot: pass --history and/or --embeddings files"]),
        (("--history", str(bad_hist)), ["history has no metric column to plot", "'loss'"]),
        (("--history", str(tmp_path / "missing.csv")), ["history file", "does not exist"]),
        (("--embeddings", str(short)), ["'short' have 1000 rows but the catalog has 1682 items"]),
        (("--embeddings", str(no_item)), ["holds no 'item' array (it has ['user'])"]),
        (("--embeddings", str(good), "--genre", "Horor"), ["unknown genre(s) ['Horor']"]),
        (("--embeddings", str(good), "--label", "a", "--label", "b"), ["2 --label value(s) for 1"]),
        (("--history", str(bad_hist), "--no-png", "--no-html"), ["leave nothing to write"]),
    ]
    for args, needles in cases:
        result, text = invoke("plot", *args, *data)
        assert_fails(result, text, *needles)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_every_option_has_help() -> None:
    command = typer.main.get_command(app)
    for name in ("explore", "plot"):
        cmd = command.commands[name]
        assert cmd.help and len(cmd.help) > 40
        for param in cmd.params:
            if param.name == "help":
                continue
            assert getattr(param, "help", None), f"{name} --{param.name} has no help text"
        result, text = invoke(name, "--help")
        assert result.exit_code == 0
        for param in cmd.params:
            assert param.opts[0] in text
    result, text = invoke("plot", "--help")
    for flag in ("--perplexity", "--genre", "--tsne", "--no-tsne", "--label", "--no-progress"):
        assert flag in text
