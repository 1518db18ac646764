"""The size of TensorFlow's sharded ALS sweep program, run in its own process by
`test_sharded_program_tf.py`.

Usage: `python tests/_support/sharded_program_tf.py OUT.npz`. Splits the CPU into 2 logical devices (before
TensorFlow runs anything), then for the block budgets `BUDGETS` (`row_blocks.BLOCK_FLOATS` and
`WHOLE_FLOATS` set to each: the default, where every bucket of this small problem is one block,
and one so small that one device cuts buckets into many blocks, the longest rows into blocks of
one row) and both solvers:

* traces the sharded iALS sweep step (`ials_sweep` on the 2-device placement, `tf.function`
  without running it: DTensor's expansion comes after) and counts the operations of its graph
  (`{solver}_{budget}_ops`), and the `Cholesky` operations among them (`_cholesky`);
* the leading block counts `K` of the buckets one device would make (`row_blocks`, by user and by
  item: `{solver}_{budget}_single_k`) and of the blocks the placement placed (`_sharded_k`);
* the tables and history of 2 sweeps of `IALS.fit` on one device (no `devices`) and on 2
  (`{solver}_{budget}_{1|2}_{user|item|history}`).
"""

from __future__ import annotations

import os
import sys

import numpy as np

NUM_USERS, NUM_ITEMS, NUM_RATINGS, DIM = 300, 120, 12_000, 8
# The default budget, and one of 4096 floats: blocks of 4096 / (4·L·8) rows (CG), 1 from L = 128.
BUDGETS = {"default": None, "small": 1 << 12}


def main(out: str) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import cfcore
    from cfcore.data import row_blocks as rb
    from cfcore.init import init_mf_params
    from cfcore.models import als
    from cfcore.train.sharding import make_placement

    default = (rb.BLOCK_FLOATS, rb.WHOLE_FLOATS)
    train = cfcore.synthetic_ratings(NUM_USERS, NUM_ITEMS, NUM_RATINGS, seed=0).to_implicit(
        threshold=3.5
    )
    be = cfcore.get_backend("tf")
    result: dict[str, np.ndarray] = {}
    for budget, floats in BUDGETS.items():
        # Read by `block_rows` and `row_blocks` at call time.
        rb.BLOCK_FLOATS, rb.WHOLE_FLOATS = default if floats is None else (floats, floats)
        for solver in ("cg", "cholesky"):
            tag = f"{solver}_{budget}"
            spec = cfcore.IALS(embedding_dim=DIM, solver=solver).spec
            single = als.ials_blocks(spec, train)
            place = make_placement(be, 2)
            params = place.params(init_mf_params(spec, NUM_USERS, NUM_ITEMS, 0))
            host = als.ials_blocks(spec, train, place)
            data = place.data(host)
            graph = (
                tf.function(als.ials_sweep(be, spec, place), autograph=False)
                .get_concrete_function(params, data)
                .graph
            )
            ops = [op.type for op in graph.get_operations()]
            result[f"{tag}_ops"] = np.array(len(ops))
            result[f"{tag}_cholesky"] = np.array(ops.count("Cholesky"))
            for name, blocks in (("single", single), ("sharded", host)):
                # The sharded blocks' arrays are `[k, K, B, L]`: K is their second axis.
                axis = 0 if name == "single" else 1
                result[f"{tag}_{name}_k"] = np.array(
                    [
                        b["cols"].shape[axis]
                        for side in ("by_user", "by_item")
                        for b in blocks[side]["buckets"]
                    ]
                )
            for devices in (None, 2):
                model = cfcore.IALS(embedding_dim=DIM, solver=solver)
                model.fit(train, steps=2, backend="tf", devices=devices, progress=False)
                for table, emb in model.embeddings_numpy().items():
                    result[f"{tag}_{devices or 1}_{table}"] = emb
                result[f"{tag}_{devices or 1}_history"] = model.history.to_numpy(np.float64)
    np.savez(out, **result)


if __name__ == "__main__":
    main(sys.argv[1])
