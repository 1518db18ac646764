"""Prints the reliability table (benchmarks/results/reliability.md): every input of tests/_support/edge_inputs.py, tried now.

Usage: python benchmarks/reliability_table.py [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "backends")]

from tests._support.edge_inputs import run_all, table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as d:
        outcomes = run_all(Path(d), args.data_dir)
    print(table(outcomes))
    for o in outcomes:
        if not o.ok:
            print(f"NOT OK: {o.case.kind}: {o.case.label}: {o.got}", file=sys.stderr)


if __name__ == "__main__":
    main()
