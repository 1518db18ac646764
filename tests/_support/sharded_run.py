"""One configuration of sharded training, run in its own process by `test_sharding.py`.

Usage: `python tests/_support/sharded_run.py K OUT.npz` with `K` "none" (single device, the reference)
or the device count. The caller sets `XLA_FLAGS=--xla_force_host_platform_device_count=8` and
`JAX_PLATFORMS=cpu` (JAX reads them at import: hence one process per configuration).

Writes the embeddings after full-batch SGD, after minibatch Adam and after 2 ALS sweeps (WALS
with Cholesky and CG, iALS, BiasedMF) and after 30 steps of the softmax model (full and sampled), and for K devices the row count of every addressable shard of each
table and the collectives in the compiled steps' HLO (full batch, minibatch, WALS sweep, softmax step).
"""

from __future__ import annotations

import re
import sys

import numpy as np

import cfcore
from tests.models.test_softmax_features import toy_dataset

NUM_USERS, NUM_ITEMS, NUM_RATINGS, DIM = 37, 29, 500, 4
MINIBATCH = 64
EXTRA_RUNS = ("none", "8")  # where CG WALS, BiasedMF and the sampled softmax run too
SOFTMAX_ITEMS, SOFTMAX_DIMS = 29, {"movie_id": 4, "genre": 2, "year": 2}
# `f32[R,C]{...} all-gather(`: the result shape of each all-gather in the compiled HLO text.
ALL_GATHER = re.compile(r"= f32\[(\d+),(\d+)\]\{[^}]*\} all-gather\(")
# Any collective's result (a shape or a tuple of shapes) and its name.
COLLECTIVE = re.compile(
    r"= (\(?[a-z0-9]+\[[\d,]*\][^=]*?) (all-gather|all-reduce|reduce-scatter|all-to-all|"
    r"collective-permute)(?:-start)?\("
)
SHAPE = re.compile(r"([a-z]+\d*)\[([\d,]*)\]")


def _collectives(hlo: str, prefix: str, result: dict[str, np.ndarray]) -> None:
    """Records the compiled step's collectives: the 2-D f32 all-gathers' shapes, and every
    collective's (kind, element type, dims) as text rows."""
    shapes = [(int(r), int(c)) for r, c in ALL_GATHER.findall(hlo)]
    result[f"{prefix}all_gather_shapes"] = np.array(shapes, np.int64).reshape(-1, 2)
    rows = []
    for operands, kind in COLLECTIVE.findall(hlo):
        for dtype, dims in SHAPE.findall(operands):
            rows.append(f"{kind} {dtype} {dims}")
    result[f"{prefix}collectives"] = np.array(rows, dtype=str)


def _softmax_step(model: cfcore.SoftmaxModel, result: dict[str, np.ndarray]) -> None:
    """The collectives of the softmax model's compiled step on one batch of 4 users, and the row
    counts that batch legitimately gathers (its bags' ids and its labels)."""
    import jax

    from cfcore.data.softmax_batches import SoftmaxBatcher
    from cfcore.maths.objectives import softmax_loss
    from cfcore.train.loop import gradient_update

    session = model._session
    assert session is not None and session.rule is not None
    placement, be = session.placement, session.backend
    features = model._features(None)
    split = model._split(features, model._protocol, model._split_seed)
    names = model.spec.feature_names
    batch = SoftmaxBatcher(features, split.train_users, 4, 0, model._protocol, names).take(1)
    tree = batch.to_dict()
    xs = placement.data(tree)
    update = gradient_update(be, placement.placed(softmax_loss(be, model.spec)), session.rule)

    def step(params, opt, xs):
        return update(params, opt, (jax.tree.map(lambda a: a[0], xs), None))

    compiled = jax.jit(step).lower(session.params, session.opt_state, xs).compile()
    _collectives(str(compiled.as_text()), "softmax_", result)
    counts = [int(np.prod(np.shape(a)[1:])) for a in tree["ids"].values()]
    result["softmax_batch_rows"] = np.array([*counts, np.shape(tree["labels"])[1]], np.int64)


def _model() -> cfcore.RegularizedMF:
    return cfcore.RegularizedMF(embedding_dim=DIM, init_stddev=0.5)


def main(k_arg: str, out: str) -> None:
    import jax

    from cfcore.maths.objectives import mf_loss
    from cfcore.models.als import wals_blocks, wals_sweep
    from cfcore.train.loop import gradient_update

    devices = None if k_arg == "none" else int(k_arg)
    if devices is None:
        from cfcore.data import row_blocks

        # The reference on the layout a sharded placement uses (per-length buckets), so that
        # the runs differ only by the prior's all-reduce; one device's own segment layout sums
        # rows in another order (checked against the float64 oracle by the ALS conformance).
        row_blocks.SEGMENTS = False
    ratings = cfcore.synthetic_ratings(NUM_USERS, NUM_ITEMS, NUM_RATINGS, seed=0)
    result: dict[str, np.ndarray] = {}

    sgd = _model()
    sgd.fit(
        ratings,
        steps=50,
        optimizer=cfcore.optimizers.SGD(1.0),
        backend="jax",
        devices=devices,
        eval_every=25,
        progress=False,
    )
    adam = _model()
    adam.fit(
        ratings,
        steps=30,
        optimizer=cfcore.optimizers.Adam(0.05),
        backend="jax",
        devices=devices,
        batch_size=64,
        eval_every=10,
        progress=False,
    )
    for name, model in (("sgd", sgd), ("adam", adam)):
        for table, emb in model.embeddings.items():
            result[f"{name}_{table}"] = emb
        result[f"{name}_history"] = model.history.to_numpy(np.float64)

    # ALS: 2 sweeps of WALS (Cholesky, the default at this d, and CG), iALS and BiasedMF.
    # The variants that exercise no other sharded code path run on 8 devices only (and the
    # single-device reference): CI time.
    every = k_arg in EXTRA_RUNS
    als_models = {
        "wals": cfcore.WALS(embedding_dim=DIM, init_stddev=0.5),
        "ials": cfcore.IALS(embedding_dim=DIM),
    }
    if every:
        als_models["wals_cg"] = cfcore.WALS(embedding_dim=DIM, init_stddev=0.5, solver="cg")
        als_models["biased"] = cfcore.BiasedMF(
            embedding_dim=DIM, init_stddev=0.5, gravity_coeff=1.0
        )
    for name, model in als_models.items():
        train = ratings.to_implicit(threshold=3.5) if name == "ials" else ratings
        model.fit(train, steps=2, backend="jax", devices=devices, progress=False)
        for table, emb in model.params_numpy().items():
            result[f"{name}_{table}"] = emb
        result[f"{name}_history"] = model.history.to_numpy(np.float64)

    # The softmax model: 30 Adagrad steps, full and sampled softmax.
    toy = toy_dataset(num_users=60, num_items=SOFTMAX_ITEMS, seed=1)
    softmax = {}
    for loss_kind in ("full", "sampled") if every else ("full",):
        model = cfcore.SoftmaxModel(SOFTMAX_DIMS, hidden_dims=(4,), loss=loss_kind)
        model.fit(
            toy,
            steps=30,
            optimizer=cfcore.optimizers.Adagrad(0.5),
            batch_size=8,
            eval_every=10,
            backend="jax",
            devices=devices,
            progress=False,
        )
        softmax[loss_kind] = model
        for table, emb in model.embeddings.items():
            result[f"softmax_{loss_kind}_{table}"] = emb
        result[f"softmax_{loss_kind}_history"] = model.history.to_numpy(np.float64)

    if devices is not None:
        _softmax_step(softmax["full"], result)
        wals = als_models["wals"]
        session = wals._session
        assert session is not None
        for table, arr in session.params.items():
            result[f"als_shard_rows_{table}"] = np.array(
                [s.data.shape[0] for s in arr.addressable_shards]
            )
        # The compiled WALS sweep, as `fit` runs it, on the placed state and data.
        placement = session.placement
        spec = wals.spec
        sweep = wals_sweep(session.backend, spec, placement)
        data = placement.data(wals_blocks(spec, ratings, placement))
        compiled = jax.jit(sweep).lower(session.params, data).compile()
        _collectives(str(compiled.as_text()), "als_", result)

        session = adam._session
        assert session is not None
        for table, arr in session.params.items():
            result[f"shard_rows_{table}"] = np.array(
                [s.data.shape[0] for s in arr.addressable_shards]
            )
            result[f"shard_devices_{table}"] = np.array(
                [s.device.id for s in arr.addressable_shards]
            )
        opt_leaves = [a for a in jax.tree.leaves(session.opt_state) if np.ndim(a) == 2]
        result["opt_shard_rows"] = np.array(
            [[s.data.shape[0] for s in a.addressable_shards] for a in opt_leaves]
        )
        # The trainer's step body, as `make_chunk` compiles it, on the placed state and data.
        placement = session.placement
        be = session.backend
        loss = mf_loss(be, adam.spec)
        assert session.rule is not None
        update = gradient_update(be, placement.placed(loss), session.rule)
        data = placement.data(be.device_batch(ratings))
        compiled = jax.jit(update).lower(session.params, session.opt_state, data).compile()
        _collectives(str(compiled.as_text()), "", result)
        # The minibatch step as `fit(batch_size=64)` runs it: the batch taken from the split
        # ratings by the step's positions.
        positions = placement.data(np.arange(MINIBATCH, dtype=np.int32)[None, :])

        def minibatch_update(params, opt, data, xs):
            batch = {k: jax.numpy.take(data[k], xs[0]) for k in ("users", "items", "values")}
            return update(params, opt, batch)

        compiled = (
            jax.jit(minibatch_update)
            .lower(session.params, session.opt_state, data, positions)
            .compile()
        )
        _collectives(str(compiled.as_text()), "minibatch_", result)
    np.savez(out, allow_pickle=False, **result)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
