"""Model files written by an earlier cfcore still load (the README's contract).

`tests/persistence/data/models/*_v1.npz` were written by cfcore 0.1.0 (format version 1) before the model
classes took over their own state; `expected.json` holds what that version reported for each
model when it wrote the file (class, step, history length, parameter sums, first ids).

`sharded_v2/` is a sharded checkpoint of the version 2 layout (its shards beside the index, no
save id), written from 2 JAX devices before saves became all-or-nothing, and
`sharded_v2_whole.npz` the same model saved as one file then.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import cfcore

HERE = Path(__file__).parent / "data" / "models"
EXPECTED = json.loads((HERE / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_earlier_files_load(name: str, tmp_path: Path):
    want = EXPECTED[name]
    model = cfcore.load(HERE / f"{name}.npz")
    assert type(model).__name__ == want["class"]
    assert model.step == want["step"]
    assert len(model.history) == want["history_rows"]
    emb = model.embeddings
    assert sorted(emb) == sorted(want["sums"])
    for key, total in want["sums"].items():
        assert float(np.asarray(emb[key], np.float64).sum()) == pytest.approx(total, rel=1e-12)
    assert [str(x) for x in np.asarray(model.user_ids)[:3]] == want["user_ids_head"]
    # Saved again by this version and read back: the same parameters, bit for bit.
    again = cfcore.load(model.save(tmp_path / "again.npz"))
    for key, value in emb.items():
        np.testing.assert_array_equal(again.embeddings[key], value)
    np.testing.assert_array_equal(np.asarray(again.user_ids), np.asarray(model.user_ids))


def test_earlier_mf_file_recommends_with_its_ratings():
    model = cfcore.load(HERE / "mf_v1.npz")
    assert model.train_ratings is not None and model.catalog is not None
    top = cfcore.retrieval.recommend(model, "u0", k=5, backend="numpy")
    rated = set(model.train_ratings.items[model.train_ratings.users == 0].tolist())
    # Rated items are left out, and the ids come back as the file's item ids.
    assert len(top) == 5
    assert not rated & {int(np.flatnonzero(model.item_ids == i)[0]) for i in top["item_id"]}


def test_earlier_sharded_checkpoint_loads_and_is_replaced_whole(tmp_path: Path):
    whole = cfcore.load(HERE / "sharded_v2_whole.npz")
    folder = tmp_path / "ckpt"
    shutil.copytree(HERE / "sharded_v2", folder)
    old_shards = sorted(p.name for p in folder.glob("shard-*.npz"))
    assert len(old_shards) == 2
    # Straight onto a device too, where a backend that shards is installed.
    for devices in (None, 1) if importlib.util.find_spec("jax") else (None,):
        model = cfcore.load(folder, devices=devices)
        assert model.step == whole.step
        for key, value in whole.embeddings.items():
            np.testing.assert_array_equal(model.embeddings[key], value)
    # Saved again into its folder in today's layout: the version 2 shard files are removed once
    # the new index is in place, and the folder reads back the same.
    cfcore.load(folder).save(folder, sharded=True)
    assert not list(folder.glob("shard-*.npz"))
    assert len(list(folder.glob("shards-*/shard-*.npz"))) == 1
    again = cfcore.load(folder)
    for key, value in whole.embeddings.items():
        np.testing.assert_array_equal(again.embeddings[key], value)
