"""Golden numbers: the course notebook's MF experiments on a seeded 90/10 split of ml-100k.

Runs each experiment with the notebook's hyper-parameters on every backend and seed, and writes
`benchmarks/results/golden.md` (mean ± standard deviation over seeds).

    python benchmarks/golden.py [--backends jax tf] [--seeds 0 1 2] [--only Regularized] [--out golden.md]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from _common import DATA_DIR, stamp, write_result

import cfcore
from cfcore.optimizers import SGD

EXPERIMENTS = {
    "MF d=30, init 0.5, SGD lr 10, 1000 steps": (
        lambda: cfcore.MatrixFactorization(embedding_dim=30, init_stddev=0.5), SGD(10.0), 1000),
    "MF d=30, init 0.05, SGD lr 10, 1000 steps": (
        lambda: cfcore.MatrixFactorization(embedding_dim=30, init_stddev=0.05), SGD(10.0), 1000),
    "Regularized d=35, init 0.05, λr 0.1, λg 1, SGD lr 20, 2000 steps": (
        lambda: cfcore.RegularizedMF(embedding_dim=35, init_stddev=0.05, regularization_coeff=0.1, gravity_coeff=1.0),
        SGD(20.0), 2000),
}  # fmt: skip


def run(
    experiment: str, backend: str, seed: int, ratings: cfcore.Ratings, steps: int | None = None
) -> dict:
    make, opt, full_steps = EXPERIMENTS[experiment]
    steps = full_steps if steps is None else steps
    train, test = ratings.split(holdout_fraction=0.1, seed=seed)
    model = make()
    t0 = time.perf_counter()
    h = model.fit(
        train,
        test=test,
        steps=steps,
        optimizer=opt,
        backend=backend,
        seed=seed,
        progress=False,
        eval_every=100,
    )
    row = {
        "experiment": experiment,
        "backend": backend,
        "seed": seed,
        "seconds": time.perf_counter() - t0,
    }
    row.update(h.iloc[-1].drop("step").to_dict())
    return row


def summarize(df: pd.DataFrame) -> str:
    cols = [c for c in ("train_mse", "test_mse", "regularization_loss", "gravity_loss") if c in df]
    lines = [
        "| experiment | backend | " + " | ".join(cols) + " | seconds/run |",
        "|---|---|" + "---|" * (len(cols) + 1),
    ]
    for (exp, be), g in df.groupby(["experiment", "backend"], sort=False):
        cells = []
        for c in cols:
            v = g[c].dropna()
            cells.append(
                "" if v.empty else f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}"
            )
        lines.append(f"| {exp} | {be} | " + " | ".join(cells) + f" | {g['seconds'].mean():.1f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--backends", nargs="+", default=["jax", "tf"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", default="golden.md")
    p.add_argument("--out-dir", default=None, help="folder for --out (default benchmarks/results)")
    p.add_argument("--smoke", action="store_true", help="20 steps per experiment, one seed (tests)")
    p.add_argument(
        "--only",
        default=None,
        help="run only the experiments whose name contains this (e.g. Regularized)",
    )
    args = p.parse_args()
    if args.smoke:
        args.seeds = args.seeds[:1]
    ratings = cfcore.datasets.load_movielens("100k", data_dir=DATA_DIR).ratings
    rows = []
    for exp in EXPERIMENTS:
        if args.only and args.only.lower() not in exp.lower():
            continue
        for be in args.backends:
            for seed in args.seeds:
                rows.append(run(exp, be, seed, ratings, 20 if args.smoke else None))
                print(
                    {k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()},
                    flush=True,
                )
    df = pd.DataFrame(rows)
    table = summarize(df)
    per_seed = df.drop(columns=["experiment"]).assign(
        experiment=df["experiment"].str.split(",").str[0]
    )
    text = (
        "# Golden numbers: the notebook's experiments on ml-100k\n\n"
        f"Seeded 90/10 split (`ratings.split(0.1, seed)`), seeds {args.seeds}; mean ± std over seeds. "
        "`train_mse` is the observed training error (for the regularized model: its observed part).\n\n"
        f"{table}\n\n{stamp()}\n\n## Per run\n\n{per_seed.round(4).to_markdown(index=False)}\n"
    )
    print(table)
    print("wrote", write_result(args.out, text, args.out_dir))
    np.seterr(all="ignore")


if __name__ == "__main__":
    main()
