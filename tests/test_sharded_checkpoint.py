"""Sharded checkpoints (`model.save(folder, sharded=True)`, `cfcore.persistence.save_sharded`).

A model trained on 4 virtual CPU devices is saved as one file per device shard without a whole
table ever reaching the host (the gather is refused during the save); the folder loads with the
single-device `cfcore.load` bit for bit, and on 2 devices in another process, where training
continues as it does on one device. Each JAX configuration runs in its own process
(`tests/sharded_checkpoint_run.py`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .tiny_data import cli_env

pytest.importorskip("jax")

import cfcore  # noqa: E402
from cfcore.persistence import ModelFileError  # noqa: E402

SCRIPT = Path(__file__).with_name("sharded_checkpoint_run.py")
NUM_USERS, NUM_ITEMS, NUM_RATINGS, DIM, STEPS = 37, 29, 500, 4, 5  # as in the script


def _run(*args: str) -> None:
    env = cli_env(XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    tmp = tmp_path_factory.mktemp("sharded_ckpt")
    folder, out = tmp / "ckpt", tmp / "saved.npz"
    _run("save", "4", str(folder), str(out))
    with np.load(out) as f:
        return folder, dict(f)


def test_one_file_per_shard_none_holds_a_whole_table(saved):
    folder, _ = saved
    shards = sorted(p.name for p in folder.glob("shard-*.npz"))
    assert shards == [f"shard-{j:05d}-of-00004.npz" for j in range(4)]
    for table, rows in (("user_embeddings", NUM_USERS), ("item_embeddings", NUM_ITEMS)):
        per = -(-rows // 4)
        held = [np.load(folder / s)[table].shape for s in shards]
        # ⌈N/4⌉ rows on each device, the padding rows left out of the last.
        assert held == [(per, DIM)] * 3 + [(rows - 3 * per, DIM)], (table, held)
    # The index holds no table: plain NumPy sees only the metadata, ids and ratings.
    index = np.load(folder / "model.npz")
    assert not {"user_embeddings", "item_embeddings"} & set(index.files)


def test_single_device_load_gives_the_saved_model(saved):
    folder, want = saved
    model = cfcore.load(folder)
    assert isinstance(model, cfcore.RegularizedMF)
    assert model.step == STEPS
    for table in ("user", "item"):
        np.testing.assert_array_equal(model.embeddings[table], want[table])


def test_loads_on_another_device_count_and_continues(saved, tmp_path):
    folder, want = saved
    out = tmp_path / "loaded.npz"
    _run("load", "2", str(folder), str(out))
    with np.load(out) as f:
        got = dict(f)
    single = cfcore.load(folder)
    single.fit(
        cfcore.synthetic_ratings(NUM_USERS, NUM_ITEMS, NUM_RATINGS, seed=0),
        steps=STEPS,
        optimizer=cfcore.optimizers.SGD(1.0),
        backend="jax",
        progress=False,
    )
    for table in ("user", "item"):
        np.testing.assert_array_equal(got[f"loaded_{table}"], want[table])
        cont, ref = got[f"continued_{table}"], single.embeddings[table]
        assert np.max(np.abs(cont - ref)) <= 1e-5 * np.max(np.abs(ref)), table


def test_a_single_device_model_saves_as_one_shard(tmp_path):
    r = cfcore.synthetic_ratings(12, 9, 60, seed=1)
    model = cfcore.BiasedMF(embedding_dim=3)
    model.fit(r, steps=1, backend="numpy", progress=False)
    model.save(tmp_path / "ckpt", sharded=True)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "model.npz",
        "shard-00000-of-00001.npz",
    ]
    loaded = cfcore.load(tmp_path / "ckpt")
    for name, value in model.params_numpy().items():
        np.testing.assert_array_equal(loaded.params_numpy()[name], value)


def test_damaged_checkpoints_are_refused(saved, tmp_path):
    import shutil

    folder, _ = saved
    with pytest.raises(ModelFileError, match="load its folder"):
        cfcore.load(folder / "model.npz")
    partial = tmp_path / "partial"
    shutil.copytree(folder, partial)
    (partial / "shard-00002-of-00004.npz").unlink()
    with pytest.raises(ModelFileError, match="shard-00002-of-00004.npz is missing"):
        cfcore.load(partial)
    doubled = tmp_path / "doubled"
    shutil.copytree(folder, doubled)
    shutil.copy(doubled / "shard-00000-of-00004.npz", doubled / "shard-00001-of-00004.npz")
    with pytest.raises(ModelFileError, match="in 2 shards|in 0 shards"):
        cfcore.load(doubled)
