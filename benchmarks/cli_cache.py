"""Wall time of a fresh-process `cfcore train --model biased --fold u1`, with the compilation
cache empty and filled (issue 25's "a user's second command"), on JAX and TensorFlow.

Each run is a new process (`python -m cfcore.cli`), its cache folder given through
`$CFCORE_COMPILATION_CACHE`: "" (no cache), a new empty folder (the first command), then the
same folder again (filled by that first command). `$CFCORE_DATA_DIR` must hold ml-100k.

    python benchmarks/cli_cache.py [--repeats 3] [--backends jax,tf] [--root CHECKOUT]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _command(backend: str, cache: str, out: Path, root: Path) -> float:
    env = {**os.environ, "CFCORE_COMPILATION_CACHE": cache}
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(root / "backends")])
    argv = [sys.executable, "-m", "cfcore.cli", "train", "--model", "biased", "--fold", "u1"]
    argv += ["--backend", backend, "--out", str(out)]
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{backend} {cache}: rc {done.returncode}\n{done.stderr[-2000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", default="jax,tf")
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="the cfcore checkout to time (default: this one)"
    )
    args = parser.parse_args()
    print("backend  cache   wall s (each repeat)")
    for backend in args.backends.split(","):
        rows: dict[str, list[float]] = {"off": [], "empty": [], "filled": []}
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "out"
                rows["off"].append(
                    _command(backend, "", out, args.root)
                )  # "": off, before and after
                rows["empty"].append(_command(backend, str(Path(tmp) / "cache"), out, args.root))
                rows["filled"].append(_command(backend, str(Path(tmp) / "cache"), out, args.root))
        for state, walls in rows.items():
            each = " ".join(f"{w:.2f}" for w in walls)
            print(f"{backend:8} {state:7} min {min(walls):.2f}  ({each})", flush=True)


if __name__ == "__main__":
    main()
