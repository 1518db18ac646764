"""The `recommend`, `neighbors` and `rate` commands, added to a Typer app by `register(app)`.

They read a model saved with `model.save(path)` (a file, or a folder holding `model.npz`): a
matrix-factorization model or a softmax model (whose user queries are computed from the movies
each user rated).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from rich.table import Table

from ..errors import ArgumentValueError, MissingFileError
from ..validate import check_float, check_int
from ._common import OptimizerKind, console, fail
from ._signals import kept, output, stage
from .train import _defaults_help

MODEL_FILE = "model.npz"

# Option texts shared by the commands.
_MODEL_HELP = f"Saved model: a file, or a folder holding {MODEL_FILE} (as written by model.save)."
_MEASURE_HELP = "Similarity: dot, cosine, or norm:ALPHA for <u,v>/|v|^ALPHA (e.g. norm:0.5)."
_BACKEND_HELP = (
    "jax, tf or numpy (default: NumPy for small catalogues, else $CFCORE_BACKEND or jax)."
)
_ERRORS = (ValueError, OSError, FloatingPointError, TypeError, KeyError)


def _is_softmax(model: Any) -> bool:
    # A model that computes its users' queries from their rated movies (SoftmaxModel).
    return callable(getattr(model, "query_embeddings", None))


def model_path(path: Path) -> Path:
    """`path` itself, or `path/model.npz` for a folder."""
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise MissingFileError(
            f"no model at {path}: save one with model.save(path) (or train one into that folder) "
            "and pass it with --model"
        )
    return path


def _load_model(path: Path) -> Any:
    from ..persistence import load

    stage("while loading the model")
    return load(model_path(path))


def _print_items(frame: pd.DataFrame, title: str) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column(f"{frame.attrs.get('measure', '')} score", justify="right")
    table.add_column("item id", justify="right")
    for col in ("title", "genres"):
        if col in frame.columns:
            table.add_column(col)
    for rank, row in enumerate(frame.itertuples(index=False), start=1):
        cells = [str(rank), f"{row.score:.4f}", str(row.item_id)]
        for col in ("title", "genres"):
            if col in frame.columns:
                cells.append(str(getattr(row, col)))
        table.add_row(*cells)
    console.print(table)


# ---------------------------------------------------------------------------- recommend


def recommend(
    user: Annotated[
        str | None, typer.Option(help="The user's original id (e.g. 42 in MovieLens).")
    ] = None,
    user_index: Annotated[
        int | None, typer.Option(help="The user's 0-based row instead of --user.")
    ] = None,
    all_users: Annotated[
        bool,
        typer.Option(
            "--all-users", help="Top-k for every user, batched on the backend; needs --out."
        ),
    ] = False,
    model: Annotated[Path, typer.Option(help=_MODEL_HELP)] = Path("runs/latest"),
    k: Annotated[int, typer.Option("--k", "-k", help="Number of items per user.")] = 10,
    measure: Annotated[str, typer.Option(help=_MEASURE_HELP)] = "dot",
    include_rated: Annotated[
        bool, typer.Option(help="Also show items the user rated in the training ratings.")
    ] = False,
    backend: Annotated[str | None, typer.Option(help=_BACKEND_HELP)] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Write the recommendations as CSV (user_id, rank, item_id, score)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar for --all-users.")] = True,
) -> None:
    """Recommend items to a user (or to every user) of a saved model."""
    from .. import retrieval
    from ..io.atomic import atomic_write

    try:
        chosen = sum(
            x is not None and x is not False for x in (user, user_index, all_users or None)
        )
        if chosen != 1:
            raise ArgumentValueError("give exactly one of --user, --user-index and --all-users")
        if all_users and out is None:
            raise ArgumentValueError("--all-users writes a CSV: give it with --out")
        _check_options(k=k, measure=measure, backend=backend, outputs=(out,))
        if user_index is not None:
            check_int("--user-index", user_index, minimum=0)
        m = _load_model(model)
        if all_users and out is not None:  # (out was checked above)
            output(out.parent)
            stage("while scoring")
            values, idx = retrieval.batch_recommend(
                m,
                k=k,
                measure=measure,
                exclude_rated=not include_rated,
                backend=backend,
                progress=progress,
            )
            frame = _batch_frame(m, values, idx)
            stage(f"while writing {out}")
            atomic_write(out, lambda p: frame.to_csv(p, index=False))
            kept(f"{out} is written")
            console.print(
                f"wrote {len(frame)} recommendations for {values.shape[0]} users to {out}"
            )
            return
        frame = retrieval.recommend(
            m,
            user,
            k=k,
            measure=measure,
            exclude_rated=not include_rated,
            user_index=user_index,
            backend=backend,
        )
    except _ERRORS as err:
        raise fail(err) from err
    u = frame.attrs["user_index"]
    uid = m.user_ids[u] if m.user_ids is not None else u
    _print_items(frame, f"Top {len(frame)} for user {uid}")
    if out is not None:
        frame = frame.assign(user_id=uid, rank=np.arange(1, len(frame) + 1))
        cols = ["user_id", "rank", "item_id", "score"] + [
            c for c in ("title", "genres") if c in frame
        ]
        output(out.parent)
        stage(f"while writing {out}")
        atomic_write(out, lambda p: frame[cols].to_csv(p, index=False))
        kept(f"{out} is written")
        console.print(f"wrote {out}")


def _batch_frame(m: Any, values: np.ndarray, idx: np.ndarray) -> pd.DataFrame:
    n, k = idx.shape
    user_ids = np.arange(n) if m.user_ids is None else np.asarray(m.user_ids)
    item_ids = (
        np.arange(m.embeddings_numpy()["item"].shape[0]) if m.item_ids is None else m.item_ids
    )
    frame = pd.DataFrame(
        {
            "user_id": np.repeat(user_ids, k),
            "rank": np.tile(np.arange(1, k + 1), n),
            "item_id": np.asarray(item_ids)[idx.ravel()],
            "score": values.ravel(),
        }
    )
    return frame[np.isfinite(frame["score"].to_numpy())]  # users with fewer than k unrated items


# ---------------------------------------------------------------------------- neighbors


def neighbors(
    title: Annotated[
        str | None, typer.Argument(help="Part of a title (case-insensitive), e.g. Aladdin.")
    ] = None,
    item_id: Annotated[
        str | None, typer.Option(help="The item's original id instead of a title.")
    ] = None,
    model: Annotated[Path, typer.Option(help=_MODEL_HELP)] = Path("runs/latest"),
    k: Annotated[
        int, typer.Option("--k", "-k", help="Number of items shown, the query item included.")
    ] = 6,
    measure: Annotated[str, typer.Option(help=_MEASURE_HELP)] = "dot",
    backend: Annotated[str | None, typer.Option(help=_BACKEND_HELP)] = None,
) -> None:
    """Show the nearest neighbours of a movie in the embedding space."""
    from .. import retrieval

    try:
        if (title is None) == (item_id is None):
            raise ArgumentValueError("give a TITLE or --item-id (one of them)")
        _check_options(k=k, measure=measure, backend=backend)
        m = _load_model(model)
        row = None if item_id is None else retrieval.find_item(m, item_id)
        with warnings.catch_warnings():
            # The other matches are printed below from the result's attrs.
            warnings.simplefilter("ignore", UserWarning)
            frame = retrieval.neighbors(
                m, title, k=k, measure=measure, item_index=row, backend=backend
            )
    except _ERRORS as err:
        raise fail(err) from err
    _print_items(frame, f"Nearest neighbours of {frame.attrs['query']}")
    others = frame.attrs.get("other_matches") or []
    if others:
        shown = "; ".join(others[:10]) + (
            f" and {len(others) - 10} more" if len(others) > 10 else ""
        )
        what = "other title matches" if len(others) == 1 else "other titles match"
        console.print(f"[yellow]{len(others)} {what} {title!r}:[/] {shown}", highlight=False)


# ---------------------------------------------------------------------------- rate


def _ask(text: str) -> str:
    """One line from the user; end of input counts as an empty line."""
    try:
        return str(typer.prompt(text, default="", show_default=False)).strip()
    except typer.Abort:
        return ""


def prompt_ratings(model: Any) -> pd.DataFrame:
    """Asks for titles and ratings at the terminal until an empty title; returns the ratings."""
    from ..data.user_ratings import UserRatingsError, check_rating, search_titles

    catalog = model.catalog
    if catalog is None or "title" not in catalog.columns:
        raise ArgumentValueError(
            "this model has no catalog of titles to search: use --ratings CSV instead"
        )
    titles = catalog["title"].astype(str).to_numpy()
    scale = model.rating_scale
    span = "" if scale is None else f" ({scale[0]:g}-{scale[1]:g})"
    console.print(
        f"Rate movies: type part of a title, pick it, then give your rating{span}. "
        "An empty title finishes."
    )
    chosen: dict[int, float] = {}
    while True:
        query = _ask("Title")
        if not query:
            break
        hits = search_titles(catalog, query)
        if len(hits) == 0:
            console.print(f"  no title contains {query!r}", highlight=False)
            continue
        if len(hits) == 1:
            i = int(hits[0])
        else:
            shown = hits[:20]
            for n, j in enumerate(shown, start=1):
                console.print(f"  {n:>2}. {titles[j]}", highlight=False)
            if len(hits) > len(shown):
                console.print(f"  ... and {len(hits) - len(shown)} more: type more of the title")
            pick = _ask("Number (empty to skip)")
            if not pick:
                continue
            if not pick.isdigit() or not 1 <= int(pick) <= len(shown):
                console.print(f"  {pick!r} is not a number between 1 and {len(shown)}")
                continue
            i = int(shown[int(pick) - 1])
        while True:
            answer = _ask(f"Your rating of {titles[i]}{span} (empty to skip)")
            if not answer:
                break
            try:
                chosen[i] = check_rating(answer, scale, f"for {titles[i]!r}")
                break
            except UserRatingsError as err:
                console.print(f"  {err}", highlight=False)
    if not chosen:
        raise ArgumentValueError("no ratings were entered: there is nothing to recommend from")
    item_ids = np.arange(len(titles)) if model.item_ids is None else np.asarray(model.item_ids)
    idx = np.fromiter(chosen, dtype=np.int64)
    return pd.DataFrame(
        {
            "item_id": item_ids[idx],
            "item_index": idx,
            "title": titles[idx],
            "rating": np.fromiter(chosen.values(), dtype=np.float32),
        }
    )


def rate(
    ratings: Annotated[
        Path | None,
        typer.Option(
            help="CSV of your ratings (columns title or item_id, and rating); "
            "without it you are asked at the prompt."
        ),
    ] = None,
    model: Annotated[Path, typer.Option(help=_MODEL_HELP)] = Path("runs/latest"),
    k: Annotated[int, typer.Option("--k", "-k", help="Number of recommendations.")] = 10,
    measure: Annotated[str, typer.Option(help=_MEASURE_HELP)] = "dot",
    backend: Annotated[
        str | None,
        typer.Option(
            help="jax or tf for the fold-in and retraining (default: $CFCORE_BACKEND, else jax)."
        ),
    ] = None,
    reg: Annotated[
        float | None,
        typer.Option(
            help="Fold-in ridge λ (default: the model's own regularization, or 0.1 per rating "
            "for plain MF; a softmax model has none)."
        ),
    ] = None,
    retrain_steps: Annotated[
        int,
        typer.Option(help="After the fold-in, retrain this many steps with your ratings included."),
    ] = 0,
    learning_rate: Annotated[
        float | None,
        typer.Option(
            "--lr",
            "--learning-rate",
            help=f"Learning rate of the retraining {_defaults_help('--lr')}.",
        ),
    ] = None,
    optimizer: Annotated[
        OptimizerKind | None,
        typer.Option(
            help=f"Optimizer of the retraining {_defaults_help('--optimizer')} (else sgd)."
        ),
    ] = None,
    save_ratings: Annotated[
        Path | None, typer.Option(help="Write the ratings you entered to this CSV.")
    ] = None,
    save_model: Annotated[
        Path | None, typer.Option(help="Save the model with you added as a user to this file.")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar while retraining.")] = True,
) -> None:
    """Rate movies (from a CSV or at the prompt) and get recommendations at once, by fold-in.

    A softmax model needs no fold-in solve: your query is its tower over the movies you rated
    (only which movies you rated counts, not the values).
    """
    from .. import retrieval
    from ..data.user_ratings import read_user_ratings, write_user_ratings
    from ..specs import make_optimizer

    try:
        _check_options(k=k, measure=measure, backend=backend, outputs=(save_ratings, save_model))
        check_int("--retrain-steps", retrain_steps, minimum=0)
        if reg is not None:
            check_float("--reg", reg, minimum=0)
        if learning_rate is not None:
            check_float("--lr", learning_rate, exclusive_minimum=0)
        m = _load_model(model)
        mine = read_user_ratings(ratings, model=m) if ratings is not None else prompt_ratings(m)
        if save_ratings is not None:
            output(save_ratings.parent)
            stage(f"while writing {save_ratings}")
            write_user_ratings(save_ratings, mine)
            kept(f"your ratings are in {save_ratings}")
            console.print(f"wrote your ratings to {save_ratings}")
        softmax = _is_softmax(m)
        if softmax and reg is not None:
            raise ArgumentValueError(
                f"--reg {reg:g} applies to matrix factorization's fold-in; a softmax model has no "
                "fold-in regularization (your query is its tower over the movies you rated)"
            )
        (uid,) = m.add_users(
            mine.drop(columns="user_id", errors="ignore"), reg=reg, backend=backend
        )
        how = "from the movies you rated" if softmax else "fold-in"
        console.print(f"added you as user {uid} with {len(mine)} ratings ({how}, no retraining)")
        frame = retrieval.recommend(m, uid, k=k, measure=measure)
        _print_items(frame, f"Top {len(frame)} for you")
        if retrain_steps > 0:
            stage("during retraining")
            # The optimizer and learning rate the model's command line trains it with.
            line = getattr(type(m), "command_line", None)
            d = {} if line is None else line.defaults
            kind = optimizer.value if optimizer is not None else d.get("--optimizer", "sgd")
            lr = d.get("--lr", 10.0) if learning_rate is None else learning_rate
            fit: dict[str, Any] = {"steps": retrain_steps, "backend": backend}
            sweeps = line is not None and line.trains_by == "sweeps"
            if not sweeps and (optimizer is not None or line is None or line.trains_by == "steps"):
                fit["optimizer"] = make_optimizer(kind, lr)
            if softmax:
                # The model's own features (your movies included): you join the training users.
                m.fit(None, progress=progress, **fit)
            else:
                if m.train_ratings is None:
                    raise ArgumentValueError(
                        "this model was saved without its training ratings, so it cannot be "
                        "retrained"
                    )
                m.fit(m.train_ratings, progress=progress, **fit)
            frame = retrieval.recommend(m, uid, k=k, measure=measure)
            _print_items(frame, f"Top {len(frame)} for you after {retrain_steps} more steps")
        if save_model is not None:
            output(save_model.parent)
            stage(f"while saving the model to {save_model}")
            m.save(save_model)
            console.print(f"saved the model with you as user {uid} to {save_model}")
    except _ERRORS as err:
        raise fail(err) from err


def _check_options(
    *, k: int, measure: str, backend: str | None, outputs: tuple[Path | None, ...] = ()
) -> None:
    """Refuses, before the model is read, options no run can use (naming them).

    Raises:
        ArgumentValueError: --k below 1, an unknown --measure.
        BackendError: no backend of that name.
        FileAccessError: an output file that cannot be written.
    """
    from .. import retrieval
    from ..backend.registry import check_backend_name
    from ..io.atomic import check_output_path

    check_int("--k", k, minimum=1)
    retrieval.parse_measure(measure)
    if backend is not None:
        check_backend_name(backend)
    for path in outputs:
        if path is not None:
            check_output_path(path)


def register(app: typer.Typer) -> None:
    """Adds the commands `recommend`, `neighbors` and `rate` to `app`."""
    app.command("recommend")(recommend)
    app.command("neighbors")(neighbors)
    app.command("rate")(rate)
