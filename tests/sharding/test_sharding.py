"""Row-sharded training on virtual CPU devices (`fit(..., devices=k)`, `cfcore.train.sharding`).

Each configuration runs in its own process (`tests/_support/sharded_run.py`), because JAX fixes the number
of virtual CPU devices (`XLA_FLAGS=--xla_force_host_platform_device_count=8`) at import. On 1, 2,
4 and 8 devices, full-batch SGD and minibatch Adam of `RegularizedMF`, 2 ALS sweeps (WALS, iALS,
BiasedMF) and 30 steps of the softmax model must give the single-device parameters and history
within 1e-5 relative; each device must hold ⌈N/k⌉ rows of each table (read from the arrays'
shards); and the compiled steps (full batch, minibatch, ALS sweep, softmax step) must move only
the pairs' rows and the d x d Gramians between devices, never a whole table (read from the HLO).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .._support.tiny_data import run_npz_script

pytest.importorskip("jax")

import cfcore  # noqa: E402

pytestmark = pytest.mark.subprocess

SCRIPT = Path(__file__).parents[1] / "_support" / "sharded_run.py"
NUM_USERS, NUM_ITEMS, DIM = 37, 29, 4  # as in sharded_run.py: neither divisible by 2, 4 or 8
NUM_RATINGS, MINIBATCH = 500, 64  # as in sharded_run.py
SOFTMAX_ITEMS = 29  # as in sharded_run.py
RTOL = 1e-5


def _run(k: str, tmp: Path) -> dict[str, np.ndarray]:
    out = tmp / f"run_{k}.npz"
    return run_npz_script(
        SCRIPT,
        k,
        out=out,
        timeout=300,
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        JAX_PLATFORMS="cpu",
    )


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict[str, np.ndarray]:
    return _run("none", tmp_path_factory.mktemp("single"))


@pytest.fixture(scope="module", params=[1, 2, 4, 8])
def sharded(request, tmp_path_factory) -> tuple[int, dict[str, np.ndarray]]:
    return request.param, _run(str(request.param), tmp_path_factory.mktemp("sharded"))


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("run", ["sgd", "adam"])
def test_sharded_training_equals_single_device(single, sharded, run):
    k, got = sharded
    for table, rows in (("user", NUM_USERS), ("item", NUM_ITEMS)):
        want = single[f"{run}_{table}"]
        assert got[f"{run}_{table}"].shape == want.shape == (rows, DIM)
        assert _rel(got[f"{run}_{table}"], want) <= RTOL, (k, run, table)
    np.testing.assert_allclose(got[f"{run}_history"], single[f"{run}_history"], rtol=RTOL)


def _needs(got: dict[str, np.ndarray], key: str, k: int) -> None:
    """Skips a variant that `sharded_run.py` runs on 8 devices only (CI time), else requires it."""
    if k != 8 and not any(name.startswith(key) for name in got):
        pytest.skip(f"{key} runs on 8 devices only")


@pytest.mark.parametrize("run", ["wals", "wals_cg", "ials", "biased"])
def test_two_als_sweeps_equal_single_device(single, sharded, run):
    k, got = sharded
    _needs(got, run + "_", k)
    tables = [("user", (NUM_USERS, DIM)), ("item", (NUM_ITEMS, DIM))]
    if run == "biased":
        tables += [("user_bias", (NUM_USERS,)), ("item_bias", (NUM_ITEMS,))]
    for table, shape in tables:
        want = single[f"{run}_{table}"]
        assert got[f"{run}_{table}"].shape == want.shape == shape
        # The sharded sweep differs from one device's only by the order in which the prior's
        # Gramian is summed (per shard, then all-reduced): computed as on one device, the rows
        # are equal bit for bit. Three CG steps from a far start turn that last-bit difference
        # into up to 1.6e-5 (2 and 4 devices; 6.1e-6 on 8): each float32 CG run is itself 5e-6
        # to 9e-6 from float64's. The Cholesky solves (refined) stay within 7e-7.
        tol = 3e-5 if run == "wals_cg" else RTOL
        assert _rel(got[f"{run}_{table}"], want) <= tol, (k, run, table)
    np.testing.assert_allclose(got[f"{run}_history"], single[f"{run}_history"], rtol=RTOL)


def test_als_solves_rows_where_they_live(sharded):
    k, got = sharded
    for table, rows in (("user", NUM_USERS), ("item", NUM_ITEMS)):
        assert got[f"als_shard_rows_{table}"].tolist() == [-(-rows // k)] * k, table
    if k == 1:
        return
    # The sweep moves the distinct fixed rows each device's observations read (one
    # reduce-scatter of their [U, d] a half-sweep) and the d x d Gramians, never a whole table.
    tables = {NUM_USERS, NUM_ITEMS, _pad(NUM_USERS, k), _pad(NUM_ITEMS, k)}
    gathered = [r for r, c in got["als_all_gather_shapes"].tolist() if c == DIM]
    assert not tables & set(gathered), gathered
    reduced = [c for c in got["als_collectives"].tolist() if c.startswith("all-reduce f32")]
    assert f"all-reduce f32 {DIM},{DIM}" in reduced, reduced
    big = [c for c in reduced if c.split(" ", 2)[2].split(",")[0] in {str(t) for t in tables}]
    assert big == [], big


@pytest.mark.parametrize("loss", ["full", "sampled"])
def test_softmax_training_equals_single_device(single, sharded, loss):
    k, got = sharded
    prefix = f"softmax_{loss}_"
    _needs(got, prefix, k)
    tables = [t.removeprefix(prefix) for t in single if t.startswith(prefix) and "history" not in t]
    assert {"item", "movie_id", "genre", "year", "hidden_0"} <= set(tables)
    for table in tables:
        want = single[prefix + table]
        assert got[prefix + table].shape == want.shape
        assert _rel(got[prefix + table], want) <= RTOL, (k, loss, table)
    want = single[prefix + "history"]
    np.testing.assert_allclose(got[prefix + "history"], want, rtol=RTOL, equal_nan=True)


def test_the_softmax_step_gathers_no_item_table(sharded):
    k, got = sharded
    if k == 1:
        pytest.skip("one device: no collective to check")
    table = {SOFTMAX_ITEMS, _pad(SOFTMAX_ITEMS, k)}
    batch = {_pad(r, k) for r in got["softmax_batch_rows"].tolist()}
    assert not table & batch, "the test batch's row counts must differ from the table's"
    gathered = [r for r, c in got["softmax_all_gather_shapes"].tolist() if c == DIM]
    assert gathered and not table & set(gathered), gathered
    # Nor is a table-sized array (the item table's gradient) all-reduced or all-to-all'd.
    moved = [c.split(" ", 2)[2].split(",") for c in got["softmax_collectives"].tolist()]
    assert not [d for d in moved if {str(t) for t in table} & set(d)], moved


def test_each_device_holds_its_share_of_rows(sharded):
    k, got = sharded
    for table, rows in (("user", NUM_USERS), ("item", NUM_ITEMS)):
        assert got[f"shard_rows_{table}"].tolist() == [-(-rows // k)] * k, table
        assert sorted(got[f"shard_devices_{table}"].tolist()) == list(range(k)), table
    # Adam's two slots per table follow the tables' sharding: k shards of ⌈N/k⌉ or ⌈M/k⌉ rows.
    want = sorted([[-(-NUM_USERS // k)] * k] * 2 + [[-(-NUM_ITEMS // k)] * k] * 2)
    assert sorted(got["opt_shard_rows"].tolist()) == want


def _pad(n: int, k: int) -> int:
    return -(-n // k) * k


@pytest.mark.parametrize(("prefix", "pairs"), [("", NUM_RATINGS), ("minibatch_", MINIBATCH)])
def test_the_compiled_step_gathers_no_whole_table(sharded, prefix, pairs):
    k, got = sharded
    if k == 1:
        pytest.skip("one device: no collective to check")
    # A whole table, padded to k·⌈N/k⌉ rows or not, is never all-gathered ...
    tables = {NUM_USERS, NUM_ITEMS, _pad(NUM_USERS, k), _pad(NUM_ITEMS, k)}
    gathered = [(r, c) for r, c in got[f"{prefix}all_gather_shapes"].tolist()]
    whole = [(r, c) for r, c in gathered if r in tables]
    assert whole == [], f"whole-table all-gathers in the compiled step: {whole}"
    # ... nor are the pairs' rows: each device's request travels round the ring of devices
    # (`_ring_rows`), its [n/k, d] rows moved by collective-permutes forward and backward (n the
    # step's pairs padded to k), so no device ever holds all n pairs' [n, d] rows.
    assert gathered == [], f"float all-gathers in the compiled step: {gathered}"
    collectives = got[f"{prefix}collectives"].tolist()
    assert f"collective-permute f32 {_pad(pairs, k) // k},{DIM}" in collectives, collectives
    every_pair = [c for c in collectives if c.split(" ", 2)[2] == f"{_pad(pairs, k)},{DIM}"]
    assert every_pair == [], f"collectives of every pair's rows: {every_pair}"


@pytest.mark.parametrize("prefix", ["", "minibatch_"])
def test_gravity_is_a_sum_of_per_shard_gramians(sharded, prefix):
    k, got = sharded
    if k == 1:
        pytest.skip("one device: no collective to check")
    # The float matrices all-reduced are the two d x d Gramians (one all-reduce each): never
    # a table nor its gradient.
    reduced = [
        c.split(" ", 2)[2]
        for c in got[f"{prefix}collectives"].tolist()
        if c.startswith("all-reduce f32")
    ]
    matrices = [r for r in reduced if "," in r]
    assert matrices == [f"{DIM},{DIM}"] * 2, reduced


def test_devices_is_refused_off_jax():
    r = cfcore.synthetic_ratings(10, 8, 40, seed=0)
    model = cfcore.MatrixFactorization(embedding_dim=2)
    with pytest.raises(NotImplementedError, match="not yet supported on backend 'numpy'"):
        model.fit(r, steps=1, optimizer=cfcore.optimizers.SGD(1.0), backend="numpy", devices=2)


@pytest.mark.parametrize(
    ("devices", "match"),
    [(0, "devices=0"), (10_000, "devices=10000"), ("cpu", "got str"), ([], "empty"), ([1], "jax")],
)
def test_bad_devices_are_refused(devices, match):
    r = cfcore.synthetic_ratings(10, 8, 40, seed=0)
    model = cfcore.MatrixFactorization(embedding_dim=2)
    with pytest.raises(ValueError, match=match):
        model.fit(r, steps=1, optimizer=cfcore.optimizers.SGD(1.0), backend="jax", devices=devices)
