"""Training over two processes on localhost: `jax.distributed` with 2 processes x 4 virtual CPU
devices (`tests/_support/distributed_run.py`), `fit(..., devices=8)` across both.

Both processes must report 8 devices (4 their own), hold ⌈N/8⌉ rows of the user table on each
of their devices, agree with each other, and match the single-device result within 1e-5
relative after full-batch SGD, minibatch Adam and 2 WALS sweeps; the sharded checkpoint both
write together is whole when either save returns (one saves late) and loads with the
single-device `cfcore.load`.

Both then load it straight onto the 8 devices (`cfcore.load(folder, backend="jax", devices=8)`):
each process places only its own 4 devices' blocks (⌈N/8⌉ rows each, equal to the saved rows),
reading only their row ranges, from only its own devices' shard files, and training continued
on the 8 devices matches the checkpoint loaded plainly and continued on one device within 1e-5
relative. A mesh of the other process's devices only is refused with a clear error.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .._support.distributed_run import (
    CONTINUE_STEPS,
    NUM_ITEMS,
    NUM_USERS,
    continue_sgd,
    train,
    trained,
)
from .._support.tiny_data import cli_env

pytest.importorskip("jax")

import cfcore  # noqa: E402

pytestmark = pytest.mark.subprocess

SCRIPT = Path(__file__).parents[1] / "_support" / "distributed_run.py"
RTOL = 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, list[dict[str, np.ndarray]]]:
    tmp = tmp_path_factory.mktemp("distributed")
    folder = tmp / "ckpt"
    env = cli_env(XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), str(i), port, str(folder), str(tmp / f"p{i}.npz")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    errors = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        if p.returncode != 0:
            errors.append(err[-3000:])
    assert not errors, "\n".join(errors)
    out = []
    for i in range(2):
        with np.load(tmp / f"p{i}.npz") as f:
            out.append(dict(f))
    return folder, out


def _single() -> dict[str, np.ndarray]:
    return trained(train(devices=None))


def test_two_processes_form_one_eight_device_mesh(runs):
    _, out = runs
    for got in out:
        assert got["devices"].tolist() == [8, 4, 2]
        assert got["local_shard_rows"].tolist() == [-(-NUM_USERS // 8)] * 4


def test_two_processes_match_one_device(runs):
    _, out = runs
    want = _single()
    for name in ("sgd", "adam", "wals"):
        for table in ("user", "item"):
            key = f"{name}_{table}"
            np.testing.assert_array_equal(out[0][key], out[1][key])
            err = np.max(np.abs(out[0][key] - want[key])) / np.max(np.abs(want[key]))
            assert err <= RTOL, (key, err)
        np.testing.assert_allclose(out[0][f"{name}_history"], want[f"{name}_history"], rtol=RTOL)


def test_the_checkpoint_both_processes_wrote_loads_on_one_device(runs):
    folder, out = runs
    shards = list(folder.glob("shards-*/shard-*-of-00008.npz"))
    assert len(shards) == 8
    (generation,) = {p.parent.name for p in shards}  # both processes wrote one generation
    # Process 1 saved 2 s late: process 0's save returned only once every shard and the index
    # were written (no temporary file left either).
    whole = sorted(["model.npz", *(f"{generation}/shard-{j:05d}-of-00008.npz" for j in range(8))])
    for got in out:
        assert got["saved_files"].tolist() == whole
    model = cfcore.load(folder)
    for table in ("user", "item"):
        np.testing.assert_array_equal(model.embeddings[table], out[0][f"sgd_{table}"])


# ------------------------------------------------------------------ loading across processes

ENTRIES = {"user": ("user_embeddings", NUM_USERS), "item": ("item_embeddings", NUM_ITEMS)}


def test_each_process_places_its_own_devices_rows(runs):
    folder, out = runs
    plain = cfcore.load(folder)
    for p, got in enumerate(out):
        mine = range(4 * p, 4 * p + 4)  # the mesh positions of this process's devices
        for table, (_, rows) in ENTRIES.items():
            per = -(-rows // 8)
            assert got[f"shape_{table}"].tolist() == [8 * per, 4]
            padded = np.zeros((8 * per, 4), np.float32)
            padded[:rows] = plain.embeddings[table]
            held = sorted(int(k.rsplit("_", 1)[1]) for k in got if k.startswith(f"block_{table}_"))
            assert held == list(mine), (p, table, held)
            for j in mine:
                block = got[f"block_{table}_{j}"]
                assert block.shape == (per, 4), (p, table, j)
                assert int(got[f"start_{table}_{j}"]) == j * per
                np.testing.assert_array_equal(block, padded[j * per : (j + 1) * per])


def test_each_process_reads_only_its_own_devices_rows(runs):
    _, out = runs
    for p, got in enumerate(out):
        mine = range(4 * p, 4 * p + 4)
        for entry, rows in ENTRIES.values():
            per = -(-rows // 8)
            want = [[min(j * per, rows), min((j + 1) * per, rows)] for j in mine]
            assert got[f"read_{entry}"].tolist() == want, (p, entry)
            # Saved from the same 8 devices: each device's rows are one shard file, its own.
            assert got[f"member_{entry}"].tolist() == list(mine), (p, entry)


def test_training_continues_across_processes_as_on_one_device(runs):
    folder, out = runs
    np.testing.assert_array_equal(out[0]["continued_user"], out[1]["continued_user"])
    plain = cfcore.load(folder)
    continue_sgd(plain, devices=None)
    for got in out:
        assert int(got["continued_step"]) == plain.step == 20 + CONTINUE_STEPS
        np.testing.assert_allclose(
            got["continued_history"], plain.history.to_numpy(np.float64), rtol=RTOL
        )
        for table, want in plain.embeddings.items():
            err = np.max(np.abs(got[f"continued_{table}"] - want)) / np.max(np.abs(want))
            assert err <= RTOL, (table, err)


def test_a_mesh_of_another_process_devices_is_refused(runs):
    _, out = runs
    for p, got in enumerate(out):
        message = str(got["foreign_devices_error"])
        assert f"devices of process(es) [{1 - p}] only" in message, message
        assert f"process {p} of 2" in message and "devices=8" in message, message
