"""`cfcore.io.npz.read_member`: one member of an `.npz` archive read in chunks into its array."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from cfcore.io import npz
from cfcore.io.npz import NpzFileError, read_member


def test_members_read_as_numpy_reads_them(tmp_path, monkeypatch):
    # Chunks smaller than the members, so every member takes several reads.
    monkeypatch.setattr(npz, "_CHUNK_BYTES", 1000)
    rng = np.random.default_rng(0)
    arrays = {
        "table": rng.normal(size=(301, 7)).astype(np.float32),
        "fortran": np.asfortranarray(rng.normal(size=(13, 40))),
        "ids": np.arange(2500, dtype=np.int64),
        "big_endian": np.arange(600, dtype=">i4"),
        "empty": np.zeros((0, 5), np.float32),
        "scalar": np.float32(2.5),
    }
    path = tmp_path / "a.npz"
    np.savez_compressed(path, **arrays)
    with np.load(path) as f:
        for name in arrays:
            got, want = read_member(path, name, NpzFileError), f[name]
            assert got.dtype == want.dtype and got.shape == want.shape, name
            np.testing.assert_array_equal(got, want)


def test_a_missing_or_truncated_member_is_refused(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, table=np.arange(1000, dtype=np.float32))
    with pytest.raises(NpzFileError, match="has no member 'other'"):
        read_member(path, "other", NpzFileError)
    # The member's data cut short (the zip itself stays readable).
    cut = tmp_path / "cut.npz"
    with zipfile.ZipFile(path) as zf:
        data = zf.read("table.npy")
    with zipfile.ZipFile(cut, "w") as zf:
        zf.writestr("table.npy", data[:-400])
    with pytest.raises(NpzFileError, match="damaged"):
        read_member(cut, "table", NpzFileError)
