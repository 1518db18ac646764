"""The host layouts a first ALS-family `fit` builds, part by part, each in a fresh process.

Before its first sweep an `IALS`, `WALS` or `BiasedMF` (ALS) `fit` builds host-side NumPy
layouts (cached per training set by `cfcore.models.factor.LAYOUTS`, so a second `fit` reuses
them): the fingerprint of the ratings, iALS's checks of the positives (no repeated pair, every
row regularized), each model's row blocks by user and by item (`cfcore.data.row_blocks`), and
for MF's gather path on JAX the pair layout (`cfcore_jax.pair_kernel.make_pair_layout`). This
script times each of them, NumPy only (no framework compiles), in a fresh process per repeat,
on `cfcore.synthetic_ratings` positives (`distinct=True`) at ML-20M's shape (138,493 x 26,744,
10M positives; item popularity `"ml-20m"` and `"heavy-head"`) and at ML-1M's (1M).

With `--tree PATH` (a checkout of another revision, e.g. `git worktree add /tmp/main main`) the
same parts are timed on that tree's code too, alternating with this one's in one run: the
"before" and "after" columns. With `--cprofile PART` the child prints a cProfile of that part.

    python benchmarks/layouts.py [--smoke] [--tree PATH] [--repeats K] [--out-dir DIR]
        [--cprofile ials_blocks]

Writes `layouts.md` (`layouts_smoke.md` with `--smoke`) to `--out-dir` (default
benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {"ml-20m": (138_493, 26_744), "ml-1m": (6_040, 3_706)}
DATASETS = [  # (name, shape, positives, popularity profile)
    ("ML-20M shape, 10M, ml-20m skew", "ml-20m", 10_000_000, "ml-20m"),
    ("ML-20M shape, 10M, heavy head", "ml-20m", 10_000_000, "heavy-head"),
    ("ML-20M shape, 1M, ml-20m skew", "ml-20m", 1_000_000, "ml-20m"),
]
SMOKE = [("smoke, 20k", "ml-1m", 20_000, "ml-20m")]
PARTS = (
    "fingerprint",
    "ials_pair_check",
    "ials_regularized_check",
    "ials_blocks",
    "wals_blocks",
    "biased_blocks",
    "pair_layout",
)
IALS_FIRST_FIT = ("fingerprint", "ials_pair_check", "ials_regularized_check", "ials_blocks")


# ---------------------------------------------------------------------------- the child


def child(data: str, dim: int, cprofile: str | None) -> dict[str, float]:
    """Times every part once on the ratings saved in `data` (the first call in this process)."""
    from cfcore.data.ratings import Ratings
    from cfcore.models.als import check_implicit, check_regularized, ials_blocks, wals_blocks
    from cfcore.models.biased_parts import biased_blocks
    from cfcore.models.factor import fingerprint
    from cfcore.specs import BiasedMFSpec, IALSSpec, WALSSpec

    z = np.load(data)
    r = Ratings(z["users"], z["items"], z["values"], int(z["shape"][0]), int(z["shape"][1]))
    ials = IALSSpec(embedding_dim=dim)
    mean = float(np.mean(r.values.astype(np.float64)))
    parts = {
        "fingerprint": lambda: fingerprint(r),
        "ials_pair_check": lambda: check_implicit(r),
        "ials_regularized_check": lambda: check_regularized(ials, r),
        "ials_blocks": lambda: ials_blocks(ials, r),
        "wals_blocks": lambda: wals_blocks(WALSSpec(embedding_dim=dim), r),
        "biased_blocks": lambda: biased_blocks(BiasedMFSpec(embedding_dim=dim), r, mean),
    }
    try:  # the JAX pair layout's host part (NumPy; importing JAX is not timed)
        from cfcore_jax import pair_kernel

        n, m = r.num_users, r.num_items
        parts["pair_layout"] = lambda: pair_kernel.make_pair_layout(r.users, r.items, n, m)
    except ImportError:
        pass
    out = {}
    for name, build in parts.items():
        if name == cprofile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.runcall(build)
            pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(15)
        start = time.perf_counter()
        build()
        out[name] = time.perf_counter() - start
    return out


def child_fit(data: str, dim: int, backend: str, fits: int = 4) -> dict[str, float]:
    """A second `IALS(dim, solver="cg").fit(steps=1)` on the same `Ratings` (after two), the
    mean of `fits`, and its parts: the input checks, the plan (cached layouts placed), the
    sweep (the compiled chunk of one sweep, to the loss on the host) and the history row
    after it (the objective's terms at the new tables: a pass over the positives)."""
    import collections
    import dataclasses

    import cfcore
    from cfcore.models import als

    z = np.load(data)
    r = cfcore.Ratings(z["users"], z["items"], z["values"], int(z["shape"][0]), int(z["shape"][1]))
    acc: dict[str, float] = collections.defaultdict(float)

    def timed(name, f):
        def run(*a, **k):
            start = time.perf_counter()
            out = f(*a, **k)
            acc[name] += time.perf_counter() - start
            return out

        return run

    plan = als.IALS._plan

    def timed_plan(self, session, inputs, seed):
        p = timed("plan", plan)(self, session, inputs, seed)
        return dataclasses.replace(p, chunk=timed("sweep", p.chunk), row=timed("row", p.row))

    als.IALS._plan = timed_plan
    model = cfcore.IALS(embedding_dim=dim, solver="cg")
    model._checked_inputs = timed("checks", model._checked_inputs)
    for _ in range(2):  # the first fit (compiles, builds the layouts), then a warm one
        model.fit(r, steps=1, backend=backend, progress=False)
    acc.clear()
    start = time.perf_counter()
    for _ in range(fits):
        model.fit(r, steps=1, backend=backend, progress=False)
    out = {k: v / fits for k, v in acc.items()}
    out["fit"] = (time.perf_counter() - start) / fits
    return out


# ---------------------------------------------------------------------------- the parent


def run_child(
    tree: Path, data: str, dim: int, cprofile: str | None = None, fit: str | None = None
) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{tree / 'backends'}"}
    # This script's own child (the tree's copy may not exist, e.g. before this file was added).
    cmd = [sys.executable, __file__, "--child", data, "--dim", str(dim)]
    if cprofile:
        cmd += ["--cprofile", cprofile]
    if fit:
        cmd += ["--fit-backend", fit]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"child on {tree} failed:\n{proc.stderr[-3000:]}")
    if cprofile:
        print(proc.stderr, file=sys.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def make_data(shape: str, n: int, popularity: str, path: str) -> None:
    import cfcore  # (this tree's: `_common` put it first on the path)

    num_users, num_items = SHAPES[shape]
    r = cfcore.synthetic_ratings(
        num_users, num_items, n, popularity=popularity, distinct=True, seed=0
    )
    np.savez(
        path, users=r.users, items=r.items, values=r.values, shape=np.array([num_users, num_items])
    )


def table(results: dict[str, dict[str, list[float]]], n: int) -> list[str]:
    trees = list(results)
    # The fastest of the fresh processes: the machine is shared, and contention only adds.
    med = {t: {p: min(v) for p, v in results[t].items()} for t in trees}
    first = {t: sum(med[t][p] for p in IALS_FIRST_FIT) for t in trees}
    head = "| part | " + " | ".join(f"{t} (s)" for t in trees)
    head += " | after, s per 10M positives |" if len(trees) > 1 else " | s per 10M positives |"
    lines = [head, "|---" * (len(trees) + 2) + "|"]
    scale = 1e7 / n
    for p in [*PARTS, "IALS first fit, host total"]:
        if p == "IALS first fit, host total":
            vals = [first[t] for t in trees]
            p = f"**{p}**"
        elif all(p in med[t] for t in trees):
            vals = [med[t][p] for t in trees]
        else:
            continue
        lines.append(
            f"| {p} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {vals[-1] * scale:.2f} |"
        )
    return lines


SECOND_FIT = ("ML-20M shape, 1M, ml-20m skew", "ml-20m", 1_000_000, "ml-20m")
SECOND_FIT_SMOKE = ("smoke, 20k", "ml-1m", 20_000, "ml-20m")
FIT_PARTS = ("fit", "checks", "plan", "sweep", "row")


def second_fit_table(
    trees: dict[str, Path], data: str, dim: int, backends: list[str], name: str
) -> list[str]:
    lines = [
        f'## A second `IALS(embedding_dim={dim}, solver="cg").fit(steps=1)` on the same '
        f"Ratings ({name})",
        "",
        "The mean of 4 fits after two (one process a tree and backend): the whole call, the "
        "input checks, the plan (the cached layouts placed), the sweep (its compiled chunk, to "
        "the loss on the host) and the history row after it (the objective's terms at the new "
        "tables, a pass over the positives); the ratio is the call to the sweep.",
        "",
        "| backend | tree | " + " | ".join(f"{p} (s)" for p in FIT_PARTS) + " | fit / sweep |",
        "|---" * (len(FIT_PARTS) + 3) + "|",
    ]
    for backend in backends:
        for t, tree in trees.items():
            got = run_child(tree, data, dim, fit=backend)
            cells = " | ".join(f"{got.get(p, float('nan')):.3f}" for p in FIT_PARTS)
            lines.append(f"| {backend} | {t} | {cells} | {got['fit'] / got['sweep']:.2f} |")
    return [*lines, ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--tree", type=Path, help="another checkout: its times as 'before'")
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per tree (fastest)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--cprofile", choices=PARTS, help="print a cProfile of this part (this tree)")
    ap.add_argument("--smoke", action="store_true", help="a tiny data set, one repeat")
    ap.add_argument(
        "--second-fit",
        nargs="*",
        default=["jax", "tensorflow"],
        help="backends whose second IALS fit(steps=1) is timed against its sweep (none: skip)",
    )
    ap.add_argument("--fit-backend", help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args()
    if args.child and args.fit_backend:
        print(json.dumps(child_fit(args.child, args.dim, args.fit_backend)))
        return
    if args.child:
        print(json.dumps(child(args.child, args.dim, args.cprofile)))
        return
    # (Not imported by the child: `_common` puts this tree first on the path.)
    from _common import stamp, write_result

    datasets = SMOKE if args.smoke else DATASETS
    repeats = 1 if args.smoke else args.repeats
    trees = {"after": ROOT}
    if args.tree is not None:
        trees = {"before": args.tree.resolve(), "after": ROOT}
    lines = [
        "# Host layouts of a first ALS-family fit",
        "",
        stamp(),
        "",
        f"`python benchmarks/layouts.py{' --smoke' if args.smoke else ''}"
        f"{' --tree ' + str(args.tree) if args.tree else ''} --repeats {repeats}`: each part "
        f"timed once in a fresh process (the fastest of {repeats} processes a tree, the trees "
        f"alternating); d {args.dim}, the models' default solvers; `synthetic_ratings(..., "
        "distinct=True)` positives, users in order (as `synthetic_ratings` and MovieLens files "
        "give them).",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name, shape, n, popularity in datasets:
            data = os.path.join(tmp, "ratings.npz")
            make_data(shape, n, popularity, data)
            results: dict[str, dict[str, list[float]]] = {t: {} for t in trees}
            for _ in range(repeats):
                for t, tree in trees.items():
                    for p, s in run_child(tree, data, args.dim).items():
                        results[t].setdefault(p, []).append(s)
            if args.cprofile:
                run_child(ROOT, data, args.dim, args.cprofile)
            lines += [f"## {name}", "", *table(results, n), ""]
            print("\n".join(lines[-len(PARTS) - 4 :]), flush=True)
        if args.second_fit:
            name, shape, n, popularity = SECOND_FIT_SMOKE if args.smoke else SECOND_FIT
            data = os.path.join(tmp, "ratings.npz")
            make_data(shape, n, popularity, data)
            lines += second_fit_table(trees, data, args.dim, args.second_fit, name)
            print("\n".join(lines[-8:]), flush=True)
    out = "layouts_smoke.md" if args.smoke else "layouts.md"
    path = write_result(out, "\n".join(lines) + "\n", args.out_dir)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
