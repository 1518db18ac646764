"""Saving and loading models: one `.npz` file, readable by any backend.

The file is a compressed NumPy archive written with `allow_pickle=False` semantics (plain
arrays only, so loading a file never runs code). `metadata["spec"]["kind"]` says which model it
holds and `load` dispatches on it: `"mf"` (`MatrixFactorization`, `RegularizedMF`) or
`"softmax"` (`SoftmaxModel`). Both kinds share format version 1 and the entries `metadata`,
`user_ids`, `item_ids` and `catalog`; a cfcore that predates the softmax kind refuses its files
with a `ModelFileError` naming the kind.

Matrix-factorization entries:

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

Softmax entries (everything `evaluate`, `recommend`, `fold_in` and `fit` need without the
dataset):

* `metadata` as above (`shape` is `[N, M, d]`, `d` the query dimension), plus `params` (the
  parameter names in order), `protocol`, `split_seed` and `split_users` (the split is drawn again
  from these and the histories), `batch_size`, `feature_names` (every feature of the dataset, in
  order), `item_feature`, `token_features` (the features with per-item tokens) and
  `has_histories`.
* `param_<i>` float32: parameter `params[i]` (feature tables `[V_f, d_f]`, `hidden_<j>`).
* `vocab_<j>` str `[V_j]`: the tokens of feature `feature_names[j]`.
* `tokens_offsets_<j>` int64 `[M + 1]`, `tokens_values_<j>` int32: each item's tokens of
  feature `token_features[j]` (CSR rows).
* `history_offsets` int64 `[N + 1]`, `history_items` int32 (with `has_histories`): each user's
  distinct rated movies, sorted (CSR rows).

The embeddings are stored bit for bit, so a model trained on JAX and loaded for TensorFlow scores
identically up to each framework's float32 rounding. Optimizer state is not stored (it is each
framework's own structure): a loaded model continues training with a fresh one. A file from a
newer cfcore (a larger `format_version`) is refused with both versions named; any other file
gives `ModelFileError`.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

FORMAT = "cfcore-model"
FORMAT_VERSION = 1


MODEL_CLASSES: dict[str, Any] = {}
"""Model classes by name, filled by `register_model` when `cfcore.models` is imported: the file
container reads the class name from a file and never imports the models itself."""


_ModelT = TypeVar("_ModelT", bound=type)


def register_model(cls: _ModelT) -> _ModelT:
    """Class decorator: makes `cls` loadable by `load` under its name."""
    MODEL_CLASSES[cls.__name__] = cls
    return cls


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
        model: a fitted (or loaded) `MatrixFactorization` / `RegularizedMF` / `SoftmaxModel`.
        path: the file to write; the `.npz` format whatever the suffix.
        include_ratings: store the training ratings (softmax: each user's rated movies) too.

    Returns:
        The path written.
    """
    from .io.atomic import atomic_write

    if model.spec.to_dict().get("kind") == "softmax":
        arrays = _softmax_arrays(model, include_ratings)
    else:
        arrays = _mf_arrays(model, include_ratings)

    def write(tmp: Path) -> None:
        # A file object keeps NumPy from appending ".npz" to the temporary name.
        with open(tmp, "wb") as f:
            # numpy's stub lets `**arrays` fill `allow_pickle` (a NumPy >= 2.1 parameter, so not
            # passed here); the keys are cfcore's own array names.
            np.savez_compressed(f, **arrays)  # pyright: ignore[reportArgumentType]

    return atomic_write(path, write)


def _common_meta(model: Any, shape: list[int]) -> dict[str, Any]:
    """The metadata every kind of model file has."""
    from . import __version__

    history = model.history
    session = getattr(model, "_session", None)
    return {
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
        "shape": shape,
    }


def _catalog_bytes(catalog: pd.DataFrame) -> np.ndarray:
    text = catalog.to_json(orient="table", index=False, double_precision=15)
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def _mf_arrays(model: Any, include_ratings: bool) -> dict[str, np.ndarray]:
    emb = model.embeddings_numpy()
    n, d = emb["user"].shape
    m = emb["item"].shape[0]
    meta = _common_meta(model, [n, m, d])
    r = model.train_ratings if include_ratings else None
    meta["has_ratings"] = r is not None
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
        arrays["catalog"] = _catalog_bytes(model.catalog)
    if r is not None:
        arrays["ratings_users"] = r.users.astype(np.int32)
        arrays["ratings_items"] = r.items.astype(np.int32)
        arrays["ratings_values"] = r.values.astype(np.float32)
    return arrays


def _softmax_arrays(model: Any, include_ratings: bool) -> dict[str, np.ndarray]:
    params = model.params_numpy()
    features = model.features
    if features is None:  # parameters without features: not produced by fit or load
        raise RuntimeError(f"{type(model).__name__} has no features yet: call fit() first")
    n, m = features.num_users, features.num_items
    names = list(params)
    feature_names = list(features.feature_names)
    token_features = list(features.item_tokens)
    meta = _common_meta(model, [n, m, int(model.spec.output_dim)])
    has_histories = bool(include_ratings and model._has_histories)
    meta.update(
        {
            "params": names,
            "protocol": model.protocol,
            "split_seed": model._split_seed,
            "split_users": model._split_users,
            "batch_size": model._batch_size,
            "feature_names": feature_names,
            "item_feature": features.item_feature,
            "token_features": token_features,
            "has_histories": has_histories,
        }
    )
    arrays: dict[str, np.ndarray] = {
        "metadata": _json_bytes(meta),
        "user_ids": _vocab_array(
            np.arange(n) if model.user_ids is None else model.user_ids, "user"
        ),
        "item_ids": _vocab_array(
            np.arange(m) if model.item_ids is None else model.item_ids, "item"
        ),
    }
    for i, name in enumerate(names):
        arrays[f"param_{i}"] = np.asarray(params[name], np.float32)
    for j, name in enumerate(feature_names):
        arrays[f"vocab_{j}"] = np.asarray(features.vocabularies[name].tokens, dtype=str)
    for j, name in enumerate(token_features):
        tokens = features.item_tokens[name]
        arrays[f"tokens_offsets_{j}"] = tokens.offsets.astype(np.int64)
        arrays[f"tokens_values_{j}"] = tokens.values.astype(np.int32)
    if has_histories:
        arrays["history_offsets"] = features.histories.offsets.astype(np.int64)
        arrays["history_items"] = features.histories.values.astype(np.int32)
    if model.catalog is not None:
        arrays["catalog"] = _catalog_bytes(model.catalog)
    return arrays


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
    from .data.ratings import RatingsError

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
        readers = {"mf": _read_mf, "softmax": _read_softmax}
        if kind not in readers:
            raise ModelFileError(
                f"{path} holds a model of kind {kind!r}, which cfcore.load cannot read "
                f"(it reads {sorted(readers)})"
            )
        model = readers[kind](path, archive, meta, spec_dict)
    except ModelFileError:
        raise
    except KeyError as err:
        raise ModelFileError(f"{path} is damaged: the entry or field {err} is missing") from err
    except (TypeError, ValueError, RatingsError) as err:
        raise ModelFileError(f"{path} is damaged: {type(err).__name__}: {err}") from err
    return model


def _read_ids(path: Path, archive: Any, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    user_ids, item_ids = archive["user_ids"], archive["item_ids"]
    if len(user_ids) != n or len(item_ids) != m:
        raise ModelFileError(
            f"{path} is damaged: {len(user_ids)} user ids for {n} users, {len(item_ids)} item "
            f"ids for {m} items"
        )
    return np.asarray(user_ids), np.asarray(item_ids)


def _read_catalog(path: Path, archive: Any, m: int) -> pd.DataFrame | None:
    if "catalog" not in archive.files:
        return None
    text = archive["catalog"].tobytes().decode("utf-8")
    catalog = pd.read_json(io.StringIO(text), orient="table")
    if len(catalog) != m:
        raise ModelFileError(
            f"{path} is damaged: the catalog has {len(catalog)} rows for {m} items"
        )
    return catalog


def _read_history(meta: dict[str, Any]) -> pd.DataFrame:
    hist = meta["history"]
    history = pd.DataFrame(hist["data"], columns=hist["columns"])
    if "step" in history.columns and len(history):
        history["step"] = history["step"].astype(np.int64)
    return history


def _read_mf(path: Path, archive: Any, meta: dict[str, Any], spec_dict: dict[str, Any]) -> Any:
    from .data.ratings import Ratings

    MatrixFactorization = MODEL_CLASSES["MatrixFactorization"]
    RegularizedMF = MODEL_CLASSES["RegularizedMF"]
    from .specs import MFSpec

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
    user_ids, item_ids = _read_ids(path, archive, n, m)
    catalog = _read_catalog(path, archive, m)
    history = _read_history(meta)
    model = cls.__new__(cls)
    MatrixFactorization.__init__(model, spec.embedding_dim, spec.init_stddev, spec.mse)
    model.spec = spec
    model._params = {"user": user, "item": item}
    model._shape = (n, m)
    model._resume_step = int(meta["step"])
    model.history = history
    model.catalog = catalog
    model.user_ids = user_ids
    model.item_ids = item_ids
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
    return model


def _ragged(path: Path, offsets: Any, values: Any, rows: int, bound: int, what: str) -> Any:
    """CSR rows read back, checked: `rows` rows of values in `[0, bound)`."""
    from .data.features import Ragged

    offsets = np.asarray(offsets, np.int64)
    values = np.asarray(values)
    if values.dtype.kind not in "iu":
        raise ModelFileError(f"{path} is damaged: {what} are not integers ({values.dtype})")
    ok = (
        offsets.shape == (rows + 1,)
        and values.ndim == 1
        and offsets[0] == 0
        and offsets[-1] == len(values)
        and bool(np.all(np.diff(offsets) >= 0))
    )
    if not ok:
        raise ModelFileError(
            f"{path} is damaged: the {what} are not {rows} rows (offsets of shape {offsets.shape} "
            f"over {values.shape} values)"
        )
    if len(values) and (values.min() < 0 or values.max() >= bound):
        bad = int(values.min() if values.min() < 0 else values.max())
        raise ModelFileError(
            f"{path} is damaged: the {what} hold {bad}, out of range for {bound} (valid: "
            f"0..{bound - 1})"
        )
    return Ragged(offsets, values.astype(np.int32))


def _read_softmax(path: Path, archive: Any, meta: dict[str, Any], spec_dict: dict[str, Any]) -> Any:
    from .data.features import PROTOCOLS, HistoryFeatures, Ragged, Vocabulary

    SoftmaxModel = MODEL_CLASSES["SoftmaxModel"]
    from .specs import SoftmaxSpec

    if meta["model"] != "SoftmaxModel":
        raise ModelFileError(
            f"{path} holds a {meta['model']!r} model of kind 'softmax'; cfcore.load reads "
            "['SoftmaxModel']"
        )
    spec = SoftmaxSpec(**spec_dict)
    n, m, d = (int(x) for x in meta["shape"])
    if d != spec.output_dim:
        raise ModelFileError(
            f"{path} is damaged: the recorded query dimension {d} is not the spec's "
            f"{spec.output_dim}"
        )
    feature_names = [str(f) for f in meta["feature_names"]]
    vocabularies = {
        name: Vocabulary(name, tuple(str(t) for t in np.asarray(archive[f"vocab_{j}"])))
        for j, name in enumerate(feature_names)
    }
    missing = [f for f in spec.feature_names if f not in vocabularies]
    if missing:
        raise ModelFileError(
            f"{path} is damaged: the spec's feature(s) {missing} have no vocabulary (the file "
            f"has {feature_names})"
        )
    sizes = {f: len(v) for f, v in vocabularies.items()}
    item_tokens = {
        name: _ragged(
            path,
            archive[f"tokens_offsets_{j}"],
            archive[f"tokens_values_{j}"],
            m,
            sizes.get(name, 0),
            f"item tokens of feature {name!r}",
        )
        for j, name in enumerate(str(f) for f in meta["token_features"])
    }
    has_histories = bool(meta["has_histories"])
    if has_histories:
        histories = _ragged(
            path, archive["history_offsets"], archive["history_items"], n, m, "rated movies"
        )
    else:
        histories = Ragged(np.zeros(n + 1, np.int64), np.zeros(0, np.int32))
    names = [str(x) for x in meta["params"]]
    shapes = spec.param_shapes(sizes)
    if sorted(names) != sorted(shapes):
        raise ModelFileError(
            f"{path} is damaged: its parameters {names} are not the spec's {list(shapes)}"
        )
    params = {}
    for i, name in enumerate(names):
        arr = np.asarray(archive[f"param_{i}"])
        if arr.shape != shapes[name] or arr.dtype != np.float32:
            raise ModelFileError(
                f"{path} is damaged: parameter {name!r} is {arr.dtype} {arr.shape}, expected "
                f"float32 {shapes[name]}"
            )
        params[name] = arr
    if len(vocabularies[spec.item_feature]) != m:
        raise ModelFileError(
            f"{path} is damaged: the item feature {spec.item_feature!r} has "
            f"{len(vocabularies[spec.item_feature])} tokens for {m} items"
        )
    protocol = meta["protocol"]
    if protocol not in PROTOCOLS:
        raise ModelFileError(f"{path} is damaged: protocol {protocol!r} is not one of {PROTOCOLS}")
    user_ids, item_ids = _read_ids(path, archive, n, m)
    model = SoftmaxModel.__new__(SoftmaxModel)
    SoftmaxModel.__init__(
        model,
        dict(spec.feature_dims),
        spec.hidden_dims,
        spec.activation,
        spec.combiner,
        loss=spec.loss,
        hidden_scale=spec.hidden_scale,
    )
    model.spec = spec  # item_feature too
    model._params = params
    model._protocol = protocol
    model._split_seed = int(meta["split_seed"])
    model._split_users = int(meta["split_users"])
    batch_size = meta.get("batch_size")
    model._batch_size = None if batch_size is None else int(batch_size)
    model._vocab_sizes = {f: sizes[f] for f in spec.feature_names}
    model._resume_step = int(meta["step"])
    model.history = _read_history(meta)
    model._data = HistoryFeatures(
        histories, m, vocabularies, item_tokens, str(meta["item_feature"])
    )
    model._has_histories = has_histories
    model.catalog = _read_catalog(path, archive, m)
    model.user_ids = user_ids
    model.item_ids = item_ids
    model._num_train_ratings = meta.get("num_train_ratings")
    scale = meta.get("rating_scale")
    model._rating_scale = None if scale is None else (float(scale[0]), float(scale[1]))
    return model
