"""Row-sharded training on virtual CPU devices on the TensorFlow backend (`fit(..., devices=k)`).

Each configuration runs in its own process (`tests/_support/sharded_run_tf.py`), because TensorFlow fixes
its logical devices when it first runs an op. On 1, 2, 4 and 8 logical CPU devices, full-batch SGD
and minibatch Adam of `MatrixFactorization`, `RegularizedMF` and `BiasedMF` must give the
single-device parameters and history within 1e-5 relative after 50 steps, and 2 ALS sweeps of
`WALS`, `IALS` and `BiasedMF` within `ALS_RTOL`, each device holding and solving the row blocks of
its own rows only and fetching only the fixed rows they read (no table all-gathered in the sweep
step); each device must hold ⌈N/k⌉ rows of each table (read from the DTensors'
components); 30 Adagrad steps of the softmax model (full and sampled
softmax, every table row-sharded) must give the single-device tables and history within 1e-5
relative; the collectives of the training steps are read from DTensor's own SPMD-expanded
program (its dump); sharded checkpoints load bit for bit on one device; no trainer is refused
any more.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .._support.tiny_data import cli_env

pytest.importorskip("tensorflow")

import cfcore  # noqa: E402

pytestmark = pytest.mark.subprocess

SCRIPT = Path(__file__).parents[1] / "_support" / "sharded_run_tf.py"
# As in sharded_run_tf.py: 40 users (divisible by 1, 2, 4 and 8: no padding) and 29 items (never
# divisible: padded to k·⌈29/k⌉ rows, the padding sliced off inside the step).
NUM_USERS, NUM_ITEMS, DIM = 40, 29, 4
RUNS = ["mf_sgd", "mf_adam", "reg_sgd", "reg_adam", "biased_sgd", "biased_adam"]
RTOL = 1e-5
SOFTMAX_ITEMS = 29  # as in sharded_run_tf.py


CONFIGS = ["none", "1", "2", "4", "8"]  # "none": one device, no placement (the reference)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    """Every configuration's results, the processes started together (the whole module: 170-200 s
    of wall time on the shared, loaded 2-core test machine)."""
    tmp = tmp_path_factory.mktemp("sharding_tf")
    started = {}
    for k in CONFIGS:
        out = tmp / f"run_{k}.npz"
        # DTensor's program dump only where there are collectives to read (k > 1).
        dump = k not in ("none", "1")
        env = cli_env(DUMP=str(tmp / f"dump_{k}")) if dump else cli_env()
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), k, str(out)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        started[k] = (proc, out)
    results = {}
    for k, (proc, out) in started.items():
        try:
            _, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        assert proc.returncode == 0, (k, err[-3000:])
        with np.load(out) as f:
            results[k] = dict(f)
        results[k]["_path"] = np.array(str(out))
    return results


@pytest.fixture(scope="module")
def single(runs) -> dict[str, np.ndarray]:
    return runs["none"]


@pytest.fixture(scope="module", params=[1, 2, 4, 8])
def sharded(request, runs) -> tuple[int, dict[str, np.ndarray]]:
    return request.param, runs[str(request.param)]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("run", RUNS)
def test_sharded_training_equals_single_device(single, sharded, run):
    k, got = sharded
    for table, rows in (("user", NUM_USERS), ("item", NUM_ITEMS)):
        want = single[f"{run}_{table}"]
        assert got[f"{run}_{table}"].shape == want.shape == (rows, DIM)
        assert _rel(got[f"{run}_{table}"], want) <= RTOL, (k, run, table)
    if run.startswith("biased"):
        for table, rows in (("user_bias", NUM_USERS), ("item_bias", NUM_ITEMS)):
            want = single[f"{run}_{table}"]
            assert got[f"{run}_{table}"].shape == want.shape == (rows,)
            assert _rel(got[f"{run}_{table}"], want) <= RTOL, (k, run, table)
    # The history (train MSE and, regularized, each penalty) after 0, 25 and 50 steps.
    assert got[f"{run}_history"].shape == single[f"{run}_history"].shape
    np.testing.assert_allclose(got[f"{run}_history"], single[f"{run}_history"], rtol=RTOL)


def test_fits_of_different_lengths_continue_as_on_one_device(single, sharded):
    k, got = sharded
    for table in ("user", "item"):
        assert _rel(got[f"continued_{table}"], single[f"continued_{table}"]) <= RTOL, (k, table)


@pytest.mark.parametrize("run", RUNS)
def test_each_device_holds_its_share_of_rows(sharded, run):
    k, got = sharded
    for table, rows in (("user", NUM_USERS), ("item", NUM_ITEMS)):
        assert got[f"{run}_shard_rows_{table}"].tolist() == [-(-rows // k)] * k, table
        assert got[f"{run}_shard_devices_{table}"].tolist() == list(range(k)), table
    slots = sorted(got[f"{run}_opt_shard_rows"].tolist())
    if run.endswith("sgd"):
        assert slots == []
    else:
        # Adam's two slots per table follow the tables' layout: k blocks of ⌈N/k⌉ or ⌈M/k⌉ rows.
        want = sorted([[-(-NUM_USERS // k)] * k] * 2 + [[-(-NUM_ITEMS // k)] * k] * 2)
        assert slots == want


@pytest.mark.parametrize("run", RUNS)
def test_gravity_sums_per_shard_gramians(sharded, run):
    # The user table is evenly sharded: its Gramian UᵀU is one local [d, d] matmul per device and
    # one [d, d] all-reduce. Plain MF has no gravity term, hence no such all-reduce.
    k, got = sharded
    if k == 1:
        pytest.skip("one device: no collective to check")
    reduces = [tuple(s) for s in got[f"{run}_AllReduce"].tolist()]
    if run.startswith("biased"):
        pytest.skip("BiasedMF: checked for equal results and row shares only")
    if run.startswith("reg"):
        assert (DIM, DIM) in reduces, reduces
    else:
        assert (DIM, DIM) not in reduces, reduces


@pytest.mark.parametrize("run", RUNS)
def test_the_training_step_gathers_no_whole_table(sharded, run):
    k, got = sharded
    if k == 1:
        pytest.skip("one device: no collective to check")
    # The biased model's tables travel as augmented `[U, b_u, 1]` / `[V, 1, b_i]` (d + 2 wide).
    widths = {DIM, DIM + 2} if run.startswith("biased") else {DIM}
    whole = [
        (r, c)
        for r, c in got[f"{run}_AllGather"].tolist()
        if c in widths and r >= min(NUM_USERS, NUM_ITEMS)
    ]
    assert whole == [], f"whole-table all-gathers in the training step: {whole}"
    # Nor is a table's gradient all-reduced whole: the step's lookups fetch each row where it
    # lives (`cfcore_tf.rows.take_rows`), what is all-reduced is the pairs' `[n, d]` rows (n =
    # 500 ratings full-batch, 64 a minibatch), so tables are told here by their exact (and
    # padded) row counts.
    tables = {rows for n in (NUM_USERS, NUM_ITEMS) for rows in (n, -(-n // k) * k)}
    assert not tables & {500, 64}, tables
    reduced = [(r, c) for r, c in got[f"{run}_AllReduce"].tolist() if c in widths and r in tables]
    assert reduced == [], f"whole-table all-reduces in the training step: {reduced}"


# Where a loaded sharded checkpoint trains on (not TensorFlow, when JAX is installed).
OTHER_BACKEND = "jax" if importlib.util.find_spec("jax") else "tf"


def test_sharded_checkpoints_load_on_one_device_bit_for_bit(sharded, tmp_path_factory):
    # Written in the k-device process by `model.save(folder, sharded=True)` (each device's rows
    # from its own DTensor component); read here, in a process with one device, by cfcore.load.
    k, got = sharded
    out = Path(str(got["_path"]))
    for run, names in (
        ("reg_sgd", ("user", "item")),
        ("biased_adam", ("user", "item", "user_bias", "item_bias")),
    ):
        folder = Path(f"{out}.{run}.ckpt")
        shards = sorted(p.name for p in folder.glob("shards-*/shard-*.npz"))
        assert shards == [f"shard-{j:05d}-of-{k:05d}.npz" for j in range(k)], shards
        loaded = cfcore.load(folder)
        params = loaded.params_numpy()
        assert sorted(params) == sorted(names)
        for name in names:
            np.testing.assert_array_equal(params[name], got[f"{run}_{name}"], err_msg=name)
        # The loaded model is an ordinary single-device one: it trains on another backend.
        loaded.fit(
            cfcore.synthetic_ratings(NUM_USERS, NUM_ITEMS, 500, seed=0),
            steps=1,
            optimizer=cfcore.optimizers.SGD(0.5),
            backend=OTHER_BACKEND,
            eval_every=1,
            progress=False,
        )
        assert loaded.step == got[f"{run}_history"][-1, 0] + 1


# The ALS sweeps' tolerance after 2 sweeps. WALS's item table here is sensitive to float32
# rounding: its item systems' condition numbers reach 100, and the rounding of their per-row
# Gramians (2.5e-5 of error on its own, measured piece by piece against the float64 NumPy
# reference) differs between one TF device (XLA) and DTensor's sweep (no XLA), which sum them in
# different orders: each 2.4e-5 from the reference, up to 3.8e-5 from each other (measured on 1,
# 2, 4 and 8 devices; as much on one DTensor device). One step of iterative refinement of the
# Cholesky solves brought that to 3.6e-6 but made the sweep's compilation 60% longer; not used
# (docs/multi-device.md). Measured so: iALS up to 9.8e-7, biased MF's ALS up to 8.0e-6 (the
# histories within 3.5e-6).
ALS_RTOL = {"wals": 5e-5, "ials": 2e-6, "biased_als": 1e-5}


@pytest.mark.parametrize("run", sorted(ALS_RTOL))
def test_two_als_sweeps_equal_single_device(single, sharded, run):
    k, got = sharded
    tables = [t for t in single if t.startswith(f"{run}_") and not t.endswith("_history")]
    tables = [t for t in tables if "shard_rows" not in t]
    assert len(tables) == (4 if run.startswith("biased") else 2), tables
    for t in tables:
        assert got[t].shape == single[t].shape
        assert _rel(got[t], single[t]) <= ALS_RTOL[run], (k, t, _rel(got[t], single[t]))
    np.testing.assert_allclose(got[f"{run}_history"], single[f"{run}_history"], rtol=ALS_RTOL[run])
    # The tables stay row-sharded between sweeps: ⌈N/k⌉ rows on each device.
    for table, rows in (("user", NUM_USERS), ("item", NUM_ITEMS)):
        assert got[f"{run}_shard_rows_{table}"].tolist() == [-(-rows // k)] * k, (run, table)


@pytest.mark.parametrize("run", sorted(ALS_RTOL))
def test_als_solves_rows_where_they_live(sharded, run):
    # As on JAX (`test_sharding.py`): each device holds the row blocks of its own rows only and
    # solves only them. Read from the components of the blocks `fit` placed (each device's part
    # of the leading device axis) and from DTensor's expansion of the sweep step (its dump).
    k, got = sharded
    ratings = cfcore.synthetic_ratings(NUM_USERS, NUM_ITEMS, 500, seed=0)
    train = ratings.to_implicit(threshold=3.5) if run == "ials" else ratings
    for side, rows, ids in (("user", NUM_USERS, train.users), ("item", NUM_ITEMS, train.items)):
        per = -(-rows // k)
        blocks = f"{run}_blocks_{side}_"
        # Every array of the blocks: one device's part per component, on that device.
        assert (got[blocks + "lead"] == 1).all(), got[blocks + "lead"]
        assert (got[blocks + "device"] == np.arange(k)).all(), got[blocks + "device"]
        assert got[blocks + "per"].tolist() == [per] * k
        assert (got[blocks + "ids_max"] < per).all(), got[blocks + "ids_max"]
        # Device j's blocks hold exactly the observations of its rows j·⌈R/k⌉ ... (j+1)·⌈R/k⌉ − 1.
        own = [int(np.sum((ids >= j * per) & (ids < (j + 1) * per))) for j in range(k)]
        assert got[blocks + "obs"].tolist() == own, (side, got[blocks + "obs"], own)
        if k > 1:
            assert (got[blocks + "rows"] < rows).all(), (side, got[blocks + "rows"])
    if k == 1:
        return
    # The sweep step as DTensor expanded it: each device factorizes the systems of its own block
    # rows (the user then the item half), not those of a whole table.
    solved = got[f"{run}_solved"].tolist()
    mine = [got[f"{run}_blocks_{side}_rows"].tolist() for side in ("user", "item")]
    assert all(len(set(r)) == 1 for r in mine), mine  # one program: equal blocks everywhere
    assert sum(solved) == mine[0][0] + mine[1][0], (solved, mine)
    # As on JAX: the sweep moves the distinct fixed rows each device's blocks read (one [k·U, d]
    # all-reduce a half-sweep, split to each device's [U, d]: a reduce-scatter), the pairs' rows
    # of the objective (`take_rows`) and Gramians, never a whole table: no all-gather of one
    # (N or k·⌈N/k⌉ rows; the biased model's fixed rows are d + 1 wide, d + 2 with the fixed
    # side's bias, and its biases `[N]`), nor an all-reduce of one but the fetches.
    widths = {DIM, DIM + 1, DIM + 2} if run.startswith("biased") else {DIM}
    tables = {rows for n in (NUM_USERS, NUM_ITEMS) for rows in (n, -(-n // k) * k)}
    gathered = [(r, c) for r, c in got[f"{run}_AllGather"].tolist() if c in widths]
    whole = [(r, c) for r, c in gathered if r in tables]
    assert whole == [], f"whole-table all-gathers in the sweep step: {whole}"
    biases = [r for r in got[f"{run}_AllGather1d"].tolist() if r in tables]
    assert biases == [], f"whole bias all-gathers in the sweep step: {biases}"
    reduced = {(r, c) for r, c in got[f"{run}_AllReduce"].tolist() if c in widths}
    fetched = set()
    for side, other, fixed in (("user", train.items, NUM_ITEMS), ("item", train.users, NUM_USERS)):
        fetch = got[f"{run}_blocks_{side}_fetch"]
        ids = train.users if side == "user" else train.items
        per = -(-(NUM_USERS if side == "user" else NUM_ITEMS) // k)
        assert fetch.shape[0] == k and fetch.shape[1] <= fixed, fetch.shape
        for j in range(k):
            # Device j fetches the fixed rows its observations read (row 0 too, for the padding
            # slots), each once.
            wanted = set(other[(ids >= j * per) & (ids < (j + 1) * per)].tolist())
            assert wanted <= set(fetch[j].tolist()) <= wanted | {0}, (side, j)
        width = DIM + 2 if run.startswith("biased") else DIM
        assert (k * fetch.shape[1], width) in reduced, (side, sorted(reduced))
        fetched.add((k * fetch.shape[1], width))
    big = sorted((r, c) for r, c in reduced - fetched if r in tables)
    assert big == [], f"table-sized all-reduces in the sweep step: {big}"


@pytest.mark.parametrize("d", [1, 4, 16])
def test_substitution_solve_equals_a_direct_solve(d):
    # The sharded ALS half-sweep's Cholesky solve (DTensor cannot partition
    # MatrixTriangularSolve): forward then backward substitution over batch axes [2, 3].
    import tensorflow as tf
    from cfcore_tf import kernels

    rng = np.random.default_rng(d)
    a = rng.normal(size=(2, 3, d, d))
    a = a @ np.swapaxes(a, -1, -2) + d * np.eye(d)
    b = rng.normal(size=(2, 3, d))
    chol = tf.linalg.cholesky(tf.constant(a, tf.float32))
    got = kernels._substitution_solve(chol, tf.constant(b, tf.float32)).numpy()
    want = np.linalg.solve(a, b[..., None])[..., 0]
    assert got.shape == (2, 3, d)
    assert _rel(got, want) <= 1e-5, _rel(got, want)


@pytest.mark.parametrize("loss", ["full", "sampled"])
def test_softmax_training_equals_single_device(single, sharded, loss):
    # As `test_sharding.py` checks it on JAX: 30 Adagrad steps, every table (the item table
    # included) row-sharded, equal to one TF device within 1e-5 relative.
    k, got = sharded
    prefix = f"softmax_{loss}_"
    tables = [
        t.removeprefix(prefix)
        for t in single
        if t.startswith(prefix) and "history" not in t and "shard" not in t
    ]
    assert {"item", "movie_id", "genre", "year", "hidden_0"} <= set(tables)
    for table in tables:
        want = single[prefix + table]
        assert got[prefix + table].shape == want.shape
        assert _rel(got[prefix + table], want) <= RTOL, (k, loss, table)
    want = single[prefix + "history"]
    assert got[prefix + "history"].shape == want.shape == (4, 8)  # steps 0, 10, 20, 30
    np.testing.assert_allclose(got[prefix + "history"], want, rtol=RTOL, equal_nan=True)


@pytest.mark.parametrize("loss", ["full", "sampled"])
def test_softmax_tables_are_row_sharded(single, sharded, loss):
    # Each parameter (the item table, the other features' tables, the hidden layer) and its
    # Adagrad accumulator: k blocks of ⌈N/k⌉ rows, read from the DTensors' components.
    k, got = sharded
    prefix = f"softmax_{loss}_shard_rows_"
    params = sorted(t.removeprefix(prefix) for t in got if t.startswith(prefix))
    assert params == ["genre", "hidden_0", "movie_id", "year"], params
    want = []
    for table in params:
        rows = single[f"softmax_{loss}_{table}"].shape[0]
        assert got[prefix + table].tolist() == [-(-rows // k)] * k, (k, table)
        want.append([-(-rows // k)] * k)
    assert sorted(got[f"softmax_{loss}_opt_shard_rows"].tolist()) == sorted(want)


@pytest.mark.parametrize("loss", ["full", "sampled"])
def test_the_softmax_step_gathers_no_item_table(sharded, loss):
    k, got = sharded
    if k == 1:
        pytest.skip("one device: no collective to check")
    table = {SOFTMAX_ITEMS, -(-SOFTMAX_ITEMS // k) * k}
    whole = [(r, c) for r, c in got[f"softmax_{loss}_AllGather"].tolist() if r in table]
    assert whole == [], f"item-table all-gathers in the softmax step: {whole}"


def test_every_trainer_shards_on_tf():
    # Nothing is refused any more on TensorFlow: the placement of `devices=` runs every trainer
    # a model asks for (the refusal itself is checked next, on a placement that lacks one).
    from cfcore.backend import get_backend
    from cfcore.train.placement import trainer_kinds
    from cfcore.train.sharding import make_placement

    placement = make_placement(get_backend("tf"), 1)
    kinds = trainer_kinds()
    assert placement.trainers is not None and sorted(placement.trainers) == sorted(kinds)
    for trainer in kinds:
        placement.check_trainer(trainer, "AnyModel")


def test_a_refused_fit_leaves_the_model_untouched(monkeypatch):
    # A trainer missing from the TF placement's list is refused before anything is placed,
    # with a message naming the model, the backend and what shards there; the model is left
    # as it was and still trains on one device. (Every trainer shards on TF now: the softmax
    # trainer is taken off the list here to exercise the refusal.)
    from cfcore_tf import sharding

    from ..models.test_softmax_features import toy_dataset

    monkeypatch.setattr(sharding.TFRowSharding, "trainers", ("gradient", "biased-gradient", "als"))
    toy = toy_dataset(num_users=60, num_items=30, seed=1)
    model = cfcore.SoftmaxModel({"movie_id": 4, "genre": 2, "year": 2}, hidden_dims=(4,))
    kw = {"optimizer": cfcore.optimizers.Adagrad(0.5), "batch_size": 8, "progress": False}
    with pytest.raises(NotImplementedError) as err:
        model.fit(toy, steps=2, backend="tf", devices=1, **kw)
    message = str(err.value)
    assert message.startswith("SoftmaxModel (softmax training)"), message
    assert "on backend 'tf'" in message and "gradient steps of" in message, message
    assert "MatrixFactorization / RegularizedMF" in message and "ALS sweeps" in message
    assert model._session is None and model.history.empty
    monkeypatch.undo()
    model.fit(toy, steps=2, backend="tf", **kw)  # and it still trains on one device
    assert model.step == 2


def test_devices_is_refused_on_torch():
    pytest.importorskip("torch")
    r = cfcore.synthetic_ratings(10, 8, 40, seed=0)
    model = cfcore.MatrixFactorization(embedding_dim=2)
    with pytest.raises(
        NotImplementedError, match="not yet supported on backend 'torch'.*'jax' and 'tf'"
    ):
        model.fit(r, steps=1, optimizer=cfcore.optimizers.SGD(1.0), backend="torch", devices=2)


@pytest.mark.parametrize(
    ("devices", "match"),
    [
        (0, "devices=0"),
        (10_000, "devices=10000.*set_logical_device_configuration"),
        ("cpu", "got str"),
        ([], "empty"),
        ([1], "TensorFlow logical devices"),
        (["/device:CPU:77"], "TensorFlow logical devices"),
    ],
)
def test_bad_devices_are_refused_on_tf(devices, match):
    r = cfcore.synthetic_ratings(10, 8, 40, seed=0)
    model = cfcore.MatrixFactorization(embedding_dim=2)
    with pytest.raises(ValueError, match=match):
        model.fit(r, steps=1, optimizer=cfcore.optimizers.SGD(1.0), backend="tf", devices=devices)
