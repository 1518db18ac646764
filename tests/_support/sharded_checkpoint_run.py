"""Sharded checkpoints on virtual CPU devices, one step per process (`test_sharded_checkpoint.py`).

Usage: `python tests/_support/sharded_checkpoint_run.py save K FOLDER OUT.npz` trains `RegularizedMF` on K
devices and saves it sharded into FOLDER, with `RowSharding.to_host` (the only way back to
the host of a whole table) refused meanwhile; OUT gets the embeddings.

`... load K FOLDER OUT.npz` loads FOLDER, writes its embeddings, continues training on K devices
and writes those too.

`... place K FOLDER OUT.npz` loads FOLDER straight onto K devices (`cfcore.load(folder,
devices=K)`) with every way of bringing a whole table to or from the host refused (assembling
the shards, placing host tables, gathering them back) and writes each device's block of each
table (`block_<table>_<j>`, the padded rows device j holds, with `start_<table>_<j>`), the row
count of every range asked of the shard files (`read_rows`) and of every shard member read
(`member_rows`); continues training on K devices (still refused: the session must be taken over
as placed), saves it sharded into `FOLDER-jax-K` and writes the continued embeddings
(`continued_<table>`), step and history; and the same for the reference, `cfcore.load(FOLDER)`
then `fit(..., devices=K)` (`reference_<table>`, ...).

`... place-tf K FOLDER OUT.npz`: `place` on K of 8 logical TensorFlow CPU devices (saving into
`FOLDER-tf-K`).

`... kill K SOURCE FOLDER POINT` loads SOURCE onto K devices and saves it sharded into FOLDER,
SIGKILLing itself at POINT of the save (`kill_at`); it never returns.

`... kill2 PROCESS_ID PORT SOURCE FOLDER POINT`: the same in one of 2 `jax.distributed` processes
of 4 devices each (`tests/_support/distributed_run.py`'s set-up: the caller sets a device count of 4), the
checkpoint placed on all 8; only the process that reaches POINT kills itself (the caller kills
the other, as a pre-empted job loses all its processes).

The caller sets `XLA_FLAGS=--xla_force_host_platform_device_count=8` and `JAX_PLATFORMS=cpu`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

import cfcore

NUM_USERS, NUM_ITEMS, NUM_RATINGS, DIM = 37, 29, 500, 4
STEPS = 5


def _fit(model: Any, k: int, backend: str = "jax") -> None:
    ratings = cfcore.synthetic_ratings(NUM_USERS, NUM_ITEMS, NUM_RATINGS, seed=0)
    model.fit(
        ratings,
        steps=STEPS,
        optimizer=cfcore.optimizers.SGD(1.0),
        backend=backend,
        devices=k,
        progress=False,
    )


@contextlib.contextmanager
def _refused(*targets: tuple[Any, str]) -> Iterator[None]:
    """Each `(owner, attribute)` replaced by a function that fails the run, meanwhile."""
    kept = [(owner, name, owner.__dict__[name]) for owner, name in targets]

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a whole table went through the host")

    for owner, name, _ in kept:
        setattr(owner, name, refuse)
    try:
        yield
    finally:
        for owner, name, value in kept:
            setattr(owner, name, value)


def _place(k: int, folder: str, backend: str, placement: type, blocks: Any) -> dict[str, Any]:
    """The `place` run on `backend` (its `RowSharding` and `blocks(array)`: each device's
    block, in mesh order, as `(start row, rows)`)."""
    from cfcore import persistence
    from cfcore.io import npz
    from cfcore.train.placement import RowShardedPlacement

    result: dict[str, Any] = {}
    read_rows: list[int] = []
    member_rows: list[int] = []
    rows, read_member = persistence.ShardFiles.rows, npz.read_member

    def recorded(self: Any, entry: str, start: int, stop: int) -> np.ndarray:
        read_rows.append(stop - start)
        return rows(self, entry, start, stop)

    def recorded_member(*args: Any, **kwargs: Any) -> np.ndarray:
        member = read_member(*args, **kwargs)
        member_rows.append(len(member))
        return member

    refused = [
        (persistence, "_assemble"),
        (RowShardedPlacement, "params"),
        (placement, "to_host"),
    ]
    persistence.ShardFiles.rows = recorded
    npz.read_member = recorded_member
    try:
        with _refused(*refused):
            model = cfcore.load(folder, backend=backend, devices=k)
            for name, table in model._session.params.items():
                for j, (start, data) in enumerate(blocks(table)):
                    result[f"block_{name}_{j}"] = data
                    result[f"start_{name}_{j}"] = np.int64(start)
            _fit(model, k, backend)
            model.save(f"{folder}-{backend}-{k}", sharded=True)
    finally:
        persistence.ShardFiles.rows = rows
        npz.read_member = read_member
    result["read_rows"] = np.array(read_rows, np.int64)
    result["member_rows"] = np.array(member_rows, np.int64)
    reference = cfcore.load(folder)
    _fit(reference, k, backend)
    for who, m in (("continued", model), ("reference", reference)):
        for table, emb in m.embeddings.items():
            result[f"{who}_{table}"] = emb
        result[f"{who}_step"] = np.int64(m.step)
        result[f"{who}_history"] = m.history.to_numpy(np.float64)
    return result


def kill_at(point: str) -> None:
    """Makes this process SIGKILL itself at `point` of its sharded saves: `after-<j>` (shard j's
    file in place), `torn-<j>` (half of shard j's temporary file written, not renamed),
    `before-index` (every shard written, the index not begun) or `after-index` (the index in
    place, the stale generations not yet removed). The saves write every file through
    `cfcore.io.atomic.atomic_write`, which this wraps."""
    from cfcore.io import atomic

    write_file = atomic.atomic_write
    what, _, j = point.partition("-")
    shard = f"shard-{int(j):05d}-of-" if j.isdigit() else None

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def killing(path: Any, write: Any) -> Path:
        name = Path(path).name
        mine = shard is not None and name.startswith(shard)
        if point == "before-index" and name == "model.npz":
            die()
        if what == "torn" and mine:

            def torn(tmp: Path) -> None:
                write(tmp)
                os.truncate(tmp, tmp.stat().st_size // 2)
                die()

            return write_file(path, torn)
        written = write_file(path, write)
        if (what == "after" and mine) or (point == "after-index" and name == "model.npz"):
            die()
        return written

    atomic.atomic_write = killing


def _save_killed(source: str, folder: str, devices: int, point: str) -> None:
    """Loads `source` onto `devices` devices and saves it sharded into `folder`, killed at
    `point` (`kill_at`)."""
    model = cfcore.load(source, backend="jax", devices=devices)
    kill_at(point)
    model.save(folder, sharded=True)
    raise AssertionError(f"the save into {folder} returned: {point!r} was never reached")


def kill_main(mode: str, *args: str) -> None:
    """`kill K SOURCE FOLDER POINT` or `kill2 PROCESS_ID PORT SOURCE FOLDER POINT`."""
    if mode == "kill":
        k, source, folder, point = args
        _save_killed(source, folder, int(k), point)
    import jax

    process_id, port, source, folder, point = args
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"localhost:{port}", num_processes=2, process_id=int(process_id)
    )
    _save_killed(source, folder, 8, point)


def main(mode: str, k: int, folder: str, out: str) -> None:
    result: dict[str, Any] = {}
    if mode == "place-tf":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 8
        )
        from cfcore_tf import sharding as tf_sharding
        from tensorflow.experimental import dtensor

        def tf_blocks(table: Any) -> list[tuple[int, np.ndarray]]:
            parts = [c.numpy() for c in dtensor.unpack(table)]
            starts = np.cumsum([0] + [len(p) for p in parts[:-1]])
            return list(zip(starts.tolist(), parts, strict=True))

        result = _place(k, folder, "tf", tf_sharding.TFRowSharding, tf_blocks)
        np.savez(out, allow_pickle=False, **result)
        return

    from cfcore_jax import sharding

    if mode == "save":
        model = cfcore.RegularizedMF(embedding_dim=DIM, init_stddev=0.5)
        _fit(model, k)
        with _refused((sharding.JaxRowSharding, "to_host")):
            model.save(folder, sharded=True)
        for table, emb in model.embeddings.items():
            result[table] = emb
    elif mode == "load":
        model = cfcore.load(folder)
        for table, emb in model.embeddings.items():
            result[f"loaded_{table}"] = emb
        _fit(model, k)
        for table, emb in model.embeddings.items():
            result[f"continued_{table}"] = emb
    else:

        def jax_blocks(table: Any) -> list[tuple[int, np.ndarray]]:
            position = {d.id: j for j, d in enumerate(table.sharding.mesh.devices.flat)}
            shards = sorted(table.addressable_shards, key=lambda s: position[s.device.id])
            return [(int(s.index[0].start or 0), np.asarray(s.data)) for s in shards]

        result = _place(k, folder, "jax", sharding.JaxRowSharding, jax_blocks)
    np.savez(out, allow_pickle=False, **result)


if __name__ == "__main__":
    if sys.argv[1] in ("kill", "kill2"):
        kill_main(*sys.argv[1:])
    else:
        main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
