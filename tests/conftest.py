"""Shared fixtures: the installed backends, strict float32 numerics, and the shared MovieLens data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import cfcore
from cfcore.eval.agreement import strict_float32

BACKENDS = ("jax", "tf", "torch")
DATA_DIR = Path(
    os.environ.get("CFCORE_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def _require_all() -> bool:
    # In CI every built-in backend must be present: a missing one fails, it is never skipped.
    return bool(os.environ.get("CI")) or bool(os.environ.get("CFCORE_REQUIRE_BACKENDS"))


def load_backend(name: str):
    if name not in cfcore.available_backends():
        msg = f"backend {name!r} is not installed (pip install 'cfcore[{name}]')"
        if _require_all():
            pytest.fail(msg + "; CI requires every backend")
        pytest.skip(msg)
    be = cfcore.get_backend(name)
    strict_float32(be)
    return be


@pytest.fixture(params=BACKENDS)
def backend(request):
    return load_backend(request.param)


@pytest.fixture(scope="session")
def ml100k():
    if not (DATA_DIR / "ml-100k" / "u.data").exists():
        msg = f"MovieLens copy not found under {DATA_DIR} (set CFCORE_TEST_DATA)"
        if _require_all():
            pytest.fail(msg)
        pytest.skip(msg)
    return cfcore.datasets.load_movielens("100k", data_dir=DATA_DIR)
