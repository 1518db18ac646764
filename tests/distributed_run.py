"""One process of a 2-process x 4-device `jax.distributed` run on localhost (`test_distributed.py`).

Usage: `python tests/distributed_run.py PROCESS_ID PORT FOLDER OUT.npz`, started twice (process
ids 0 and 1) with `XLA_FLAGS=--xla_force_host_platform_device_count=4` and `JAX_PLATFORMS=cpu`:
each process brings 4 virtual CPU devices, `jax.distributed.initialize` joins them into one
8-device runtime (collectives between the processes through gloo), and `fit(..., devices=8)`
row-shards the tables over all eight. Each process writes the trained embeddings and history
(full-batch SGD, minibatch Adam, 2 WALS sweeps) and saves the SGD model sharded into FOLDER (its
own four shards; process 0 also the index).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

NUM_USERS, NUM_ITEMS, NUM_RATINGS, DIM = 37, 29, 500, 4


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


def main(process_id: int, port: int, folder: str, out: str) -> None:
    import jax

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
    sgd.save(folder, sharded=True)
    result.update(trained(models))
    np.savez(out, allow_pickle=False, **result)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
