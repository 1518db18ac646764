"""Saving and loading models: one `.npz` file, readable by any backend.

The file is a compressed NumPy archive written with `allow_pickle=False` semantics (plain
arrays only, so loading a file never runs code). Its entries:

* `metadata`: UTF-8 JSON as uint8 bytes: `format` ("cfcore-model"), `format_version`,
  `cfcore_version`, `model` (class name), `spec` (`MFSpec.to_dict()`), `step`, `history`
  (`{"columns": [...], "data": [[...], ...]}`, the training history without optimizer state),
  `optimizer` (the last optimizer spec, for information), `num_train_ratings`, `rating_scale`,
  `shape` (`[N, M, d]`) and `has_ratings`.
* `user_embeddings` float32 `[N, d]`, `item_embeddings` float32 `[M, d]`.
* `user_ids` `[N]`, `item_ids` `[M]`: the original ids (numbers or strings).
* `catalog` (optional): UTF-8 JSON bytes of the item frame (`DataFrame.to_json(orient="table")`,
  which keeps the column dtypes).
* `ratings_users`, `ratings_items` int32 `[n]`, `ratings_values` float32 `[n]` (optional): the
  training ratings, for leaving rated items out of recommendations and for retraining.

The embeddings are stored bit for bit, so a model trained on JAX and loaded for TensorFlow scores
identically up to each framework's float32 rounding. A file from a newer cfcore (a larger
`format_version`) is refused with both versions named; any other file gives `ModelFileError`.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FORMAT = "cfcore-model"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A file that is not a cfcore model, is damaged, or comes from a newer cfcore."""


def _json_bytes(obj: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(obj, allow_nan=False).encode("utf-8"), dtype=np.uint8)


def _plain(x: Any) -> Any:
    """JSON-ready scalars: NaN becomes null, NumPy scalars Python ones."""
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def _vocab_array(ids: Any, what: str) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.dtype.kind in "iufb" or arr.dtype.kind == "U":
        return arr
    if arr.dtype.kind == "O" and all(isinstance(x, str) for x in arr):
        return arr.astype(str)
    raise ModelFileError(
        f"cannot save the {what} vocabulary: its ids must be all numbers or all strings, got "
        f"dtype {arr.dtype} (first id {arr[0]!r})"
    )


def save(model: Any, path: str | os.PathLike[str], *, include_ratings: bool = True) -> Path:
    """Writes `model` to `path` atomically (a reader never sees half a file).

    Args:
        model: a fitted (or loaded) `MatrixFactorization` / `RegularizedMF`.
        path: the file to write; the `.npz` format whatever the suffix.
        include_ratings: store the training ratings too.

    Returns:
        The path written.
    """
    from . import __version__
    from ._io import atomic_write

    emb = model.embeddings_numpy()
    n, d = emb["user"].shape
    m = emb["item"].shape[0]
    history = model.history
    session = getattr(model, "_session", None)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "cfcore_version": __version__,
        "model": type(model).__name__,
        "spec": model.spec.to_dict(),
        "step": int(model.step),
        "history": {
            "columns": [str(c) for c in history.columns],
            "data": [[_plain(x) for x in row] for row in history.itertuples(index=False)],
        },
        "optimizer": None if session is None else session.optimizer.to_dict(),
        "num_train_ratings": model.num_train_ratings,
        "rating_scale": None if model.rating_scale is None else list(model.rating_scale),
        "shape": [n, m, d],
        "has_ratings": bool(include_ratings and model.train_ratings is not None),
    }
    arrays: dict[str, np.ndarray] = {
        "metadata": _json_bytes(meta),
        "user_embeddings": np.asarray(emb["user"], np.float32),
        "item_embeddings": np.asarray(emb["item"], np.float32),
        "user_ids": _vocab_array(
            np.arange(n) if model.user_ids is None else model.user_ids, "user"
        ),
        "item_ids": _vocab_array(
            np.arange(m) if model.item_ids is None else model.item_ids, "item"
        ),
    }
    if model.catalog is not None:
        text = model.catalog.to_json(orient="table", index=False, double_precision=15)
        arrays["catalog"] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    if meta["has_ratings"]:
        r = model.train_ratings
        arrays["ratings_users"] = r.users.astype(np.int32)
        arrays["ratings_items"] = r.items.astype(np.int32)
        arrays["ratings_values"] = r.values.astype(np.float32)

    def write(tmp: Path) -> None:
        # A file object keeps NumPy from appending ".npz" to the temporary name.
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    return atomic_write(path, write)


def load(path: str | os.PathLike[str]) -> Any:
    """Reads a model written by `model.save(path)`.

    The returned model has its `spec`, `embeddings`, `history`, `step`, `catalog`, vocabularies
    and (if saved) training ratings; it is not tied to a backend: `recommend` / `fold_in` /
    `fit` use whichever is asked for, and `fit` continues from the loaded embeddings (with a
    fresh optimizer state).

    Raises:
        ModelFileError: the file is missing, not a cfcore model (another `.npz`, or not an
            archive at all), damaged, or written by a newer cfcore (format version above
            `FORMAT_VERSION`).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise ModelFileError(
            f"{path} cannot be read as a cfcore model: it is not a valid .npz archive (a "
            f"damaged or truncated file, or another kind of file): {err}"
        ) from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ModelFileError(
            f"{path} is not a cfcore model file: it holds a single array, not an archive"
        )
    with archive:
        try:
            return _read(path, archive)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
            raise ModelFileError(f"{path} is damaged: {err}") from err
        except KeyError as err:
            raise ModelFileError(f"{path} is damaged: the entry {err} is missing") from err


def _read(path: Path, archive: Any) -> Any:
    from .data.ratings import Ratings, RatingsError
    from .models import MatrixFactorization, RegularizedMF
    from .specs import MFSpec

    names = set(archive.files)
    if "metadata" not in names:
        raise ModelFileError(
            f"{path} is an .npz archive but not a cfcore model file (it has no 'metadata' "
            f"entry; its arrays are {sorted(names)}). Save models with model.save(path)"
        )
    try:
        meta = json.loads(archive["metadata"].tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as err:
        raise ModelFileError(f"{path} is damaged: its metadata is not valid JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ModelFileError(
            f"{path} is not a cfcore model file (its format is {found!r}, expected {FORMAT!r})"
        )
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{path} is damaged: format_version {version!r} is not a positive int")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has model file format version {version}, newer than this cfcore supports "
            f"(version {FORMAT_VERSION}); it was written by cfcore {meta.get('cfcore_version')}. "
            "Upgrade cfcore to read it"
        )
    try:
        spec_dict = dict(meta["spec"])
        kind = spec_dict.pop("kind", "mf")
        if kind != "mf":
            raise ModelFileError(
                f"{path} holds a model of kind {kind!r}, which cfcore.load cannot read"
            )
        spec = MFSpec(**spec_dict)
        n, m, d = (int(x) for x in meta["shape"])
        classes = {"MatrixFactorization": MatrixFactorization, "RegularizedMF": RegularizedMF}
        cls = classes.get(meta["model"])
        if cls is None:
            raise ModelFileError(
                f"{path} holds a {meta['model']!r} model; cfcore.load reads {sorted(classes)}"
            )
        user = np.asarray(archive["user_embeddings"], np.float32)
        item = np.asarray(archive["item_embeddings"], np.float32)
        if user.shape != (n, d) or item.shape != (m, d) or d != spec.embedding_dim:
            raise ModelFileError(
                f"{path} is damaged: embeddings of shapes {user.shape} and {item.shape} do not match "
                f"the recorded shape N={n}, M={m}, d={d} (spec d={spec.embedding_dim})"
            )
        user_ids, item_ids = archive["user_ids"], archive["item_ids"]
        if len(user_ids) != n or len(item_ids) != m:
            raise ModelFileError(
                f"{path} is damaged: {len(user_ids)} user ids for {n} users, {len(item_ids)} item "
                f"ids for {m} items"
            )
        catalog = None
        if "catalog" in names:
            text = archive["catalog"].tobytes().decode("utf-8")
            catalog = pd.read_json(io.StringIO(text), orient="table")
            if len(catalog) != m:
                raise ModelFileError(
                    f"{path} is damaged: the catalog has {len(catalog)} rows for {m} items"
                )
        hist = meta["history"]
        history = pd.DataFrame(hist["data"], columns=hist["columns"])
        if "step" in history.columns and len(history):
            history["step"] = history["step"].astype(np.int64)
        model = cls.__new__(cls)
        MatrixFactorization.__init__(model, spec.embedding_dim, spec.init_stddev, spec.mse)
        model.spec = spec
        model._params = {"user": user, "item": item}
        model._shape = (n, m)
        model._resume_step = int(meta["step"])
        model.history = history
        model.catalog = catalog
        model.user_ids = np.asarray(user_ids)
        model.item_ids = np.asarray(item_ids)
        model._num_train_ratings = meta.get("num_train_ratings")
        scale = meta.get("rating_scale")
        model._rating_scale = None if scale is None else (float(scale[0]), float(scale[1]))
        if meta.get("has_ratings"):
            model.train_ratings = Ratings(
                archive["ratings_users"],
                archive["ratings_items"],
                archive["ratings_values"],
                n,
                m,
                user_ids=model.user_ids,
                item_ids=model.item_ids,
                catalog=catalog,
            )
    except ModelFileError:
        raise
    except KeyError as err:
        raise ModelFileError(f"{path} is damaged: the entry or field {err} is missing") from err
    except (TypeError, ValueError, RatingsError) as err:
        raise ModelFileError(f"{path} is damaged: {type(err).__name__}: {err}") from err
    return model
