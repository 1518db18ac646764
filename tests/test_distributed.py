"""Training over two processes on localhost: `jax.distributed` with 2 processes x 4 virtual CPU
devices (`tests/distributed_run.py`), `fit(..., devices=8)` across both.

Both processes must report 8 devices (4 their own), hold ⌈N/8⌉ rows of the user table on each
of their devices, agree with each other, and match the single-device result within 1e-5
relative after full-batch SGD, minibatch Adam and 2 WALS sweeps; the sharded checkpoint both
write together loads with the single-device `cfcore.load`.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .distributed_run import NUM_USERS, train, trained
from .tiny_data import cli_env

pytest.importorskip("jax")

import cfcore  # noqa: E402

SCRIPT = Path(__file__).with_name("distributed_run.py")
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
    assert len(list(folder.glob("shard-*-of-00008.npz"))) == 8
    model = cfcore.load(folder)
    for table in ("user", "item"):
        np.testing.assert_array_equal(model.embeddings[table], out[0][f"sgd_{table}"])
