"""Seconds per ALS sweep (users then items) at a MovieLens shape, side by side on each backend.

Synthetic ratings of the shape (`cfcore.synthetic_ratings`); one sweep is compiled and run first
(reported as `first`, compile included), then `--repeat` sweeps are timed one at a time, the
clock stopped after the parameters are synced to the host. Prints one line per backend and solver.

    python benchmarks/als_sweep.py --shape ml-1m --dim 32 --backends jax tf torch
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import stamp  # noqa: F401  (puts the repository on sys.path)

import cfcore
from cfcore.models import als, biased
from cfcore.train.placement import Placement


def _sweep(be, model: str, spec, r):
    if model == "wals":
        return als.wals_sweep(be, spec), als.wals_blocks(spec, r)
    if model == "ials":
        return als.ials_sweep(be, spec), als.ials_blocks(spec, r)
    mean = float(r.values.mean())
    return biased.biased_sweep(be, spec), biased.biased_blocks(spec, r, mean)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="ml-1m", choices=sorted(cfcore.MOVIELENS_SHAPES))
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--model", default="wals", choices=("wals", "ials", "biased"))
    ap.add_argument("--solvers", nargs="+", default=["cholesky", "cg"])
    ap.add_argument("--backends", nargs="+", default=["jax", "tf", "torch"])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    n, m, count = cfcore.MOVIELENS_SHAPES[args.shape]
    r = cfcore.synthetic_ratings(n, m, count, seed=0)
    if args.model == "ials":
        r = r.to_implicit(threshold=3.5)
    print(f"{args.model} d={args.dim} on {args.shape} shape ({len(r)} observations)")
    for name in args.backends:
        be = cfcore.get_backend(name)
        for solver in args.solvers:
            cls = {"wals": cfcore.WALS, "ials": cfcore.IALS, "biased": cfcore.BiasedMF}
            spec = cls[args.model](args.dim, solver=solver).spec
            sweep, host = _sweep(be, args.model, spec, r)
            place = Placement(be)
            data = place.data(host)
            run = be.compile(sweep)
            params = cls[args.model](args.dim).spec
            start = (
                biased.init_biased_params(spec, n, m, 0)
                if args.model == "biased"
                else cfcore.init.init_mf_params(params, n, m, 0)
            )
            p = place.params(start)
            t0 = time.perf_counter()
            _, p = run(p, data)
            be.sync(p)
            first = time.perf_counter() - t0
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                _, p = run(p, data)
                place.to_host(p)
                times.append(time.perf_counter() - t0)
            print(
                f"{name:6s} {solver:9s} first {first:7.2f} s   sweep median "
                f"{statistics.median(times):7.3f} s (min {min(times):.3f}, n={len(times)})",
                flush=True,
            )


if __name__ == "__main__":
    main()
