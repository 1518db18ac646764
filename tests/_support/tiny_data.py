"""A tiny synthetic MovieLens-style release on disk, for running the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def write_tiny_release(
    folder: Path, *, users: int = 20, items: int = 30, per_user: int = 8
) -> Path:
    """Writes `ratings.csv` and `movies.csv` in the ml-latest-small layout into `folder`.

    Args:
        folder: created if missing.
        users: number of users (ids 1..users).
        items: number of movies (ids 1..items), each with a year and one or two genres.
        per_user: ratings per user, distinct movies drawn with a fixed seed.

    Returns:
        `folder`, which `cfcore train --dataset FOLDER` reads as a latest-small release.
    """
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["userId,movieId,rating,timestamp"]
    for u in range(1, users + 1):
        for m in rng.choice(np.arange(1, items + 1), size=per_user, replace=False):
            lines.append(f"{u},{m},{rng.integers(1, 6)}.0,{1_000_000 + 17 * u + m}")
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    genres = ["Comedy|Drama", "Action", "Drama", "Action|Thriller"]
    movies = ["movieId,title,genres"]
    movies += [f"{m},Movie {m} ({1990 + m % 10}),{genres[m % 4]}" for m in range(1, items + 1)]
    (folder / "movies.csv").write_text("\n".join(movies) + "\n")
    return folder


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a `python -m cfcore.cli` subprocess that runs this checkout's code.

    The frameworks' logging variables of the calling environment are dropped, so that what the
    subprocess prints depends on the CLI alone.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TF_CPP_", "CFCORE_BACKEND", "JAX_", "XLA_"))
    }
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), str(ROOT / "backends"), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env.update(extra)
    return env


CLI = [sys.executable, "-m", "cfcore.cli"]
"""The command line of this checkout, as a subprocess."""


def run_npz_script(
    script: Path, *args: str, out: Path, timeout: float = 600, **env: str
) -> dict[str, np.ndarray]:
    """Runs `python script *args out` in its own process (this checkout's code, `cli_env(**env)`)
    and returns the arrays it saved to `out` (an `.npz`): the device-count drivers of the sharding
    tests, each in a fresh process since a framework fixes its devices when it first runs an op.
    """
    proc = subprocess.run(
        [sys.executable, str(script), *args, str(out)],
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as f:
        return dict(f)
