"""The primitives a backend offers to spread tables' rows over several devices.

`fit(..., devices=...)` trains on row-sharded tables: every `[N, ...]` parameter table is padded
with zero rows to `k·⌈N/k⌉` and split into k equal blocks of rows, device j holding rows
`j·⌈N/k⌉ ... (j+1)·⌈N/k⌉ − 1`. What that takes of a framework is small and written here as one
class, `RowSharding`, which a backend subclasses and returns from its optional
`row_sharding(bound_backend, devices)` (`cfcore.backend.capabilities.Capabilities`):

* put rows on devices: `put` (a host array split along an axis, or replicated), `put_rows` (a
  table built from each device's own block, never whole on one device), `host` (an unsharded
  native array back as NumPy);
* a per-device map: `per_device(fn, args, kinds, out)` runs `fn` on every device over its own
  part of the arguments (`jax.shard_map`; a vectorized map over a sharded device axis in DTensor)
  and returns the outputs row-sharded again or summed over the devices (an all-reduce);
* fetch rows: `fetch_rows(table, wanted)` brings each device its own list of rows of a
  row-sharded table, read where they live;
* the step's scope (`scope`: the backend's kernels pick their sharded forms while a step is
  traced in it) and how a padded table is seen inside the step (`view`);
* reading back: `to_host`, `host_shards` (one device's block at a time, for sharded
  checkpoints), and the processes' coordination (`is_primary`, `barrier`, `broadcast_token`).

Core builds everything else on these, once for every framework
(`cfcore.train.placement.RowShardedPlacement`): padding and splitting the tables and ratings,
each device's ALS row blocks and the ALS half-sweep over them. Nothing here imports a framework
or anything above `cfcore.backend`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import numpy as np

from ..errors import ArgumentValueError

TOKEN_BYTES = 32
"""The longest token `RowSharding.broadcast_token` (and `Placement.broadcast_token`) carries."""

# The arrays of a ratings tree that have one entry per rating (split over the devices).
RATING_KEYS = ("users", "items", "values")
# The entry a padded ratings tree carries: a zero-width `[n, 0]` array whose static length is the
# true number of ratings (a shape, so the compiled step can slice with it).
COUNT = "count"

ArgKind = Literal["rows", "parts", "whole"]
"""How `RowSharding.per_device` splits one argument over the devices:

* `"rows"`: a row-sharded array `[k·R, ...]` (a padded table): device j receives its rows
  `j·R ... (j+1)·R − 1`, `[R, ...]`;
* `"parts"`: a tree of per-device parts, each leaf as `put` placed a host array joined from
  per-device arrays (`RowSharding.join_parts`) or as `fetch_rows` returned it: device j
  receives its own part (without the device axis where `join_parts` stacks);
* `"whole"`: a tree replicated on every device: each receives all of it.
"""

OutKind = Literal["rows", "sum"]
"""What `RowSharding.per_device` makes of one output of its function: `"rows"`, the devices'
`[R, ...]` outputs as one row-sharded `[k·R, ...]` array (device j's rows its own); `"sum"`, the
devices' outputs summed (one all-reduce), the same on every device."""


def padded_rows(n: int, k: int) -> int:
    """`k·⌈n/k⌉`: the rows of a table of `n` rows padded to split evenly over `k` devices."""
    return -(-n // k) * k


def pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
    """`a` (`[n, ...]`) with zero rows appended up to `rows`."""
    if a.shape[0] == rows:
        return a
    pad = np.zeros((rows - a.shape[0], *a.shape[1:]), a.dtype)
    return np.concatenate([a, pad])


class RowSharding:
    """A backend's row-sharding primitives over `devices` (the base: host-only parts).

    A backend subclasses it and overrides `put`, `per_device` and `fetch_rows` (and whatever
    else its framework does differently); core wraps it in a
    `cfcore.train.placement.RowShardedPlacement`, which is what the trainer talks to.

    Args:
        backend: the bound backend.
        devices: the devices, in mesh order (the framework's device objects or names).

    Attributes:
        devices: the devices, a tuple, in mesh order.
    """

    stacked_parts = False
    """How per-device host arrays are joined for `put(..., axis=0)` (`join_parts`): False,
    concatenated along their leading axis (a framework that splits them back by rows, as
    shard_map does); True, stacked along a new leading device axis (`[k, ...]`)."""
    sums_outputs = False
    """Whether `per_device` can return an output summed over the devices (`"sum"`)."""
    max_blocks: int | None = None
    """The most blocks each bucket of a device's ALS row blocks is cut into (None: no cap).
    A framework whose per-device map cannot loop over a bucket's blocks in one compiled step
    unrolls that loop (TensorFlow's DTensor): the cap bounds its program by `max_blocks` block
    solves per bucket whatever the data's size, at the cost of a block's memory growing with the
    bucket."""
    trainers: tuple[str, ...] | None = None
    """The trainers (`cfcore.train.placement.TRAINERS`) that shard on this backend (None:
    every one)."""

    def __init__(self, backend: Any, devices: Iterable[Any]) -> None:
        self.backend = backend
        self.devices = tuple(devices)

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    @property
    def devices_key(self) -> Any:
        """Which devices it spreads over (hashable; what compiled steps depend on)."""
        return self.devices

    # ------------------------------------------------------------------ placing rows

    def put(self, a: np.ndarray, axis: int | None = 0) -> Any:
        """`a` split along `axis` into k equal blocks over the devices (None: replicated on
        each): a native array. The axis' length is a multiple of k."""
        raise NotImplementedError

    def put_rows(self, block: Callable[[int], np.ndarray], shape: tuple[int, ...]) -> Any:
        """A row-sharded array of the padded `shape` (`[k·R, ...]`) built from its devices'
        blocks: `block(j)` gives device j's rows `j·R:(j+1)·R`, float32 `[R, ...]`, and is called
        only for the devices this process holds, one at a time. Here (a backend that does not
        build arrays from per-device parts): the blocks joined on the host and `put`."""
        return self.put(np.concatenate([block(j) for j in range(self.num_devices)]))

    def host(self, x: Any) -> np.ndarray:
        """A host or (unsharded) native array as NumPy."""
        return np.asarray(x)

    def join_parts(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        """Per-device host arrays (equal shapes, in mesh order) as one array that
        `put(..., axis=0)` splits back into them (see `stacked_parts`)."""
        return np.stack(parts) if self.stacked_parts else np.concatenate(parts)

    # ------------------------------------------------------------------ per-device work

    def per_device(
        self,
        fn: Callable[..., Any],
        args: Sequence[Any],
        kinds: Sequence[ArgKind],
        out: OutKind | Sequence[OutKind],
    ) -> Any:
        """`fn` run on every device over its own part of `args`, inside compiled code.

        Args:
            fn: `fn(*parts)`, traced once (one program on every device), with the backend's
                plain single-device kernels; returns one array or, where `out` is a sequence,
                a tuple of them.
            args: the arguments, each split as its `kinds` entry says (`ArgKind`).
            kinds: one `ArgKind` per argument.
            out: one `OutKind` per output (a single kind: `fn` returns one array).

        Returns:
            The outputs as `out` says: row-sharded `[k·R, ...]`, or summed over the devices.

        Raises:
            NotSupportedError: `"sum"` asked of a backend without `sums_outputs`.
        """
        raise NotImplementedError

    def fetch_rows(self, table: Any, wanted: Any) -> Any:
        """Each device's own list of rows of a row-sharded table, read where they live.

        Args:
            table: `[k·s, d]` row-sharded (padded).
            wanted: int32 per-device parts (`put` of `join_parts` of k arrays `[U]`), each id
                below the table's true row count: device j's rows.

        Returns:
            `"parts"` for `per_device`: device j's part `table[wanted_j]`, `[U, d]`. Never the
            whole table on a device: O(k·U·d) traffic.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ inside the step

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        """A context the step is traced in, telling the backend's kernels to run their
        multi-device forms (here: none)."""
        return contextlib.nullcontext()

    def view(
        self, params: dict[str, Any], batch: Any, rows: dict[str, int]
    ) -> tuple[dict[str, Any], Any]:
        """The padded tables and ratings as the loss sees them inside the compiled step: here
        the padding sliced off (a framework whose slicing would move the table overrides it).

        Args:
            params: the placed tables, padded.
            batch: the placed batch (a padded ratings tree carries `COUNT`), or None.
            rows: each padded table's true row count.
        """
        params = {
            k: v[: rows[k]] if k in rows and rows[k] != v.shape[0] else v for k, v in params.items()
        }
        if isinstance(batch, dict) and COUNT in batch:
            n = batch[COUNT].shape[0]
            batch = {
                k: (v[:n] if k in RATING_KEYS and v.shape[0] != n else v)
                for k, v in batch.items()
                if k != COUNT
            }
        return params, batch

    # ------------------------------------------------------------------ reading back

    def to_host(self, params: dict[str, Any], rows: dict[str, int]) -> dict[str, np.ndarray]:
        """The tables back on the host, padding removed (`rows`: true row counts): float32."""
        out = {}
        for k, v in params.items():
            a = np.asarray(self.backend.to_numpy(v), np.float32)
            out[k] = a[: rows.get(k, a.shape[0])]
        return out

    def host_shards(
        self, params: dict[str, Any], rows: dict[str, int]
    ) -> Iterable[tuple[int, int, dict[str, Any]]]:
        """This process's devices' blocks, one at a time to the host (sharded checkpoints):
        `(position, k, {name: (start, stop, rows)})` each, the padding rows left out (`rows`:
        true row counts). Here: one block of whole tables."""
        host = self.to_host(params, rows)
        return [(0, 1, {k: (0, int(v.shape[0]), v) for k, v in host.items()})]

    @property
    def is_primary(self) -> bool:
        """Whether this process writes the files every process shares (one process: True)."""
        return True

    def barrier(self) -> None:
        """Returns once every process holding some of the devices has called it (one process:
        at once)."""

    def broadcast_token(self, token: bytes) -> bytes:
        """The primary process's `token` (at most `TOKEN_BYTES` bytes) in every process holding
        some of the devices (one process: `token` itself)."""
        if len(token) > TOKEN_BYTES:
            raise ArgumentValueError(f"a token of {len(token)} bytes: at most {TOKEN_BYTES}")
        return token


__all__ = [
    "COUNT",
    "RATING_KEYS",
    "TOKEN_BYTES",
    "ArgKind",
    "OutKind",
    "RowSharding",
    "pad_rows",
    "padded_rows",
]
