"""Row-sharded tables inside a training step on DTensors: the padded view and the row lookup.

`tf.gather` of a row-sharded DTensor all-gathers the whole table (DTensor's gather expansion makes
the gathered axis whole), and so does slicing the padding rows off a table whose row count the
mesh does not divide (a `[29, d]` tensor cannot be split over 2, 4 or 8 devices, so it is made
whole). The sharded step reads its tables through what is here instead (`sharding.TFRowSharding`
sets it up, `kernels` and `ops` pick it while a step is traced in its `scope`):

* `PaddedRows`: a padded table as the objective sees it, its unpadded shape, while the kernels
  that can use the padded rows (the lookup, the Gramian, sums of squares, the softmax's logits)
  take the padded table itself and never slice.
* `take_rows`: `table[ids]` with each device reading only its own rows. The `[k·s, d]` table is
  viewed as `[s, k, d]` split along its device axis (a local reshape and transpose: device j
  holds `[s, 1, d]`); every device receives all the ids (`[n]` ints), gathers `ids mod s` from its
  own part and keeps the rows it owns (`ids div s == j`, zeros elsewhere); the `[n, k, d]` partial
  rows are summed over the device axis, a batched op whose batch axis is sharded, which DTensor
  expands to one local sum per device and one all-reduce of `[n, d]`: the rows, whole on every
  device. Their gradient arrives whole on every device too (the products that use the rows are
  computed whole), and each device scatter-adds those of its own rows into its own `[s, 1, d]`
  part (`UnsortedSegmentSum` along the unsharded axis: local, no collective). The gradient is
  written by hand (`tf.custom_gradient`): left to autodiff, DTensor's layout propagation made the
  table's gradient whole on every device. O(n·d) traffic and memory per device, never a table.

Where the old path, `tf.gather` of the all-gathered table, costs less: when the lookups outnumber
the table's rows (n > R, a full batch of many ratings), it moves and holds O(R·d) where this
holds O(n·d) (measured in `benchmarks/distributed_tf.py`); it is not picked automatically (see
`sharding`'s docstring).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
from tensorflow.experimental import dtensor

_AXIS = "rows"  # the mesh dimension (`sharding._AXIS`)


class PaddedRows:
    """A row-sharded table padded to `k·⌈N/k⌉` rows, seen as its first `rows` rows.

    What the objective reads of it directly (`shape`, `dtype`) is the unpadded table's; converted
    to a tensor by any TensorFlow op (`__tf_tensor__`), it is the unpadded table itself (the
    padding sliced off, which DTensor makes whole on every device: the view as it was before
    this class). The padding rows are zeros, so the kernels that read the padded table directly
    (`padded`) give the unpadded table's values: lookups of ids below `rows`, its Gramian, the sum
    of its squares, the logits with the padding items masked out.

    Args:
        padded: the row-sharded table `[k·⌈N/k⌉, ...]`, zero beyond row `rows`.
        rows: N, the table's true row count.
    """

    def __init__(self, padded: Any, rows: int) -> None:
        self.padded = padded
        self.rows = int(rows)

    @property
    def shape(self) -> tf.TensorShape:
        return tf.TensorShape([self.rows, *self.padded.shape[1:]])

    @property
    def dtype(self) -> tf.DType:
        return self.padded.dtype

    def __tf_tensor__(self, dtype: Any = None, name: Any = None) -> Any:
        # Any op outside the kernels that know the padding: the unpadded table (whole on every
        # device, as DTensor expands the slice).
        return tf.convert_to_tensor(self.padded[: self.rows], dtype=dtype, name=name)

    def _t(self) -> Any:
        return self.__tf_tensor__()

    # Python arithmetic on the table, as on a tensor (through the unpadded table).
    def __add__(self, o: Any) -> Any:
        return self._t() + o

    def __radd__(self, o: Any) -> Any:
        return o + self._t()

    def __sub__(self, o: Any) -> Any:
        return self._t() - o

    def __rsub__(self, o: Any) -> Any:
        return o - self._t()

    def __mul__(self, o: Any) -> Any:
        if self._aligned(o):
            # Two padded arrays of the same rows (a per-row coefficient times the table): the
            # padded product, its padding rows zero, no slice.
            return PaddedRows(self.padded * o.padded, self.rows)
        return self._t() * o

    def __rmul__(self, o: Any) -> Any:
        return o * self._t()

    def _aligned(self, o: Any) -> bool:
        return (
            isinstance(o, PaddedRows)
            and o.rows == self.rows
            and o.padded.shape[0] == self.padded.shape[0]
        )

    def __truediv__(self, o: Any) -> Any:
        return self._t() / o

    def __rtruediv__(self, o: Any) -> Any:
        return o / self._t()

    def __neg__(self) -> Any:
        return -self._t()

    def __getitem__(self, key: Any) -> Any:
        return self._t()[key]


def padded(x: Any) -> tuple[Any, Any]:
    """`(table, rows)`: the padded table and its true row count of a `PaddedRows`, else `(x,
    x.shape[0])` (None where the shape is not static)."""
    if isinstance(x, PaddedRows):
        return x.padded, x.rows
    return x, x.shape[0]


def layout(mesh: Any, rank: int, axis: int | None) -> Any:
    """The layout of a rank-`rank` tensor split along `axis` over `mesh` (None: whole)."""
    specs = [dtensor.UNSHARDED] * rank
    if axis is not None:
        specs[axis] = _AXIS
    return dtensor.Layout(specs, mesh)  # pyright: ignore[reportCallIssue]


def splits(mesh: Any, table: Any) -> bool:
    """Whether `table` (a `PaddedRows` or a tensor) has a row count the mesh divides: the layout
    the placement gave every table, which `take_rows` needs."""
    rows = padded(table)[0].shape[0]
    return rows is not None and rows % mesh.dim_size(_AXIS) == 0


def _ownership(mesh: Any, ids: Any, s: int) -> tuple[Any, Any]:
    """For the `[n]` ids of a `[k·s, ...]` row-sharded table: `(local, mine)`, every id's row
    within its owner's `s` rows (`[n]`, whole on every device: each device receives all the
    ids) and whether device j owns it (bool `[n, k, 1]`, split along its device axis)."""
    k = mesh.dim_size(_AXIS)
    ids = dtensor.relayout(ids, layout(mesh, 1, None))  # every device: all the ids
    device = dtensor.relayout(tf.range(k, dtype=ids.dtype), layout(mesh, 1, 0))
    mine = tf.equal((ids // s)[:, None], device[None, :])  # [n, k]: j owns the id
    return ids % s, dtensor.relayout(mine, layout(mesh, 2, 1))[:, :, None]


def _partial_rows(mesh: Any, table: Any, local: Any, mine: Any) -> Any:
    """`[n, k, d]` split along its device axis: device j's part holds the requested rows it owns
    (read from its own rows) and zeros for the others, so the sum over the device axis is
    `table[ids]` exactly (each row has one owner)."""
    k = mesh.dim_size(_AXIS)
    s, d = int(table.shape[0]) // k, int(table.shape[1])
    by_device = layout(mesh, 3, 1)  # [*, k, *] split along its device axis
    parts = dtensor.relayout(tf.transpose(tf.reshape(table, (k, s, d)), (1, 0, 2)), by_device)
    found = dtensor.relayout(tf.gather(parts, local), by_device)  # [n, k, d]
    # A scalar zero, not `zeros_like`: DTensor makes the latter a constant of the whole
    # `[n, k, d]` shape, held by the compiled step (200 MiB a step at 200k ratings, d 32).
    return tf.where(mine, found, tf.constant(0, found.dtype))


def take_rows(mesh: Any, table: Any, ids: Any) -> Any:
    """`table[ids]` of a row-sharded table, each device reading only its own rows (see the module
    docstring); exact (each row has one owner, the others add zeros).

    Args:
        mesh: the step's 1-D mesh over k devices (`"rows"`).
        table: `[k·s, d]` row-sharded (a `PaddedRows` or a tensor; `splits(mesh, table)`).
        ids: int32 `[n]`, any layout, each below the table's true row count.

    Returns:
        float32 `[n, d]`, whole on every device (what the pairs' products and the softmax's
        labels need; its gradient then arrives whole too, and each device keeps its own rows').
    """
    table, _ = padded(table)
    k = mesh.dim_size(_AXIS)
    s, d = int(table.shape[0]) // k, int(table.shape[1])
    n = int(ids.shape[0])
    by_device = layout(mesh, 3, 1)  # [*, k, *] split along its device axis
    whole = layout(mesh, 2, None)
    local, mine = _ownership(mesh, ids, s)

    @tf.custom_gradient
    def fetch(t: Any) -> Any:
        found = _partial_rows(mesh, t, local, mine)
        rows = dtensor.relayout(tf.reduce_sum(found, axis=1), whole)

        def grad(g: Any) -> Any:
            g = dtensor.relayout(g, whole)  # the [n, d] rows' gradients (whole already)
            g = dtensor.relayout(tf.broadcast_to(g[:, None, :], (n, k, d)), by_device)
            g = tf.where(mine, g, tf.constant(0, g.dtype))
            own = dtensor.relayout(tf.math.unsorted_segment_sum(g, local, s), by_device)
            back = tf.reshape(tf.transpose(own, (1, 0, 2)), (k * s, d))
            return dtensor.relayout(back, layout(mesh, 2, 0))

        return rows, grad

    return fetch(table)


def fetch_rows(mesh: Any, table: Any, wanted: Any) -> Any:
    """Each device's own list of rows of a row-sharded table, read where they live: device j
    receives `table[wanted[j]]` only (what an ALS half-sweep's blocks read of the fixed table).

    As `take_rows` (every device receives all the `[k·U]` ids and reads those it owns, zeros
    elsewhere), but the `[k·U, d]` partial rows are summed into rows split over the devices,
    each device keeping its own `[U, d]`: DTensor's SPMD expansion makes that an all-reduce and a
    local split of its result, which its `DTensorAllReduceScatterOptimization` pass fuses into
    one reduce-scatter (lowered back to the all-reduce and the split on CPU, TF 2.21). O(k·U·d)
    traffic and memory per device, never a whole table; no gradient (the sweeps need none).

    Args:
        mesh: the step's 1-D mesh over k devices (`"rows"`).
        table: `[k·s, d]` row-sharded (a tensor; `splits(mesh, table)`).
        wanted: int32 `[k, U]` split along its device axis, each below the table's true row
            count: device j's rows.

    Returns:
        float32 `[k, U, d]` split along its device axis: device j's part `table[wanted[j]]`.
    """
    table, _ = padded(table)
    k = mesh.dim_size(_AXIS)
    s, d = int(table.shape[0]) // k, int(table.shape[1])
    u = int(wanted.shape[1])
    local, mine = _ownership(mesh, tf.reshape(wanted, (-1,)), s)
    rows = tf.reduce_sum(_partial_rows(mesh, table, local, mine), axis=1)  # [k·U, d]
    rows = dtensor.relayout(rows, layout(mesh, 2, 0))
    return dtensor.relayout(tf.reshape(rows, (k, u, d)), layout(mesh, 3, 0))
