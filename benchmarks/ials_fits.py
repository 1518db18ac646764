"""Whole `IALS.fit` calls per backend, each in a fresh process, beside `implicit`'s whole `fit`.

For each data set, each contender runs in a new process (compilation cache off): (a) a first
`fit(steps=S)` (JAX and TF compile there; torch runs eagerly); (b) a second model's `fit` on the
same `Ratings` (the layouts cached by the first); (c) `fit(steps=1)` continuing it; (d)
`fit(steps=6)` continuing again, whose excess over (c), divided by 5, is "sweep" (one sweep,
the per-fit costs cancelled out: a breakdown, not a headline). `implicit`'s
`AlternatingLeastSquares(num_threads=2)` runs its `fit(iterations=S)` twice and a
`fit(iterations=1)` (its "sweep", its CSR transposition included).

The data: ml-100k's positives (ratings > 3.5; d 128, 16 sweeps: the README's settings), and
ML-20M-shaped ones (`synthetic_ratings(138_493, 26_744, n, popularity="ml-20m",
distinct=True)`, ratings > 3.5; d 64, 15 sweeps) from 2M ratings ("tenth": 1.0M positives) and
20M ("full": 10.3M positives, the top item in 35% of the users' rows).

With `--tree NAME=PATH` a contender also runs the code of another checkout (e.g. `git worktree
add /tmp/before HEAD~3`), alternating with this one's in the same run: before and after rows.

    python benchmarks/ials_fits.py [--data ml-100k tenth full] [--backends torch tf jax]
        [--tree before=PATH --tree-backends torch --tree-data ml-100k tenth] [--no-implicit]
        [--out-dir DIR] [--name STEM]

Writes `<STEM>.md` and `.json` (default `ials_fits`) to `--out-dir` (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import DATA_DIR, stamp, write_result

ROOT = Path(__file__).resolve().parents[1]
ML20M = (138_493, 26_744)
DATA = {  # name: (ratings drawn, d, sweeps)
    "ml-100k": (None, 128, 16),
    "tenth": (2_000_026, 64, 15),
    "full": (20_000_263, 64, 15),
}
REG, UNOBSERVED = 0.02, 0.1

WORKER = r"""
import json, sys, time
import numpy as np
cfg = json.loads(sys.argv[1])
import cfcore
be = cfcore.get_backend(cfg["backend"])
with np.load(cfg["npz"]) as z:
    n, m = (int(x) for x in z["shape"])
    r = cfcore.Ratings(z["users"], z["items"], z["values"], n, m)
d = cfg["d"]
def model():
    return cfcore.IALS(embedding_dim=d, init_stddev=0.1 / d**0.5, solver="cg",
                       unobserved_weight=cfg["unobserved"], regularization_coeff=cfg["reg"])
def timed(m, steps):
    t = time.perf_counter()
    m.fit(r, steps=steps, backend=be, progress=False)
    return time.perf_counter() - t
out = {"first_fit_s": timed(model(), cfg["steps"])}
m = model()
out["second_fit_s"] = timed(m, cfg["steps"])
out["continue_1_s"] = timed(m, 1)
out["sweep_s"] = (timed(m, 6) - out["continue_1_s"]) / 5
print(json.dumps(out))
"""

IMPLICIT = r"""
import json, os, sys, time
os.environ["OPENBLAS_NUM_THREADS"] = "1"
import numpy as np
from implicit.cpu.als import AlternatingLeastSquares
from scipy.sparse import csr_matrix
cfg = json.loads(sys.argv[1])
with np.load(cfg["npz"]) as z:
    n, m = (int(x) for x in z["shape"])
    x = csr_matrix((np.ones(len(z["users"]), np.float32), (z["users"], z["items"])), shape=(n, m))
def timed(iterations):
    model = AlternatingLeastSquares(factors=cfg["d"], regularization=cfg["reg"],
                                    iterations=iterations, num_threads=2, random_state=0)
    t = time.perf_counter()
    model.fit(x, show_progress=False)
    return time.perf_counter() - t
print(json.dumps({"first_fit_s": timed(cfg["steps"]), "second_fit_s": timed(cfg["steps"]),
                  "sweep_s": timed(1)}))
"""


def run(code: str, cfg: dict[str, Any], tree: Path) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree), str(tree / "backends")])
    env["CFCORE_COMPILATION_CACHE"] = "off"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(cfg)], env=env,
                          capture_output=True, text=True, cwd=tempfile.gettempdir())  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{cfg} on {tree} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def positives(name: str, tmp: Path) -> tuple[Path, str]:
    """The data set's positives as an `.npz`, and a label."""
    import numpy as np

    import cfcore

    ratings, _, _ = DATA[name]
    if ratings is None:
        r = cfcore.datasets.load_movielens("100k", data_dir=DATA_DIR).ratings
    else:
        r = cfcore.synthetic_ratings(*ML20M, ratings, seed=0, popularity="ml-20m", distinct=True)
    pos = r.to_implicit(threshold=3.5)
    top = int(np.bincount(pos.items, minlength=pos.num_items).max())
    path = tmp / f"{name}.npz"
    np.savez(path, users=pos.users, items=pos.items, values=pos.values,
             shape=np.array([pos.num_users, pos.num_items]))  # fmt: skip
    label = (f"{name}: {pos.num_users:,} x {pos.num_items:,}, {len(pos) / 1e6:.2f}M positives, "
             f"top item in {top / pos.num_users:.0%} of users")  # fmt: skip
    return path, label


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--data", nargs="+", default=list(DATA), choices=list(DATA))
    ap.add_argument("--backends", nargs="+", default=["torch", "tf", "jax"])
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=PATH")
    ap.add_argument("--tree-backends", nargs="+", default=None,
                    help="backends run on the --tree checkouts too (default: all)")  # fmt: skip
    ap.add_argument("--tree-data", nargs="+", default=None, choices=list(DATA),
                    help="data sets the --tree checkouts run on (default: all)")  # fmt: skip
    ap.add_argument("--no-implicit", action="store_true")
    ap.add_argument("--out-dir", default=None)
    ap.add_argument("--name", default="ials_fits")
    args = ap.parse_args(argv)
    trees = [("this", ROOT)] + [(t.split("=", 1)[0], Path(t.split("=", 1)[1])) for t in args.tree]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.data:
            npz, label = positives(name, Path(tmp))
            _, d, steps = DATA[name]
            cfg = {"npz": str(npz), "d": d, "steps": steps, "reg": REG, "unobserved": UNOBSERVED}
            if not args.no_implicit:
                got = run(IMPLICIT, cfg, ROOT)
                rows.append({"data": label, "who": "implicit", "code": "-", **got})
                print(rows[-1], flush=True)
            for be in args.backends:
                for tree_name, tree in trees:
                    if tree_name != "this" and (
                        (args.tree_backends and be not in args.tree_backends)
                        or (args.tree_data and name not in args.tree_data)
                    ):
                        continue
                    got = run(WORKER, {**cfg, "backend": be}, tree)
                    rows.append({"data": label, "who": f"cfcore {be}", "code": tree_name, **got})
                    print(rows[-1], flush=True)
    cols = ["first_fit_s", "second_fit_s", "continue_1_s", "sweep_s"]
    lines = [
        "# Whole `IALS.fit` calls beside `implicit`'s",
        "",
        stamp(),
        "",
        f"`python benchmarks/ials_fits.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "",
        "Each row a fresh process, the compilation cache off; seconds. `sweep_s` is a breakdown "
        "(one sweep, the per-fit costs cancelled out), the fits are the headline.",
        "",
        "| data | who | code | " + " | ".join(cols) + " |",
        "|---|---|---|" + "---|" * len(cols),
    ]
    for r in rows:
        cells = [f"{r[c]:.2f}" if c in r else "" for c in cols]
        lines.append(f"| {r['data']} | {r['who']} | {r['code']} | " + " | ".join(cells) + " |")
    print(write_result(f"{args.name}.md", "\n".join(lines) + "\n", args.out_dir))
    doc = {"rows": rows, "stamp": stamp(), "argv": argv if argv is not None else sys.argv[1:]}
    print(write_result(f"{args.name}.json", json.dumps(doc, indent=1) + "\n", args.out_dir))


if __name__ == "__main__":
    main()
