"""Where training data and parameters live: the one place the trainer asks.

Single-device training puts everything on the backend's default device. Multi-device training
(row-sharded tables, batches split over devices) is a different `Placement` handed to the same
trainer: nothing else in core decides where arrays go.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..backend.capabilities import CSR_CAPABILITIES, has_capability
from ..backend.memo import shared
from ..backend.sharding import (
    COUNT,
    RATING_KEYS,
    RowSharding,
    pad_rows,
    padded_rows,
)
from ..backend.sharding import (
    TOKEN_BYTES as TOKEN_BYTES,  # importable from here as before
)
from ..errors import ArgumentValueError, NotSupportedError

# The trainers a model asks a placement for (`Placement.check_trainer`), and what each is:
# declared by the model classes themselves (`cfcore.models.base.Model.trainers`), never listed here.
_TRAINER_KINDS: dict[str, str] = {}
_TRAINED: dict[str, list[str]] = {}  # the model classes that declared each


def declare_trainer(trainer: str, description: str, model: str) -> None:
    """Makes `trainer` a kind a model may ask a placement for (its first description stays).

    Args:
        trainer: the name a model's `fit` passes on (e.g. "gradient", "als").
        description: what it runs, for messages (e.g. "gradient steps").
        model: the class name of a model that runs it, for messages.
    """
    _TRAINER_KINDS.setdefault(trainer, description)
    models = _TRAINED.setdefault(trainer, [])
    if model not in models:
        models.append(model)


def trainer_kinds() -> dict[str, str]:
    """Every declared trainer kind and what it runs (a copy)."""
    return dict(_TRAINER_KINDS)


THREADED_SIDES_MIN = 1 << 20
"""Observations (both sides together) from which `Placement.side_blocks` builds the two sides
on two threads: below, a thread's start costs more than it saves."""


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # (not on every platform)
        return os.cpu_count() or 1


class Placement:
    """Puts host (NumPy) trees on the backend's default device.

    Args:
        backend: the backend whose arrays are made.
    """

    # Whether full-batch steps may use the backend's precomputed pair layout (its kernel
    # assumes every pair's rows live on one device).
    pair_layout = True
    # The trainers (declared kinds, `trainer_kinds()`) this placement runs: None for all of them. A sharded
    # placement that runs only some lists them, and the others are refused before training.
    trainers: tuple[str, ...] | None = None
    # Whether `half_sweep(half, observed=True)` runs a `make_half_sweep(observed=True)` half,
    # returning its `(new rows, observed loss over every device's rows)`: then an iALS sweep
    # takes its objective from the user half instead of a pass of its own.
    observed_halves = True

    def check_trainer(self, trainer: str, model: str) -> None:
        """Refuses, before anything is placed, a trainer this placement does not run.

        Args:
            trainer: a declared kind (`trainer_kinds()`): what the model's `fit` is about to run.
            model: the model's class name, for the message.

        Raises:
            ValueError: `trainer` is not a declared kind.
            NotSupportedError: this placement does not run `trainer`; the message names the
                model, the backend and what does shard there.
        """
        kinds = _TRAINER_KINDS
        if trainer not in kinds:
            raise ArgumentValueError(f"trainer must be one of {sorted(kinds)}, got {trainer!r}")
        if self.trainers is None or trainer in self.trainers:
            return
        name = getattr(self.backend, "name", type(self.backend).__name__)
        runs = "; ".join(
            f"{kinds.get(t, t)} of {' / '.join(_TRAINED.get(t, ()))}" for t in self.trainers
        )
        raise NotSupportedError(
            f"{model} ({kinds[trainer]}) cannot train on several devices on backend "
            f"{name!r} yet: there devices= shards only {runs}. Pass devices=None (one device), "
            "or backend='jax', which shards every model"
        )

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    @property
    def devices_key(self) -> Any:
        """Which devices it spreads over (None: the backend's default device)."""
        return None

    @property
    def key(self) -> Any:
        """What a compiled chunk built for this placement depends on (None: nothing)."""
        return None

    def view(self, params: dict[str, Any], batch: Any) -> tuple[dict[str, Any], Any]:
        """The parameters and batch as the loss sees them, inside the compiled step (here:
        unchanged; a placement that pads arrays strips the padding)."""
        return params, batch

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        """A context the step is traced in (here: none). A sharded placement's tells the
        backend's kernels to run their multi-device forms (e.g. shard_map gathers)."""
        return contextlib.nullcontext()

    def placed(
        self, fn: Callable[[dict[str, Any], Any], Any]
    ) -> Callable[[dict[str, Any], Any], Any]:
        """`fn(params, batch)` (a loss, an objective's terms) on the placed arrays: traced in
        `scope()`, on the `view` of the parameters and batch."""

        def run(params: dict[str, Any], batch: Any) -> Any:
            with self.scope():
                return fn(*self.view(params, batch))

        return run

    def row_blocks(self, build: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """The host row blocks of an ALS half-sweep: `build(*args, **kwargs)`
        (`cfcore.data.row_blocks.row_blocks`); a sharded placement builds each device's own.

        Where the solver's half-sweeps run on the rows compressed here (`csr_rows`), the CSR
        layout instead (`row_csr(*args)`): its half-sweep needs no blocks."""
        if self.csr_rows(kwargs.get("solver", "")):
            from ..data.row_blocks import row_csr

            return row_csr(*args, dim=kwargs["dim"])
        return build(*args, **kwargs)

    @property
    def sparse_rows(self) -> bool:
        """Whether CG half-sweeps here run on CSR rows (`csr_rows("cg")`)."""
        return self.csr_rows("cg")

    def csr_rows(self, solver: str) -> bool:
        """Whether `solver`'s half-sweeps here run on CSR rows (one device): CG on a backend
        with the sparse row products `row_dots` and `row_sums`, Cholesky where it has
        `row_grams` too."""
        names = CSR_CAPABILITIES.get(solver)
        return (
            self.backend is not None and names is not None and has_capability(self.backend, *names)
        )

    # Whether `side_blocks` may build the two sides on two threads (each side's `row_blocks`
    # independent of the other's).
    threaded_sides = True

    def side_blocks(
        self,
        build: Callable[..., Any],
        users: tuple[Any, ...],
        items: tuple[Any, ...],
        **kwargs: Any,
    ) -> tuple[Any, Any]:
        """`row_blocks(build, *users, **kwargs)` and `row_blocks(build, *items, **kwargs)`: the
        blocks by user and by item, on two threads where they are large (`THREADED_SIDES_MIN`
        observations together, two cores): NumPy lets go of the GIL in the sorts, gathers and
        scatters that make most of their time, so the two build side by side. The same arrays
        either way (each side's are its own)."""
        size = len(users[0]) + len(items[0])
        if not self.threaded_sides or size < THREADED_SIDES_MIN or _cores() < 2:
            return self.row_blocks(build, *users, **kwargs), self.row_blocks(
                build, *items, **kwargs
            )
        with ThreadPoolExecutor(max_workers=1) as pool:
            by_item = pool.submit(self.row_blocks, build, *items, **kwargs)
            by_user = self.row_blocks(build, *users, **kwargs)
            return by_user, by_item.result()

    def half_sweep(self, half: Callable[..., Any], *, observed: bool = False) -> Callable[..., Any]:
        """An ALS half-sweep `half(fixed, current, blocks, prior, offset=None, col_reg=None)` as
        it runs here (unchanged; a sharded placement solves each device's rows on it, `col_reg`
        replicated). `observed`: `half` returns `(new, loss)` (`make_half_sweep(observed=True)`;
        see `observed_halves`)."""
        return half

    def params(self, params: dict[str, np.ndarray]) -> dict[str, Any]:
        """Parameters as float32 native arrays."""
        return {k: self.backend.asarray(np.asarray(v, np.float32)) for k, v in params.items()}

    def params_from_rows(
        self, shapes: dict[str, tuple[int, ...]], read: Callable[[str, int, int], np.ndarray]
    ) -> dict[str, Any]:
        """Parameters placed from a reader of row ranges instead of whole host tables (what
        `cfcore.load(..., devices=...)` places from a sharded checkpoint's files).

        Args:
            shapes: each parameter's shape `[N, ...]`.
            read: `read(name, start, stop)` gives rows `start:stop` of parameter `name`, float32
                `[stop - start, ...]`.

        Returns:
            What `params` returns for the same tables. Here (one device) each table is read
            whole: the device holds it whole anyway. A row-sharded placement reads each
            device's rows on their own.
        """
        return self.params({k: read(k, 0, shape[0]) for k, shape in shapes.items()})

    def data(self, tree: Any) -> Any:
        """A tree of host arrays (ratings, bags, batch indices) as native arrays, dtypes narrowed."""
        if tree is None:
            return None
        if isinstance(tree, dict):
            return {k: self.data(v) for k, v in tree.items()}
        if isinstance(tree, list | tuple):
            return type(tree)(self.data(v) for v in tree)
        if isinstance(tree, np.ndarray):
            # Several models preparing one training set together share one copy (`fit_many`).
            return shared(tree, ("data", id(self.backend)), lambda: self.backend.asarray(tree))
        return self.backend.asarray(tree)

    def shapes(self, params: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """Each parameter's shape as the model sees it (a sharded placement's padding removed)."""
        return {k: tuple(int(s) for s in np.shape(v)) for k, v in params.items()}

    def host_shards(self, params: dict[str, Any]) -> Iterable[tuple[int, int, dict[str, Any]]]:
        """The shards of the parameters this process holds, one at a time to the host (for
        sharded checkpoints): `(index, count, {name: (start, stop, rows)})` each, rows float32
        `[stop - start, ...]` (a list, or a generator that copies each shard when asked). Here:
        one shard of whole tables."""
        host = self.to_host(params)
        return [(0, 1, {k: (0, int(v.shape[0]), v) for k, v in host.items()})]

    @property
    def is_primary(self) -> bool:
        """Whether this process writes the files every process shares (the checkpoint's
        index): True but on the processes after the first that holds devices of a multi-process
        run."""
        return True

    def barrier(self) -> None:
        """Returns once every process holding some of the devices has called it (a sharded
        checkpoint's writers wait for each other's shards). Here: one process, at once."""

    def broadcast_token(self, token: bytes) -> bytes:
        """The primary process's `token` (at most `TOKEN_BYTES` bytes), returned in every
        process holding some of the devices, each of which passes its own (a sharded
        checkpoint's save id: the primary draws it, every writer names its shards with it).
        Here: one process, `token` itself."""
        return token

    def to_host(self, params: dict[str, Any]) -> dict[str, np.ndarray]:
        """Parameters back on the host as float32 NumPy arrays."""
        return {k: np.asarray(self.backend.to_numpy(v), np.float32) for k, v in params.items()}


# Rows of a device's ALS block below which a bucket is padded (`device_row_blocks`).
MIN_BLOCK_ROWS = 8


class DeviceBlocks(dict):
    """ALS row blocks per device (`RowShardedPlacement.row_blocks`): the layout of
    `cfcore.data.row_blocks.row_blocks` with every array's per-device parts joined along a
    leading axis (`RowSharding.join_parts`), device j's part holding only its own rows (row ids
    local to its shard) and its columns indexing its own list of fixed rows, plus `real` int32
    `[k·⌈R/k⌉]` (1 for a table row, 0 for a padding row: those keep their value) and `fetch`
    int32 (each device's list of the U distinct fixed rows its blocks read). `data` places
    every array split along its leading axis."""


class RowShardedPlacement(Placement):
    """Row-sharded training, written once over a backend's primitives (`RowSharding`): tables
    padded to `k·⌈N/k⌉` rows and split into row blocks, ratings padded and split with their true
    count, the padding hidden from the objective inside the step, and ALS half-sweeps solving
    each device's own rows (the ALX design) from its own row blocks.

    Args:
        backend: the backend.
        sharding: the backend's `RowSharding` over the devices (its optional `row_sharding`).

    Attributes:
        sharding: that `RowSharding`.
        devices: its devices, in mesh order.
    """

    pair_layout = False  # the pair kernel assumes one device holds every row: plain gathers
    threaded_sides = False  # (its `row_blocks` learns the devices' shapes as it goes)

    def __init__(self, backend: Any, sharding: RowSharding) -> None:
        super().__init__(backend)
        self.sharding = sharding
        self.devices = sharding.devices
        self.trainers = sharding.trainers
        # Whether `half_sweep(..., observed=True)` can sum the devices' observed losses.
        self.observed_halves = sharding.sums_outputs
        # True row count of each placed parameter (before padding).
        self._rows: dict[str, int] = {}

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    @property
    def devices_key(self) -> Any:
        return self.sharding.devices_key

    @property
    def key(self) -> Any:
        # The compiled step slices the padding off with these static counts.
        return ("rows", self.devices_key, tuple(sorted(self._rows.items())))

    def _put(self, a: np.ndarray, axis: int | None = 0) -> Any:
        return self.sharding.put(a, axis)

    def _put_blocks(self, tree: DeviceBlocks) -> dict[str, Any]:
        """ALS row blocks (`row_blocks`' result), every array split along its leading axis."""

        def put(x: Any) -> Any:
            if isinstance(x, dict):
                return {k: put(v) for k, v in x.items()}
            if isinstance(x, list | tuple):
                return type(x)(put(v) for v in x)
            return self._put(self.sharding.host(x), axis=0)

        return put(dict(tree))

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        return self.sharding.scope()

    def row_blocks(self, build: Callable[..., Any], *args: Any, **kwargs: Any) -> DeviceBlocks:
        """The ALS blocks of each device's own rows (`device_row_blocks`), every array's
        per-device parts joined along a leading axis (`DeviceBlocks`), which `data` splits back.

        Each device's slots read its own copy of the fixed rows they need, fetched once per
        half-sweep (`half_sweep`): `fetch` lists device j's distinct fixed rows (ascending table
        rows, padded with row 0 to the largest device's count U: one program runs on every
        device), and its buckets' `cols` (and `cols_t`) index that list instead of the table."""
        parts, per, ranges = self.device_row_blocks(build, *args, **kwargs)
        fetch = self.fetch_lists(parts)  # [k, U]; the slots renumbered into it
        join = self.sharding.join_parts
        out = DeviceBlocks(self.join_device_blocks(parts, per, ranges, join))
        out["fetch"] = join(list(fetch))
        return out

    def half_sweep(self, half: Callable[..., Any], *, observed: bool = False) -> Callable[..., Any]:
        """`half` run on every device over its own blocks and rows (the ALX design).

        Args:
            half: `half(fixed, current, blocks, prior, offset=None, col_reg=None)`
                (`cfcore.maths.als.make_half_sweep`).
            observed: `half` returns `(new, loss)` (`make_half_sweep(observed=True)`); the
                devices' losses are summed (one scalar all-reduce). Only where
                `observed_halves`.

        Returns:
            `run(fixed, current, blocks, prior, offset=None, col_reg=None)`: `fixed`
            `[k·⌈M/k⌉, d]` and `current` `[k·⌈R/k⌉, d]` row-sharded, `blocks` this placement's
            placed `row_blocks`, `prior` `[d, d]`, `offset` `[k·⌈M/k⌉]` row-sharded, `col_reg`
            `[d]` (a column regularization read at run time). Each device's fixed rows
            (`blocks["fetch"]`, U of them, with `offset` as one more column) are fetched where
            they live (`RowSharding.fetch_rows`: O(k·U·d) traffic, never a whole-table
            all-gather), then `half` runs on each device's blocks and rows
            (`RowSharding.per_device`). The solved rows stay on their device; the padding rows
            of `current` keep their value.

        Raises:
            NotSupportedError: `observed` on a placement without `observed_halves`.
        """
        if observed and not self.observed_halves:
            raise NotSupportedError(
                f"{type(self.sharding).__name__}'s half-sweep does not return the observed loss "
                "(observed_halves is False: it cannot sum outputs over the devices)"
            )
        sharding = self.sharding
        xp = self.backend.xp

        def run(
            fixed: Any,
            current: Any,
            blocks: dict[str, Any],
            prior: Any,
            offset: Any = None,
            col_reg: Any = None,
        ) -> Any:
            d = int(fixed.shape[1])
            # The other side's offset (a bias, `[M]`) rides along as one more column of the
            # fixed rows: one fetch for both.
            both = fixed if offset is None else xp.concat([fixed, offset[:, None]], axis=1)
            table = sharding.fetch_rows(both, blocks["fetch"])  # each device's [U, d (+1)]
            own = {"buckets": blocks["buckets"], "position": blocks["position"]}

            def local(table: Any, current: Any, own: Any, prior: Any, *col_reg: Any) -> Any:
                col = {"col_reg": col_reg[0]} if col_reg else {}
                if offset is None:
                    return half(table, current, own, prior, **col)
                return half(table[:, :d], current, own, prior, table[:, d], **col)

            args = [table, current, own, prior] + ([] if col_reg is None else [col_reg])
            kinds: list[Any] = ["parts", "rows", "parts", "whole", "whole"][: len(args)]
            out = sharding.per_device(local, args, kinds, ("rows", "sum") if observed else "rows")
            new, loss = out if observed else (out, None)
            new = xp.where(blocks["real"][:, None] > 0, new, current)
            return (new, loss) if observed else new

        return run

    def view(self, params: dict[str, Any], batch: Any) -> tuple[dict[str, Any], Any]:
        """The tables and ratings as the loss sees them: unpadded (`RowSharding.view`)."""
        return self.sharding.view(params, batch, self._rows)

    def host_shards(self, params: dict[str, Any]) -> Iterable[tuple[int, int, dict[str, Any]]]:
        return self.sharding.host_shards(params, self._rows)

    @property
    def is_primary(self) -> bool:
        return self.sharding.is_primary

    def barrier(self) -> None:
        self.sharding.barrier()

    def broadcast_token(self, token: bytes) -> bytes:
        return self.sharding.broadcast_token(token)

    def to_host(self, params: dict[str, Any]) -> dict[str, np.ndarray]:
        """The tables back on the host, padding removed: float32 NumPy arrays."""
        return self.sharding.to_host(params, self._rows)

    def device_row_blocks(
        self,
        build: Callable[..., Any],
        rows: Any,
        cols: Any,
        values: Any,
        weights: Any,
        row_reg: Any,
        **kwargs: Any,
    ) -> tuple[list[dict[str, Any]], int, list[tuple[int, int]]]:
        """The ALS blocks of each device's own rows, on the host: `build`
        (`cfcore.data.row_blocks.row_blocks`) on the observations of rows
        `j·⌈R/k⌉ ... (j+1)·⌈R/k⌉ − 1` for device j, rows renumbered from 0.

        One program runs on every device (shard_map, DTensor's SPMD expansion), so every device
        gets the same buckets: the slot counts `L` from the whole table's observation counts, and
        per bucket the same `K` blocks of `B` rows (sized as `build` sizes them, for the device
        with the most rows of that bucket; the others pad with rows of weight 0 and ρ = 1).

        Args:
            build: `cfcore.data.row_blocks.row_blocks`.
            rows, cols, values, weights, row_reg, kwargs: its arguments for the whole table
                (`row_reg` `[R]`; `kwargs` with `dim` and `solver`).

        Returns:
            `(parts, per, ranges)`: device j's blocks `parts[j]` (`build`'s layout, equal shapes
            on every device, `position` `[hi − lo]` placing each local row), `per` = ⌈R/k⌉ and
            `ranges[j] = (lo, hi)`, the table rows device j holds.
        """
        from cfcore.data.row_blocks import WHOLE_FLOATS, block_rows, bucket_lengths, row_floats

        rows, cols = np.asarray(rows, np.int64), np.asarray(cols)
        values, weights = np.asarray(values), np.asarray(weights)
        row_reg = np.asarray(row_reg)
        k, num = self.num_devices, len(row_reg)
        per = -(-num // k)
        dim, solver = int(kwargs["dim"]), str(kwargs["solver"])
        lengths = bucket_lengths(np.bincount(rows, minlength=num))
        ranges = [(min(j * per, num), min((j + 1) * per, num)) for j in range(k)]
        sizes = [int(n) for n in np.unique(lengths)]
        # Rows of each bucket on each device: [k, buckets].
        members = np.array([[int(np.sum(lengths[lo:hi] == n)) for n in sizes] for lo, hi in ranges])
        floats = max(
            sum(int(c) * row_floats(n, dim, solver) for c, n in zip(row, sizes, strict=True))
            for row in members
        )
        # Whether one device would solve the whole table's buckets as one block each.
        whole = (
            sum(
                int(c) * row_floats(n, dim, solver)
                for c, n in zip(members.sum(0), sizes, strict=True)
            )
            <= WHOLE_FLOATS
        )
        shapes: dict[int, tuple[int, int]] = {}
        for i, n in enumerate(sizes):
            most, total = int(members[:, i].max()), int(members[:, i].sum())
            size = most if floats <= WHOLE_FLOATS else min(block_rows(n, dim, solver), most)
            # XLA's CPU batched products round differently below 8 rows a batch (measured: CG
            # half-sweeps of blocks of 1-4 rows differ from one block of 37 by 4e-6; 8 and
            # more agree bit for bit): a device's block has at least as many rows as one
            # device's block of the bucket would (`alone`), up to 8. Not 8 where one device's
            # blocks are smaller (long rows, `block_rows` < 8): padding rows there cost L slots
            # each (34,600 x 6,700 synthetic, 2.2M positives, d 64, 2 devices: the item side's
            # slots 21% over one device's with 8-row blocks, 10% with these).
            alone = total if whole else min(block_rows(n, dim, solver), total)
            size = max(size, min(MIN_BLOCK_ROWS, alone))
            if self.sharding.max_blocks is not None:
                size = max(size, -(-most // int(self.sharding.max_blocks)))
            shapes[n] = (-(-most // size), size)
        parts = []
        for lo, hi in ranges:
            sel = (rows >= lo) & (rows < hi)
            parts.append(
                build(
                    rows[sel] - lo,
                    cols[sel],
                    values[sel],
                    weights[sel],
                    row_reg[lo:hi],
                    lengths=lengths[lo:hi],
                    shapes=shapes,
                    **kwargs,
                )
            )
        return parts, per, ranges

    @staticmethod
    def fetch_lists(parts: list[dict[str, Any]]) -> np.ndarray:
        """The distinct fixed rows each device's blocks read, its slots renumbered into them.

        For `device_row_blocks`' per-device blocks `parts`: each device's buckets' `cols` (and
        `cols_t`) are rewritten in place to index its own list instead of the fixed table, so a
        half-sweep fetches each device's rows once (padding slots read row 0, as on one device,
        at weight 0).

        Returns:
            int32 `[k, U]`: device j's distinct fixed rows, ascending, padded with row 0 to the
            largest device's count U.
        """
        fetch = []
        for p in parts:
            wanted = np.unique(np.concatenate([b["cols"].ravel() for b in p["buckets"]]))
            for bucket in p["buckets"]:
                for name in ("cols", "cols_t"):
                    if name in bucket:
                        bucket[name] = np.searchsorted(wanted, bucket[name]).astype(np.int32)
            fetch.append(wanted.astype(np.int32))
        width = max(len(w) for w in fetch)
        return np.stack([pad_rows(w, width) for w in fetch])

    @staticmethod
    def join_device_blocks(
        parts: list[dict[str, Any]],
        per: int,
        ranges: list[tuple[int, int]],
        join: Callable[[list[np.ndarray]], np.ndarray],
    ) -> dict[str, Any]:
        """`device_row_blocks`' per-device blocks as one layout: every bucket array and the
        `position`s (padded to `per`) joined along a leading axis by `join` (`np.concatenate`
        where the framework splits them back, as shard_map does; `np.stack` for a device axis
        of their own), plus `real` int32 `[k·per]` (1 for a table row, 0 for a padding row)."""
        return {
            "buckets": [
                {name: join([p["buckets"][b][name] for p in parts]) for name in bucket}
                for b, bucket in enumerate(parts[0]["buckets"])
            ],
            "position": join([pad_rows(p["position"], per) for p in parts]),
            "real": np.concatenate(
                [pad_rows(np.ones(hi - lo, np.int32), per) for lo, hi in ranges]
            ),
        }

    def params(self, params: dict[str, np.ndarray]) -> dict[str, Any]:
        """Each `[N, ...]` table zero-padded to `k·⌈N/k⌉` rows, row-sharded."""
        out = {}
        for name, v in params.items():
            a = np.asarray(v, np.float32)
            if a.ndim == 0:
                raise ArgumentValueError(f"cannot row-shard the scalar parameter {name!r}")
            self._rows[name] = a.shape[0]
            out[name] = self._put(pad_rows(a, padded_rows(a.shape[0], self.num_devices)))
        return out

    def params_from_rows(
        self, shapes: dict[str, tuple[int, ...]], read: Callable[[str, int, int], np.ndarray]
    ) -> dict[str, Any]:
        """The tables of `shapes` placed as `params` places them (zero-padded to `k·⌈N/k⌉` rows,
        row-sharded), each device's block `j·⌈N/k⌉:(j+1)·⌈N/k⌉` read on its own by `read` (see
        `Placement.params_from_rows`): no whole table is read or held on the host (k > 1)."""
        out = {}
        k = self.num_devices
        for name, shape in shapes.items():
            if len(shape) == 0:
                raise ArgumentValueError(f"cannot row-shard the scalar parameter {name!r}")
            n, tail = int(shape[0]), tuple(int(s) for s in shape[1:])
            per = padded_rows(n, k) // k

            # Bound as defaults: `_put_rows` calls it within this iteration, but say so.
            def block(j: int, name: str = name, n: int = n, per: int = per, tail: Any = tail):
                lo, hi = min(j * per, n), min((j + 1) * per, n)
                rows = np.asarray(read(name, lo, hi), np.float32)
                if rows.shape != (hi - lo, *tail):
                    raise ArgumentValueError(
                        f"read {rows.shape} for rows {lo}:{hi} of {name!r}, expected "
                        f"{(hi - lo, *tail)}"
                    )
                return pad_rows(rows, per)

            self._rows[name] = n
            out[name] = self.sharding.put_rows(block, (per * k, *tail))
        return out

    def data(self, tree: Any) -> Any:
        """Ratings split over the devices (zero-padded, with their true count; other entries of
        a ratings dict replicated); ALS row blocks by `_put_blocks`; stacked minibatch positions
        `[steps, B]` split along B when k divides B, else replicated."""
        if tree is None:
            return None
        if isinstance(tree, DeviceBlocks):
            return self._put_blocks(tree)
        if isinstance(tree, dict) and "values" in tree:
            if tree.get("layout") is not None:
                raise ArgumentValueError(
                    "a pair layout cannot be sharded: build the batch without it"
                )
            n = int(np.shape(tree["values"])[0])
            rows = padded_rows(n, self.num_devices)
            # Per-table entries riding along (iALS's per-row λ, `[N]`): replicated, O(N) floats.
            out = {
                k: self._put(pad_rows(self.sharding.host(v), rows))
                if k in RATING_KEYS
                else self._put(self.sharding.host(v), axis=None)
                for k, v in tree.items()
                if v is not None
            }
            out[COUNT] = self._put(np.zeros((n, 0), np.float32), axis=None)
            return out
        if isinstance(tree, dict):
            return {k: self.data(v) for k, v in tree.items()}
        if isinstance(tree, list | tuple):
            return type(tree)(self.data(v) for v in tree)
        a = self.sharding.host(tree)
        if a.ndim >= 1 and a.shape[-1] % self.num_devices == 0:
            return self._put(a, axis=a.ndim - 1)
        return self._put(a, axis=None)

    def shapes(self, params: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """The parameters' unpadded shapes."""
        out: dict[str, tuple[int, ...]] = {}
        for k, v in params.items():
            shape = tuple(int(s) for s in np.shape(v))
            out[k] = (self._rows.get(k, shape[0]), *shape[1:])
        return out
