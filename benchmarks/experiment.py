"""Runs a `cfcore experiment` config (`benchmarks/experiments/*.toml`) and writes its results here.

    python benchmarks/experiment.py benchmarks/experiments/biased_vs_surprise.toml

Writes `<config stem>.md` (the tables, with the date, machine and versions) and `.json` to
`--out-dir` (default `benchmarks/results/`); `--html PATH` also the report with error bars (not
kept in the repository: the Vega libraries inside it weigh about 1 MB). The same as
`cfcore experiment CONFIG --out DIR`, with the stamp every benchmark result carries.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

# `implicit`'s solver runs its own threads; a multi-threaded BLAS under them oversubscribes the
# cores (implicit warns about it). Set before numpy loads its BLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from _common import DATA_DIR, RESULTS, stamp, write_result

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("config", type=Path, help="an experiment's TOML config")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--html", type=Path, help="also write the HTML report there")
    args = parser.parse_args(argv)
    os.environ.setdefault("CFCORE_DATA_DIR", DATA_DIR)
    os.chdir(ROOT)  # the configs name their adapters from the repository's root
    from cfcore.tuning import run_experiment

    result = run_experiment(args.config, on_run=lambda row: print(row, flush=True))
    stem = args.config.stem
    title, rest = result.markdown().split("\n", 1)
    config = args.config.resolve()
    config = config.relative_to(ROOT) if config.is_relative_to(ROOT) else config
    text = f"{title}\n\n{stamp()} Config: `{config}`.\n{rest}"
    print(write_result(f"{stem}.md", text, args.out_dir))
    doc = {**result.to_json(), "stamp": stamp()}
    print(write_result(f"{stem}.json", json.dumps(doc, indent=2) + "\n", args.out_dir))
    if args.html is not None:
        print(result.report(args.html))


if __name__ == "__main__":
    main()
