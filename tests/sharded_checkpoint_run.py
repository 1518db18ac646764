"""Sharded checkpoints on virtual CPU devices, one step per process (`test_sharded_checkpoint.py`).

Usage: `python tests/sharded_checkpoint_run.py save K FOLDER OUT.npz` trains `RegularizedMF` on K
devices and saves it sharded into FOLDER, with `ShardedPlacement.to_host` (the only way back to
the host of a whole table) refused meanwhile; OUT gets the embeddings. `... load K FOLDER OUT.npz`
loads FOLDER, writes its embeddings, continues training on K devices and writes those too. The
caller sets `XLA_FLAGS=--xla_force_host_platform_device_count=8` and `JAX_PLATFORMS=cpu`.
"""

from __future__ import annotations

import sys

import numpy as np

import cfcore

NUM_USERS, NUM_ITEMS, NUM_RATINGS, DIM = 37, 29, 500, 4
STEPS = 5


def _fit(model: cfcore.RegularizedMF, k: int) -> None:
    ratings = cfcore.synthetic_ratings(NUM_USERS, NUM_ITEMS, NUM_RATINGS, seed=0)
    model.fit(
        ratings,
        steps=STEPS,
        optimizer=cfcore.optimizers.SGD(1.0),
        backend="jax",
        devices=k,
        progress=False,
    )


def main(mode: str, k: int, folder: str, out: str) -> None:
    from cfcore_jax import sharding

    result: dict[str, np.ndarray] = {}
    if mode == "save":
        model = cfcore.RegularizedMF(embedding_dim=DIM, init_stddev=0.5)
        _fit(model, k)
        gather = sharding.ShardedPlacement.to_host

        def refuse(self, params):
            raise AssertionError("save_sharded gathered a whole table on the host")

        sharding.ShardedPlacement.to_host = refuse
        try:
            model.save(folder, sharded=True)
        finally:
            sharding.ShardedPlacement.to_host = gather
        for table, emb in model.embeddings.items():
            result[table] = emb
    else:
        model = cfcore.load(folder)
        for table, emb in model.embeddings.items():
            result[f"loaded_{table}"] = emb
        _fit(model, k)
        for table, emb in model.embeddings.items():
            result[f"continued_{table}"] = emb
    np.savez(out, allow_pickle=False, **result)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
