"""The course notebook (docs/tutorials/course.ipynb) runs top to bottom on ml-100k, and the copy
in git, which the documentation site shows, is the output of such a run."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[docs]'")
pytest.importorskip("nbclient", reason="pip install -e '.[docs]'")

from ..conftest import DATA_DIR, require_backend  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "tutorials" / "execute.py"


def _executor():
    spec = importlib.util.spec_from_file_location("course_execute", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def _images(cell) -> int:
    return sum("image/png" in o.get("data", {}) for o in cell.get("outputs", []))


def test_the_committed_notebook_was_executed_top_to_bottom_with_its_pictures() -> None:
    nb = nbformat.read(_executor().NOTEBOOK, as_version=4)
    cells = _code_cells(nb)
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
    assert not [o for c in cells for o in c.outputs if o.output_type == "error"]
    drawing = [c for c in cells if "_figure(" in c.source]
    assert drawing and all(_images(c) == 1 for c in drawing)


@pytest.mark.subprocess
@pytest.mark.slow
def test_the_course_notebook_runs_top_to_bottom(ml100k_files, monkeypatch) -> None:
    require_backend("jax")  # the notebook's default backend
    # The kernel is a child process: it finds MovieLens where the other tests read it.
    monkeypatch.setenv("CFCORE_DATA_DIR", str(DATA_DIR))
    monkeypatch.delenv("CFCORE_BACKEND", raising=False)
    executor = _executor()
    nb, seconds = executor.execute()
    cells = _code_cells(nb)
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
    by_hand = [o.text for c in cells for o in c.outputs if "MSE computed here" in o.get("text", "")]
    assert len(by_hand) == 1
    mine, cfcores = (float(w) for w in by_hand[0].split() if w.replace(".", "").isdigit())
    assert abs(mine - cfcores) <= 1e-3 * cfcores
    for cell in cells:
        if "_figure(" in cell.source:
            assert _images(cell) == 1, cell.source
    print(f"course notebook: {seconds:.0f} s on {os.cpu_count()} cores")
