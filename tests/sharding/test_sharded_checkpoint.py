"""Sharded checkpoints (`model.save(folder, sharded=True)`, `cfcore.persistence.save_sharded`).

A model trained on 4 virtual CPU devices is saved as one file per device shard without a whole
table ever reaching the host (the gather is refused during the save); the folder loads with the
single-device `cfcore.load` bit for bit, and on 2 devices in another process, where training
continues as it does on one device. `cfcore.load(folder, devices=k)` puts it straight onto 1, 2
and 8 devices (JAX; 2 and 8 on TensorFlow): each device receives its own rows, read from the shard
files that hold them, with every way of bringing a whole table through the host refused, and
training continues bit for bit as after a plain load and `fit(..., devices=k)` (WALS, BiasedMF
and the softmax model too, on one device). Each multi-device configuration runs in its own
process (`tests/_support/sharded_checkpoint_run.py`).

Saves are all-or-nothing: a 4-device save of another model of the same shapes into the folder,
SIGKILLed after each of its shards, half-way through one, or before its index (one process; and
after each of 8 shards written by 2 `jax.distributed` processes, slow), leaves every file of the
previous checkpoint bit for bit and that checkpoint what both load forms read; the next save
removes the leftovers. A shard copied from another checkpoint of the same shapes, a missing shard,
a missing shard folder or index are refused, and a save removes only what earlier saves left.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .._support.tiny_data import cli_env

pytest.importorskip("jax")

import cfcore  # noqa: E402
from cfcore.persistence import ModelFileError  # noqa: E402

pytestmark = pytest.mark.subprocess

SCRIPT = Path(__file__).parents[1] / "_support" / "sharded_checkpoint_run.py"
NUM_USERS, NUM_ITEMS, NUM_RATINGS, DIM, STEPS = 37, 29, 500, 4, 5  # as in the script
SGD = cfcore.optimizers.SGD(1.0)


def _shards(folder: Path) -> list[Path]:
    """The shard files under `folder` (every generation's), sorted."""
    return sorted(folder.glob("shards-*/shard-*.npz"))


def _spawn(*args: str) -> subprocess.CompletedProcess[str]:
    """One run of the script (a mode and its arguments) in its own process, on 8 virtual CPU
    devices."""
    env = cli_env(XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300
    )


def _run(*args: str) -> None:
    proc = _spawn(*args)
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
    shards = _shards(folder)
    assert [p.name for p in shards] == [f"shard-{j:05d}-of-00004.npz" for j in range(4)]
    assert len({p.parent for p in shards}) == 1  # one generation folder
    for table, rows in (("user_embeddings", NUM_USERS), ("item_embeddings", NUM_ITEMS)):
        per = -(-rows // 4)
        held = [np.load(s)[table].shape for s in shards]
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
    model.fit(r, steps=1, backend="jax", progress=False)
    model.save(tmp_path / "ckpt", sharded=True)
    (generation,) = {p.parent for p in _shards(tmp_path / "ckpt")}
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["model.npz", generation.name]
    assert [p.name for p in generation.iterdir()] == ["shard-00000-of-00001.npz"]
    loaded = cfcore.load(tmp_path / "ckpt")
    for name, value in model.params_numpy().items():
        np.testing.assert_array_equal(loaded.params_numpy()[name], value)


def test_damaged_checkpoints_are_refused(saved, tmp_path):
    folder, _ = saved
    with pytest.raises(ModelFileError, match="load its folder"):
        cfcore.load(folder / "model.npz")
    partial = tmp_path / "partial"
    shutil.copytree(folder, partial)
    _shards(partial)[2].unlink()
    with pytest.raises(ModelFileError, match="/shard-00002-of-00004.npz is missing"):
        cfcore.load(partial)
    doubled = tmp_path / "doubled"
    shutil.copytree(folder, doubled)
    shards = _shards(doubled)
    shutil.copy(shards[0], shards[1])
    with pytest.raises(ModelFileError, match="holds shard 0 of 4, the index names it shard 1"):
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
    assert len(list(again.glob(f"shards-*/shard-*-of-{k:05d}.npz"))) == k
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
        from ..models.test_softmax_features import toy_dataset

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
    folder, _ = saved
    partial = tmp_path / "partial"
    shutil.copytree(folder, partial)
    _shards(partial)[1].unlink()
    with pytest.raises(ModelFileError, match="/shard-00001-of-00004.npz is missing"):
        cfcore.load(partial, devices=1)
    doubled = tmp_path / "doubled"
    shutil.copytree(folder, doubled)
    shards = _shards(doubled)
    shutil.copy(shards[2], shards[3])
    with pytest.raises(ModelFileError, match="holds shard 2 of 4, the index names it shard 3"):
        cfcore.load(doubled, devices=1)


# ------------------------------------------------------------------ all-or-nothing saves

KILL_POINTS = ["after-0", "after-1", "after-2", "after-3", "torn-1", "before-index"]
"""Where `sharded_checkpoint_run.kill_at` kills a 4-shard save: after shard j's file is in place,
half-way through shard 1's temporary file, every shard written but not the index."""


def _digests(folder: Path) -> dict[str, str]:
    """Every file under `folder` (its relative path) and its SHA-256."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _copy(folder: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the checkpoint `folder` to save over, and its files' digests."""
    victim = tmp_path / "ckpt"
    shutil.copytree(folder, victim)
    return victim, _digests(victim)


def _assert_holds(model: Any, want: dict[str, np.ndarray]) -> None:
    for table in ("user", "item"):
        np.testing.assert_array_equal(model.embeddings[table], want[table])


@pytest.fixture(scope="module")
def other(saved, tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """Another model of `saved`'s shapes (its checkpoint trained one step more), saved
    sharded on the host, and its embeddings."""
    folder, _ = saved
    model = cfcore.load(folder)
    model.fit(
        cfcore.synthetic_ratings(NUM_USERS, NUM_ITEMS, NUM_RATINGS, seed=0),
        steps=1,
        optimizer=cfcore.optimizers.SGD(1.0),
        backend="jax",
        progress=False,
    )
    out = tmp_path_factory.mktemp("other") / "ckpt"
    model.save(out, sharded=True)
    return out, dict(model.embeddings)


def _check_killed(
    victim: Path, before: dict[str, str], point: str, shards: int, want, *, alone: bool = True
) -> None:
    """After a save of `shards` shards into `victim` killed at `point`: the old files untouched,
    the new ones in one generation folder beside them and as far as `point` (exactly so when the
    killed process wrote `alone`), and the old checkpoint what every load form reads; then the
    next save removes every generation but its own."""
    after = _digests(victim)
    assert {name: after.get(name) for name in before} == before  # every old file, bit for bit
    new = sorted(set(after) - set(before))
    assert len({name.split("/")[0] for name in new}) == 1, new  # in one new generation folder
    names = {name.split("/")[-1] for name in new}
    what, _, j = point.partition("-")
    if j.isdigit():  # shards 0..j-1, and shard j (after) or half its temporary file (torn)
        shard = f"shard-{int(j):05d}-of-{shards:05d}.npz"
        assert shard in names if what == "after" else any(n.startswith(f".{shard}.") for n in names)
        assert not alone or len(new) == int(j) + 1, new
    else:  # before the index: every shard
        assert len(names) == shards and all(n.startswith("shard-") for n in names), new
    _assert_holds(cfcore.load(victim), want)
    _assert_holds(cfcore.load(victim, devices=1), want)
    cfcore.load(victim).save(victim, sharded=True)
    left = _digests(victim)
    assert len({name.split("/")[0] for name in left}) == 2, sorted(left)  # index, one generation
    assert not set(left) & (set(before) | set(new)) - {"model.npz"}
    _assert_holds(cfcore.load(victim), want)


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_save_killed_part_way_leaves_the_previous_checkpoint(saved, other, tmp_path, point):
    # The case: a 4-device save of another model of the same shapes into the folder of a
    # checkpoint, the writer SIGKILLed part-way (after 2 of 4 shards, say).
    victim, before = _copy(saved[0], tmp_path)
    proc = _spawn("kill", "4", str(other[0]), str(victim), point)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    _check_killed(victim, before, point, 4, saved[1])


def test_a_save_killed_after_its_index_is_current_and_shards_are_its_own(saved, other, tmp_path):
    folder, first = saved
    victim = tmp_path / "ckpt"
    shutil.copytree(folder, victim)
    proc = _spawn("kill", "4", str(other[0]), str(victim), "after-index")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    # The index is in place: the new checkpoint is whole, the old generation not yet removed.
    _assert_holds(cfcore.load(victim), other[1])
    generations = sorted({p.parent for p in _shards(victim)})
    assert len(generations) == 2
    # A shard of the old checkpoint (same shapes, same position) copied over the new one's.
    (old,) = [g for g in generations if g.name in {p.parent.name for p in _shards(folder)}]
    (new,) = [g for g in generations if g != old]
    shutil.copy(old / "shard-00002-of-00004.npz", new / "shard-00002-of-00004.npz")
    for devices in (None, 1):
        with pytest.raises(ModelFileError, match="shard-00002-of-00004.npz belongs to another"):
            cfcore.load(victim, devices=devices)
    (new / "shard-00002-of-00004.npz").unlink()
    with pytest.raises(ModelFileError, match="shard-00002-of-00004.npz is missing"):
        cfcore.load(victim)
    # The next save removes both stale generations, the complete one and the damaged one.
    model = cfcore.load(folder)
    model.save(victim, sharded=True)
    assert {p.parent for p in _shards(victim)}.isdisjoint(generations)
    assert sorted(p.name for p in victim.iterdir())[0] == "model.npz"
    assert len(list(victim.iterdir())) == 2
    _assert_holds(cfcore.load(victim), first)


def test_a_shard_of_another_checkpoint_is_refused(tmp_path):
    # Two models of the same shapes, each saved sharded on the host (one shard each).
    ratings = cfcore.synthetic_ratings(12, 9, 60, seed=1)
    folders = []
    for seed in (0, 1):
        model = cfcore.RegularizedMF(embedding_dim=3)
        model.fit(ratings, steps=1, backend="jax", seed=seed, optimizer=SGD, progress=False)
        folders.append(model.save(tmp_path / f"ckpt{seed}", sharded=True))
    (mine,), (theirs,) = (_shards(f) for f in folders)
    assert mine.name == theirs.name
    shutil.copy(theirs, mine)
    for devices in (None, 1):
        with pytest.raises(ModelFileError, match=re.escape(f"{mine} belongs to another")):
            cfcore.load(folders[0], devices=devices)


def test_an_incomplete_checkpoint_is_refused(saved, tmp_path):
    folder, _ = saved
    no_index = tmp_path / "no_index"
    shutil.copytree(folder, no_index)
    (no_index / "model.npz").unlink()  # as after a first save killed before its index
    with pytest.raises(ModelFileError, match="no complete sharded checkpoint: its index"):
        cfcore.load(no_index)
    no_shards = tmp_path / "no_shards"
    shutil.copytree(folder, no_shards)
    (generation,) = {p.parent for p in _shards(no_shards)}
    shutil.rmtree(generation)
    for devices in (None, 1):
        with pytest.raises(ModelFileError, match=f"the shard folder {generation.name} its index"):
            cfcore.load(no_shards, devices=devices)


def test_a_save_removes_only_what_earlier_saves_left(tmp_path):
    ratings = cfcore.synthetic_ratings(12, 9, 60, seed=1)
    model = cfcore.RegularizedMF(embedding_dim=3)
    model.fit(ratings, steps=1, backend="jax", optimizer=SGD, progress=False)
    folder = model.save(tmp_path / "ckpt", sharded=True)
    # Beside it: what a killed save and the version 2 layout leave, and files of the user's.
    (folder / "shards-0123456789abcdef").mkdir()
    (folder / "shards-0123456789abcdef" / "shard-00000-of-00002.npz").write_bytes(b"partial")
    (folder / "shard-00000-of-00001.npz").write_bytes(b"v2 shard")
    # A temporary file of a writer that has exited (its process id is no longer running).
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], stdout=subprocess.PIPE, text=True
    )
    (folder / f".shard-00001-of-00002.npz.{int(gone.stdout)}.0a1b2c3d.tmp").write_bytes(b"torn")
    kept = ["notes.txt", "shards-mine", "shard-notes.npz"]
    (folder / "notes.txt").write_text("mine")
    (folder / "shards-mine").mkdir()
    (folder / "shard-notes.npz").write_bytes(b"mine")
    model.fit(ratings, steps=1, backend="jax", optimizer=SGD, progress=False)
    model.save(folder, sharded=True)
    (generation,) = {p.parent.name for p in _shards(folder)}
    assert sorted(p.name for p in folder.iterdir()) == sorted(["model.npz", generation, *kept])
    loaded = cfcore.load(folder)
    for table, emb in model.embeddings.items():
        np.testing.assert_array_equal(loaded.embeddings[table], emb)


KILL2_POINTS = [*(f"after-{j}" for j in range(8)), "torn-5", "before-index"]
"""Where a save of 8 shards by 2 processes (4 each) is killed: after each shard, half-way
through one of the second process's, every shard written but not the index."""


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL2_POINTS)
def test_a_save_by_two_processes_killed_part_way_leaves_the_previous(saved, other, tmp_path, point):
    from .test_distributed import _free_port

    victim, before = _copy(saved[0], tmp_path)
    env = cli_env(XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    args = [str(_free_port()), str(other[0]), str(victim), point]
    procs = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), "kill2", str(i), *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    # The process writing the shard named (mesh positions 0-3 are process 0's), or the primary.
    _, _, j = point.partition("-")
    dying = procs[int(j) // 4 if j.isdigit() else 0]
    try:
        _, err = dying.communicate(timeout=300)
    finally:
        # The other process is killed too, wherever it is (waiting for the dead one, most
        # likely): a pre-empted job loses all its processes.
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
    assert dying.returncode == -signal.SIGKILL, err[-3000:]
    _check_killed(victim, before, point, 8, saved[1], alone=False)
