"""The `cfcore explore` and `cfcore plot` commands: pictures of a dataset and of training runs.

`register(app)` adds both commands to a Typer app (the `cfcore` command line does it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..data.bounded import read_csv as bounded_csv
from ..errors import ArgumentValueError, CfcoreError, MissingFileError
from ..validate import check_float, check_int
from ._common import DataDirOpt, DatasetOpt, console, fail, load_dataset
from ._signals import kept, output, stage

_ERRORS = (CfcoreError, ValueError, OSError, TypeError, KeyError, MemoryError)


def register(app: typer.Typer) -> None:
    """Adds the `explore` and `plot` commands to `app`."""
    app.command(name="explore")(explore)
    app.command(name="plot")(plot)


# ---------------------------------------------------------------------------- shared options

PngOpt = Annotated[bool, typer.Option(help="Write static PNG pictures (matplotlib).")]
HtmlOpt = Annotated[
    bool,
    typer.Option(help="Write the interactive charts (Altair) into one offline page, report.html."),
]


class _Writer:
    """Writes the pictures and tables of one command into `out`, and lists them at the end.

    The interactive charts all go into one self-contained page, `report.html` (written by
    `finish`): the Vega libraries inside it cost about 900 KB, paid once rather than per chart.
    """

    def __init__(self, out: Path, png: bool, html: bool) -> None:
        self.out, self.png, self.html = out, png, html
        self.written: list[Path] = []
        self.sections: list[tuple[str, Any]] = []
        output(out)

    def _wrote(self, path: Path) -> None:
        self.written.append(path)
        names = ", ".join(p.name for p in self.written)
        kept(f"written in {self.out}: {names}")

    def chart(self, name: str, make_chart: Any, make_figure: Any, heading: str = "") -> None:
        """Adds a chart to the report (HTML) and writes `<name>.png` (PNG)."""
        from cfcore import viz

        if self.html:
            self.sections.append((heading or name, make_chart()))
        if self.png:
            fig = make_figure()
            self._wrote(viz.save_figure(fig, self.out / f"{name}.png"))

    def finish(self, title: str, intro: str = "") -> Path | None:
        """Writes `report.html` with every chart added (nothing when there is none)."""
        from cfcore import viz

        if not self.sections:
            return None
        stage("while writing report.html")
        path = viz.save_report(self.sections, self.out / "report.html", title=title, intro=intro)
        self._wrote(path)
        return path

    def text(self, name: str, text: str) -> None:
        from cfcore.io.atomic import atomic_write

        atomic_write(self.out / name, lambda p: p.write_text(text, encoding="utf-8"))
        self._wrote(self.out / name)

    def csv(self, name: str, frame: Any) -> None:
        from cfcore.io.atomic import atomic_write

        index = frame.index.name is not None
        atomic_write(self.out / name, lambda p: frame.to_csv(p, index=index))
        self._wrote(self.out / name)

    def report(self) -> None:
        console.print(f"wrote {len(self.written)} files into {self.out}:", highlight=False)
        for p in self.written:
            console.print(f"  {p.name}", highlight=False)
        page = self.out / "report.html"
        if page in self.written:
            console.print(
                f"open {page.resolve().as_uri()} in a browser for the interactive charts "
                "(the page works offline)",
                highlight=False,
                soft_wrap=True,
            )


def _check_out(out: Path, png: bool, html: bool) -> None:
    """Refuses, before any work, an --out where the command's files cannot be written.

    Raises:
        ValueError: --no-png and --no-html together.
        FileAccessError: `out` is a file, lies under a file, or is (or would be created in) a
            folder this process may not write into.
    """
    from cfcore.io.atomic import check_output_path

    if not png and not html:
        raise ArgumentValueError("--no-png and --no-html together leave nothing to write")
    check_output_path(out / "report.html")


def _rich_table(frame: Any, title: str, floatfmt: str = ".3f") -> Table:
    df = frame.reset_index() if frame.index.name is not None else frame
    table = Table(title=title)
    for c in df.columns:
        table.add_column(str(c), justify="right" if df[c].dtype.kind in "iuf" else "left")
    for row in df.itertuples(index=False):
        table.add_row(*(format(v, floatfmt) if isinstance(v, float) else str(v) for v in row))
    return table


# ---------------------------------------------------------------------------- explore


def explore(
    dataset: DatasetOpt = "100k",
    data_dir: DataDirOpt = None,
    out: Annotated[
        Path, typer.Option(help="Folder for the charts (HTML, PNG) and the tables (CSV, markdown).")
    ] = Path("reports/explore"),
    top: Annotated[int, typer.Option(help="Rows of the most-rated and top-rated tables.")] = 10,
    min_ratings: Annotated[
        int, typer.Option(help="Ratings a movie needs to enter the top-rated table.")
    ] = 20,
    png: PngOpt = True,
    html: HtmlOpt = True,
) -> None:
    """Explore a dataset: ratings per user and per movie, mean ratings by occupation and genre.

    Writes users.png and movies.png (histograms sliced by occupation and genre), both charts
    interactive in report.html (one page that works offline), most_rated.csv, top_rated.csv, by_occupation.csv, by_genre.csv and all the tables in
    tables.md.
    """
    from cfcore import viz
    from cfcore.data import exploration as ex

    try:
        if top < 1 or min_ratings < 1:
            bad = ("--top", top) if top < 1 else ("--min-ratings", min_ratings)
            raise ArgumentValueError(f"{bad[0]} must be at least 1, got {bad[1]}")
        _check_out(out, png, html)
        stage("while loading the data")
        ds = load_dataset(dataset, data_dir)
        r = ds.ratings
        w = _Writer(out, png, html)
        stage("while drawing the charts")
        with console.status("drawing the user and movie charts ..."):
            w.chart(
                "users",
                lambda: viz.user_exploration_chart(r, ds.users),
                lambda: viz.user_exploration_figure(r, ds.users),
                "ratings per user, by occupation",
            )
            w.chart(
                "movies",
                lambda: viz.item_exploration_chart(r, ds.items),
                lambda: viz.item_exploration_figure(r, ds.items),
                "ratings per movie, by genre",
            )
        size = ex.summary(r)
        most = ex.most_rated(r, top, items=ds.items)
        best = ex.top_rated(r, top, min_count=min_ratings, items=ds.items)
        tables = [
            (f"{top} most-rated movies", "most_rated.csv", most),
            (f"{top} top-rated movies (at least {min_ratings} ratings)", "top_rated.csv", best),
        ]
        if "occupation" in ds.users:
            tables.append(
                ("ratings by occupation", "by_occupation.csv", ex.slice_by_occupation(r, ds.users))
            )
        genres = ex.slice_by_genre(r, ds.items)
        tables.append(
            ("ratings by genre (a movie counts in each of its genres)", "by_genre.csv", genres)
        )
        md = [
            f"# MovieLens {ds.name}\n",
            f"{size['users']} users, {size['items']} movies, {size['ratings']} ratings "
            f"(density {size['density']:.4f}, mean rating {size['mean_rating']:.3f}).\n",
        ]
        for title, name, frame in tables:
            w.csv(name, frame)
            md += [f"\n## {title}\n\n", ex.to_markdown(frame)]
        w.text("tables.md", "".join(md))
        w.finish(f"MovieLens {ds.name}: users and movies", md[1].strip())
    except _ERRORS as err:
        raise fail(err) from err
    console.print(md[1].strip(), highlight=False)
    for title, _, frame in tables[:2]:
        shown = [c for c in ("title", "all_genres", "genre") if c in frame]
        console.print(_rich_table(frame[shown[:2] + ["rating_count", "rating_mean"]], title))
    w.report()


# ---------------------------------------------------------------------------- plot


def _labels(paths: list[Path], given: list[str] | None) -> list[str]:
    """One label per file: given ones, else the name of the run folder holding it, made unique."""
    if given:
        if len(given) != len(paths):
            raise ArgumentValueError(
                f"{len(given)} --label value(s) for {len(paths)} --embeddings file(s); give one "
                "label per file or none"
            )
        labels = list(given)
    else:
        labels = [p.parent.name or p.stem for p in paths]
    if len(set(labels)) != len(labels):
        seen: dict[str, int] = {}
        unique = []
        for lab in labels:
            seen[lab] = seen.get(lab, 0) + 1
            unique.append(lab if labels.count(lab) == 1 else f"{lab} ({seen[lab]})")
        labels = unique
    return labels


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "model"


def _read_embeddings(path: Path) -> dict[str, Any]:
    from cfcore.io.npz import NpzFileError, load_arrays

    if not path.is_file():
        raise MissingFileError(f"embeddings file {path} does not exist")
    # Checked reading: a truncated or crafted file is a clear error, not a BadZipFile traceback.
    arrays = load_arrays(path, NpzFileError)
    if "item" not in arrays:
        raise ArgumentValueError(
            f"{path} holds no 'item' array (it has {sorted(arrays)}); expected the "
            "embeddings.npz written by `cfcore train`"
        )
    return arrays


def _read_history(path: Path) -> Any:
    import pandas as pd

    if not path.is_file():
        raise MissingFileError(f"history file {path} does not exist")
    try:
        return bounded_csv(path, ArgumentValueError)
    except (ValueError, pd.errors.ParserError) as err:
        raise ArgumentValueError(f"{path} is not a history CSV ({err})") from err


def plot(
    history: Annotated[
        list[Path] | None,
        typer.Option(help="history.csv of a run (repeatable): training curves per metric group."),
    ] = None,
    embeddings: Annotated[
        list[Path] | None,
        typer.Option(
            help="embeddings.npz of a run (repeatable): norms side by side, one t-SNE map each."
        ),
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option(help="Name of each --embeddings file, in order (default: its folder name)."),
    ] = None,
    dataset: DatasetOpt = "100k",
    data_dir: DataDirOpt = None,
    out: Annotated[Path, typer.Option(help="Folder for the pictures.")] = Path("reports/plots"),
    tsne: Annotated[bool, typer.Option(help="Draw t-SNE maps of the item embeddings.")] = True,
    perplexity: Annotated[
        float, typer.Option(help="t-SNE perplexity (effective number of neighbours).")
    ] = 40.0,
    tsne_iter: Annotated[int, typer.Option(help="t-SNE iterations (at least 250).")] = 400,
    seed: Annotated[
        int, typer.Option(help="Seed of t-SNE (random_state), for repeatable maps.")
    ] = 0,
    genre: Annotated[
        list[str] | None,
        typer.Option(
            help="Colour only these genres in the t-SNE maps (repeatable; default: all genres)."
        ),
    ] = None,
    png: PngOpt = True,
    html: HtmlOpt = True,
    progress: Annotated[bool, typer.Option(help="Show progress while t-SNE runs.")] = True,
) -> None:
    """Plot training runs: curves from history.csv, embedding norms and t-SNE maps from embeddings.npz.

    Writes curves_<run>.png for each --history, norms.png with one panel per --embeddings file
    (norm of each movie's embedding against its number of ratings in the dataset), and
    tsne_<run>.png for each --embeddings file; every chart, interactive, in report.html (one page
    that works offline).
    """
    from cfcore import viz

    history = history or []
    embeddings = embeddings or []
    try:
        if not history and not embeddings:
            raise ArgumentValueError("nothing to plot: pass --history and/or --embeddings files")
        if embeddings and tsne:
            check_float("--perplexity", perplexity, exclusive_minimum=0)
            check_int("--tsne-iter", tsne_iter, minimum=250)
            check_int("--seed", seed, minimum=0)
        _check_out(out, png, html)
        w = _Writer(out, png, html)
        stage("while drawing the charts")
        hist_labels = _labels(history, None)
        frames = [_read_history(p) for p in history]
        for lab, frame in zip(hist_labels, frames, strict=True):
            w.chart(
                f"curves_{_slug(lab)}",
                lambda f=frame: viz.training_curves_chart(f),
                lambda f=frame: viz.training_curves_figure(f),
                f"training curves: {lab}",
            )
        if embeddings:
            labels = _labels(embeddings, label)
            models = {lab: _read_embeddings(p) for lab, p in zip(labels, embeddings, strict=True)}
            stage("while loading the data")
            ds = load_dataset(dataset, data_dir)
            # Checks every file against the catalog before the slow t-SNE starts.
            viz.embedding_norms(models, ds.ratings)
            if tsne and genre:
                from cfcore.data.exploration import check_genres, genre_names

                check_genres(genre, genre_names(ds.items) or sorted(set(ds.items["genre"])))
            w.chart(
                "norms",
                lambda: viz.embedding_norm_chart(models, ds.ratings),
                lambda: viz.embedding_norm_figure(models, ds.ratings),
                "embedding norm against number of ratings",
            )
            if tsne:
                _tsne_all(w, models, ds, perplexity, tsne_iter, seed, genre, progress)
        runs = [
            str(r)
            for r in dict.fromkeys(
                [*hist_labels, *(_labels(embeddings, label) if embeddings else [])]
            )
        ]
        w.finish("cfcore plot: " + ", ".join(runs))
    except _ERRORS as err:
        raise fail(err) from err
    w.report()


def _tsne_all(
    w: _Writer,
    models: dict[str, Any],
    ds: Any,
    perplexity: float,
    max_iter: int,
    seed: int,
    genres: list[str] | None,
    progress: bool,
) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from cfcore import viz

    columns = (
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, disable=not progress) as bar:
        task = bar.add_task("t-SNE", total=len(models))
        for lab, emb in models.items():
            n = len(emb["item"])
            # scikit-learn reports no progress of its own: the spinner and clock show it is alive.
            bar.update(task, description=f"t-SNE of {lab} ({n} items)")
            stage(f"during the t-SNE of {lab}")
            xy = viz.tsne(emb, perplexity=perplexity, seed=seed, max_iter=max_iter)
            title = f"t-SNE of the item embeddings: {lab}"
            w.chart(
                f"tsne_{_slug(lab)}",
                lambda xy=xy, title=title: viz.tsne_chart(
                    xy, ds.ratings, genres=genres, title=title
                ),
                lambda xy=xy, title=title: viz.tsne_figure(
                    xy, ds.ratings, genres=genres, title=title
                ),
                title,
            )
            bar.advance(task)
