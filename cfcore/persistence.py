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

Sharded checkpoints (`save_sharded`, `model.save(folder, sharded=True)`): a folder holding
`model.npz`, the index (the file above without the parameter tables, with `format_version` 3
and `shards`: `{"save_id": id, "count": k, "files": [...], "entries": {entry: shape}}`), and the
shard folder `shards-<id>/` with one `shard-<j>-of-<k>.npz` per device, each holding the rows
`start:stop` of every table entry (the entry's name) and `metadata` (`format` "cfcore-shard",
`format_version` 2, `save_id`, `index` j, `count` k, `rows` `{entry: [start, stop]}`). Every
process writes the shards of its own devices, copied to the host one device at a time: no
process ever holds a whole table.

A save is all-or-nothing. Each save draws a new id (16 hex digits, drawn by the primary process
and sent to the others with `Placement.broadcast_token`, so that every process writes into the
same new shard folder), writes its shards beside the previous checkpoint's, waits for every
process, and only then renames the new index over `model.npz` (one atomic step, after which the
new checkpoint is the current one). A save killed at any point before that rename leaves the
previous checkpoint, its index and its shard folder untouched; once its index is in place, the
saving process removes every other shard folder (older checkpoints, and those of saves killed
part-way) and the shard files of the version 2 layout. One writer per folder at a time: a save
removes the shard folder of a concurrent save into the same folder, and a load that overlaps the
removal may be refused (loading again reads the new checkpoint). `load` refuses, with a
`ModelFileError` naming the file, a shard whose save id, position or count is not the one the
index names (a shard copied from another checkpoint, of the same shapes or not), a missing shard
or shard folder, and a folder holding shard folders but no index.

Version 2 indexes (cfcore before all-or-nothing saves: no save id, the shards beside
`model.npz`, shard `format_version` 1) still load; a save into such a folder removes those shard
files once its own index is in place.

`load(folder)` reads a folder as one model (the single-device form: the tables assembled on the
host, each row checked to come from exactly one shard); `load(folder, devices=k)` puts it
straight onto k devices of any count (`ShardFiles`: each device's rows read from the shard files
that overlap them, never a whole table on the host; in a multi-process run each process reads
its own devices' rows) and the model's training session holds them, so that
`fit(..., devices=k)` continues without placing them again. Plain NumPy reads a shard
(`numpy.load`), so a TensorFlow or PyTorch user needs no JAX.

The embeddings are stored bit for bit, so a model trained on JAX and loaded for TensorFlow scores
identically up to each framework's float32 rounding. Optimizer state is not stored (it is each
framework's own structure): a loaded model continues training with a fresh one. A file from a
newer cfcore (a larger `format_version`) is refused with both versions named; any other file
gives `ModelFileError`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import zipfile
import zlib
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .errors import ArgumentTypeError, ArgumentValueError, CfcoreError, FileAccessError

FORMAT = "cfcore-model"
FORMAT_VERSION = 1
SHARDED_FORMAT_VERSION = 3
"""The version of a sharded checkpoint's index (`save_sharded`): a cfcore that reads only single
files, or only the shards beside the index (version 2), refuses it as newer instead of calling it
damaged. Version 2 indexes (shards beside the index, no save id) still load."""
SHARD_FORMAT = "cfcore-shard"
SHARD_FORMAT_VERSION = 2
"""The version of a shard file: 2 carries its save's id (`save_id`), 1 (under a version 2 index)
does not."""
INDEX_NAME = "model.npz"
GENERATION_PREFIX = "shards-"
"""A sharded checkpoint's shards lie in `folder/shards-<save id>/` (one folder per save)."""

# A save id: what `save_sharded` draws (16 hex digits); a longer one is read too.
_SAVE_ID = re.compile(r"[0-9a-f]{8,64}")
# A generation folder, and a shard file (or its temporary) of the version 2 layout, for the
# clean-up after a save: nothing else in the folder is touched.
_GENERATION = re.compile(re.escape(GENERATION_PREFIX) + r"[0-9a-f]{8,64}")
_V2_SHARD = re.compile(r"shard-\d{5,}-of-\d{5,}\.npz")
_V2_SHARD_TMP = re.compile(r"\.(shard-\d{5,}-of-\d{5,}\.npz)\..+\.tmp")


MODEL_KINDS: dict[str, dict[str, Any]] = {}
"""Model classes by file kind (`spec["kind"]`: "mf", "softmax") and class name, filled by
`register_model` when `cfcore.models` is imported: the container never imports the models."""

MODEL_CLASSES: dict[str, Any] = {}
"""Model classes by name (every kind together)."""

_ModelT = TypeVar("_ModelT", bound=type)


def register_model(cls: _ModelT) -> _ModelT:
    """Class decorator: makes `cls` (a `cfcore.models.base.Model` with its `kind`) loadable."""
    kind = getattr(cls, "kind", "")
    if not kind:
        raise ArgumentTypeError(f"{cls.__name__} has no file kind: set the class attribute `kind`")
    MODEL_KINDS.setdefault(kind, {})[cls.__name__] = cls
    MODEL_CLASSES[cls.__name__] = cls
    return cls


class ModelFileError(CfcoreError, ValueError):
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

    return atomic_write(path, _npz_writer(arrays))


def save_sharded(
    model: Any, folder: str | os.PathLike[str], *, include_ratings: bool = True
) -> Path:
    """Writes `model` as a sharded checkpoint: `folder/model.npz` and one file per shard in
    `folder/shards-<save id>/`, all or nothing (see the module's docstring).

    Each table is written as the shards the model's training session holds (one per device for
    `fit(..., devices=k)`, one for single-device training), each copied from its own device:
    the tables are never gathered on one host. The shards go into a new shard folder beside the
    previous checkpoint's; the index, renamed into place last, makes them current, and the
    previous checkpoint stays whole and loadable until then (a save killed part-way leaves it
    as it was). Then the stale shard folders are removed.

    In a multi-process run every process holding devices of the model's session calls it with
    the same folder (a shared file system): the first draws the save id and sends it to the
    others (`Placement.broadcast_token`), each writes its own devices' shards, they wait for
    each other (`Placement.barrier`), the first writes `model.npz` and removes the stale shard
    folders, and none returns before that, so the folder is whole when the index appears and
    when any of them goes on (to `load` it, say). A process that fails to write leaves the
    others waiting, as a failed training step would.

    Args:
        model: a fitted model (or a loaded one: one shard then).
        folder: the folder to write (created if needed). Only one save into it at a time: a
            save removes every other shard folder there once its index is in place.
        include_ratings: as in `save`.

    Returns:
        The folder.
    """
    from . import __version__
    from .io.atomic import atomic_write, check_output_path
    from .train.placement import Placement

    text = os.fsdecode(os.fspath(folder))
    if not text.strip():
        # Path("") is the current folder: never write a checkpoint there by accident.
        raise FileAccessError(f"the checkpoint folder is empty ({text!r}): give a folder name")
    check_output_path(Path(text) / "model.npz")  # a NUL byte, under a file, no permission
    folder = Path(text)
    if folder.exists() and not folder.is_dir():
        raise FileAccessError(f"cannot write a sharded checkpoint to {folder}: it is a file")
    folder.mkdir(parents=True, exist_ok=True)
    session = model._session
    if session is not None:
        placement, native = session.placement, session.params
        host_shards = placement.host_shards(native)
    else:
        # A loaded model without a session: its tables are on the host already, one shard.
        placement, native = Placement(None), model.params_numpy()
        host_shards = [(0, 1, {k: (0, v.shape[0], v) for k, v in native.items()})]
    shapes = placement.shapes(native)
    # The model's state with stand-ins for its tables (zero-stride views of one float each, so
    # no table is materialised): the entries that are stand-ins are the sharded ones.
    stand_ins = {k: np.broadcast_to(np.zeros((), np.float32), v) for k, v in shapes.items()}
    kept = model._params
    model._params = stand_ins
    try:
        fields, arrays = model.to_state(include_ratings=include_ratings)
    finally:
        model._params = kept
    entries: dict[str, str] = {}
    for entry, a in list(arrays.items()):
        for name, stand_in in stand_ins.items():
            if isinstance(a, np.ndarray) and np.shares_memory(a, stand_in):
                entries[entry] = name
                del arrays[entry]
    missing = set(stand_ins) - set(entries.values())
    if missing:
        raise ArgumentTypeError(
            f"{type(model).__name__} writes its parameters {sorted(missing)} in another form "
            "than the arrays themselves: it cannot be saved sharded; use model.save(path)"
        )
    # The save's id: drawn by the primary and sent to every writer, so that all of them write
    # into one new generation folder and stamp their shards with it.
    save_id = placement.broadcast_token(secrets.token_hex(8).encode("ascii")).decode("ascii")
    generation = folder / f"{GENERATION_PREFIX}{save_id}"
    count = 1
    for j, count, rows in host_shards:
        meta = {
            "format": SHARD_FORMAT,
            "format_version": SHARD_FORMAT_VERSION,
            "save_id": save_id,
            "index": j,
            "count": count,
            "rows": {e: list(rows[p][:2]) for e, p in entries.items()},
        }
        shard = {"metadata": _json_bytes(meta), **{e: rows[p][2] for e, p in entries.items()}}
        atomic_write(generation / _shard_name(j, count), _npz_writer(shard))
    # Several processes: the index, which names every process's shards, is written once they
    # all are, and no process returns before it is, so that a load right after the save (in
    # any of them) finds the checkpoint whole.
    placement.barrier()
    if placement.is_primary:
        meta = {
            "format": FORMAT,
            "format_version": SHARDED_FORMAT_VERSION,
            "cfcore_version": __version__,
            **fields,
            "shards": {
                "save_id": save_id,
                "count": count,
                "files": [_shard_name(j, count) for j in range(count)],
                "entries": {e: list(shapes[p]) for e, p in entries.items()},
            },
        }
        # The one step that makes the new generation current: until this rename the index
        # names the previous one, which nothing above has touched.
        atomic_write(folder / INDEX_NAME, _npz_writer({"metadata": _json_bytes(meta), **arrays}))
        remove_stale_generations(folder, keep=generation.name)
    placement.barrier()
    return folder


def _shard_name(j: int, count: int) -> str:
    return f"shard-{j:05d}-of-{count:05d}.npz"


def remove_stale_generations(folder: Path, *, keep: str) -> list[Path]:
    """Removes what earlier sharded saves into `folder` left: every generation folder but `keep`
    (older complete ones, and those of saves killed before their index), and the shard files of
    the version 2 layout (beside the index) with their temporaries whose writer is gone.

    Called by `save_sharded` once the index naming `keep` is in place, in one process. Nothing
    else in the folder is touched; what cannot be removed is left for the next save.

    Returns:
        What was removed.
    """
    from .io.atomic import remove_stale_temporaries

    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        path = Path(entry.path)
        try:
            if entry.name == keep:
                continue
            if _GENERATION.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
            elif _V2_SHARD.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                path.unlink()
                removed.append(path)
            elif (tmp := _V2_SHARD_TMP.fullmatch(entry.name)) is not None:
                removed += remove_stale_temporaries(folder / tmp.group(1))
        except OSError:
            continue
    return removed


def _npz_writer(arrays: dict[str, np.ndarray]) -> Any:
    def write(tmp: Path) -> None:
        # A file object keeps NumPy from appending ".npz" to the temporary name.
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)  # pyright: ignore[reportArgumentType]

    return write


class _ShardedArchive:
    """A sharded checkpoint's index archive with its table entries added (`tables`: the tables
    assembled from the shards, or stand-ins of their shapes)."""

    def __init__(self, archive: Any, tables: dict[str, np.ndarray]) -> None:
        self._archive = archive
        self._tables = tables
        self.files = list(archive.files) + list(tables)

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self._tables:
            return self._tables[name]
        return self._archive[name]


class ShardFiles:
    """The shard files of a sharded checkpoint, read a row range at a time.

    Opening reads the index's shard table and each shard's metadata and member headers (no
    table data) and checks that every shard is the one the index names (its save id, position
    and count) and that every row of every table entry is in exactly one shard with the shape
    its rows declare. `rows` then reads only the shards that overlap a range.

    Args:
        folder: the checkpoint's folder.
        shards: the index's `shards` field (`{"save_id", "count", "files", "entries"}`; no
            `save_id` in a version 2 index, whose shards lie beside it).
        version: the index's `format_version` (`SHARDED_FORMAT_VERSION`, or 2).

    Attributes:
        entries: each table entry's full shape `[N, ...]`.
        save_id: the save's id (None for a version 2 index).

    Raises:
        ModelFileError: the shard table does not parse; the generation folder or a shard file
            is missing; a shard is not a cfcore shard, belongs to another save (its save id is
            not the index's) or to another position; or its rows do not tile a table exactly
            once.
    """

    def __init__(
        self, folder: Path, shards: dict[str, Any], version: int = SHARDED_FORMAT_VERSION
    ) -> None:
        from .io.npz import load_arrays, member_headers

        self.folder = folder
        try:
            entries = {str(e): tuple(int(x) for x in s) for e, s in dict(shards["entries"]).items()}
            files = [str(f) for f in shards["files"]]
            count = int(shards["count"])
            save_id = None if version < SHARDED_FORMAT_VERSION else shards["save_id"]
        except (KeyError, TypeError, ValueError) as err:
            raise ModelFileError(
                f"{folder} is damaged: its shard list does not parse ({err!r})"
            ) from err
        if len(files) != count or any(Path(f).name != f for f in files):
            raise ModelFileError(
                f"{folder} is damaged: its index lists {files!r} for {count} shards"
            )
        where = folder
        if save_id is not None:
            if not isinstance(save_id, str) or not _SAVE_ID.fullmatch(save_id):
                raise ModelFileError(f"{folder} is damaged: its save id {save_id!r} is not valid")
            where = folder / f"{GENERATION_PREFIX}{save_id}"
            if not where.is_dir():
                raise ModelFileError(
                    f"{folder} is incomplete: the shard folder {where.name} its index names is "
                    "missing"
                )
        self.entries = entries
        self.save_id: str | None = save_id
        # Each entry's non-empty row ranges and the file holding them, in row order.
        self._ranges: dict[str, list[tuple[int, int, Path]]] = {e: [] for e in entries}
        self._headers: dict[Path, dict[str, Any]] = {}
        for j, name in enumerate(files):
            path = where / name
            if not path.is_file():
                shown = path.relative_to(folder).as_posix()
                raise ModelFileError(f"{folder} is incomplete: the shard file {shown} is missing")
            headers = member_headers(path, ModelFileError)
            self._headers[path] = headers
            arrays = load_arrays(path, ModelFileError, names=["metadata"])
            try:
                meta = json.loads(arrays["metadata"].tobytes().decode("utf-8"))
                rows = {str(e): (int(a), int(b)) for e, (a, b) in dict(meta["rows"]).items()}
            except (KeyError, TypeError, ValueError, UnicodeDecodeError) as err:
                raise ModelFileError(
                    f"{path} is damaged: its metadata does not parse ({err})"
                ) from err
            if meta.get("format") != SHARD_FORMAT:
                raise ModelFileError(
                    f"{path} is not a cfcore shard (format {meta.get('format')!r})"
                )
            if save_id is not None and meta.get("save_id") != save_id:
                raise ModelFileError(
                    f"{path} belongs to another checkpoint: its save id is "
                    f"{meta.get('save_id')!r}, the index's is {save_id!r}"
                )
            if (meta.get("index"), meta.get("count")) != (j, count):
                raise ModelFileError(
                    f"{path} is damaged: it holds shard {meta.get('index')!r} of "
                    f"{meta.get('count')!r}, the index names it shard {j} of {count}"
                )
            for entry, shape in entries.items():
                start, stop = rows.get(entry, (0, -1))
                if entry not in headers or not 0 <= start <= stop <= shape[0]:
                    raise ModelFileError(f"{path} is damaged: no valid rows of {entry!r}")
                held = headers[entry].shape
                if held != (stop - start, *shape[1:]):
                    raise ModelFileError(
                        f"{path} is damaged: {entry!r} holds {held}, expected "
                        f"{(stop - start, *shape[1:])} for rows {start}:{stop}"
                    )
                if stop > start:
                    self._ranges[entry].append((start, stop, path))
        for entry, ranges in self._ranges.items():
            ranges.sort(key=lambda r: (r[0], r[1]))
            covered = 0  # rows 0:covered are in exactly one shard so far
            for start, stop, _ in ranges:
                if start != covered:
                    row = min(start, covered)  # a gap's first row, or an overlap's
                    times = sum(lo <= row < hi for lo, hi, _ in ranges)
                    raise ModelFileError(
                        f"{folder} is damaged: row {row} of {entry!r} is in {times} shards "
                        "(expected exactly one)"
                    )
                covered = stop
            if covered != entries[entry][0]:
                raise ModelFileError(
                    f"{folder} is damaged: row {covered} of {entry!r} is in 0 shards "
                    "(expected exactly one)"
                )
        # The last shard member read: the next range (the next device's) usually starts there.
        self._last: tuple[Path, str, np.ndarray] | None = None

    def _member(self, path: Path, entry: str) -> np.ndarray:
        from .io.npz import read_member

        if self._last is None or self._last[:2] != (path, entry):
            self._last = None  # let the previous block go before reading the next
            header = self._headers[path][entry]
            block = read_member(path, entry, ModelFileError, header)
            self._last = (path, entry, block)
        return self._last[2]

    def rows(self, entry: str, start: int, stop: int) -> np.ndarray:
        """Rows `start:stop` of `entry`, float32 `[stop - start, ...]`, from the shards that
        hold them (a range inside one shard: a view of that shard's block)."""
        shape = self.entries[entry]
        if not 0 <= start <= stop <= shape[0]:
            raise ArgumentValueError(f"rows {start}:{stop} are outside {entry!r}'s {shape[0]} rows")
        out: np.ndarray | None = None
        for lo, hi, path in self._ranges[entry]:
            if hi <= start or lo >= stop:
                continue
            block = self._member(path, entry)
            a, b = max(lo, start), min(hi, stop)
            if out is None and lo <= start and stop <= hi:
                return np.asarray(block[start - lo : stop - lo], np.float32)
            if out is None:
                out = np.empty((stop - start, *shape[1:]), np.float32)
            out[a - start : b - start] = block[a - lo : b - lo]
        if out is None:  # an empty range
            return np.zeros((0, *shape[1:]), np.float32)
        return out

    def close(self) -> None:
        """Lets go of the last shard block read."""
        self._last = None


def _assemble(folder: Path, shards: dict[str, Any], version: int) -> dict[str, np.ndarray]:
    """Every table entry of a sharded checkpoint from its shard files, each row exactly once
    (the single-device `load`)."""
    files = ShardFiles(folder, shards, version)
    out = {e: files.rows(e, 0, shape[0]) for e, shape in files.entries.items()}
    files.close()
    return out


def load(path: str | os.PathLike[str], *, backend: Any = None, devices: Any = None) -> Any:
    """Reads a model written by `model.save(path)` (or a sharded checkpoint's folder).

    The returned model has its `spec`, `embeddings`, `history`, `step`, `catalog`, vocabularies
    and (if saved) training ratings; it is not tied to a backend: `recommend` / `fold_in` /
    `fit` use whichever is asked for, and `fit` continues from the loaded embeddings (with a
    fresh optimizer state).

    With `devices`, the parameters go straight onto the devices, row-sharded as
    `fit(..., devices=devices, backend=backend)` shards them (any device count, whatever the
    count the checkpoint was saved from): each device receives rows `j·⌈N/k⌉:(j+1)·⌈N/k⌉` of
    each table, read from the shard files that overlap them, so no whole table is assembled on
    the host (a single model file, also accepted, holds its tables whole: they are read whole
    and placed). The model then holds them as its training session: `fit(..., devices=devices)`
    on that backend continues from them without placing them again (with a fresh optimizer
    state, as after any load), `save(folder, sharded=True)` writes them again per device, and
    `embeddings` / `params_numpy()` gather them to the host when asked.

    Args:
        path: the model file, or the folder of a sharded checkpoint.
        backend: with `devices`, the backend to place on ("jax", "tf", an instance, or None:
            `CFCORE_BACKEND`, else "jax"), as `fit` takes it; pass the same to `fit` to continue.
        devices: None (the tables on the host, as `model.save` wrote them), or an int k (the
            backend's first k devices) or a list of the framework's devices, as `fit` takes them.

    Raises:
        ModelFileError: the file is missing, not a cfcore model (another `.npz`, or not an
            archive at all), damaged (including arrays whose declared shapes disagree with the
            metadata: checked before they are decompressed), or written by a newer cfcore
            (format version above `FORMAT_VERSION`); a sharded checkpoint with a shard missing
            or from another save, or shard folders without an index.
        FileAccessError: the file exists but cannot be read (permission).
        ResourceLimitError: the arrays the file declares would not fit in memory.
        ValueError: `backend` without `devices`, or `devices` out of range or not the
            backend's (as in `fit`).
        NotSupportedError: `devices` on a backend that does not shard (PyTorch, the NumPy
            reference), as in `fit`.
    """
    from .io.npz import check_total_size, member_headers

    placement = None
    if devices is not None:
        from .backend.registry import get_backend
        from .train.sharding import make_placement

        # Refused before any file is read, as `fit` refuses them.
        placement = make_placement(get_backend(backend), devices)
    elif backend is not None:
        raise ArgumentValueError(
            f"backend={backend!r} without devices: a model loads on the host and fit() takes "
            "the backend; pass devices= too to place the tables on that backend's devices now"
        )
    path = Path(path)
    folder = None
    if path.is_dir() and (path / INDEX_NAME).is_file():
        # A sharded checkpoint (`save_sharded`): its index, the tables from the shards.
        folder, path = path, path / INDEX_NAME
    elif path.is_dir() and _holds_generations(path):
        raise ModelFileError(
            f"{path} holds no complete sharded checkpoint: its index {INDEX_NAME} is missing "
            "(the shard folders there are from a save that did not finish)"
        )
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    if not os.access(path, os.R_OK):
        raise FileAccessError(f"cannot read the model file {path}: permission denied")
    # Declared sizes first: a small crafted file must not inflate to gigabytes before a check.
    headers = member_headers(path, ModelFileError)
    check_total_size(path, headers)
    try:
        archive = np.load(path, allow_pickle=False)
    except PermissionError as err:
        raise FileAccessError(f"cannot read the model file {path}: permission denied") from err
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
            _check_declared_shapes(path, archive, headers)
            return _read(path, archive, folder, placement)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
            raise ModelFileError(f"{path} is damaged: {err}") from err
        except KeyError as err:
            raise ModelFileError(f"{path} is damaged: the entry {err} is missing") from err


def _holds_generations(folder: Path) -> bool:
    """Whether `folder` holds shard folders of sharded saves (`shards-<save id>`)."""
    try:
        return any(_GENERATION.fullmatch(entry.name) for entry in os.scandir(folder))
    except OSError:
        return False


_MAX_METADATA_BYTES = 64 << 20


def _check_declared_shapes(path: Path, archive: Any, headers: dict[str, Any]) -> None:
    """Compares the shapes the members declare with the metadata's, before reading the members.

    Only the metadata (at most 64 MiB) is inflated here. Metadata that does not parse is left to
    `_read`, which names what is wrong.
    """
    meta_h = headers.get("metadata")
    if meta_h is None:
        return
    if meta_h.nbytes > _MAX_METADATA_BYTES:
        raise ModelFileError(
            f"{path} is damaged: its metadata declares {meta_h.nbytes} bytes (at most "
            f"{_MAX_METADATA_BYTES} expected)"
        )
    try:
        meta = json.loads(archive["metadata"].tobytes().decode("utf-8"))
        n, m, d = (int(x) for x in meta["shape"])
        cls = _model_class(path, meta)
        expected = cls.declared_shapes(meta)
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        return
    for name, shape in expected.items():
        h = headers.get(name)
        if h is not None and h.shape != shape:
            raise ModelFileError(
                f"{path} is damaged: the shapes its arrays declare do not match the recorded "
                f"shape N={n}, M={m}, d={d}: {name!r} declares {h.shape}, expected {shape}"
            )


def _read(path: Path, archive: Any, folder: Path | None = None, placement: Any = None) -> Any:
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
    # A sharded checkpoint's index is version 2 or 3 *with* its shard table; any other version
    # above 1 (a single file with version 2 included) comes from a newer cfcore.
    is_index = version in (2, SHARDED_FORMAT_VERSION) and "shards" in meta
    if version > FORMAT_VERSION and not is_index:
        raise ModelFileError(
            f"{path} has model file format version {version}, newer than this cfcore supports "
            f"(version {FORMAT_VERSION}) (sharded checkpoint indexes: versions 2 and "
            f"{SHARDED_FORMAT_VERSION}); it was written by cfcore {meta.get('cfcore_version')}. "
            "Upgrade cfcore to read it"
        )
    shard_files: ShardFiles | None = None
    stand_ins: dict[str, np.ndarray] = {}
    if is_index:
        if folder is None:
            raise ModelFileError(
                f"{path} is the index of a sharded checkpoint: load its folder ({path.parent}), "
                "with the shard files beside it"
            )
        if placement is None:
            archive = _ShardedArchive(archive, _assemble(folder, meta["shards"], version))
        else:
            # The model is rebuilt around zero-stride stand-ins of its tables (no table on the
            # host); the placement then reads each device's rows from the shard files.
            shard_files = ShardFiles(folder, meta["shards"], version)
            stand_ins = {
                e: np.broadcast_to(np.zeros((), np.float32), shape)
                for e, shape in shard_files.entries.items()
            }
            archive = _ShardedArchive(archive, stand_ins)
    try:
        cls = _model_class(path, meta)
        model = cls.from_state(StateReader(folder or path, archive, meta))
    except ModelFileError:
        raise
    except KeyError as err:
        raise ModelFileError(f"{path} is damaged: the entry or field {err} is missing") from err
    except (TypeError, ValueError, RatingsError) as err:
        # The built-in kind ("ValueError"), not cfcore's subclass of it, as before.
        kind = next(c.__name__ for c in type(err).__mro__ if c.__module__ == "builtins")
        raise ModelFileError(f"{path} is damaged: {kind}: {err}") from err
    if placement is not None:
        _place(model, placement, shard_files, stand_ins)
    return model


def _place(
    model: Any, placement: Any, files: ShardFiles | None, stand_ins: dict[str, np.ndarray]
) -> None:
    """Puts a loaded model's parameters on `placement`'s devices and keeps them there as its
    session: from the shard `files` (the model's parameters are then the `stand_ins` of their
    entries), or from its host parameters (a single model file)."""
    params = model._params
    if files is None:
        shapes = {k: tuple(v.shape) for k, v in params.items()}
        native = placement.params_from_rows(shapes, lambda k, lo, hi: params[k][lo:hi])
    else:
        entry = {}
        for name, a in params.items():
            for e, stand_in in stand_ins.items():
                if np.shares_memory(a, stand_in):
                    entry[name] = e
        kept = sorted(set(params) - set(entry))
        if kept:
            raise ArgumentTypeError(
                f"{type(model).__name__} reads its parameters {kept} in another form than the "
                "shards' arrays: it cannot be loaded onto devices; load it without devices="
            )
        shapes = {k: files.entries[e] for k, e in entry.items()}
        try:
            native = placement.params_from_rows(
                shapes, lambda k, lo, hi: files.rows(entry[k], lo, hi)
            )
        finally:
            files.close()
    model._place(placement.backend, placement, native)


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
