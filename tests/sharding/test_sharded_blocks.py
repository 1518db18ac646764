"""Sharded iALS (`fit(..., devices=2)`, JAX) on buckets cut into many blocks, some of one row:
the results of one device, the blocks' rows, and each device's fetched fixed rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cfcore.backend.sharding import RowSharding
from cfcore.data import row_blocks as rb
from cfcore.train.placement import MIN_BLOCK_ROWS, RowShardedPlacement

from .._support.tiny_data import run_npz_script

pytestmark = pytest.mark.subprocess

SCRIPT = Path(__file__).parents[1] / "_support" / "sharded_blocks_run.py"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, np.ndarray]:
    pytest.importorskip("jax")
    out = tmp_path_factory.mktemp("blocks") / "run.npz"
    return run_npz_script(
        SCRIPT, out=out, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu"
    )


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("solver", ["cg", "cholesky"])
def test_two_devices_equal_one_on_small_blocks(run, solver):
    for table in ("user", "item"):
        assert _rel(run[f"{solver}_2_{table}"], run[f"{solver}_1_{table}"]) <= 1e-5, table
    np.testing.assert_allclose(run[f"{solver}_2_history"], run[f"{solver}_1_history"], rtol=1e-5)


def test_blocks_are_cut_and_long_rows_get_blocks_of_their_own(run):
    single, sharded = run["single_shapes"], run["sharded_shapes"]
    assert (single[:, 0] > 1).any(), "the block budget must cut some bucket into several blocks"
    # A bucket whose one-device blocks hold fewer than MIN_BLOCK_ROWS rows keeps that size on
    # each device, not MIN_BLOCK_ROWS rows of padding slots each.
    short = single[:, 1] < MIN_BLOCK_ROWS
    assert short.any() and (single[short, 1] == 1).any()
    assert (sharded[short, 1] == single[short, 1]).all(), (single, sharded)


def test_each_device_fetches_its_distinct_fixed_rows(run):
    fetch = run["fetch"]  # [2, U]: device j's fixed rows, padded with row 0
    buckets = [run[k] for k in sorted(run) if k.startswith("fetched_cols_")]
    for j in range(2):
        read = np.unique(np.concatenate([b[j] for b in buckets]))
        # Ascending, each once, then padding: exactly the rows its slots read.
        wanted = fetch[j][: len(read)]
        assert wanted.tolist() == read.tolist()
        assert (fetch[j][len(read) :] == 0).all()
    assert fetch.shape[1] < 300  # fewer than the table's rows (each device reads some of them)


def test_device_blocks_mirror_one_device_block_sizes(monkeypatch):
    # Host only: RowShardedPlacement's layout needs no devices.
    monkeypatch.setattr(rb, "BLOCK_FLOATS", 1 << 12)
    monkeypatch.setattr(rb, "WHOLE_FLOATS", 1 << 12)
    rng = np.random.default_rng(0)
    num_rows, n, dim = 50, 3_000, 8
    rows = np.minimum(rng.zipf(1.4, n) - 1, num_rows - 1)
    cols = rng.integers(0, 40, n)
    ones = np.ones(n, np.float32)
    reg = np.ones(num_rows)
    one = rb.bucket_blocks(rows, cols, ones, ones, reg, dim=dim, solver="cg")  # what it mirrors
    place = RowShardedPlacement(None, RowSharding(None, range(3)))
    parts, _, _ = place.device_row_blocks(rb.row_blocks, rows, cols, ones, ones, reg, dim=dim,
                                          solver="cg")  # fmt: skip
    lengths = [b["cols"].shape[2] for b in one["buckets"]]
    for part in parts:
        assert [b["cols"].shape[2] for b in part["buckets"]] == lengths
        for alone, mine in zip(one["buckets"], part["buckets"], strict=True):
            b1, b = alone["cols"].shape[1], mine["cols"].shape[1]
            # At least one device's block, up to MIN_BLOCK_ROWS (rounding), never more.
            assert min(MIN_BLOCK_ROWS, b1) <= b <= b1, (b1, b)
