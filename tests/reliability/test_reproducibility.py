"""Reproducibility: the same seed on the same backend gives bit-identical embeddings on CPU, from
two separate processes (the README's "Reproducibility" section states what this shows)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .._support.tiny_data import CLI, cli_env, write_tiny_release
from ..conftest import BACKENDS, require_backend

pytestmark = pytest.mark.subprocess

# 300 users x 200 items, 9,000 ratings: large enough that the frameworks' CPU kernels split the
# gathers, scatters and Gramians over their thread pools. Regularized MF with minibatches of 512
# through Adagrad exercises the seeded split, initial values and batch order, and every loss term.
TRAIN = (
    *("--model", "regularized", "--dim", "8", "--steps", "30", "--eval-every", "10"),
    *("--optimizer", "adagrad", "--lr", "0.1", "--batch-size", "512", "--seed", "7"),
    "--no-progress",
)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_release(
        tmp_path_factory.mktemp("repro") / "data", users=300, items=200, per_user=30
    )


@pytest.mark.slow  # two framework start-ups per backend: 10-40 s on 2 shared cores
@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_backend_is_bit_identical_across_processes(
    backend: str, data: Path, tmp_path: Path
) -> None:
    require_backend(backend)
    outs = [tmp_path / "first", tmp_path / "second"]
    # Both processes at once: the result must not depend on what else runs on the machine.
    procs = [
        subprocess.Popen(
            [*CLI, "train", "--backend", backend, "--dataset", str(data), "--out", str(out)]
            + list(TRAIN),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=cli_env(),
        )
        for out in outs
    ]
    for proc in procs:
        text, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, text
    first, second = (np.load(out / "embeddings.npz") for out in outs)
    assert sorted(first) == sorted(second) == ["item", "user"]
    for name in ("user", "item"):
        a, b = first[name], second[name]
        assert a.dtype == np.float32 and a.shape == b.shape
        assert np.isfinite(a).all()
        # Bit for bit: compare the raw bytes, so that even -0.0 against 0.0 would count.
        differ = np.flatnonzero(a.view(np.uint32) != b.view(np.uint32))
        assert differ.size == 0, (
            f"{backend}: {differ.size} of {a.size} {name} entries differ between two runs with "
            f"the same seed, e.g. {a.flat[differ[0]]!r} vs {b.flat[differ[0]]!r}"
        )
    # The recorded losses too (they come from the same arrays, on the backend).
    h1, h2 = (pd.read_csv(out / "history.csv") for out in outs)
    pd.testing.assert_frame_equal(h1, h2, check_exact=True)
    assert len(h1) >= 3
