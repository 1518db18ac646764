"""One process of a 2-process x 4-device `jax.distributed` run on localhost (`test_distributed.py`).

Usage: `python tests/_support/distributed_run.py PROCESS_ID PORT FOLDER OUT.npz`, started twice (process
ids 0 and 1) with `XLA_FLAGS=--xla_force_host_platform_device_count=4` and `JAX_PLATFORMS=cpu`:
each process brings 4 virtual CPU devices, `jax.distributed.initialize` joins them into one
8-device runtime (collectives between the processes through gloo), and `fit(..., devices=8)`
row-shards the tables over all eight. Each process writes the trained embeddings and history
(full-batch SGD, minibatch Adam, 2 WALS sweeps) and saves the SGD model sharded into FOLDER (its
own four shards; process 0 also the index), process 1 `SAVE_DELAY_S` late, and writes the files
the folder holds when its save returns (`saved_files`, relative paths).

Then both load FOLDER straight onto the 8 devices (`cfcore.load(FOLDER, backend="jax",
devices=8)`), each reading only its own devices' rows (`place`): every process writes the blocks
of its own devices (`block_<table>_<j>`, the padded rows of mesh position j, with
`start_<table>_<j>`), the row ranges asked of the shard files (`read_<entry>`, e.g.
`read_user_embeddings`: `[start, stop]` each) and the shard members read (`member_<entry>`: the
shard index of each), then continues
`CONTINUE_STEPS` steps of full-batch SGD on the 8 devices (`continued_<table>`, `continued_step`,
`continued_history`). Last, each tries to load FOLDER onto the other process's four devices
only, which must be refused (`foreign_devices_error`: the message).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

NUM_USERS, NUM_ITEMS, NUM_RATINGS, DIM = 37, 29, 500, 4
CONTINUE_STEPS = 5
SAVE_DELAY_S = 2.0


def continue_sgd(model: Any, devices: int | None) -> None:
    """`CONTINUE_STEPS` more steps of full-batch SGD on `model` (as `train` trained it)."""
    import cfcore

    model.fit(
        cfcore.synthetic_ratings(NUM_USERS, NUM_ITEMS, NUM_RATINGS, seed=0),
        steps=CONTINUE_STEPS,
        optimizer=cfcore.optimizers.SGD(1.0),
        backend="jax",
        devices=devices,
        eval_every=CONTINUE_STEPS,
        progress=False,
    )


def train(devices: int | None) -> dict[str, Any]:
    """The three models of the run, trained on `devices` (None: one device): 20 steps of
    full-batch SGD and of minibatch Adam on `RegularizedMF`, 2 WALS sweeps."""
    import cfcore

    ratings = cfcore.synthetic_ratings(NUM_USERS, NUM_ITEMS, NUM_RATINGS, seed=0)
    sgd = cfcore.RegularizedMF(embedding_dim=DIM, init_stddev=0.5)
    sgd.fit(
        ratings,
        steps=20,
        optimizer=cfcore.optimizers.SGD(1.0),
        backend="jax",
        devices=devices,
        eval_every=10,
        progress=False,
    )
    adam = cfcore.RegularizedMF(embedding_dim=DIM, init_stddev=0.5)
    adam.fit(
        ratings,
        steps=20,
        optimizer=cfcore.optimizers.Adam(0.05),
        backend="jax",
        devices=devices,
        batch_size=64,
        eval_every=10,
        progress=False,
    )
    wals = cfcore.WALS(embedding_dim=DIM, init_stddev=0.5)
    wals.fit(ratings, steps=2, backend="jax", devices=devices, progress=False)
    return {"sgd": sgd, "adam": adam, "wals": wals}


def trained(models: dict[str, Any]) -> dict[str, np.ndarray]:
    """Each model's embeddings (`{name}_{table}`) and history (`{name}_history`)."""
    out = {}
    for name, model in models.items():
        for table, emb in model.embeddings.items():
            out[f"{name}_{table}"] = emb
        out[f"{name}_history"] = model.history.to_numpy(np.float64)
    return out


def place(folder: str) -> dict[str, np.ndarray]:
    """`cfcore.load(folder, backend="jax", devices=8)` with the reads of the shard files
    recorded, each device's block, and the loaded model continued on the 8 devices."""
    import cfcore
    from cfcore import persistence
    from cfcore.io import npz

    reads: dict[str, list[tuple[int, int]]] = {}
    members: dict[str, list[int]] = {}
    rows, read_member = persistence.ShardFiles.rows, npz.read_member

    def recorded(self: Any, entry: str, start: int, stop: int) -> np.ndarray:
        reads.setdefault(entry, []).append((start, stop))
        return rows(self, entry, start, stop)

    def recorded_member(path: Any, name: str, *args: Any, **kwargs: Any) -> np.ndarray:
        # shard-<j>-of-<k>.npz: its index j.
        members.setdefault(name, []).append(int(Path(path).name.split("-")[1]))
        return read_member(path, name, *args, **kwargs)

    persistence.ShardFiles.rows = recorded
    npz.read_member = recorded_member
    try:
        model = cfcore.load(folder, backend="jax", devices=8)
    finally:
        persistence.ShardFiles.rows = rows
        npz.read_member = read_member
    session = model._session
    assert session is not None and session.loaded
    out: dict[str, np.ndarray] = {}
    for entry in reads:
        out[f"read_{entry}"] = np.array(reads[entry], np.int64)
        out[f"member_{entry}"] = np.array(members.get(entry, []), np.int64)
    position = {d.id: j for j, d in enumerate(session.placement.devices)}
    for name, table in session.params.items():
        out[f"shape_{name}"] = np.array(table.shape, np.int64)
        for shard in table.addressable_shards:
            j = position[shard.device.id]
            out[f"block_{name}_{j}"] = np.asarray(shard.data)
            out[f"start_{name}_{j}"] = np.int64(shard.index[0].indices(table.shape[0])[0])
    continue_sgd(model, devices=8)
    for table, emb in model.embeddings.items():
        out[f"continued_{table}"] = emb
    out["continued_step"] = np.int64(model.step)
    out["continued_history"] = model.history.to_numpy(np.float64)
    return out


def main(process_id: int, port: int, folder: str, out: str) -> None:
    import jax

    import cfcore

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"localhost:{port}", num_processes=2, process_id=process_id
    )

    result: dict[str, np.ndarray] = {
        "devices": np.array([jax.device_count(), jax.local_device_count(), jax.process_count()])
    }
    models = train(devices=8)
    sgd = models["sgd"]
    session = sgd._session
    assert session is not None
    result["local_shard_rows"] = np.array(
        [s.data.shape[0] for s in session.params["user"].addressable_shards]
    )
    if process_id == 1:
        # The second process saves late: the first must still return from its save only once
        # the whole checkpoint is written (`saved_files`), or its load would miss shards.
        time.sleep(SAVE_DELAY_S)
    sgd.save(folder, sharded=True)
    result["saved_files"] = np.array(
        sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file())
    )
    result.update(trained(models))
    result.update(place(folder))
    # A mesh of the other process's devices only: refused, before any file is read.
    other = [d for d in jax.devices() if d.process_index != process_id]
    try:
        cfcore.load(folder, backend="jax", devices=other)
    except ValueError as err:
        result["foreign_devices_error"] = np.array(str(err))
    np.savez(out, allow_pickle=False, **result)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
