"""One configuration of sharded TensorFlow training, run in its own process by `test_sharding_tf.py`.

Usage: `python tests/_support/sharded_run_tf.py K OUT.npz` with `K` "none" (single device, the reference)
or the device count. TensorFlow fixes its logical devices when it first runs an op, hence one
process per configuration: for K devices the CPU is split into K logical devices here, first.
With `DUMP` set (a folder), DTensor writes the programs it runs after each of its passes there
(`TF_DUMP_GRAPH_PREFIX`, one subfolder per run), and the collectives of each run's training step
after DTensor's SPMD expansion are read back from them.

Writes, for `MatrixFactorization`, `RegularizedMF` and `BiasedMF`, the parameters and history after
50 steps of full-batch SGD and of minibatch Adam, the same after 2 ALS sweeps of `WALS`, `IALS` and
`BiasedMF` and after 30 Adagrad steps of the softmax model (full and sampled softmax), sharded
checkpoints next to OUT (`OUT.<run>.ckpt`), and for K devices the row count and device of every
component of each table and of each 2-D optimizer slot (read from the DTensors themselves), and
the result shapes `[R, C]` of the 2-D all-gathers and all-reduces in its training step; for each
ALS model on K devices, what each device's component of the row blocks `fit` placed holds (see
`_als_blocks`) and (with `DUMP`) the rows each device solves per Cholesky op of the sweep step; and
the embeddings of a regularized model trained by three `fit` calls of 5, 7 and 3 SGD steps (on the
K devices given as a list).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np

NUM_USERS, NUM_ITEMS, NUM_RATINGS, DIM = 40, 29, 500, 4
STEPS, BATCH = 50, 64
# The softmax model as `sharded_run.py` trains it on JAX (29 items: padded on 2, 4 and 8 devices).
SOFTMAX_ITEMS, SOFTMAX_DIMS = 29, {"movie_id": 4, "genre": 2, "year": 2}
# `"tf.DTensorAllGather"(...) ... : (tensor<10x4xf32>, ...) -> tensor<40x4xf32>`: the op and the
# shape of its result, in DTensor's MLIR dump.
COLLECTIVE = re.compile(r'"tf\.DTensor(AllGather|AllReduce)"[^\n]*\) -> tensor<(\d+)x(\d+)xf32>')
# The same for a 1-D float result (`tensor<30xf32>`): a bias vector made whole.
COLLECTIVE_1D = re.compile(r'"tf\.DTensor(AllGather)"[^\n]*\) -> tensor<(\d+)xf32>')
# The compiled training step: `compile_loop`'s `one_step` (DTensor runs a host loop of it).
LOOP_DUMP = re.compile(r"after_DTensorSPMDExpansion\.__inference_one_step_\d+\.mlir$")
# `"tf.Cholesky"(%1) ... : (tensor<1x10x4x4xf32>) -> ...`: a batched factorization and its local
# operand shape on one device (after SPMD expansion), batch axes first.
CHOLESKY = re.compile(r'"tf\.Cholesky"[^\n]*: \(tensor<([\dx]+)xf32>\)')


def _solved_rows(folder: Path) -> np.ndarray:
    """The rows (systems) of each Cholesky factorization in the sweep steps DTensor expanded into
    `folder`, as one device computes it: the product of its local operand's batch axes."""
    files = sorted(f for f in folder.iterdir() if LOOP_DUMP.search(f.name))
    if not files:
        raise RuntimeError(f"no sweep step in DTensor's dump {folder}")
    shapes = [m.split("x") for f in files for m in CHOLESKY.findall(f.read_text())]
    return np.array([int(np.prod([int(s) for s in shape[:-2]])) for shape in shapes], np.int64)


def _als_blocks(tf, dtensor, placed: list[dict], k: int) -> dict[str, np.ndarray]:
    """What each device's component holds of the ALS row blocks one `fit` placed (`placed`: the
    placement's `_put_blocks` results, by user then by item): per side, for every array the
    leading size and device index of each component (`lead`, `device`: `[arrays, k]`), and per
    device the observation slots of weight > 0 (`obs`), the block rows (`rows`, K·B summed over
    the buckets), the largest row id (`ids_max`), the width of `position` (`per`) and the fixed
    rows it fetches (`fetch`, `[k, U]`)."""
    out = {}
    for side, blocks in zip(("user", "item"), placed, strict=True):
        # (Not `real`, the `[k·⌈R/k⌉]` flags of table rows: row-sharded like the tables.)
        arrays = tf.nest.flatten({"buckets": blocks["buckets"], "position": blocks["position"]})
        comps = [dtensor.unpack(a) for a in arrays]
        out[f"{side}_lead"] = np.array([[int(c.shape[0]) for c in cs] for cs in comps])
        out[f"{side}_device"] = np.array(
            [[tf.DeviceSpec.from_string(c.device).device_index for c in cs] for cs in comps]
        )
        buckets = blocks["buckets"]
        weights = [dtensor.unpack(b["weights"]) for b in buckets]
        ids = [dtensor.unpack(b["ids"]) for b in buckets]
        out[f"{side}_obs"] = np.array(
            [sum(int(np.sum(w[j].numpy() > 0)) for w in weights) for j in range(k)]
        )
        out[f"{side}_rows"] = np.array(
            [sum(int(np.prod(i[j].shape[1:])) for i in ids) for j in range(k)]
        )
        out[f"{side}_ids_max"] = np.array(
            [max(int(np.max(i[j].numpy())) for i in ids) for j in range(k)]
        )
        out[f"{side}_per"] = np.array(
            [int(c.shape[-1]) for c in dtensor.unpack(blocks["position"])]
        )
        # Device j's list of the fixed rows its blocks read (`[1, U]` a component).
        out[f"{side}_fetch"] = np.concatenate([c.numpy() for c in dtensor.unpack(blocks["fetch"])])
    return out


def _collectives(folder: Path) -> dict[str, np.ndarray]:
    """The `[R, C]` result shapes of the 2-D float all-gathers and all-reduces of the training
    steps DTensor expanded into `folder` (`AllGather`, `AllReduce`), and the `[R]` of its 1-D
    float all-gathers (`AllGather1d`)."""
    found: dict[str, list[tuple[int, int]]] = {"AllGather": [], "AllReduce": []}
    flat: list[int] = []
    files = sorted(f for f in folder.iterdir() if LOOP_DUMP.search(f.name))
    if not files:
        raise RuntimeError(f"no training step in DTensor's dump {folder}")
    for f in files:
        text = f.read_text()
        for op, rows, cols in COLLECTIVE.findall(text):
            found[op].append((int(rows), int(cols)))
        flat += [int(rows) for _, rows in COLLECTIVE_1D.findall(text)]
    out = {k: np.array(v, np.int64).reshape(-1, 2) for k, v in found.items()}
    out["AllGather1d"] = np.array(flat, np.int64)
    return out


def main(k_arg: str, out: str) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    dump = os.environ.get("DUMP")
    if dump:
        # DTensor writes its pass-by-pass dumps only with its passes' verbose logging on.
        os.environ["TF_CPP_VMODULE"] = "dtensor_mlir_passes=4"
    import tensorflow as tf

    devices = None if k_arg == "none" else int(k_arg)
    if devices is None:
        from cfcore.data import row_blocks

        # The reference on the layout a sharded placement uses (per-length buckets), so that
        # the runs differ only by the prior's all-reduce; one device's own segment layout sums
        # rows in another order (checked against the float64 oracle by the ALS conformance).
        row_blocks.SEGMENTS = False
    if devices is not None:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * devices
        )
    from tensorflow.experimental import dtensor

    import cfcore

    ratings = cfcore.synthetic_ratings(NUM_USERS, NUM_ITEMS, NUM_RATINGS, seed=0)
    result: dict[str, np.ndarray] = {}
    # SGD(0.5): at 1.0 plain MF diverges here and the regularized run is chaotic (two single-device
    # backends already differ by 10% after 50 steps), which no 1e-5 comparison survives.
    runs = {
        ("mf", "sgd"): (cfcore.MatrixFactorization, cfcore.optimizers.SGD(0.5), None),
        ("mf", "adam"): (cfcore.MatrixFactorization, cfcore.optimizers.Adam(0.05), BATCH),
        ("reg", "sgd"): (cfcore.RegularizedMF, cfcore.optimizers.SGD(0.5), None),
        ("reg", "adam"): (cfcore.RegularizedMF, cfcore.optimizers.Adam(0.05), BATCH),
        ("biased", "sgd"): (cfcore.BiasedMF, cfcore.optimizers.SGD(0.5), None),
        ("biased", "adam"): (cfcore.BiasedMF, cfcore.optimizers.Adam(0.05), BATCH),
    }
    trained = {}
    for (kind, run), (cls, optimizer, batch_size) in runs.items():
        name = f"{kind}_{run}"
        if dump:
            os.environ["TF_DUMP_GRAPH_PREFIX"] = str(Path(dump) / name)
        model = cls(embedding_dim=DIM, init_stddev=0.5)
        model.fit(
            ratings,
            steps=STEPS,
            optimizer=optimizer,
            backend="tf",
            devices=devices,
            batch_size=batch_size,
            eval_every=25,
            progress=False,
        )
        trained[name] = model
        for table, emb in model.params_numpy().items():
            result[f"{name}_{table}"] = emb
        result[f"{name}_history"] = model.history.to_numpy(np.float64)
        session = model._session
        if devices is None or session is None:
            continue
        for table, arr in session.params.items():
            parts = dtensor.unpack(arr)
            result[f"{name}_shard_rows_{table}"] = np.array([p.shape[0] for p in parts])
            result[f"{name}_shard_devices_{table}"] = np.array(
                [tf.DeviceSpec.from_string(p.device).device_index for p in parts]
            )
        slots = [a for a in tf.nest.flatten(session.opt_state) if a.shape.rank == 2]
        result[f"{name}_opt_shard_rows"] = np.array(
            [[p.shape[0] for p in dtensor.unpack(a)] for a in slots], np.int64
        ).reshape(len(slots), devices)
        if dump:
            for op, shapes in _collectives(Path(dump) / name).items():
                result[f"{name}_{op}"] = shapes
    # Two ALS sweeps of each ALS model, each device solving its own rows. The row blocks each fit
    # places are recorded from the placement itself (its `_put_blocks`, by user then by item).
    placed: list[dict] = []
    if devices is not None:
        from cfcore.train.placement import RowShardedPlacement

        put_blocks = RowShardedPlacement._put_blocks

        def recording(self, tree):
            out = put_blocks(self, tree)
            placed.append(out)
            return out

        RowShardedPlacement._put_blocks = recording
    als_models = {
        "wals": (cfcore.WALS(embedding_dim=DIM, init_stddev=0.5), ratings),
        "ials": (cfcore.IALS(embedding_dim=DIM), ratings.to_implicit(threshold=3.5)),
        "biased_als": (
            # The coefficients the tolerances were measured with (not the defaults).
            cfcore.BiasedMF(
                embedding_dim=DIM,
                init_stddev=0.5,
                gravity_coeff=1.0,
                regularization_coeff=0.1,
                bias_regularization_coeff=0.01,
            ),
            ratings,
        ),
    }
    for name, (model, train) in als_models.items():
        if dump:
            os.environ["TF_DUMP_GRAPH_PREFIX"] = str(Path(dump) / name)
        placed.clear()
        # One sweep a chunk: the dump read by the tests holds one sweep's program.
        model.fit(train, steps=2, backend="tf", devices=devices, progress=False, eval_every=1)
        for table, emb in model.params_numpy().items():
            result[f"{name}_{table}"] = emb
        result[f"{name}_history"] = model.history.to_numpy(np.float64)
        if devices is not None:
            for table, arr in model._session.params.items():
                result[f"{name}_shard_rows_{table}"] = np.array(
                    [p.shape[0] for p in dtensor.unpack(arr)]
                )
            for key, value in _als_blocks(tf, dtensor, placed, devices).items():
                result[f"{name}_blocks_{key}"] = value
            if dump:
                result[f"{name}_solved"] = _solved_rows(Path(dump) / name)
                for op, shapes in _collectives(Path(dump) / name).items():
                    result[f"{name}_{op}"] = shapes
    if devices is not None:
        RowShardedPlacement._put_blocks = put_blocks
    # One model trained by three `fit` calls of different step counts (each a new compiled chunk
    # length): DTensor must reuse its expansion of the step, not expand a loop again. The devices
    # given as a list of `tf.config.LogicalDevice` this time.
    listed = None if devices is None else tf.config.list_logical_devices("CPU")[:devices]
    model = cfcore.RegularizedMF(embedding_dim=DIM, init_stddev=0.5)
    for steps in (5, 7, 3):
        model.fit(
            ratings,
            steps=steps,
            optimizer=cfcore.optimizers.SGD(0.5),
            backend="tf",
            devices=listed,
            eval_every=steps,
            progress=False,
        )
    for table, emb in model.embeddings.items():
        result[f"continued_{table}"] = emb
    if devices is not None:
        # Sharded checkpoints, each device's rows copied from its own component; the test loads
        # them with the single-device `cfcore.load`.
        for name in ("reg_sgd", "biased_adam"):
            trained[name].save(Path(f"{out}.{name}.ckpt"), sharded=True)
    _softmax(cfcore, devices, dump, result)
    np.savez(out, allow_pickle=False, **result)


def _softmax(cfcore, devices: int | None, dump: str | None, result: dict[str, np.ndarray]) -> None:
    """30 Adagrad steps of the softmax model, full and sampled softmax, as `sharded_run.py` runs
    them on JAX: its tables, history, and on K devices each parameter's and each 2-D Adagrad
    slot's per-device row counts and (with `DUMP`) the step's collectives."""
    import tensorflow as tf
    from tensorflow.experimental import dtensor

    from tests.models.test_softmax_features import toy_dataset

    toy = toy_dataset(num_users=60, num_items=SOFTMAX_ITEMS, seed=1)
    for loss in ("full", "sampled"):
        name = f"softmax_{loss}"
        if dump:
            os.environ["TF_DUMP_GRAPH_PREFIX"] = str(Path(dump) / name)
        model = cfcore.SoftmaxModel(SOFTMAX_DIMS, hidden_dims=(4,), loss=loss)
        model.fit(
            toy,
            steps=30,
            optimizer=cfcore.optimizers.Adagrad(0.5),
            batch_size=8,
            eval_every=10,
            backend="tf",
            devices=devices,
            progress=False,
        )
        for table, emb in model.embeddings.items():
            result[f"{name}_{table}"] = emb
        result[f"{name}_history"] = model.history.to_numpy(np.float64)
        session = model._session
        if devices is None or session is None:
            continue
        for table, arr in session.params.items():
            result[f"{name}_shard_rows_{table}"] = np.array(
                [p.shape[0] for p in dtensor.unpack(arr)]
            )
        slots = [a for a in tf.nest.flatten(session.opt_state) if a.shape.rank == 2]
        result[f"{name}_opt_shard_rows"] = np.array(
            [[p.shape[0] for p in dtensor.unpack(a)] for a in slots], np.int64
        ).reshape(len(slots), devices)
        if dump:
            for op, shapes in _collectives(Path(dump) / name).items():
                result[f"{name}_{op}"] = shapes


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
