"""Compiled programs are kept for reuse, a bounded number of them (`cfcore.backend.programs`):
a process that trains models of many shapes does not keep every program it compiled."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import cfcore
from cfcore.backend import bound
from cfcore.backend.programs import ProgramCache, forget_programs, remembered
from cfcore.train import session as session_module

from ..conftest import require_backend


def test_the_least_recently_used_entry_goes_first() -> None:
    cache: dict = {}
    made: list[str] = []

    def get(key: str) -> str:
        return remembered(cache, key, lambda: made.append(key) or key.upper(), limit=2)

    assert get("a") == "A" and get("b") == "B"
    assert get("a") == "A"  # a hit: "b" is now the least recently used
    assert get("c") == "C"
    assert list(cache) == ["a", "c"] and made == ["a", "b", "c"]
    assert get("b") == "B"  # made again
    assert list(cache) == ["c", "b"] and made == ["a", "b", "c", "b"]


def test_a_failed_make_keeps_the_cache_as_it_was() -> None:
    cache = {"a": 1}

    def fail() -> int:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        remembered(cache, "b", fail, limit=1)
    assert cache == {"a": 1}


def test_forget_programs_empties_every_cache() -> None:
    """Training chunks, a backend's helper functions, and any other `ProgramCache` alive."""
    require_backend("jax")
    be = cfcore.get_backend("jax")
    ratings = cfcore.synthetic_ratings(30, 20, 300, seed=0)
    model = cfcore.MatrixFactorization(embedding_dim=3)
    model.fit(ratings, steps=2, eval_every=2, optimizer=cfcore.optimizers.SGD(1.0), backend=be,
              progress=False)  # fmt: skip
    mine = ProgramCache()
    mine["key"] = "a program"
    assert session_module._CHUNKS and be._compiled
    forget_programs()
    assert not session_module._CHUNKS and not be._compiled and not mine


def _maps() -> int:
    return len(Path("/proc/self/maps").read_text().splitlines())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts /proc/self/maps")
def test_programs_dropped_from_the_cache_are_freed(monkeypatch: pytest.MonkeyPatch) -> None:
    """XLA maps each executable's code into memory of its own; a process may hold only
    `vm.max_map_count` mappings. Models of ever new shapes must not add mappings without end."""
    require_backend("jax")
    be = cfcore.get_backend("jax")
    # Small bounds, so that a few models show what many would: the training chunks and the
    # backend's helper functions (the loss terms per model spec).
    monkeypatch.setattr(session_module, "_CHUNKS", {})
    monkeypatch.setattr(session_module, "TRAINING_LOOPS", 2)
    monkeypatch.setattr(be, "_compiled", {})
    monkeypatch.setattr(bound, "BACKEND_FUNCTIONS", 2)
    ratings = cfcore.synthetic_ratings(30, 20, 300, seed=0)

    def fit(dim: int) -> cfcore.MatrixFactorization:
        model = cfcore.MatrixFactorization(embedding_dim=dim)
        model.fit(ratings, steps=2, eval_every=2, optimizer=cfcore.optimizers.SGD(1.0), backend="jax",
                  progress=False)  # fmt: skip
        return model

    for dim in (40, 41, 42):  # the cache full, everything else made once
        fit(dim)
    before = _maps()
    for dim in range(43, 55):
        fit(dim)
    assert len(session_module._CHUNKS) == 2 and len(be._compiled) == 2
    # Twelve models of new shapes: their programs kept, they would add 200 mappings.
    assert _maps() - before < 12, (before, _maps())
    # A dropped program is compiled again when needed, and trains the same.
    again = fit(40)
    first = cfcore.MatrixFactorization(embedding_dim=40)
    monkeypatch.setattr(session_module, "_CHUNKS", {})
    monkeypatch.setattr(be, "_compiled", {})
    first.fit(ratings, steps=2, eval_every=2, optimizer=cfcore.optimizers.SGD(1.0), backend="jax",
              progress=False)  # fmt: skip
    np.testing.assert_array_equal(again.params_numpy()["user"], first.params_numpy()["user"])
