"""Helpers shared by the benchmark scripts: machine/version stamp and result writing."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backends"))

from cfcore._io import atomic_write  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DATA_DIR = os.environ.get("CFCORE_DATA_DIR") or str(
    Path(__file__).resolve().parents[2] / "shared" / "data"
)


def _version(pkg: str) -> str:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return "not installed"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def stamp() -> str:
    """One markdown paragraph: date, machine and versions, to sit beside every table."""
    pkgs = ", ".join(
        f"{p} {_version(p)}" for p in ("numpy", "jax", "jaxlib", "optax", "tensorflow")
    )
    return (
        f"Measured {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} on {cpu_name()} "
        f"({os.cpu_count()} cores visible), Python {platform.python_version()}, {pkgs}."
    )


def write_result(name: str, text: str, out_dir: str | Path | None = None) -> Path:
    path = Path(out_dir or RESULTS) / name
    atomic_write(path, lambda p: p.write_text(text))
    return path


def missing_gpu(device: str) -> str | None:
    """None when `device` is "cpu" or JAX sees a GPU, else the reason the GPU rows cannot run."""
    if device != "gpu":
        return None
    import jax

    if jax.devices()[0].platform != "gpu":
        return f"no GPU visible to JAX (devices: {jax.devices()})"
    return None
