"""Executes the course notebook top to bottom, optionally saving it with its outputs.

    python docs/tutorials/execute.py            # run it, then write it back with its outputs
    python docs/tutorials/execute.py --check    # run it only (what tests/docs/test_course_notebook.py does)

The documentation site shows the notebook as committed, outputs included, so re-run this after
editing a cell. MovieLens is read as everywhere in cfcore (`CFCORE_DATA_DIR`, else the cache).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().with_name("course.ipynb")
CELL_TIMEOUT_S = 600


def execute(path: Path = NOTEBOOK) -> tuple[nbformat.NotebookNode, float]:
    """Runs every cell of the notebook at `path` in a fresh Python kernel, in order.

    Args:
        path: the notebook file.

    Returns:
        The executed notebook (outputs filled in) and the seconds it took.

    Raises:
        nbclient.exceptions.CellExecutionError: a cell raised; the error names the cell.
    """
    nb = nbformat.read(path, as_version=4)
    # No timing metadata: a re-executed notebook differs from the committed one only in outputs.
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    client.execute()
    return nb, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="run only; do not write the file")
    args = parser.parse_args()
    nb, seconds = execute()
    print(f"{NOTEBOOK.name}: executed in {seconds:.1f} s", file=sys.stderr)
    if not args.check:
        nbformat.write(nb, NOTEBOOK)


if __name__ == "__main__":
    main()
