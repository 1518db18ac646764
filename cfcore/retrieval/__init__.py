"""Scoring and retrieval with learned embeddings: similarity measures, top-k, fold-in.

Similarity of a query embedding `u` (a user, or an item for neighbours) to an item embedding `v`:

* `"dot"`: ⟨u, v⟩. Favours items with large norms, which in MF are often the popular ones.
* `"cosine"`: ⟨u, v⟩ / (‖u‖·‖v‖). Ignores norms altogether.
* `("norm", α)`: ⟨u, v⟩ / ‖v‖^α, between the two (α = 0 is dot, α = 1 ranks as cosine does);
  the notebook's closing suggestion. Also written `"norm:α"` (as on the command line).

A zero vector scores 0 under every measure.

Small problems are scored with NumPy (float64, then cast to float32); large ones on a backend,
chosen as everywhere in cfcore (`backend=` > `CFCORE_BACKEND` > the default). "Small" is at most
`NUMPY_MAX_SCORES` scores; `backend="numpy"` or a backend name forces one side.

Fold-in gives a new user an embedding without retraining: with the item embeddings `V` fixed,
minimise Σ_{j∈S} (r_j − ⟨u, v_j⟩)² + uᵀ(λ·I + P)u over `u`, whose closed form is

    u = (V_Sᵀ V_S + λ·I + P)⁻¹ V_Sᵀ r_S

for the user's rated items `S` and ratings `r_S` (`P` is a `[d, d]` prior, zero unless the model
has gravity; see `fold_in_regularization`). It is solved on the backend, batched over new users.

A `cfcore.SoftmaxModel` works everywhere a matrix-factorization model does: its item embeddings
are the movie-id table (also the softmax weights), and a user's query embedding is computed, not
stored: the tower over the bags of words of the movies the user rated (`user_query_embeddings`;
its `fold_in` does the same for new users' rated movies).

Example (a short fit on the default backend, JAX):
    >>> import cfcore
    >>> from cfcore import retrieval
    >>> ml = cfcore.datasets.load_movielens("100k")
    >>> model = cfcore.MatrixFactorization(embedding_dim=8, init_stddev=0.5)
    >>> _ = model.fit(ml.ratings, steps=50, optimizer=cfcore.optimizers.SGD(10.0), progress=False)
    >>> top = retrieval.recommend(model, 42, k=5, measure="cosine")  # user id 42, unrated items
    >>> top.columns.tolist(), len(top)
    (['score', 'item_id', 'title', 'genres'], 5)
    >>> near = retrieval.neighbors(model, "Aladdin (1992)", measure=("norm", 0.5))
    >>> near.attrs["query"], near.attrs["measure"]
    ('Aladdin (1992)', 'norm(0.5)')
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd

from ..backend.checks import check_k as check_k
from ..data.bags import Ragged
from ..errors import ArgumentValueError
from ..maths import functional
from ..train.progress import between_chunks, progress_bar

Measure = str | tuple[str, float]

NUMPY_MAX_SCORES = 1 << 20
"""Largest `B·M` scored with NumPy when no backend is named (about 4 MB of float32)."""

CHUNK_SCORES = 1 << 24
"""Scores held at once by a batched top-k on a backend: query rows are processed in chunks so
that `rows · M` stays below this (64 MB of float32), whatever the number of users."""

FOLD_IN_CHUNK = 1 << 22
"""Bound on `n · d²` (the outer products of one fold-in chunk: 16 MB of float32, at most twice
that once `n` is padded to a power of two)."""

MEASURES = ("dot", "cosine", "norm:ALPHA")


# ---------------------------------------------------------------------------- arguments


def parse_measure(measure: Measure) -> tuple[float, float, str]:
    """Reads a similarity measure.

    Args:
        measure: `"dot"`, `"cosine"`, `("norm", alpha)` or `"norm:alpha"`.

    Returns:
        `(query_power, item_power, label)`: the score is ⟨u, v⟩ / (‖u‖^query_power ·
        ‖v‖^item_power); the label names the measure (`"dot"`, `"cosine"`, `"norm(0.5)"`).

    Raises:
        ValueError: anything else, or an alpha that is not a finite number.
    """
    alpha: Any = None
    if isinstance(measure, str):
        name = measure.strip().lower()
        if name.startswith("norm:"):
            name, alpha = "norm", name.partition(":")[2]
    elif isinstance(measure, tuple | list) and len(measure) == 2 and isinstance(measure[0], str):
        name, alpha = measure[0].strip().lower(), measure[1]
    else:
        name = None
    if name == "dot" and alpha is None:
        return 0.0, 0.0, "dot"
    if name == "cosine" and alpha is None:
        return 1.0, 1.0, "cosine"
    if name == "norm" and alpha is not None:
        try:
            a = float(alpha)
        except (TypeError, ValueError):
            a = float("nan")
        if not np.isfinite(a):
            raise ArgumentValueError(
                f"the alpha of measure ('norm', alpha) must be a number, got {alpha!r}"
            )
        return 0.0, a, f"norm({a:g})"
    raise ArgumentValueError(
        f"unknown similarity measure {measure!r}; expected 'dot', 'cosine', ('norm', alpha) "
        "or 'norm:alpha' (for example 'norm:0.5')"
    )


def _as_2d(x: Any, what: str) -> tuple[np.ndarray, bool]:
    arr = np.asarray(x)
    if arr.ndim == 1:
        return arr[None, :], True
    if arr.ndim != 2:
        raise ArgumentValueError(f"{what} must be [d] or [B, d], got shape {arr.shape}")
    return arr, False


def _check_dims(query: np.ndarray, items: np.ndarray) -> None:
    if items.ndim != 2:
        raise ArgumentValueError(f"item embeddings must be [M, d], got shape {items.shape}")
    if query.shape[1] != items.shape[1]:
        raise ArgumentValueError(
            f"query embeddings have d={query.shape[1]} but item embeddings d={items.shape[1]} "
            f"(shapes {query.shape} and {items.shape})"
        )


def _resolve_backend(backend: Any, size: int) -> Any:
    """The backend to score on: the float64 NumPy reference for small problems by default."""
    from ..backend.registry import get_backend

    if backend is None and size <= NUMPY_MAX_SCORES:
        return get_backend("numpy")
    return get_backend(backend)


# ---------------------------------------------------------------------------- scores


def scores(query: Any, items: Any, measure: Measure = "dot", *, backend: Any = None) -> np.ndarray:
    """Similarity of query embeddings to every item embedding.

    Args:
        query: `[d]` (one query) or `[B, d]`.
        items: `[M, d]` item embeddings.
        measure: `"dot"`, `"cosine"`, `("norm", alpha)` or `"norm:alpha"` (see the module).
        backend: None (NumPy up to `NUMPY_MAX_SCORES` scores, else the default backend),
            `"numpy"`, or a backend name or instance.

    Returns:
        float32 `[M]` for one query, `[B, M]` for several.
    """
    qp, ip, _ = parse_measure(measure)
    q, single = _as_2d(query, "query")
    v = np.asarray(items)
    _check_dims(q, v)
    be = _resolve_backend(backend, q.shape[0] * v.shape[0])
    out = np.asarray(be.to_numpy(functional.measure_scores(be, q, v, qp, ip)), dtype=np.float32)
    return out[0] if single else out


# ---------------------------------------------------------------------------- rated items


RatedItems = Ragged
"""Which items each user rated: a `cfcore.data.features.Ragged` (CSR) of `N` rows over `M` items.

Row `u`'s items are `row(u)`; `RatedItems.from_ratings(ratings)` builds it, `take(rows)` selects
rows and `mask(start, stop)` gives the dense boolean `[stop - start, M]`.
"""


# ---------------------------------------------------------------------------- top-k


def batch_top_k(
    query: Any,
    items: Any,
    k: int,
    *,
    measure: Measure = "dot",
    exclude: RatedItems | np.ndarray | None = None,
    backend: Any = None,
    chunk_rows: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The `k` best items for each of many queries, in chunks of rows on a backend.

    Ties are broken by the lowest item index; excluded items score −inf (they come last and
    only appear when fewer than `k` items are left).

    Args:
        query: `[B, d]` query embeddings.
        items: `[M, d]` item embeddings.
        k: items per query, 1 ≤ k ≤ M.
        measure: see `parse_measure`.
        exclude: items to leave out per query: a `RatedItems` with `B` rows, or a boolean
            `[B, M]` mask; None for none.
        backend: as in `scores` (NumPy only for small problems unless named).
        chunk_rows: query rows per chunk; default such that a chunk holds at most `CHUNK_SCORES`
            scores.
        progress: show a progress bar over the chunks.

    Returns:
        `(scores float32 [B, k], item indices int64 [B, k])`, best first.
    """
    qp, ip, _ = parse_measure(measure)
    q = np.asarray(query)
    if q.ndim != 2:
        raise ArgumentValueError(f"query must be [B, d], got shape {q.shape}")
    v = np.asarray(items)
    _check_dims(q, v)
    num_queries, num_items = q.shape[0], v.shape[0]
    k = check_k(k, num_items)
    if isinstance(exclude, RatedItems):
        if exclude.num_rows != num_queries or exclude.num_columns != num_items:
            raise ArgumentValueError(
                f"exclude has {exclude.num_rows} rows over {exclude.num_columns} items; expected "
                f"{num_queries} rows (one per query) over {num_items} items"
            )
    elif exclude is not None:
        exclude = np.asarray(exclude, dtype=bool)
        if exclude.shape != (num_queries, num_items):
            raise ArgumentValueError(
                f"exclude mask has shape {exclude.shape}; expected {(num_queries, num_items)}"
            )
    be = _resolve_backend(backend, num_queries * num_items)
    if chunk_rows is None:
        chunk_rows = max(1, CHUNK_SCORES // max(num_items, 1))
    values = np.empty((num_queries, k), np.float32)
    indices = np.empty((num_queries, k), np.int64)
    item_native = be.asarray(np.asarray(v, np.float32))
    with progress_bar(progress, "scoring") as bar:
        task = bar.add_task("", total=num_queries) if bar is not None else None
        for start in range(0, num_queries, chunk_rows):
            stop = min(start + chunk_rows, num_queries)
            if isinstance(exclude, RatedItems):
                mask = exclude.mask(start, stop)
            else:
                mask = None if exclude is None else exclude[start:stop]
            val, idx = functional.batched_top_k(be, q[start:stop], item_native, k, mask, qp, ip)
            val, idx = be.to_numpy(val), be.to_numpy(idx)
            values[start:stop], indices[start:stop] = val, idx
            if bar is not None:
                bar.update(task, advance=stop - start)
            between_chunks("scoring", stop, num_queries)
    return values, indices


# ---------------------------------------------------------------------------- model lookups


def _vocab(ids: Any, size: int) -> np.ndarray:
    return np.arange(size) if ids is None else np.asarray(ids)


def _num_users(model: Any) -> int:
    """N: the rows of the user embeddings, or the users of a model that computes their queries."""
    if callable(getattr(model, "query_embeddings", None)):
        return int(model.num_users)
    return model.embeddings_numpy()["user"].shape[0]


def user_query_embeddings(
    model: Any, user_indices: Any, *, backend: Any = None, allow_empty: bool = True
) -> np.ndarray:
    """The query embeddings that score the catalogue for users of `model`, `[B, d]`.

    The rows of the user embeddings for matrix factorization; for a model that computes its
    queries (`SoftmaxModel.query_embeddings`: the tower over each user's rated movies) that
    computation, on NumPy for small catalogues (as `scores`) or on the backend.

    Args:
        model: a trained (or loaded) model.
        user_indices: user rows, `[B]`.
        backend: as in `scores`.
        allow_empty: a softmax user who rated nothing gets the zero vector; False raises.

    Returns:
        float32 `[B, d]`.
    """
    rows = np.asarray(user_indices)
    # A softmax model computes its queries (`[B, d]`); a factorization model stores them.
    compute: Callable[..., np.ndarray] | None = getattr(model, "query_embeddings", None)
    if not callable(compute):
        return _scoring_tables(model)["user"][rows]
    m = model.embeddings_numpy()["item"].shape[0]
    be = _resolve_backend(backend, len(rows) * m)
    return compute(rows, backend=be, allow_empty=allow_empty)


def _scoring_tables(model: Any) -> dict[str, np.ndarray]:
    """The user and item tables whose dot products rank a user's items: the embeddings, or a
    model's `scoring_embeddings()` when its scores add more (`BiasedMF`: the item biases)."""
    tables: Any = getattr(model, "scoring_embeddings", None)
    if callable(tables):
        return cast("dict[str, np.ndarray]", tables())
    return model.embeddings_numpy()


def find_user(model: Any, user: Any) -> int:
    """The row of the user with original id `user` (a numeric string matches a numeric id).

    Raises:
        ValueError: no user of the model has that id.
    """
    return _lookup(_vocab(model.user_ids, _num_users(model)), user, "user", "users")


def find_item(model: Any, item: Any) -> int:
    """The row of the item with original id `item` (a numeric string matches a numeric id)."""
    m = model.embeddings_numpy()["item"].shape[0]
    return _lookup(_vocab(model.item_ids, m), item, "item", "items")


def _lookup(vocab: np.ndarray, key: Any, what: str, plural: str) -> int:
    probe = key
    if isinstance(key, str) and vocab.dtype.kind in "iu":
        try:
            probe = int(key.strip())
        except ValueError:
            probe = None
    elif (
        isinstance(key, int | np.integer)
        and not isinstance(key, bool | np.bool_)
        and vocab.dtype.kind in "UO"
    ):
        # A numeric id in a string vocabulary (numeric ids turned to strings by add_users).
        probe = str(int(key))
    if isinstance(probe, bool) or probe is None:
        hits = np.zeros(0, dtype=np.int64)
    else:
        try:
            hits = np.flatnonzero(vocab == probe)
        except (TypeError, ValueError):
            hits = np.zeros(0, dtype=np.int64)
    if len(hits) == 0:
        span = ""
        if vocab.dtype.kind in "iu" and len(vocab):
            span = f" (ids {vocab.min()}..{vocab.max()})"
        raise ArgumentValueError(
            f"{what} id {key!r} is not among the model's {len(vocab)} {plural}{span}"
        )
    return int(hits[0])


def _check_index(index: Any, size: int, what: str) -> int:
    if isinstance(index, bool) or not isinstance(index, int | np.integer):
        raise ArgumentValueError(f"{what} index must be an int, got {index!r}")
    if not 0 <= index < size:
        raise ArgumentValueError(
            f"{what} index {index} is out of range for {size} {what}s (valid: 0..{size - 1})"
        )
    return int(index)


def genre_column(catalog: pd.DataFrame | None) -> str | None:
    """The catalog column shown as genres: `all_genres`, else `genre`, else None."""
    if catalog is None:
        return None
    for col in ("all_genres", "genre", "genres"):
        if col in catalog.columns:
            return col
    return None


def _item_frame(model: Any, idx: np.ndarray, values: np.ndarray, label: str) -> pd.DataFrame:
    """Rows `score, item_id, title, genres` (title/genres when the catalog has them)."""
    m = model.embeddings_numpy()["item"].shape[0]
    keep = np.isfinite(values)  # excluded items (score −inf) fill up only when k is too large
    idx, values = idx[keep], values[keep]
    out: dict[str, Any] = {
        "score": values.astype(np.float32),
        "item_id": _vocab(model.item_ids, m)[idx],
    }
    catalog = model.catalog
    if catalog is not None and "title" in catalog.columns:
        out["title"] = catalog["title"].to_numpy()[idx]
    genres = genre_column(catalog)
    if catalog is not None and genres is not None:
        out["genres"] = catalog[genres].to_numpy()[idx]
    frame = pd.DataFrame(out)
    frame.attrs["measure"] = label
    frame.attrs["item_index"] = idx.tolist()
    return frame


# ---------------------------------------------------------------------------- recommendations


def recommend(
    model: Any,
    user: Any = None,
    k: int = 10,
    measure: Measure = "dot",
    exclude_rated: bool = True,
    *,
    user_index: int | None = None,
    backend: Any = None,
) -> pd.DataFrame:
    """The `k` items that score best for one user.

    Args:
        model: a trained (or loaded) cfcore model.
        user: the user's ORIGINAL id (through the model's user vocabulary; a numeric string such
            as "42" matches the id 42). Give this or `user_index`.
        k: number of items, 1 ≤ k ≤ the number of items.
        measure: `"dot"`, `"cosine"`, `("norm", alpha)` or `"norm:alpha"`.
        exclude_rated: leave out the items the user rated in the model's training ratings
            (`model.rated_items`, kept by `fit`, `add_users` and `save`/`load`). If fewer than
            `k` items are left, fewer rows are returned.
        user_index: the user's 0-based row instead of `user`.
        backend: see `scores`.

    Returns:
        A frame with one row per item, best first: `score` (float32), `item_id` (original id),
        `title` and `genres` (when the model has a catalog; genres from `all_genres` or
        `genre`). `attrs["measure"]` names the measure and `attrs["item_index"]` lists the rows.

    For a `SoftmaxModel` the user's query embedding is the tower over the movies they rated
    (`user_query_embeddings`), and those movies are the ones `exclude_rated` leaves out.

    Raises:
        ValueError: unknown user, both or neither of `user`/`user_index`, bad `k` or measure,
            `exclude_rated` on a model that has no record of the training ratings, or a softmax
            user who rated nothing.
    """
    emb = model.embeddings_numpy()
    n, m = _num_users(model), emb["item"].shape[0]
    if (user is None) == (user_index is None):
        raise ArgumentValueError("give exactly one of user (an original id) and user_index (a row)")
    u = _check_index(user_index, n, "user") if user is None else find_user(model, user)
    k = check_k(k, m)
    _, _, label = parse_measure(measure)
    exclude = None
    if exclude_rated:
        rated = _rated(model)
        exclude = np.zeros((1, m), dtype=bool)
        exclude[0, rated.row(u)] = True
    query = user_query_embeddings(model, [u], backend=backend, allow_empty=False)
    _check_finite_embeddings(query, emb["item"], [u])
    values, idx = batch_top_k(
        query, _scoring_tables(model)["item"], k, measure=measure, exclude=exclude, backend=backend
    )
    frame = _item_frame(model, idx[0], values[0], label)
    frame.attrs["user_index"] = u
    return frame


def _check_finite_embeddings(query: Any, items: np.ndarray, rows: Any) -> None:
    """Refuses NaN/inf user embeddings and warns about NaN/inf items, instead of silently
    recommending nothing (a NaN score never ranks, so such a user gets an empty list)."""
    q = np.asarray(query)
    bad_users = ~np.all(np.isfinite(q.reshape(len(q), -1)), axis=1)
    if bad_users.any():
        row = int(np.asarray(rows)[np.argmax(bad_users)])
        raise ArgumentValueError(
            f"the embedding of user row {row} is NaN or infinite ({int(bad_users.sum())} such "
            "user(s) asked for), so no item can be ranked for it: retrain the model or fold the "
            "user in again (with reg > 0)"
        )
    bad_items = ~np.all(np.isfinite(items), axis=1)
    if bad_items.any():
        warnings.warn(
            f"{int(bad_items.sum())} of {len(items)} item embeddings are NaN or infinite (the "
            f"first is item row {int(np.argmax(bad_items))}); they are never recommended",
            RuntimeWarning,
            stacklevel=3,
        )


def _rated(model: Any) -> RatedItems:
    rated = getattr(model, "rated_items", None)
    if rated is None:
        raise ArgumentValueError(
            "this model has no record of which items each user rated (it was saved without its "
            "training ratings); pass exclude_rated=False"
        )
    return rated


def batch_recommend(
    model: Any,
    user_indices: Sequence[int] | np.ndarray | None = None,
    k: int = 10,
    measure: Measure = "dot",
    exclude_rated: bool = True,
    *,
    backend: Any = None,
    chunk_rows: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k items for many users at once, scored on a backend in chunks of users.

    Args:
        model: a trained (or loaded) model.
        user_indices: rows of the users, `[B]`; None for every user.
        k: items per user, 1 ≤ k ≤ the number of items.
        measure: see `parse_measure`.
        exclude_rated: leave out each user's training ratings (as in `recommend`; a user with
            fewer than `k` unrated items gets −inf scores at the end of its row). A softmax
            user who rated nothing has the zero query: every item scores 0.
        backend: a backend name or instance; None for the default backend, `"numpy"` for NumPy.
        chunk_rows: users per chunk (see `batch_top_k`).
        progress: show a progress bar over the chunks.

    Returns:
        `(scores float32 [B, k], item indices int64 [B, k])`; map indices to original ids with
        `model.item_ids`.
    """
    from ..backend.registry import get_backend

    n = _num_users(model)
    if user_indices is None:
        rows = np.arange(n)
    else:
        rows = np.asarray(user_indices)
        if rows.ndim != 1 or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
            raise ArgumentValueError(f"user_indices must be a 1-D array of ints, got {rows!r}")
        bad = (rows < 0) | (rows >= n)
        if bad.any():
            raise ArgumentValueError(
                f"user index {rows[bad][0]} is out of range for {n} users (valid: 0..{n - 1})"
            )
    exclude = _rated(model).take(rows) if exclude_rated else None
    be = get_backend(backend)
    query = user_query_embeddings(model, rows, backend=be)
    items = _scoring_tables(model)["item"]
    _check_finite_embeddings(query, items, rows)
    return batch_top_k(
        query,
        items,
        k,
        measure=measure,
        exclude=exclude,
        backend=be,
        chunk_rows=chunk_rows,
        progress=progress,
    )


def neighbors(
    model: Any,
    title_or_id: Any = None,
    k: int = 6,
    measure: Measure = "dot",
    *,
    item_index: int | None = None,
    exclude_query: bool = False,
    backend: Any = None,
) -> pd.DataFrame:
    """The items most similar to one item, found by title or id.

    A string is searched as a case-insensitive substring of the catalog titles (see
    `cfcore.data.user_ratings.search_titles`). When several titles match, the first in catalog order
    is used; the others are listed in `attrs["other_matches"]` and in a `UserWarning`.

    Args:
        model: a trained (or loaded) model with a catalog (for titles).
        title_or_id: a title substring (str), or an ORIGINAL item id (any other type; for
            string ids use `find_item` and `item_index`).
        k: number of items, 1 ≤ k ≤ the number of items (the query item itself counts, as in
            the notebook: under cosine it comes first).
        measure: see `parse_measure`; only the candidate's norm enters `("norm", alpha)`.
        item_index: the item's 0-based row instead of `title_or_id`.
        exclude_query: leave the query item out of the result.
        backend: see `scores`.

    Returns:
        A frame as `recommend` returns, with `attrs["query"]` (the title, or id without a
        catalog), `attrs["query_item_id"]` and `attrs["other_matches"]` (list of titles).

    Raises:
        ValueError: no title contains the string, the id is unknown, both or neither of
            `title_or_id` and `item_index` are given, or `k` is out of range.
    """
    from ..data.user_ratings import search_titles

    emb = model.embeddings_numpy()
    m = emb["item"].shape[0]
    k = check_k(k, m)
    others: list[str] = []
    if (title_or_id is None) == (item_index is None):
        raise ArgumentValueError("give exactly one of title_or_id and item_index")
    if item_index is not None:
        i = _check_index(item_index, m, "item")
    elif isinstance(title_or_id, str):
        catalog = model.catalog
        if catalog is None or "title" not in catalog.columns:
            raise ArgumentValueError(
                f"cannot search for the title {title_or_id!r}: this model has no catalog of titles; "
                "pass an item id instead"
            )
        hits = search_titles(catalog, title_or_id)
        if len(hits) == 0:
            raise ArgumentValueError(f"no title in the catalog contains {title_or_id!r}")
        i = int(hits[0])
        titles = catalog["title"].to_numpy()
        others = [str(t) for t in titles[hits[1:]]]
        if others:
            shown = ", ".join(others[:10]) + (
                f" and {len(others) - 10} more" if len(others) > 10 else ""
            )
            warnings.warn(
                f"{len(hits)} titles contain {title_or_id!r}; using {titles[i]!r}. "
                f"Other matches: {shown}",
                UserWarning,
                stacklevel=2,
            )
    else:
        i = find_item(model, title_or_id)
    _, _, label = parse_measure(measure)
    if exclude_query:
        if m < 2 or k > m - 1:
            raise ArgumentValueError(
                f"k={k} is out of range: with the query left out it must be between 1 and {m - 1}"
            )
    exclude = None
    if exclude_query:
        exclude = np.zeros((1, m), dtype=bool)
        exclude[0, i] = True
    # Only the candidate's norm is divided out for ("norm", alpha); cosine divides both.
    values, idx = batch_top_k(
        emb["item"][i : i + 1], emb["item"], k, measure=measure, exclude=exclude, backend=backend
    )
    frame = _item_frame(model, idx[0], values[0], label)
    catalog = model.catalog
    query_id = _vocab(model.item_ids, m)[i].item()
    if catalog is not None and "title" in catalog.columns:
        frame.attrs["query"] = str(catalog["title"].iloc[i])
    else:
        frame.attrs["query"] = f"item {query_id}"
    frame.attrs["query_item_id"] = query_id
    frame.attrs["other_matches"] = others
    return frame


# ---------------------------------------------------------------------------- fold-in


def fold_in_regularization(model: Any, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The default λ (per new user) and prior `P` of fold-in for `model`.

    * A regularized model (λr, λg > 0) uses its own objective: the row of a new user with the
      item embeddings fixed appears in the training loss (times |Ω|, the number of training
      ratings) as Σ_S (r − ⟨u, v⟩)² + λr·(|Ω|/N)·‖u‖² + λg·(|Ω|/(N·M))·uᵀ(VᵀV)u, so
      λ = λr·|Ω|/N and P = λg·|Ω|/(N·M)·VᵀV. The folded-in embedding is then exactly the one
      that training would converge to for that row, holding the items fixed.
    * A plain MF model has no regularization to borrow; it uses weighted-λ ridge (the ALS-WR
      choice of Zhou et al., 2008) with λ = 0.1·|S|, where |S| is the user's number of ratings:
      shrinkage that grows with the evidence, so that a user with 3 ratings is not fitted
      exactly (a zero-regularization solve is singular with fewer than d ratings).

    Args:
        model: the model (its spec, embeddings and training ratings are read).
        counts: `[B]` number of ratings of each new user.

    Returns:
        `(reg float32 [B], prior float32 [d, d] or None)`.
    """
    spec = model.spec
    counts = np.asarray(counts, dtype=np.float64)
    if spec.regularized:
        emb = model.embeddings_numpy()
        n, m = emb["user"].shape[0], emb["item"].shape[0]
        omega = model.num_train_ratings
        if not omega:
            raise ArgumentValueError(
                "the default fold-in regularization of a regularized model needs its number of "
                "training ratings, which this model does not know; pass reg= explicitly"
            )
        per_user = omega / n
        reg = np.full(len(counts), spec.regularization_coeff * per_user, dtype=np.float32)
        prior = None
        if spec.gravity_coeff > 0:
            v = emb["item"].astype(np.float64)
            prior = (spec.gravity_coeff * per_user / m * (v.T @ v)).astype(np.float32)
        return reg, prior
    return (0.1 * counts).astype(np.float32), None


def fold_in_solve(
    item_emb: Any,
    rows: Any,
    items: Any,
    ratings: Any,
    num_rows: int,
    reg: Any,
    prior: Any = None,
    *,
    backend: Any = None,
) -> np.ndarray:
    """Embeddings of new users with the items fixed: u_b = (V_Sᵀ V_S + λ_b·I + P)⁻¹ V_Sᵀ r_b.

    Solved on the backend, in chunks of whole users so that the `[n, d, d]` outer products of
    one chunk stay below `FOLD_IN_CHUNK` floats.

    Args:
        item_emb: `[M, d]`, V.
        rows: `[n]` new-user index (0..num_rows-1) of each rating.
        items: `[n]` item index of each rating.
        ratings: `[n]`.
        num_rows: B, the number of new users; every one needs at least one rating.
        reg: λ ≥ 0, a scalar or `[B]`. With λ = 0 and no prior, a user needs d ratings of
            linearly independent items (else the system is singular: NaN or huge values).
        prior: optional `[d, d]` symmetric positive semi-definite matrix P.
        backend: a backend name or instance (None: the default), or `"numpy"` for a float64
            NumPy solve.

    Returns:
        float32 `[B, d]`.
    """
    v = np.asarray(item_emb)
    if v.ndim != 2:
        raise ArgumentValueError(f"item embeddings must be [M, d], got shape {v.shape}")
    m, d = v.shape
    rows = np.asarray(rows, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    ratings = np.asarray(ratings, dtype=np.float64)
    if not (rows.shape == items.shape == ratings.shape) or rows.ndim != 1:
        raise ArgumentValueError(
            f"rows, items and ratings must be 1-D of one length, got {rows.shape}, "
            f"{items.shape}, {ratings.shape}"
        )
    num_rows = int(num_rows)
    if num_rows < 1:
        raise ArgumentValueError(f"num_rows must be at least 1, got {num_rows}")
    for name, idx, size in (("new-user", rows, num_rows), ("item", items, m)):
        if idx.size and (idx.min() < 0 or idx.max() >= size):
            bad = idx.min() if idx.min() < 0 else idx.max()
            raise ArgumentValueError(
                f"{name} index {bad} is out of range for {size} (valid: 0..{size - 1})"
            )
    if not np.all(np.isfinite(ratings)):
        raise ArgumentValueError("fold-in ratings must be finite numbers")
    counts = np.bincount(rows, minlength=num_rows)
    if (counts == 0).any():
        raise ArgumentValueError(
            f"new user {int(np.argmax(counts == 0))} has no ratings to fold in"
        )
    reg = np.broadcast_to(np.asarray(reg, dtype=np.float64), (num_rows,))
    if not np.all(np.isfinite(reg)) or (reg < 0).any():
        raise ArgumentValueError(
            f"reg must be finite and >= 0, got {reg.min() if len(reg) else reg}"
        )
    if prior is not None:
        prior = np.asarray(prior, dtype=np.float64)
        if prior.shape != (d, d):
            raise ArgumentValueError(f"prior must be [d, d] = {(d, d)}, got shape {prior.shape}")
    if prior is None:
        # With λ = 0 and no prior, V_Sᵀ V_S has rank at most |S|: fewer than d distinct items
        # make the system singular, and the solve returns NaN or meaningless huge values.
        pairs = np.unique(np.stack([rows, items]), axis=1)
        distinct = np.bincount(pairs[0], minlength=num_rows)
        short = np.flatnonzero((reg == 0) & (distinct < d))
        if len(short):
            b = int(short[0])
            raise ArgumentValueError(
                f"new user {b} has reg=0 and ratings of only {int(distinct[b])} distinct "
                f"item(s), fewer than the embedding dimension d={d}: the fold-in system is "
                "singular. Pass reg > 0 (or leave reg=None for the default)"
            )
    from ..backend.registry import get_backend

    be = get_backend(backend)
    order = np.argsort(rows, kind="stable")
    rows, items, ratings = rows[order], items[order], ratings[order]
    starts = np.concatenate([[0], np.cumsum(counts)])
    out = np.empty((num_rows, d), np.float32)
    item_native = be.asarray(v.astype(np.float32))
    prior32 = None if prior is None else prior.astype(np.float32)
    per_chunk = max(1, FOLD_IN_CHUNK // (d * d))
    first = 0
    while first < num_rows:
        # Whole users per chunk: at least one, then as many as fit in `per_chunk` ratings.
        last = int(np.searchsorted(starts, starts[first] + per_chunk, side="right")) - 1
        last = min(max(last, first + 1), num_rows)
        lo, hi = starts[first], starts[last]
        # Shapes padded to powers of two, so that a compiled solve is reused across chunks and
        # calls: the padding ratings (item 0, rating 0) go to one extra dummy user (λ = 1, so
        # its system is regular) whose solution is dropped.
        b, n = last - first, hi - lo
        b_pad, n_pad = _pow2(b + 1), _pow2(max(n, 16))
        chunk_rows = np.full(n_pad, b_pad - 1, np.int32)
        chunk_rows[:n] = rows[lo:hi] - first
        chunk_items = np.zeros(n_pad, np.int32)
        chunk_items[:n] = items[lo:hi]
        chunk_ratings = np.zeros(n_pad, np.float32)
        chunk_ratings[:n] = ratings[lo:hi]
        chunk_reg = np.ones(b_pad, np.float32)
        chunk_reg[:b] = reg[first:last]
        sol = functional.fold_in_solve(
            be, item_native, chunk_rows, chunk_items, chunk_ratings, b_pad, chunk_reg, prior32
        )
        out[first:last] = be.to_numpy(sol)[:b]
        first = last
    bad = ~np.all(np.isfinite(out), axis=1)
    if bad.any():
        b = int(np.argmax(bad))
        raise ArgumentValueError(
            f"the fold-in of {int(bad.sum())} new user(s) gave NaN or infinite embeddings (the "
            f"first is new user {b}, with {int(counts[b])} rating(s) and reg={float(reg[b]):g}): "
            "the system is singular or the item embeddings are not finite. Pass a larger reg"
        )
    return out


def _pow2(x: int) -> int:
    return 1 << max(int(x) - 1, 0).bit_length()
