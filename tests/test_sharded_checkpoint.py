"""Sharded checkpoints (`model.save(folder, sharded=True)`, `cfcore.persistence.save_sharded`).

A model trained on 4 virtual CPU devices is saved as one file per device shard without a whole
table ever reaching the host (the gather is refused during the save); the folder loads with the
single-device `cfcore.load` bit for bit, and on 2 devices in another process, where training
continues as it does on one device. `cfcore.load(folder, devices=k)` puts it straight onto 1, 2
and 8 devices (JAX; 2 and 8 on TensorFlow): each device receives its own rows, read from the shard
files that hold them, with every way of bringing a whole table through the host refused, and
training continues bit for bit as after a plain load and `fit(..., devices=k)` (WALS, BiasedMF
and the softmax model too, on one device). Each multi-device configuration runs in its own
process (`tests/sharded_checkpoint_run.py`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .tiny_data import cli_env

pytest.importorskip("jax")

import cfcore  # noqa: E402
from cfcore.persistence import ModelFileError  # noqa: E402

SCRIPT = Path(__file__).with_name("sharded_checkpoint_run.py")
NUM_USERS, NUM_ITEMS, NUM_RATINGS, DIM, STEPS = 37, 29, 500, 4, 5  # as in the script


def _run(*args: str) -> None:
    """One run of the script (a mode and its arguments) in its own process, on 8 virtual CPU
    devices."""
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


# ------------------------------------------------------------------ loading onto devices

PLACED = [("jax", 1), ("jax", 2), ("jax", 8), ("tf", 2), ("tf", 8)]


@pytest.fixture(scope="module")
def placed(saved, tmp_path_factory):
    """`placed(backend, k)`: the `place` run's results (one process per configuration, once)."""
    folder, _ = saved
    runs: dict[tuple[str, int], dict[str, np.ndarray]] = {}

    def get(backend: str, k: int) -> dict[str, np.ndarray]:
        if backend == "tf":
            pytest.importorskip("tensorflow")
        if (backend, k) not in runs:
            out = tmp_path_factory.mktemp(f"placed_{backend}_{k}") / "out.npz"
            _run("place" if backend == "jax" else "place-tf", str(k), str(folder), str(out))
            with np.load(out) as f:
                runs[backend, k] = dict(f)
        return runs[backend, k]

    return get


@pytest.mark.parametrize(("backend", "k"), PLACED)
def test_each_device_receives_its_own_rows_from_the_shards(saved, placed, backend, k):
    _, want = saved
    got = placed(backend, k)
    for table, rows in (("user", NUM_USERS), ("item", NUM_ITEMS)):
        per = -(-rows // k)
        padded = np.zeros((per * k, DIM), np.float32)
        padded[:rows] = want[table]
        blocks = sorted(key for key in got if key.startswith(f"block_{table}_"))
        assert len(blocks) == k, (table, blocks)
        for j in range(k):
            assert int(got[f"start_{table}_{j}"]) == j * per, (table, j)
            np.testing.assert_array_equal(
                got[f"block_{table}_{j}"], padded[j * per : (j + 1) * per]
            )
    # Each range asked of the shard files is one device's rows (k per table) and each member
    # read is one saved shard (⌈N/4⌉ rows at most): no whole table for k > 1.
    read, members = got["read_rows"], got["member_rows"]
    assert len(read) == 2 * k and read.sum() == NUM_USERS + NUM_ITEMS
    assert read.max() <= -(-NUM_USERS // k)
    assert members.max() <= -(-NUM_USERS // 4)


@pytest.mark.parametrize(("backend", "k"), PLACED)
def test_training_continues_as_after_a_plain_load(placed, backend, k):
    got = placed(backend, k)
    assert int(got["continued_step"]) == int(got["reference_step"]) == 2 * STEPS
    np.testing.assert_array_equal(got["continued_history"], got["reference_history"])
    for table in ("user", "item"):
        np.testing.assert_array_equal(got[f"continued_{table}"], got[f"reference_{table}"])


@pytest.mark.parametrize(("backend", "k"), PLACED)
def test_a_placed_model_saves_again_per_device(saved, placed, backend, k):
    folder, _ = saved
    got = placed(backend, k)
    again = folder.parent / f"{folder.name}-{backend}-{k}"
    assert len(list(again.glob(f"shard-*-of-{k:05d}.npz"))) == k
    model = cfcore.load(again)
    assert model.step == 2 * STEPS
    for table in ("user", "item"):
        np.testing.assert_array_equal(model.embeddings[table], got[f"continued_{table}"])


def test_devices_on_a_backend_that_does_not_shard_are_refused(tmp_path):
    # Refused before any file is read (the path does not exist), as fit refuses them.
    for backend in ("numpy", "torch"):
        if backend == "torch":
            pytest.importorskip("torch")
        with pytest.raises(NotImplementedError, match=f"backend '{backend}'"):
            cfcore.load(tmp_path / "nothing", backend=backend, devices=2)
    with pytest.raises(ValueError, match="backend='jax' without devices"):
        cfcore.load(tmp_path / "nothing", backend="jax")
    with pytest.raises(ValueError, match="devices=99 but the JAX backend has"):
        cfcore.load(tmp_path / "nothing", backend="jax", devices=99)


def test_a_single_model_file_loads_onto_devices(tmp_path):
    import jax

    r = cfcore.synthetic_ratings(12, 9, 60, seed=1)
    sgd = cfcore.optimizers.SGD(1.0)
    model = cfcore.RegularizedMF(embedding_dim=3, init_stddev=0.5)
    model.fit(r, steps=2, optimizer=sgd, backend="jax", progress=False)
    model.save(tmp_path / "model.npz")
    placed = cfcore.load(tmp_path / "model.npz", backend="jax", devices=[jax.devices()[0]])
    assert placed._session is not None and placed._session.loaded
    assert placed._params is None  # the session holds the tables, not a host copy
    for table, emb in model.embeddings.items():
        np.testing.assert_array_equal(placed.embeddings[table], emb)
    # Another device set than the loaded one: a fresh session from the gathered tables.
    placed.fit(r, steps=2, optimizer=sgd, backend="jax", progress=False)
    plain = cfcore.load(tmp_path / "model.npz")
    plain.fit(r, steps=2, optimizer=sgd, backend="jax", progress=False)
    assert placed.step == plain.step == 4
    for table, emb in plain.embeddings.items():
        np.testing.assert_array_equal(placed.embeddings[table], emb)


@pytest.mark.parametrize("kind", ["wals", "biased", "softmax"])
def test_every_model_continues_from_a_placed_checkpoint(tmp_path, kind):
    # Each model class rebuilds itself around stand-ins of its tables: every parameter must be
    # found again and placed (on one device here: the multi-device runs are RegularizedMF's).
    if kind == "softmax":
        from .test_softmax_features import toy_dataset

        data: Any = toy_dataset(num_users=30, num_items=17, seed=1)
        model: Any = cfcore.SoftmaxModel({"movie_id": 4, "genre": 2, "year": 2}, hidden_dims=(4,))
        kw: dict[str, Any] = {"optimizer": cfcore.optimizers.Adagrad(0.5), "batch_size": 8}
    else:
        data = cfcore.synthetic_ratings(12, 9, 60, seed=1)
        model = (cfcore.WALS if kind == "wals" else cfcore.BiasedMF)(embedding_dim=3)
        kw = {}
    kw.update(steps=2, eval_every=2, backend="jax", devices=1, progress=False)
    model.fit(data, **kw)
    model.save(tmp_path / "ckpt", sharded=True)
    placed = cfcore.load(tmp_path / "ckpt", devices=1)
    assert placed._session is not None and placed._session.loaded
    assert set(placed._session.params) == set(model.params_numpy())
    placed.fit(data, **kw)
    plain = cfcore.load(tmp_path / "ckpt")
    plain.fit(data, **kw)
    assert placed.step == plain.step == 4
    for name, value in plain.params_numpy().items():
        np.testing.assert_array_equal(placed.params_numpy()[name], value)


def test_damaged_checkpoints_are_refused_when_placed(saved, tmp_path):
    import shutil

    folder, _ = saved
    partial = tmp_path / "partial"
    shutil.copytree(folder, partial)
    (partial / "shard-00001-of-00004.npz").unlink()
    with pytest.raises(ModelFileError, match="shard-00001-of-00004.npz is missing"):
        cfcore.load(partial, devices=1)
    doubled = tmp_path / "doubled"
    shutil.copytree(folder, doubled)
    shutil.copy(doubled / "shard-00002-of-00004.npz", doubled / "shard-00003-of-00004.npz")
    with pytest.raises(ModelFileError, match="row 20 of 'user_embeddings' is in 2 shards"):
        cfcore.load(doubled, devices=1)
