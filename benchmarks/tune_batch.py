"""Grids trained together (`cfcore.tune(..., batch=B)`, `cfcore.fit_many`) against one point at
a time and against one `fit` (issue #26 item 4's first two rows).

Each figure is the wall time of a whole call in a fresh process (`import cfcore` excluded, the
data loaded first), the compilation cache off so that every process compiles what it runs:

* **one fit**: the grid's first point, `fit` once (compilation included, as a user's first fit);
* **tune, batch 1**: `cfcore.tune` over the grid, one point after another;
* **tune, batch B**: the same call with `batch=B` (B points in one compiled loop).

Grids (ml-100k):

* `biased`: BiasedMF d 32, Adam, 200 steps, 64 points (4 learning rates x 4 λ x 4 λb) on u1's
  training part (tune's validation split carved from it);
* `ials`: IALS d 64, 16 sweeps, 16 points (4 λ x 4 α₀) on all of ml-100k's positives.

    python benchmarks/tune_batch.py [--grids biased ials] [--backends jax tf torch]
        [--batch 16] [--points N] [--smoke] [--out-dir DIR]

`--points N` runs the first N points of each grid (the note in the table says so). Writes
`tune_batch.md` and `.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT.parent / "shared" / "data"

GRIDS: dict[str, dict[str, Any]] = {
    "biased": {
        "model": "BiasedMF",
        "space": {
            "embedding_dim": 32,
            "learning_rate": [0.003, 0.01, 0.02, 0.05],
            "regularization_coeff": [0.01, 0.03, 0.1, 0.3],
            "bias_regularization_coeff": [0.001, 0.01, 0.1, 1.0],
        },
        "tune": {"steps": 200, "optimizer": "adam"},
        "data": "u1",
    },
    "ials": {
        "model": "IALS",
        "space": {
            "embedding_dim": 64,
            "regularization_coeff": [0.01, 0.03, 0.1, 0.3],
            "unobserved_weight": [0.01, 0.03, 0.1, 0.3],
        },
        "tune": {"steps": 16},
        "data": "all",
    },
}

WORKER = r"""
import json, sys, time
spec = json.loads(sys.argv[1])
import cfcore
from cfcore.tuning.runner import RunSettings, build_model, resolve_family
from cfcore.tuning.space import grid_points
ml = cfcore.datasets.load_movielens("100k", data_dir=spec["data_dir"])
train = ml.fold("u1")[0] if spec["data"] == "u1" else ml.ratings
family = resolve_family(spec["model"])
start = time.perf_counter()
if spec["what"] == "fit":
    # The grid's first point, fit once on what tune fits each point on.
    if family.implicit:
        from cfcore.eval.implicit import strong_generalization_split
        fit_on = strong_generalization_split(train, heldout_share=0.1, seed=0, threshold=3.5).train
    else:
        fit_on = train.split(holdout_fraction=0.1, seed=0)[0]
    point = grid_points(spec["space"])[0]
    settings = RunSettings(spec["tune"]["steps"], spec["tune"].get("optimizer"), None,
                           spec["backend"], 0, None)
    opt = settings.optimizer_for(family, point)
    build_model(family, point).fit(fit_on, steps=spec["tune"]["steps"], backend=spec["backend"],
                                   progress=False, **({} if opt is None else {"optimizer": opt}))
    value = float("nan")
else:
    result = cfcore.tune(family.cls, spec["space"], train, backend=spec["backend"],
                         budget_fits=spec["points"], batch=spec["batch"], **spec["tune"])
    value = float(result.best_metric)
print(json.dumps({"seconds": time.perf_counter() - start, "best": value}))
"""


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "CFCORE_COMPILATION_CACHE": "off", "PYTHONPATH": os.pathsep.join(
        [str(ROOT), str(ROOT / "backends"), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, json.dumps(spec)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed ({spec['what']}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grids", nargs="+", default=list(GRIDS), choices=list(GRIDS))
    p.add_argument("--backends", nargs="+", default=["jax"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--points", type=int, default=None)
    p.add_argument("--smoke", action="store_true", help="4 points, few steps (a check, no figures)")
    p.add_argument("--out-dir", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    rows = []
    for grid in args.grids:
        g = json.loads(json.dumps(GRIDS[grid]))
        if args.smoke:
            g["tune"]["steps"] = 2
        total = 1
        for v in g["space"].values():
            total *= len(v) if isinstance(v, list) else 1
        points = min(total, args.points or total, 4 if args.smoke else total)
        for backend in args.backends:
            base = {**g, "backend": backend, "data_dir": str(DATA), "points": points}
            row: dict[str, Any] = {"grid": grid, "backend": backend, "points": points}
            row["one fit"] = run_worker({**base, "what": "fit", "batch": 1})["seconds"]
            one = run_worker({**base, "what": "tune", "batch": 1})
            row["tune, batch 1"], row["best, batch 1"] = one["seconds"], one["best"]
            many = run_worker({**base, "what": "tune", "batch": min(args.batch, points)})
            row[f"tune, batch {args.batch}"], row["best, batched"] = many["seconds"], many["best"]
            print(row, flush=True)
            rows.append(row)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = "tune_batch_smoke" if args.smoke else "tune_batch"
    from _common import stamp

    machine = stamp()
    (args.out_dir / f"{stem}.json").write_text(json.dumps({"machine": machine, "rows": rows}))
    lines = [
        "# Grids trained together: `cfcore.tune(..., batch=B)` against one point at a time",
        "",
        f"{machine} `python benchmarks/tune_batch.py {' '.join(argv or sys.argv[1:])}`.",
        "Fresh process per figure, compilation cache off, import and data loading excluded.",
        "Ratios: the tune call over one fit of one point.",
        "",
        f"| grid | backend | points | one fit (s) | tune, batch 1 (s) | ratio | "
        f"tune, batch {args.batch} (s) | ratio | best metric (1 / {args.batch}) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b = r[f"tune, batch {args.batch}"]
        lines.append(
            f"| {r['grid']} | {r['backend']} | {r['points']} | {r['one fit']:.2f} | "
            f"{r['tune, batch 1']:.2f} | {r['tune, batch 1'] / r['one fit']:.1f}x | {b:.2f} | "
            f"{b / r['one fit']:.1f}x | {r['best, batch 1']:.4f} / {r['best, batched']:.4f} |"
        )
    (args.out_dir / f"{stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
