"""Shared fixtures: the installed backends, strict float32 numerics, MovieLens (a local copy or
`load_movielens`'s download, see `_support/data_source.py`) and the hypothesis profile."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

import cfcore
from cfcore.eval.agreement import strict_float32

from ._support.data_source import ensure_release, resolve

# The compilation cache is on by default, in the user's cache folder: the suite must neither
# write there nor depend on what an earlier run left. Tests of the cache give their own folder
# (or, for the default itself, their own HOME and XDG_CACHE_HOME) to the processes they start.
os.environ["CFCORE_COMPILATION_CACHE"] = "off"

BACKENDS = ("jax", "tf", "torch")
DATA_SOURCE = resolve()
DATA_DIR = DATA_SOURCE.root
"""The folder holding `ml-100k/` and `ml-latest-small/` (chosen without touching the network; a
test needing a release requests the `ml100k` / `ml100k_files` / `latest_files` fixture, which
downloads it into the cache on first use)."""

# Property-based tests are deterministic by default (the same examples on every run and machine)
# and small enough for CI's budget; HYPOTHESIS_PROFILE=explore searches more widely, at random.
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=25,
    deadline=None,
    print_blob=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "explore",
    max_examples=500,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _require_all() -> bool:
    # In CI every built-in backend must be present: a missing one fails, it is never skipped.
    return bool(os.environ.get("CI")) or bool(os.environ.get("CFCORE_REQUIRE_BACKENDS"))


def require_backend(name: str) -> None:
    """Skips (fails in CI) unless backend `name` is installed; imports nothing."""
    if name not in cfcore.available_backends():
        msg = f"backend {name!r} is not installed (pip install 'cfcore[{name}]')"
        if _require_all():
            pytest.fail(msg + "; CI requires every backend")
        pytest.skip(msg)


def load_backend(name: str):
    require_backend(name)
    be = cfcore.get_backend(name)
    strict_float32(be)
    return be


@pytest.fixture(params=BACKENDS)
def backend(request):
    return load_backend(request.param)


@pytest.fixture(scope="session")
def ml100k_files():
    """`DATA_DIR / "ml-100k"`, downloaded first if it is missing from the cache."""
    return ensure_release("100k", DATA_SOURCE)


@pytest.fixture(scope="session")
def latest_files():
    """`DATA_DIR / "ml-latest-small"`, downloaded first if it is missing from the cache."""
    return ensure_release("latest-small", DATA_SOURCE)


@pytest.fixture(scope="session")
def ml100k(ml100k_files):
    return cfcore.datasets.load_movielens("100k", data_dir=ml100k_files)
