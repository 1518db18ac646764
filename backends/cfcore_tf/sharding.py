"""Row-sharded training on several TensorFlow devices: the primitives that spread the tables.

`fit(..., devices=k)` asks the backend for its row-sharding primitives (`TFBackend.row_sharding`,
a `cfcore.backend.sharding.RowSharding`), and core builds the placement on them (its
`RowShardedPlacement`). They are built on DTensor (`tf.experimental.dtensor`): a 1-D mesh named
`"rows"` over the devices, every parameter table a DTensor with the row-sharded layout
`Layout(["rows", UNSHARDED], mesh)`, the ratings (and the minibatch positions) split along their
one axis. The training step is the same `tf.function` as on one device: DTensor's SPMD expansion
partitions it from the inputs' layouts (the optimizer state, made by `zeros_like` of the placed
parameters, inherits them). The gravity term's Gramian of an evenly sharded table (k divides its
row count) is one local `[d, d]` matmul per shard plus one `[d, d]` all-reduce.

Why DTensor and not `tf.distribute` (TF 2.21, tried on virtual CPU devices):
`MirroredStrategy` mirrors every variable (each device holds the whole table), and the only
strategy with row-sharded variables (`ShardedVariable` through a `variable_partitioner`) is
`ParameterServerStrategy`, which needs a cluster with parameter-server tasks ("There must be at
least one ps") and schedules functions asynchronously through a `ClusterCoordinator`, not
cfcore's compiled chunk. DTensor shards a tensor's rows over logical CPU devices in one process.

What DTensor would make of the step by itself (read from its SPMD-expanded program,
`TF_DUMP_GRAPH_PREFIX`, in `tests/sharding/test_sharding_tf.py`): `tf.gather` of a row-sharded table
all-gathers the whole table, and slicing the padding off a table whose row count k does not
divide (below) makes it whole too (a `[29, d]` tensor cannot be split over 2, 4 or 8 devices).
So inside a traced step `view` leaves a padded table padded, seen with its unpadded shape
(`rows.PaddedRows`), and the backend's kernels read the tables where they live while
`scope()` is active (`kernels.DTENSOR_MESH` set), as JAX's shard_map kernels do:

* lookups (`pair_dot`, the softmax's labels and bags: `rows.take_rows`): every device receives
  all the ids (`[n]` ints), gathers from its own `[⌈N/k⌉, d]` rows those it owns (zeros for the
  rest) and one `[n, d]` all-reduce sums the partial rows, whole on every device. The products
  of the rows are then computed whole too, so the rows' gradient arrives whole on every device
  and each device scatter-adds those of its own rows locally (`tf.custom_gradient`): no
  collective in the backward pass. In the expanded step of full-batch regularized SGD (the
  test's 40 × 29 tables, 500 ratings, d 4; 2, 4 and 8 devices alike): all-gathers of the split
  ratings' `[500]` ids and values, two `[500, 4]` all-reduces (the user and item rows), two
  `[4, 4]` Gramian all-reduces and scalars; minibatch Adam: `[64, 4]` all-reduces instead; no
  table moves (it used to: each table all-gathered, and its full-batch gradient all-reduced
  whole).
* the Gramian of a padded table, the sum of its squares: of the padded table (zero rows add
  nothing): a local `[d, d]` matmul per shard and one `[d, d]` all-reduce;
* the full softmax: each device's logits are its own items' (`[B, ⌈M/k⌉]`, the padding items
  masked to -inf), the log-sum-exp is reduced across devices (`[B]` vectors), the labels'
  logits are `⟨q, V[label]⟩` from `take_rows`.

What this costs (`benchmarks/distributed_tf.py`, `benchmarks/results/distributed_tf.md`, d 32,
2 / 4 logical CPU devices): O(n·d) traffic and memory per device for a step reading n ratings'
rows, where the old path (`tf.gather` of the all-gathered table) moved and held O(N·d) whatever
n. With fewer ratings in a step than table rows the lookup is faster and smaller (100k × 50k
tables, batches of 8,192: 118 / 151 ms a step and 263 / 199 MiB a device, against 172 / 243 ms
and 387 / 302 MiB); around the tables' size the time is the same (6,040 × 3,706 tables,
batches of 8,192: 28 / 50 ms against 24 / 48 ms); with more ratings than rows the old path is
cheaper (the same tables, a full batch of 200k ratings: 276 / 569 ms and about 300 MiB a device,
against 39 / 113 ms and 25-62 MiB). The old path is not kept for that regime: no table moves is
what sharding a table is for, and a step over more ratings than table rows is where the tables
fit on one device anyway; train such data on one device, or in minibatches.

The biased model's augmented tables (`[U, b_u, 1]`, concatenations) are built from the padded
tables (`ops.reshape`, `concat`, `full_like` keep a `rows.PaddedRows`), so its step fetches rows
the same way. A minibatch's `take` all-gathers the split ratings
(1-D). On CPU DTensor runs the expanded graph with TensorFlow collectives, without XLA
(`jit_compile` is not applied: nothing reaches XLA's dump), and lowers an all-gather to an
all-reduce. A chunk of steps is a host loop of one compiled step there, not one `tf.while_loop`
(see `transforms._host_loop`).

ALS half-sweeps (written once in core over `per_device` and `fetch_rows`): each device solves
only its own rows (the ALX design, as JAX's shard_map does it). DTensor has no per-device
function, but a batched op whose batch axis is sharded expands to the same op on each device's
part: the ALS blocks are built per device on the host and stacked along a leading device axis
(`stacked_parts`) placed sharded, and `per_device` runs the half-sweep under `tf.vectorized_map`
over that axis, which turns it into such batched ops (the Gramians,
Cholesky factorizations and solves of `[1, B, d, d]` per device in the expanded program). No
table is made whole: the host lists, per device, the U distinct fixed rows its blocks read (its
blocks' columns renumbered into that list, padded to the largest device's U), and each
half-sweep fetches them where they live (`fetch_rows`, `rows.fetch_rows`: as `take_rows`, but the `[k·U, d]`
partial rows reduce-scattered, each device keeping its own `[U, d]`; U ≤ min(M, the device's
observations)). The objective computed before each sweep reads rows with `take_rows` and keeps
the padded tables padded (iALS's per-row λ is padded with them: `_per_row`). The loop
over a bucket's blocks is unrolled into the step (`transforms.compile_map`: DTensor's passes break
on a `tf.while_loop` there), so each device's part of a bucket is one block (`max_blocks`): the
program has one block solve per bucket, whatever the data's size (cut into cache-sized blocks it
grew with the data, and an iALS fit of 34.6k x 6.7k with 2.2M positives had not finished its
first sweep after 10 minutes).

DTensor needs every sharded axis divisible by the mesh size, so a table of N rows is padded with
zero rows to `k·⌈N/k⌉` (each device holds ⌈N/k⌉ rows) and the ratings with zero entries to a
multiple of k. The padding never reaches the objective: inside the compiled step `view` slices
the ratings' off and shows each padded table with its unpadded shape (`rows.PaddedRows`: any op
but the kernels above sees the table sliced), so the loss, its gradients and the penalties' row
counts are those of the unpadded problem, and the padded rows get zero gradients (they stay zero
under SGD, Adam and Adagrad).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.experimental import dtensor

from cfcore.backend.sharding import COUNT, RATING_KEYS, RowSharding, padded_rows
from cfcore.errors import ArgumentTypeError, ArgumentValueError, NotSupportedError

from . import kernels
from . import rows as _rows

_AXIS = "rows"


def _host(x: Any) -> np.ndarray:
    # A (non-DTensor) tensor, variable or array on the host, dtypes narrowed as the backend does.
    a = x.numpy() if isinstance(x, tf.Tensor | tf.Variable) else np.asarray(x)
    if a.dtype == np.float64:
        return a.astype(np.float32)
    if a.dtype == np.int64:
        return a.astype(np.int32)
    return a


def _any_dtensor(params: dict[str, Any]) -> bool:
    return any(isinstance(v, tf.Tensor) and dtensor.is_dtensor(v) for v in params.values())


class TFRowSharding(RowSharding):
    """Row-sharding primitives over TensorFlow `devices` with DTensor
    (`cfcore.backend.sharding.RowSharding`).

    Args:
        backend: the TensorFlow backend.
        devices: the logical devices' full names (`/job:localhost/replica:0/task:0/device:CPU:0`),
            at least one, distinct, of one device type.

    Attributes:
        devices: the device names, in mesh order.
        mesh: the 1-D `dtensor.Mesh` over them, dimension `"rows"`.
    """

    # Per-device parts stacked along a leading device axis (`[k, ...]`), which `per_device`
    # vectorizes over: DTensor has no per-device function.
    stacked_parts = True
    # One block per bucket on each device: the half-sweep's loop over a bucket's blocks is
    # unrolled into the step (`transforms.compile_map`), so each block is one more copy of the
    # block solve in DTensor's program. Cut into cache-sized blocks (`BLOCK_FLOATS` of
    # `cfcore.data`)
    # an iALS sweep of 6,040 x 3,706 (139k positives, d 64, CG) on 2 devices unrolled 260
    # blocks a device and its first fit took 276 s (about 90 s tracing and vectorizing, 185 s
    # in DTensor's expansion and TensorFlow's graph passes); each bucket one block, 6.6 s. The
    # program is then one block solve per bucket whatever the data's size (the buckets grow
    # with the log of the longest row), and a block's memory grows with the device's share of
    # the data instead: its `[B, L, d]` gathered rows and their CG temporaries, materialized op
    # by op (DTensor on CPU runs without XLA).
    max_blocks = 1
    # Gradient training of MF, RegularizedMF and BiasedMF, and ALS sweeps: each device's own
    # blocks and rows (core's half-sweep over `per_device` and `fetch_rows`), the half-sweep's
    # loop over blocks unrolled into the step (`transforms.compile_map`), one block per bucket
    # (`max_blocks`). The softmax model: its `log_q` replicated on the mesh
    # (`transforms._on_mesh_of`), the sampled softmax's diagonal a masked sum
    # (`kernels._diagonal`), its evaluation on the tables read back from their shards (`view`).
    # Listed, not None: a trainer added later is refused here until it is made to shard.
    trainers = ("gradient", "biased-gradient", "als", "softmax")

    def __init__(self, backend: Any, devices: Sequence[str]) -> None:
        super().__init__(backend, devices)
        device_type = tf.DeviceSpec.from_string(self.devices[0]).device_type
        self.mesh = dtensor.create_mesh(
            [(_AXIS, len(self.devices))], devices=list(self.devices), device_type=device_type
        )

    def layout(self, ndim: int, axis: int | None = 0) -> dtensor.Layout:
        """The layout sharding `axis` over the mesh (None: replicated) of an `ndim`-d tensor."""
        return _rows.layout(self.mesh, ndim, axis)

    def put(self, a: np.ndarray, axis: int | None = 0) -> Any:
        """`a` as a DTensor split along `axis` (None: replicated), built from its shards: each
        device receives only its own block, the whole array never goes to one device."""
        if axis is None:
            parts = [a] * self.num_devices
        else:
            parts = np.split(a, self.num_devices, axis=axis)
        return self._pack(lambda j: parts[j], self.layout(a.ndim, axis))

    def put_rows(self, block: Any, shape: tuple[int, ...]) -> Any:
        """A row-sharded DTensor of the padded `shape` from its devices' blocks (`block(j)`:
        device j's rows, float32 `[R, ...]`), each made on its own device: the whole table is
        never on the host or on one device."""
        return self._pack(block, self.layout(len(shape), 0))

    def _pack(self, part: Any, layout: dtensor.Layout) -> Any:
        # Device j's component from `part(j)`, one device at a time.
        components = []
        for j, device in enumerate(self.devices):
            with tf.device(device):
                components.append(tf.constant(part(j)))
        return dtensor.pack(components, layout)

    def host(self, x: Any) -> np.ndarray:
        return _host(x)

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """While a step is traced inside it, the backend's `solve` avoids the ops DTensor cannot
        partition (`kernels.ON_DTENSORS`) and its kernels read the tables where they live
        (`kernels.DTENSOR_MESH`)."""
        token = kernels.ON_DTENSORS.set(True)
        mesh_token = kernels.DTENSOR_MESH.set(self.mesh)
        try:
            yield
        finally:
            kernels.DTENSOR_MESH.reset(mesh_token)
            kernels.ON_DTENSORS.reset(token)

    def per_device(self, fn: Any, args: Any, kinds: Any, out: Any) -> Any:
        """`fn` on every device over its own parts: vectorized (`tf.vectorized_map`) over a
        leading device axis that is sharded, which DTensor's SPMD expansion turns into the same
        batched ops on each device's part (`"rows"` arguments `[k·R, ...]` viewed as
        `[k, R, ...]`, `"parts"` stacked already, `"whole"` replicated and captured). Outputs
        `"rows"` only (`sums_outputs` is False)."""
        outs = [out] if isinstance(out, str) else list(out)
        if any(o != "rows" for o in outs):
            raise NotSupportedError(
                "the TensorFlow per-device map does not sum outputs over the devices "
                "(sums_outputs is False)"
            )
        k = self.num_devices
        whole = {
            i: tf.nest.map_structure(kernels.replicated, a)
            for i, (a, kind) in enumerate(zip(args, kinds, strict=True))
            if kind == "whole"
        }
        if k == 1:
            # One device: its parts without the device axis (DTensor cannot expand the gather
            # that `vectorized_map` makes of a loop of one: "input and output layout do not
            # agree on non-axis dim 1", TF 2.21).
            parts = [
                whole[i]
                if kind == "whole"
                else tf.nest.map_structure(lambda a: tf.reshape(a, a.shape[1:]), a)
                if kind == "parts"
                else a
                for i, (a, kind) in enumerate(zip(args, kinds, strict=True))
            ]
            return fn(*parts)
        mapped = [i for i, kind in enumerate(kinds) if kind != "whole"]
        xs = tuple(
            tf.reshape(args[i], (k, int(args[i].shape[0]) // k, *args[i].shape[1:]))
            if kinds[i] == "rows"
            else args[i]
            for i in mapped
        )

        def one(parts: Any) -> Any:
            full = dict(whole)
            full.update(zip(mapped, parts, strict=True))
            return fn(*(full[i] for i in range(len(args))))

        got = tf.vectorized_map(one, xs, fallback_to_while_loop=False)
        got = [got] if isinstance(out, str) else list(got)
        got = [tf.reshape(g, (-1, *g.shape[2:])) for g in got]
        return got[0] if isinstance(out, str) else tuple(got)

    def fetch_rows(self, table: Any, wanted: Any) -> Any:
        """Device j's rows `table[wanted[j]]` (`wanted` int32 `[k, U]`, split along its device
        axis): `[k, U, d]` split along it (`rows.fetch_rows`: O(k·U·d) per device, no
        whole-table all-gather). One device: a gather (it holds every row)."""
        if self.num_devices == 1:
            got = tf.gather(table, tf.reshape(wanted, (-1,)))
            return tf.reshape(got, (1, *got.shape))
        return _rows.fetch_rows(self.mesh, table, wanted)

    def view(
        self, params: dict[str, Any], batch: Any, rows: dict[str, int]
    ) -> tuple[dict[str, Any], Any]:
        """Inside a step: the padding sliced off (`RowSharding.view`). Eagerly, without
        a batch (the softmax model's evaluation between chunks): the unpadded tables as ordinary
        tensors on the default device, read from their shards (`to_host`), since DTensor cannot
        copy a row-sharded tensor to one device or to NumPy ("Trying to copy a non-single-device
        and non-replicated DTensor is not supported", TF 2.21)."""
        if batch is None and tf.executing_eagerly() and _any_dtensor(params):
            return {k: tf.constant(v) for k, v in self.to_host(params, rows).items()}, None
        if tf.executing_eagerly():
            return super().view(params, batch, rows)
        # Traced: a padded table stays padded (`rows.PaddedRows`), seen with its unpadded shape;
        # slicing its padding off would make it whole on every device.
        ratings = isinstance(batch, dict) and COUNT in batch
        _, batch = super().view({}, batch, rows)
        padded = {
            k: _rows.PaddedRows(v, rows[k]) if k in rows and rows[k] != v.shape[0] else v
            for k, v in params.items()
        }
        if ratings:
            batch = {
                k: self._per_row(v, rows) if k not in RATING_KEYS else v for k, v in batch.items()
            }
        return padded, batch

    def _per_row(self, x: Any, rows: dict[str, int]) -> Any:
        """A per-table entry of a ratings batch (iALS's per-row λ, `[N]`, replicated) padded
        like the table of N rows and seen unpadded (`rows.PaddedRows`), where that table is
        padded: its product with the padded table (`λ · U²`) then stays padded, where slicing
        the table's padding off would make the table whole on every device. Any other entry as
        it is. (The padding is told by N alone: two tables of N rows are padded alike.)"""
        n = getattr(getattr(x, "shape", None), "rank", None) == 1 and int(x.shape[0])
        if not n or n not in rows.values() or not x.dtype.is_floating:
            return x
        full = padded_rows(n, self.num_devices)
        if full == n:
            return x
        # Whole on every device around the pad (`[N]` floats): DTensor cannot expand a pad whose
        # input and output layouts differ (TF 2.21).
        whole = kernels.replicated_layout(self.mesh, 1)
        x = dtensor.relayout(tf.pad(dtensor.relayout(x, whole), [[0, full - n]]), whole)
        return _rows.PaddedRows(x, n)

    def shard_rows(self, x: Any) -> list[int]:
        """The row count of each device's block of the DTensor `x`, in mesh order."""
        return [int(c.shape[0]) for c in dtensor.unpack(x)]

    def host_shards(
        self, params: dict[str, Any], rows: dict[str, int]
    ) -> Iterator[tuple[int, int, dict[str, Any]]]:
        """Each device's block, in mesh order, copied to the host from its own component
        (`dtensor.unpack`: no whole table is assembled on a device or the host): yields
        `(position, k, {name: (start, stop, rows)})`, device j holding rows `j·⌈N/k⌉ ...`, the
        padding rows left out (a device holding only padding gives an empty block). A generator:
        the writer holds one device's block at a time."""
        parts = {name: dtensor.unpack(arr) for name, arr in params.items()}
        for j in range(self.num_devices):
            block = {}
            for name, comps in parts.items():
                true_rows = rows.get(name, sum(int(c.shape[0]) for c in comps))
                start = sum(int(c.shape[0]) for c in comps[:j])
                lo = min(start, true_rows)
                hi = min(start + int(comps[j].shape[0]), true_rows)
                block[name] = (lo, hi, np.asarray(comps[j].numpy(), np.float32)[: hi - lo])
            yield j, self.num_devices, block

    def to_host(self, params: dict[str, Any], rows: dict[str, int]) -> dict[str, np.ndarray]:
        """The tables back on the host, shard by shard, padding removed: float32 NumPy arrays."""
        out = {}
        for k, v in params.items():
            a = np.concatenate([c.numpy() for c in dtensor.unpack(v)]).astype(np.float32)
            out[k] = a[: rows.get(k, a.shape[0])]
        return out


def logical_devices() -> list[Any]:
    """The logical devices `devices=k` picks from: the GPUs if any, else the CPUs."""
    return tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")


def row_sharding(backend: Any, devices: Any) -> TFRowSharding:
    """The row-sharding primitives of `fit(..., devices=devices)` on TensorFlow.

    Args:
        backend: the bound TensorFlow backend.
        devices: an int k (the first k logical GPUs, else CPUs) or a sequence of
            `tf.config.LogicalDevice` (or their names).

    Raises:
        ValueError: k out of range (with how to split the CPU into logical devices), or the
            devices empty, repeated, of mixed types or not TensorFlow devices.
    """
    available = logical_devices()
    if isinstance(devices, int | np.integer) and not isinstance(devices, bool | np.bool_):
        if not 1 <= int(devices) <= len(available):
            kind = available[0].device_type
            raise ArgumentValueError(
                f"devices={int(devices)} but TensorFlow has {len(available)} logical {kind} "
                f"device(s); expected an int from 1 to {len(available)}. To train on k virtual "
                "CPU devices, split the CPU before TensorFlow runs anything: "
                "tf.config.set_logical_device_configuration(tf.config.list_physical_devices("
                "'CPU')[0], [tf.config.LogicalDeviceConfiguration()] * k)"
            )
        return TFRowSharding(backend, [d.name for d in available[: int(devices)]])
    if isinstance(devices, str | bytes) or not isinstance(devices, Sequence):
        raise ArgumentTypeError(
            "devices must be None, an int or a list of tf.config.LogicalDevice, got "
            f"{type(devices).__name__}"
        )
    chosen = list(devices)
    if not chosen:
        raise ArgumentValueError(
            "devices is an empty list: expected at least one TensorFlow device"
        )
    names = []
    known = {d.name for d in tf.config.list_logical_devices()}
    for d in chosen:
        name = d.name if isinstance(d, tf.config.LogicalDevice) else d
        if not isinstance(name, str) or name not in known:
            raise ArgumentTypeError(
                f"devices must be TensorFlow logical devices (tf.config.list_logical_devices()), "
                f"got {d!r}"
            )
        names.append(name)
    if len(set(names)) != len(names):
        raise ArgumentValueError(f"devices lists a device more than once: {names!r}")
    kinds = {tf.DeviceSpec.from_string(n).device_type for n in names}
    if len(kinds) != 1:
        raise ArgumentValueError(f"devices must all be of one type, got {sorted(kinds)}: {names!r}")
    return TFRowSharding(backend, names)
