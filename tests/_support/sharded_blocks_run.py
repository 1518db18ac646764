"""Sharded iALS on blocks cut small, run in its own process by `test_sharded_blocks.py`.

Usage: `python tests/_support/sharded_blocks_run.py OUT.npz`; the caller sets
`XLA_FLAGS=--xla_force_host_platform_device_count=2` and `JAX_PLATFORMS=cpu` (read at import).

`tests/_support/sharded_run.py`'s problems are small enough that every bucket is one block; here the block
budget (`row_blocks.BLOCK_FLOATS`, `WHOLE_FLOATS`) is cut so that buckets are split into many
blocks, the longest rows into blocks of one row. Writes the tables and history of 2 iALS sweeps
(CG and Cholesky) on one device and on 2, and the sharded by-item blocks' shapes and fetch lists
next to the one-device blocks' shapes.
"""

from __future__ import annotations

import sys

import numpy as np

import cfcore
from cfcore.data import row_blocks as rb
from cfcore.models import als
from cfcore.train.sharding import make_placement

NUM_USERS, NUM_ITEMS, NUM_RATINGS, DIM = 300, 120, 12_000, 8
BLOCK_FLOATS = 1 << 12  # a bucket of L slots: blocks of 4096 / (4·L·8) rows (CG): 1 from L = 128


def main(out: str) -> None:
    rb.BLOCK_FLOATS = BLOCK_FLOATS  # read by block_rows at call time
    rb.WHOLE_FLOATS = BLOCK_FLOATS
    train = cfcore.synthetic_ratings(NUM_USERS, NUM_ITEMS, NUM_RATINGS, seed=0).to_implicit(
        threshold=3.5
    )
    result: dict[str, np.ndarray] = {}
    for solver in ("cg", "cholesky"):
        for devices in (None, 2):
            model = cfcore.IALS(embedding_dim=DIM, solver=solver)
            model.fit(train, steps=2, backend="jax", devices=devices, progress=False)
            tag = f"{solver}_{devices or 1}"
            for table, emb in model.embeddings_numpy().items():
                result[f"{tag}_{table}"] = emb
            result[f"{tag}_history"] = model.history.to_numpy(np.float64)
    spec = cfcore.IALS(embedding_dim=DIM, solver="cg").spec
    be = cfcore.get_backend("jax")
    # One device's per-length buckets (`bucket_blocks`: what a sharded placement mirrors; one
    # device alone now lays rows out in segments), sized as `ials_blocks` sizes them.
    ones = np.ones(len(train), np.float32)
    single = rb.bucket_blocks(
        train.items, train.users, ones, ones, np.ones(train.num_items), dim=DIM, solver="cg"
    )
    sharded = als.ials_blocks(spec, train, make_placement(be, 2))["by_item"]
    for name, blocks in (("single", single), ("sharded", sharded)):
        shapes = [b["cols"].shape for b in blocks["buckets"]]
        result[f"{name}_shapes"] = np.array(shapes, np.int64)
    # Each device's slots read its own fetch list: the global columns, back from the two.
    k = 2
    fetch = sharded["fetch"].reshape(k, -1)
    result["fetch"] = fetch
    for i, bucket in enumerate(sharded["buckets"]):
        cols = bucket["cols"].reshape(k, -1)
        result[f"fetched_cols_{i}"] = np.stack([fetch[j][cols[j]] for j in range(k)])
    np.savez(out, **result)


if __name__ == "__main__":
    main(sys.argv[1])
