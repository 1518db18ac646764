"""Row-sharded training on several JAX devices: the primitives that spread the tables.

`fit(..., devices=...)` asks the backend for its row-sharding primitives
(`JaxBackend.row_sharding`, a `cfcore.backend.sharding.RowSharding`), and core builds the
placement on them (its `RowShardedPlacement`): a 1-D `jax.sharding.Mesh` named `"rows"` over the
devices, every parameter table row-sharded over it (`P("rows", None)`), the ratings (and the
minibatch positions) split along their one axis. The compiled chunk is the same `jax.jit` loop as
on one device; the optimizer state, made by `zeros_like` of the placed parameters, inherits the
tables' sharding.

What XLA's SPMD partitioner would do badly is written by hand with `jax.shard_map`, picked by the
backend's kernels while a step is traced in `JaxRowSharding.scope()`:

* `pair_dot`: the observed pairs' rows are gathered where they live (`_ring_rows`: each device's
  request travels round the ring of devices, every device filling in the rows it owns, by
  collective-permutes of `[n/k, d]`): O(n·d) traffic and O(n/k·d) memory per device. `jnp.take`
  of a row-sharded table would all-gather the whole table. The other lookups (`take_rows`: the
  softmax model's rows, the ALS sweeps' fixed rows) use `_own_rows` (all the indices to every
  device, one reduce-scatter of the `[n, d]` partial rows): the same traffic in one collective.
* `gramian`: per-shard Gramians summed by one `d × d` all-reduce (gravity, the ALS priors).
* the per-device map core's ALS half-sweep runs on (`per_device`: one `jax.shard_map`, psum for
  summed outputs) and its fetch of each device's fixed rows (`fetch_rows`: `_own_rows`, U
  distinct rows a device; a table with every row read by every device moves about k copies of
  itself, never by an all-gather).

JAX refuses shardings that do not divide an axis evenly, so a table of N rows is padded with zero
rows to `k·⌈N/k⌉` (each device holds ⌈N/k⌉ rows) and the ratings with zero entries to a multiple
of k. The padding never reaches the objective: `view` slices it off inside the compiled step (the
shard_map kernels pad back, which XLA folds into local copies), so the loss, its gradients and
the penalties' row counts are those of the unpadded problem, and the padded rows get zero
gradients (they stay zero under SGD, Adam and Adagrad, and ALS never solves them).

Several processes (`jax.distributed.initialize`) work unchanged: `devices=k` counts every
process's devices, and only bringing a whole table back to the host (`to_host`) gathers across
processes. Checkpoints (`host_shards`) copy each device's rows on their own, the processes wait
for each other's shards before the index is written (`barrier`), and loading one onto the devices
(`put_rows`) reads only this process's devices' rows. A mesh without any of this process's
devices is refused (`row_sharding`): the process could neither place nor run anything there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import Any

import jax
import jax.numpy as jnp
import jax.sharding as jsh
import numpy as np
from jax import lax

from cfcore.backend.sharding import TOKEN_BYTES, RowSharding, padded_rows
from cfcore.errors import ArgumentTypeError, ArgumentValueError

# The mesh of the sharded step being traced (set by `JaxRowSharding.scope`): the backend's
# `pair_dot` and `gramian` then run their shard_map forms below instead of the plain kernels.
_ACTIVE: ContextVar[Any] = ContextVar("cfcore_jax_sharded_mesh", default=None)
_AXIS = "rows"
_HIGHEST = lax.Precision.HIGHEST


def active_mesh() -> Any:
    """The mesh of the sharded step being traced, or None (single-device code)."""
    return _ACTIVE.get()


class JaxRowSharding(RowSharding):
    """Row-sharding primitives over JAX `devices` (`cfcore.backend.sharding.RowSharding`).

    Args:
        backend: the JAX backend.
        devices: the `jax.Device`s, at least one, all distinct.

    Attributes:
        devices: the devices, in mesh order.
        mesh: the 1-D `jax.sharding.Mesh` over them, axis `"rows"`.
    """

    sums_outputs = True  # `per_device(..., out="sum")`: a psum inside shard_map

    def __init__(self, backend: Any, devices: Sequence[Any]) -> None:
        super().__init__(backend, devices)
        self.mesh = jsh.Mesh(np.array(self.devices, dtype=object), (_AXIS,))

    @property
    def devices_key(self) -> Any:
        return tuple(int(d.id) for d in self.devices)

    def put(self, a: np.ndarray, axis: int | None = 0) -> Any:
        spec: list[str | None] = [None] * a.ndim
        if axis is not None:
            spec[axis] = _AXIS
        return jax.device_put(a, jsh.NamedSharding(self.mesh, jsh.PartitionSpec(*spec)))

    def put_rows(self, block: Any, shape: tuple[int, ...]) -> Any:
        """A row-sharded `jax.Array` of the padded `shape` from its devices' blocks (`block(j)`:
        device j's rows, float32 `[R, ...]`), each put on its own device: the whole table is never
        on the host or on one device. Only this process's devices are asked for their block."""
        here = jax.process_index()
        parts = [
            jax.device_put(block(j), d)
            for j, d in enumerate(self.devices)
            if d.process_index == here
        ]
        spec = jsh.PartitionSpec(_AXIS, *([None] * (len(shape) - 1)))
        return jax.make_array_from_single_device_arrays(
            shape, jsh.NamedSharding(self.mesh, spec), parts
        )

    def per_device(self, fn: Any, args: Any, kinds: Any, out: Any) -> Any:
        """`fn` on every device over its own parts (`jax.shard_map`, the plain kernels inside):
        `"rows"` arguments padded back to a multiple of k where `view` sliced them, `"parts"`
        split along their leading axis, `"whole"` replicated; `"sum"` outputs psum-ed."""
        mesh = self.mesh
        split, rep = jsh.PartitionSpec(_AXIS), jsh.PartitionSpec()
        placed, specs = [], []
        for a, kind in zip(args, kinds, strict=True):
            placed.append(_repad(mesh, a) if kind == "rows" else a)
            spec = rep if kind == "whole" else split
            specs.append(jax.tree.map(lambda _, s=spec: s, a))
        single = isinstance(out, str)
        outs = (out,) if single else tuple(out)

        def local(*parts: Any) -> Any:
            token = _ACTIVE.set(None)  # already per device: plain kernels inside
            try:
                got = fn(*parts)
                got = (got,) if single else tuple(got)
                got = tuple(
                    lax.psum(g, _AXIS) if o == "sum" else g for g, o in zip(got, outs, strict=True)
                )
                return got[0] if single else got
            finally:
                _ACTIVE.reset(token)

        out_specs = tuple(rep if o == "sum" else split for o in outs)
        run = jax.shard_map(
            local,
            mesh=mesh,
            in_specs=tuple(specs),
            out_specs=out_specs[0] if single else out_specs,
        )
        return run(*placed)

    def fetch_rows(self, table: Any, wanted: Any) -> Any:
        """Device j's rows `table[wanted_j]` (`wanted` int32 `[k·U]`, split), fetched by the
        shard_map gather (`take_rows`: O(k·U·d) traffic, never a whole-table all-gather)."""
        return take_rows(self.mesh, table, wanted)

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """While tracing a step inside it, the backend's `pair_dot` and `gramian` are the
        shard_map kernels over this mesh (`pair_dot`, `gramian` below)."""
        token = _ACTIVE.set(self.mesh)
        try:
            yield
        finally:
            _ACTIVE.reset(token)

    def host_shards(
        self, params: dict[str, Any], rows: dict[str, int]
    ) -> list[tuple[int, int, dict[str, Any]]]:
        """The shards of this process's devices, in mesh order, each copied from its own device
        (never a whole table on the host): `[(position, k, {name: (start, stop, rows)})]`, the
        padding rows left out."""
        position = {d.id: j for j, d in enumerate(self.devices)}
        out: dict[int, dict[str, Any]] = {}
        for name, arr in params.items():
            true_rows = rows.get(name, arr.shape[0])
            for shard in arr.addressable_shards:
                start, stop, _ = shard.index[0].indices(arr.shape[0])
                stop = min(stop, true_rows)
                start = min(start, stop)
                block = np.asarray(shard.data, np.float32)[: stop - start]
                out.setdefault(position[shard.device.id], {})[name] = (start, stop, block)
        return [(j, self.num_devices, out[j]) for j in sorted(out)]

    @property
    def is_primary(self) -> bool:
        # The first process holding devices of the mesh (process 0 need not hold any).
        return jax.process_index() == min(d.process_index for d in self.devices)

    def barrier(self) -> None:
        """Returns once every process holding devices of the mesh has called it: an all-reduce
        over the mesh, which no device finishes before every device has entered it (one
        process: at once). The processes outside the mesh take no part."""
        if len({d.process_index for d in self.devices}) == 1:
            return
        ones = self.put(np.ones(self.num_devices, np.float32))
        total = jax.jit(jnp.sum)(ones)  # replicated: every device waits for all the others
        got = float(np.asarray(total.addressable_data(0)))
        if got != self.num_devices:  # a collective that did not include every device
            raise RuntimeError(f"barrier over {self.num_devices} devices counted {got}")

    def broadcast_token(self, token: bytes) -> bytes:
        """The primary's `token` in every process of the mesh: a sum over the mesh's devices of
        one row each, all zero but the primary's first device's (the token's length and bytes,
        exact in float32), replicated back to every device (one process: `token` itself)."""
        if len(token) > TOKEN_BYTES:
            raise ArgumentValueError(f"a token of {len(token)} bytes: at most {TOKEN_BYTES}")
        processes = [d.process_index for d in self.devices]
        if len(set(processes)) == 1:
            return token
        source = processes.index(min(processes))  # the primary's first mesh position
        row = np.zeros((1, TOKEN_BYTES + 1), np.float32)
        row[0, 0] = len(token)
        row[0, 1 : len(token) + 1] = np.frombuffer(token, np.uint8)
        blank = np.zeros_like(row)
        rows = self.put_rows(
            lambda j: row if j == source else blank, (self.num_devices, row.shape[1])
        )
        replicated = jsh.NamedSharding(self.mesh, jsh.PartitionSpec())
        total = jax.jit(lambda a: jnp.sum(a, axis=0), out_shardings=replicated)(rows)
        got = np.asarray(total.addressable_data(0)).astype(np.int64)
        return bytes(got[1 : got[0] + 1].astype(np.uint8).tolist())

    def to_host(self, params: dict[str, Any], rows: dict[str, int]) -> dict[str, np.ndarray]:
        """The tables gathered back to the host, padding removed: float32 NumPy arrays."""
        out = {}
        for k, v in params.items():
            if v.is_fully_addressable:
                a = np.asarray(self.backend.to_numpy(v), np.float32)
            else:
                # Several processes (`jax.distributed`): every one receives the whole table.
                from jax.experimental import multihost_utils

                a = np.asarray(multihost_utils.process_allgather(v, tiled=True), np.float32)
            out[k] = a[: rows.get(k, a.shape[0])]
        return out


def _repad(mesh: Any, x: Any) -> Any:
    """`x` (`[n, ...]`, row-sharded with its padding sliced off by `view`) zero-padded back to a
    multiple of the device count and constrained to row sharding: what shard_map needs. XLA folds
    the slice and the pad into local copies (no communication: checked in the tests' HLO)."""
    k = mesh.devices.size
    rows = padded_rows(x.shape[0], k)
    if rows != x.shape[0]:
        x = jnp.pad(x, [(0, rows - x.shape[0])] + [(0, 0)] * (x.ndim - 1))
    spec = jsh.PartitionSpec(_AXIS, *([None] * (x.ndim - 1)))
    return lax.with_sharding_constraint(x, jsh.NamedSharding(mesh, spec))


def _own_rows(table: Any, idx: Any) -> Any:
    """Inside shard_map: the rows `table[idx]` of this device's pairs, `[n/k, d]`.

    Every device receives all the pairs' indices (`[n]` ints), reads those of its own `[N/k, d]`
    shard (zeros elsewhere) and a reduce-scatter sums the `[n, d]` partial rows, each device
    keeping its own pairs' `[n/k, d]`: the traffic is O(n·d), never a whole table. The backward
    pass (JAX's transpose) all-gathers the `[n, d]` cotangents of the pairs' rows and each device
    scatter-adds those of its own rows.
    """
    per = table.shape[0]
    wanted = lax.all_gather(idx, _AXIS, tiled=True)
    local = wanted - lax.axis_index(_AXIS) * per
    own = (local >= 0) & (local < per)
    rows = jnp.take(table, jnp.clip(local, 0, per - 1), axis=0)
    rows = jnp.where(own[:, None], rows, jnp.zeros_like(rows))
    return lax.psum_scatter(rows, _AXIS, scatter_dimension=0, tiled=True)


def _ring_rows(table: Any, idx: Any) -> Any:
    """Inside shard_map: the rows `table[idx]` of this device's pairs, `[n/k, d]`, passed round
    the devices instead of gathered from all of them at once (`_own_rows`).

    Each device's request (its `[n/k]` indices with the `[n/k, d]` rows found so far) travels
    round the ring of devices: at each stop the device fills in the rows it owns (each row has
    one owner, so the sum is exact), then passes the request on; after k stops it is back home,
    complete. The traffic is that of `_own_rows` (O(n·d) per device), but no device ever holds
    more than one request's `[n/k, d]` rows, nor all the pairs' indices; the backward pass runs
    the ring the other way, each device scatter-adding the cotangents of its own rows.
    """
    k = lax.axis_size(_AXIS)
    me = lax.axis_index(_AXIS)
    per = table.shape[0]
    if k == 1:  # one device owns every row: nothing to pass on
        return jnp.take(table, jnp.clip(idx, 0, per - 1), axis=0)
    ring = [(j, (j + 1) % k) for j in range(k)]
    request, rows = idx, jnp.zeros((idx.shape[0], table.shape[1]), table.dtype)
    for stop in range(k):
        # The request held here at this stop left device (me - stop) mod k.
        local = request - me * per
        own = (local >= 0) & (local < per)
        found = jnp.take(table, jnp.clip(local, 0, per - 1), axis=0)
        rows = rows + jnp.where(own[:, None], found, jnp.zeros_like(found))
        # On to the next device (the last hop brings the rows home; the indices stay).
        rows = lax.ppermute(rows, _AXIS, ring)
        if stop < k - 1:
            request = lax.ppermute(request, _AXIS, ring)
    return rows


def pair_dot(mesh: Any, user_emb: Any, item_emb: Any, users: Any, items: Any) -> Any:
    """`⟨U[users[k]], V[items[k]]⟩` with U, V row-sharded over `mesh`: float32 `[n]`.

    Args:
        mesh: the 1-D mesh (axis "rows").
        user_emb: `[N, d]`, item_emb: `[M, d]`: row-sharded (any N, M: padded here).
        users, items: int32 `[n]` (any n: padded here, the padding sliced off the result).
    """
    n = users.shape[0]
    p, r = jsh.PartitionSpec(_AXIS, None), jsh.PartitionSpec(_AXIS)

    def local(u: Any, v: Any, us: Any, it: Any) -> Any:
        return jnp.sum(_ring_rows(u, us) * _ring_rows(v, it), axis=1)

    dot = jax.shard_map(local, mesh=mesh, in_specs=(p, p, r, r), out_specs=r)
    out = dot(
        _repad(mesh, user_emb), _repad(mesh, item_emb), _repad(mesh, users), _repad(mesh, items)
    )
    return out[:n]


def _repad_columns(mesh: Any, x: Any) -> Any:
    """`[B, V]` zero-padded to a multiple of the device count along V and split along it."""
    cols = padded_rows(x.shape[1], mesh.devices.size)
    if cols != x.shape[1]:
        x = jnp.pad(x, [(0, 0), (0, cols - x.shape[1])])
    return lax.with_sharding_constraint(x, jsh.NamedSharding(mesh, jsh.PartitionSpec(None, _AXIS)))


def take_rows(mesh: Any, table: Any, idx: Any) -> Any:
    """`table[idx]` of a row-sharded `[N, d]` table: `[n, d]` (split over the devices), the rows
    fetched where they live (`_own_rows`), never the whole table."""
    n = idx.shape[0]
    rows, split = jsh.PartitionSpec(_AXIS, None), jsh.PartitionSpec(_AXIS)
    fetch = jax.shard_map(_own_rows, mesh=mesh, in_specs=(rows, split), out_specs=rows)
    return fetch(_repad(mesh, table), _repad(mesh, idx))[:n]


def bag_of_words(mesh: Any, table: Any, ids: Any, weights: Any, combiner: str) -> Any:
    """`kernels.bag_of_words` of a row-sharded table: the bags' rows fetched by `take_rows`."""
    if ids is None:
        # Dense weights [B, V]: each device multiplies its columns of the weights by its rows of
        # the table, one all-reduce of the [B, d] sums.
        def local(w: Any, t: Any) -> Any:
            return lax.psum(jnp.matmul(w, t, precision=_HIGHEST), _AXIS)

        cols = jsh.PartitionSpec(None, _AXIS)
        product = jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(cols, jsh.PartitionSpec(_AXIS, None)),
            out_specs=jsh.PartitionSpec(),
        )
        total = product(_repad_columns(mesh, weights), _repad(mesh, table))
    else:
        flat = take_rows(mesh, table, jnp.reshape(ids, (-1,)))
        rows = jnp.reshape(flat, (*ids.shape, table.shape[1]))
        total = jnp.einsum("...l,...ld->...d", weights, rows, precision=_HIGHEST)
    if combiner == "sum":
        return total
    count = jnp.sum(weights, axis=-1, keepdims=True)
    return total / jnp.where(count > 0, count, 1.0)


def softmax_cross_entropy(mesh: Any, query_emb: Any, item_emb: Any, labels: Any) -> Any:
    """Mean full-softmax cross-entropy over a row-sharded item table: each device computes the
    logits of its own items (`[B, M/k]`), the log-sum-exp is combined by a max and a sum over the
    devices (`[B]` each), and the labels' logits are `⟨q, V[label]⟩` with the rows fetched by
    `take_rows`: the table and the `[B, M]` logits never move."""
    num_items = item_emb.shape[0]

    def local(q: Any, v: Any) -> Any:
        # This device's logits [B, M/k], its padding rows masked out of the log-sum-exp.
        logits = jnp.matmul(q, v.T, precision=_HIGHEST)
        first = lax.axis_index(_AXIS) * v.shape[0]
        real = first + jnp.arange(v.shape[0]) < num_items
        logits = jnp.where(real[None, :], logits, -jnp.inf)
        # A shift for stability only (the value does not depend on it): no gradient through it.
        top = lax.pmax(lax.stop_gradient(jnp.max(logits, axis=1)), _AXIS)
        total = lax.psum(jnp.sum(jnp.exp(logits - top[:, None]), axis=1), _AXIS)
        return top + jnp.log(total)

    lse = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(jsh.PartitionSpec(), jsh.PartitionSpec(_AXIS, None)),
        out_specs=jsh.PartitionSpec(),
    )(query_emb, _repad(mesh, item_emb))
    picked = jnp.sum(query_emb * take_rows(mesh, item_emb, labels), axis=1)
    return jnp.mean(lse - picked)


def sampled_softmax_loss(
    mesh: Any, query_emb: Any, item_emb: Any, labels: Any, log_q: Any, remove_accidental_hits: bool
) -> Any:
    """`kernels.sampled_softmax_loss` with the labels' rows fetched by `take_rows`."""
    from . import kernels

    rows = take_rows(mesh, item_emb, labels)
    return kernels.sampled_softmax_from_rows(query_emb, rows, labels, log_q, remove_accidental_hits)


def gramian(mesh: Any, x: Any) -> Any:
    """`xᵀx` of a row-sharded `[N, d]` table as the sum of the per-shard Gramians: one all-reduce
    of a `[d, d]` matrix; the result `[d, d]` is replicated."""
    rows = jsh.PartitionSpec(_AXIS, None)

    def local(xs: Any) -> Any:
        return lax.psum(jnp.matmul(xs.T, xs, precision=_HIGHEST), _AXIS)

    return jax.shard_map(local, mesh=mesh, in_specs=(rows,), out_specs=jsh.PartitionSpec())(
        _repad(mesh, x)
    )


def row_sharding(backend: Any, devices: Any) -> JaxRowSharding:
    """The row-sharding primitives of `fit(..., devices=devices)` on JAX.

    Args:
        backend: the bound JAX backend.
        devices: an int k (the first k of `jax.devices()`) or a sequence of `jax.Device`.

    Raises:
        ValueError: k out of range, or the devices empty, repeated or not JAX devices.
    """
    available = jax.devices()
    if isinstance(devices, int | np.integer) and not isinstance(devices, bool | np.bool_):
        if not 1 <= int(devices) <= len(available):
            raise ArgumentValueError(
                f"devices={int(devices)} but the JAX backend has {len(available)} device(s) "
                f"({available[0].platform}); expected an int from 1 to {len(available)}"
            )
        return JaxRowSharding(backend, _with_own(available[: int(devices)], devices))
    if isinstance(devices, str | bytes) or not isinstance(devices, Sequence):
        raise ArgumentTypeError(
            f"devices must be None, an int or a list of jax devices, got {type(devices).__name__}"
        )
    chosen = list(devices)
    if not chosen:
        raise ArgumentValueError("devices is an empty list: expected at least one jax device")
    bad = [d for d in chosen if not isinstance(d, jax.Device)]
    if bad:
        raise ArgumentTypeError(f"devices must be jax.Device objects, got {bad[0]!r}")
    if len({d.id for d in chosen}) != len(chosen):
        raise ArgumentValueError(f"devices lists a device more than once: {chosen!r}")
    return JaxRowSharding(backend, _with_own(chosen, devices))


def _with_own(chosen: list[Any], asked: Any) -> list[Any]:
    """`chosen`, refused if none of them is this process's (several processes,
    `jax.distributed`): a process can neither place nor run anything on a mesh of other
    processes' devices only (JAX fails later, obscurely: no addressable shards)."""
    here = jax.process_index()
    if any(d.process_index == here for d in chosen):
        return chosen
    owners = sorted({int(d.process_index) for d in chosen})
    raise ArgumentValueError(
        f"devices={asked!r} are devices of process(es) {owners} only, none of this process's "
        f"(process {here} of {jax.process_count()}, holding {jax.local_device_count()} "
        f"device(s)): every process must hold some of the devices it places on; pass "
        f"devices={jax.device_count()} (every process's) or a list including jax.local_devices()"
    )
