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

Each model class writes and reads its own entries (`Model.to_state` / `Model.from_state` in
`cfcore.models.base`); this module keeps the container: the format and its version, the atomic
write, the damage checks, and the registry that maps a file's kind and class name to a class.

The embeddings are stored bit for bit, so a model trained on JAX and loaded for TensorFlow scores
identically up to each framework's float32 rounding. Optimizer state is not stored (it is each
framework's own structure): a loaded model continues training with a fresh one. A file from a
newer cfcore (a larger `format_version`) is refused with both versions named; any other file
gives `ModelFileError`.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "cfcore-model"
FORMAT_VERSION = 1


MODEL_KINDS: dict[str, dict[str, type]] = {}
"""Model classes by file kind (`spec["kind"]`: "mf", "softmax") and class name, filled by
`register_model` when `cfcore.models` is imported: the container never imports the models."""

MODEL_CLASSES: dict[str, type] = {}
"""Model classes by name (every kind together)."""


def register_model(cls: type) -> type:
    """Class decorator: makes `cls` (a `cfcore.models.base.Model` with its `kind`) loadable."""
    kind = getattr(cls, "kind", "")
    if not kind:
        raise TypeError(f"{cls.__name__} has no file kind: set the class attribute `kind`")
    MODEL_KINDS.setdefault(kind, {})[cls.__name__] = cls
    MODEL_CLASSES[cls.__name__] = cls
    return cls


class ModelFileError(ValueError):
    """A file that is not a cfcore model, is damaged, or comes from a newer cfcore."""


class StateReader:
    """An opened model file as a model class reads it back.

    Attributes:
        path: the file, for messages.
        meta: its metadata (a dict from JSON).
    """

    def __init__(self, path: Path, archive: Any, meta: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
        self._archive = archive

    def __getitem__(self, name: str) -> np.ndarray:
        return self._archive[name]  # KeyError: `load` reports the missing entry

    def __contains__(self, name: object) -> bool:
        return name in self._archive.files

    def damaged(self, why: str) -> ModelFileError:
        """The error for a file whose content does not check out (`why` says what)."""
        return ModelFileError(f"{self.path} is damaged: {why}")


def _json_bytes(obj: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(obj, allow_nan=False).encode("utf-8"), dtype=np.uint8)


def save(model: Any, path: str | os.PathLike[str], *, include_ratings: bool = True) -> Path:
    """Writes `model` to `path` atomically (a reader never sees half a file).

    Args:
        model: a fitted (or loaded) model (`MatrixFactorization`, `RegularizedMF`,
            `SoftmaxModel`, or any registered `cfcore.models.base.Model`).
        path: the file to write; the `.npz` format whatever the suffix.
        include_ratings: store the training ratings (softmax: each user's rated movies) too.

    Returns:
        The path written.
    """
    from . import __version__
    from .io.atomic import atomic_write

    fields, arrays = model.to_state(include_ratings=include_ratings)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "cfcore_version": __version__}
    arrays = {"metadata": _json_bytes({**meta, **fields}), **arrays}

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
        cls = _model_class(path, meta)
        return cls.from_state(StateReader(path, archive, meta))
    except ModelFileError:
        raise
    except KeyError as err:
        raise ModelFileError(f"{path} is damaged: the entry or field {err} is missing") from err
    except (TypeError, ValueError, RatingsError) as err:
        raise ModelFileError(f"{path} is damaged: {type(err).__name__}: {err}") from err


def _model_class(path: Path, meta: dict[str, Any]) -> Any:
    """The registered class of a file, by its spec's kind (files before kinds: "mf") and name."""
    kind = dict(meta["spec"]).get("kind", "mf")
    classes = MODEL_KINDS.get(kind)
    if classes is None:
        raise ModelFileError(
            f"{path} holds a model of kind {kind!r}, which cfcore.load cannot read "
            f"(it reads {sorted(MODEL_KINDS)})"
        )
    cls = classes.get(meta["model"])
    if cls is None:
        raise ModelFileError(
            f"{path} holds a {meta['model']!r} model of kind {kind!r}; cfcore.load reads "
            f"{sorted(classes)}"
        )
    return cls
