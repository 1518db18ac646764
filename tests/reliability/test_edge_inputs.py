"""Every bad input of `tests/_support/edge_inputs.py` gets a clear cfcore error (or its documented NaN)."""

from __future__ import annotations

import pytest

from .._support.edge_inputs import cases, run_case
from ..conftest import DATA_DIR, load_backend


@pytest.fixture(scope="module", autouse=True)
def _jax():
    load_backend("jax")


@pytest.mark.parametrize("case", cases(DATA_DIR), ids=lambda c: f"{c.kind}: {c.label}")
def test_edge_input(case, tmp_path):
    outcome = run_case(case, tmp_path)
    assert outcome.ok, f"{case.label}: expected {case.expect}, got {outcome.got}"
