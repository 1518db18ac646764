"""TensorFlow's sharded ALS sweep (`fit(..., devices=2)`, DTensor): its program does not grow with
the number of row blocks, and its results equal one device's when one device cuts buckets into
many blocks.

DTensor's half-sweep unrolls its loop over a bucket's blocks into the step (a `tf.while_loop`
breaks DTensor's passes, TF 2.21), so every block was one more copy of the block solve in the
program: at 6,040 x 3,706 with 139k positives (d 64, CG, 260 blocks a sweep per device) the
first sweep took 276 s to trace and expand, and larger data did not finish at all. The
placement now caps the blocks per bucket (`TFRowSharding.max_blocks`): checked here by the
traced sweep's operation count under a block budget so small that one device cuts buckets into
blocks of one row (`tests/_support/sharded_program_tf.py`, in its own process: TensorFlow fixes its
logical devices when it first runs an op).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .._support.tiny_data import run_npz_script

pytest.importorskip("tensorflow")

pytestmark = pytest.mark.subprocess

SCRIPT = Path(__file__).parents[1] / "_support" / "sharded_program_tf.py"
SOLVERS = ["cg", "cholesky"]
# As `test_sharding_tf.ALS_RTOL["ials"]` and `test_sharded_blocks.py` (JAX) after 2 sweeps.
RTOL = 1e-5


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("program") / "run.npz"
    return run_npz_script(SCRIPT, out=out)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("solver", SOLVERS)
def test_small_blocks_cut_buckets_on_one_device(run, solver):
    # Else the program check below would compare two programs of one block per bucket.
    assert (run[f"{solver}_default_single_k"] == 1).all(), run[f"{solver}_default_single_k"]
    assert run[f"{solver}_small_single_k"].max() >= 8, run[f"{solver}_small_single_k"]


@pytest.mark.parametrize("solver", SOLVERS)
def test_the_sharded_sweep_program_does_not_grow_with_the_blocks(run, solver):
    # The traced sweep is the same size as when every bucket is one block anyway (the unrolled
    # loop made it grow with the blocks: 63,965 operations against 1,169 for CG, 49,311 against
    # 1,123 with 220 factorizations against 4 for Cholesky, measured with the cap taken off).
    ops = {budget: int(run[f"{solver}_{budget}_ops"]) for budget in ("default", "small")}
    assert ops["small"] == ops["default"], ops
    # Each device's part of a bucket is one block, whatever the budget.
    assert (run[f"{solver}_small_sharded_k"] == 1).all(), run[f"{solver}_small_sharded_k"]
    # The block solves traced: the factorizations of the Cholesky systems (none for CG).
    counts = {b: int(run[f"{solver}_{b}_cholesky"]) for b in ("default", "small")}
    assert counts["small"] == counts["default"], counts


@pytest.mark.parametrize("budget", ["default", "small"])
@pytest.mark.parametrize("solver", SOLVERS)
def test_two_devices_equal_one_whatever_one_device_blocks(run, solver, budget):
    tag = f"{solver}_{budget}"
    for table in ("user", "item"):
        got, want = run[f"{tag}_2_{table}"], run[f"{tag}_1_{table}"]
        assert _rel(got, want) <= RTOL, (table, _rel(got, want))
    np.testing.assert_allclose(run[f"{tag}_2_history"], run[f"{tag}_1_history"], rtol=RTOL)
