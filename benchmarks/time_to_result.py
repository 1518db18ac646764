"""Time to result: what a user runs, whole, against the peer's whole call, cold and warm.

Every figure is the wall time of something a user runs, measured side by side in one run:

* **script** (ml-100k u1, explicit): a fresh `python` process that imports cfcore, reads the
  fold, fits `BiasedMF()` at its defaults (20 ALS sweeps, as the CLI) on one backend and prints the test
  RMSE; against the same script with scikit-surprise's `SVD()`. Each cfcore backend runs with an
  empty compilation cache (a new folder) and then again with the cache that run filled. Beside
  them, a fresh process that only imports the framework (the floor no cfcore change can lower).
* **cli**: the whole `cfcore train --model biased --fold u1` command, empty and filled cache,
  against the surprise script.
* **ials-100k** (ml-100k positives, ratings > 3.5, the README's tuned `IALS`: d 128, 16 CG
  sweeps): in one process, (a) the first `fit` (empty cache) and (b) a second model's `fit` on
  the same `Ratings`, then (c) a fresh process's first `fit` with the cache filled; against
  `implicit`'s `AlternatingLeastSquares.fit` (d 128, 16 iterations, 2 threads).
* **ml-20m** (138,493 × 26,744, 20M synthetic ratings with distinct pairs, positives > 3.5),
  each item-popularity profile of `cfcore.data.synthetic.POPULARITY_PROFILES` asked for ("ml-20m":
  the most-rated item in about half the users' rows as in the real release; "heavy-head": about
  three in four), d 64 and 128, CG: (a) `IALS.fit(steps=15)` first in a fresh process with an
  empty cache, (b) a second model's `fit(steps=15)` on the same `Ratings`, then `fit(steps=1)`
  continuing it, (c) a fresh process's first `fit(steps=15)` with the cache filled; against
  `implicit`'s `fit(iterations=15)` with 2 threads in a process of its own. The data are drawn
  once and handed to every process as an `.npz` (its reading is not timed).

* **compile** (`--parts compile`, not in the default parts): the first `IALS(d 64, CG)
  .fit(steps=1)` in a fresh process with the cache off, against the data's size (ml-100k and
  ML-20M-shaped positives drawn from each of `--sizes` ratings), with warm sweeps and the
  number of block shapes: compilation that should not grow with the data.

Kernel-only figures (one compiled sweep) are a breakdown column, never the headline.

    python benchmarks/time_to_result.py [--parts script cli ials-100k ml-20m compile]
        [--backends jax tf torch] [--profiles ml-20m heavy-head] [--dims 64 128]
        [--quick | --smoke] [--out-dir DIR]

Writes `time_to_result.md` and `.json` to `--out-dir` (default `benchmarks/results/`).
`--quick`: ml-20m at a tenth of the ratings and one d; `--smoke`: tiny shapes, every code path
(CI runs it through tests/benchmarks/test_benchmarks.py).
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
from typing import Any

import _report as rp
from _common import DATA_DIR, stamp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ML20M = (138_493, 26_744, 20_000_263)
IMPORTS = {"jax": "import jax, jax.numpy", "tf": "import tensorflow", "torch": "import torch"}
IALS_100K = {"d": 128, "steps": 16, "reg": 0.02, "unobserved": 0.1}


# ---------------------------------------------------------------------------- processes


def _env(cache: str | None, threads: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "backends")])
    env["CFCORE_COMPILATION_CACHE"] = cache or "off"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if threads is not None:
        env["OPENBLAS_NUM_THREADS"] = "1"
    return env


def wall(cmd: list[str], env: dict[str, str], timeout: float = 1800) -> tuple[float, str]:
    """Wall seconds of a whole command, and its standard output; a failure raises."""
    start = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed ({out.returncode}):\n{out.stderr}")
    return seconds, out.stdout


def worker(name: str, args: dict[str, Any], cache: str | None, threads: int | None = None):
    """Runs `worker_<name>(args)` in a fresh process; its JSON result (and the whole wall)."""
    cmd = [sys.executable, str(Path(__file__)), "--worker", name, json.dumps(args)]
    seconds, out = wall(cmd, _env(cache, threads))
    result = json.loads(out.strip().splitlines()[-1])
    result["process_wall_s"] = seconds
    return result


# ---------------------------------------------------------------------------- scripts


def cfcore_script(backend: str, data_dir: str) -> str:
    return f"""
import cfcore
ds = cfcore.datasets.load_movielens("100k", data_dir={data_dir!r})
train, test = ds.fold("u1")
model = cfcore.BiasedMF()  # the defaults (benchmarks/biased_defaults.py)
model.fit(train, steps=20, backend={backend!r}, progress=False)
print(model.evaluate(test)["rmse"])
"""


def surprise_script(data_dir: str) -> str:
    return f"""
import pandas as pd
from surprise import SVD, Dataset, Reader, accuracy
cols = ["user", "item", "rating", "ts"]
read = lambda f: pd.read_csv({data_dir!r} + "/ml-100k/" + f, sep="\\t", names=cols)
reader = Reader(rating_scale=(1, 5))
train = Dataset.load_from_df(read("u1.base")[cols[:3]], reader).build_full_trainset()
test = [tuple(r) for r in read("u1.test")[cols[:3]].itertuples(index=False)]
model = SVD(random_state=0)
model.fit(train)
print(accuracy.rmse(model.test(test), verbose=False))
"""


def part_script(backends: list[str], data_dir: str, rows: list[dict[str, Any]]) -> None:
    py = sys.executable
    s, out = wall([py, "-c", surprise_script(data_dir)], _env(None))
    rows.append({"part": "script", "who": "surprise SVD", "cache": "-", "wall_s": s,
                 "rmse": float(out.split()[-1])})  # fmt: skip
    for be in backends:
        s, _ = wall([py, "-c", IMPORTS[be]], _env(None))
        rows.append({"part": "script", "who": f"import {be} alone", "cache": "-", "wall_s": s})
        with tempfile.TemporaryDirectory() as cache:
            for state in ("empty", "filled"):
                s, out = wall([py, "-c", cfcore_script(be, data_dir)], _env(cache))
                rows.append({"part": "script", "who": f"cfcore {be}", "cache": state,
                             "wall_s": s, "rmse": float(out.split()[-1])})  # fmt: skip


def part_cli(backends: list[str], data_dir: str, rows: list[dict[str, Any]]) -> None:
    py = sys.executable
    s, out = wall([py, "-c", surprise_script(data_dir)], _env(None))
    rows.append({"part": "cli", "who": "surprise SVD script", "cache": "-", "wall_s": s})
    for be in backends:
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out_dir:
            for state in ("empty", "filled"):
                cmd = [py, "-m", "cfcore.cli", "train", "--model", "biased", "--fold", "u1",
                       "--dataset", str(Path(data_dir) / "ml-100k"), "--backend", be,
                       "--out", str(Path(out_dir) / state)]  # fmt: skip
                s, _ = wall(cmd, _env(cache))
                rows.append({"part": "cli", "who": f"cfcore train {be}", "cache": state,
                             "wall_s": s})  # fmt: skip


# ---------------------------------------------------------------------------- in-process fits


def _ials(cfg: dict[str, Any]):
    import cfcore

    d = cfg["d"]
    return cfcore.IALS(
        embedding_dim=d, init_stddev=0.1 / d**0.5, unobserved_weight=cfg["unobserved"],
        regularization_coeff=cfg["reg"], solver="cg",
    )  # fmt: skip


def _positives(cfg: dict[str, Any]):
    import numpy as np

    import cfcore

    if "npz" in cfg:
        with np.load(cfg["npz"]) as z:
            n, m = (int(x) for x in z["shape"])
            return cfcore.Ratings(z["users"], z["items"], z["values"], n, m)
    ds = cfcore.datasets.load_movielens("100k", data_dir=cfg["data_dir"])
    return ds.ratings.to_implicit(threshold=3.5)


def worker_cfcore_ials(cfg: dict[str, Any]) -> dict[str, Any]:
    """(a) first fit, (b) a second model's fit on the same Ratings, fit(steps=1) continuing it."""
    t0 = time.perf_counter()
    import cfcore

    be = cfcore.get_backend(cfg["backend"])
    t_import = time.perf_counter() - t0
    r = _positives(cfg)
    out: dict[str, Any] = {"import_s": t_import}
    t = time.perf_counter()
    _ials(cfg).fit(r, steps=cfg["steps"], backend=be, progress=False)
    out["first_fit_s"] = time.perf_counter() - t
    if cfg.get("second", True):
        model = _ials(cfg)
        t = time.perf_counter()
        model.fit(r, steps=cfg["steps"], backend=be, progress=False)
        out["second_fit_s"] = time.perf_counter() - t
        t = time.perf_counter()
        model.fit(r, steps=1, backend=be, progress=False)
        out["continue_1_s"] = time.perf_counter() - t
    return out


def worker_implicit_ials(cfg: dict[str, Any]) -> dict[str, Any]:
    from implicit.cpu.als import AlternatingLeastSquares
    from scipy.sparse import csr_matrix

    r = _positives(cfg)
    x = csr_matrix((r.values, (r.users, r.items)), shape=(r.num_users, r.num_items))
    out: dict[str, Any] = {}
    for key in ("first_fit_s", "second_fit_s"):
        model = AlternatingLeastSquares(
            factors=cfg["d"], regularization=cfg["reg"], iterations=cfg["steps"],
            num_threads=2, random_state=0,
        )  # fmt: skip
        t = time.perf_counter()
        model.fit(x, show_progress=False)
        out[key] = time.perf_counter() - t
    return out


def worker_cfcore_compile(cfg: dict[str, Any]) -> dict[str, Any]:
    """A first `fit(steps=1)` in a fresh process (compilation, layouts and one sweep), a second
    `fit(steps=1)` continuing it (the first less compilation), a `fit(steps=3)` (less the
    second: two warm sweeps), and the programs compiled (JAX: the
    `jax_log_compiles` messages; else the ALS buckets' distinct block shapes)."""
    import logging

    import numpy as np

    import cfcore

    be = cfcore.get_backend(cfg["backend"])
    compiles: list[str] = []
    if cfg["backend"] == "jax":
        import jax

        class Count(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if "Finished XLA compilation" in record.getMessage():
                    compiles.append(record.getMessage())

        logging.getLogger("jax").addHandler(Count(logging.DEBUG))
        jax.config.update("jax_log_compiles", True)
    r = _positives(cfg)
    model = _ials(cfg)
    times = []
    for steps in (1, 1, 3):
        t = time.perf_counter()
        model.fit(r, steps=steps, backend=be, progress=False)
        times.append(time.perf_counter() - t)
    # A fit's fixed costs (layouts, placement) cancel out of the last two: one sweep's time.
    out = {"first_fit_s": times[0], "second_fit_s": times[1], "positives": len(r),
           "sweep_s": (times[2] - times[1]) / 2, "compile_s": times[0] - times[1]}  # fmt: skip
    if cfg["backend"] == "jax":
        out["programs"] = len(compiles)
    from cfcore.data.row_blocks import row_blocks

    shapes = set()
    ones = np.ones(len(r), np.float32)
    for rows, cols, num in ((r.users, r.items, r.num_users), (r.items, r.users, r.num_items)):
        laid = row_blocks(rows, cols, ones, ones, np.ones(num, np.float32), dim=cfg["d"],
                          solver="cg")  # fmt: skip
        shapes |= {tuple(b["cols"].shape) for b in laid["buckets"]}
    out["block_shapes"] = len(shapes)
    return out


def part_compile(backends, sizes, rows: list[dict[str, Any]], npz_dir: str | None = None) -> None:
    """Cold compilation against the data's size: ML-20M-shaped positives ("ml-20m" profile) from
    each number of ratings, `IALS(d 64, CG).fit(steps=1)` first in a fresh process with the
    compilation cache off, then warm sweeps (`worker_cfcore_compile`); ml-100k beside them.
    `npz_dir`: positives drawn by an earlier run (`positives_<ratings>.npz`), else drawn here."""
    import numpy as np

    import cfcore

    with tempfile.TemporaryDirectory() as tmp:
        cases: list[tuple[str, dict[str, Any]]] = [("ml-100k", {"data_dir": DATA_DIR})]
        for n in sizes:
            if npz_dir and (Path(npz_dir) / f"positives_{n}.npz").exists():
                npz = str(Path(npz_dir) / f"positives_{n}.npz")
                with np.load(npz) as z:
                    count = len(z["users"])
                cases.append((f"ML-20M shape, {count / 1e6:.1f}M positives", {"npz": npz}))
                continue
            r = cfcore.synthetic_ratings(ML20M[0], ML20M[1], n, seed=0, popularity="ml-20m",
                                         distinct=True).to_implicit(threshold=3.5)  # fmt: skip
            npz = str(Path(tmp) / f"positives_{n}.npz")
            np.savez(npz, users=r.users, items=r.items, values=r.values,
                     shape=np.array([r.num_users, r.num_items]))  # fmt: skip
            cases.append((f"ML-20M shape, {len(r) / 1e6:.1f}M positives", {"npz": npz}))
        for label, data in cases:
            for be in backends:
                cfg = {"d": 64, "reg": 0.02, "unobserved": 0.1, "backend": be, **data}
                got = worker("cfcore_compile", cfg, None)
                load = os.getloadavg()[0]
                rows.append({"part": "compile", "case": label, "who": f"cfcore {be}",
                             "load": load, **got})  # fmt: skip


def _fits(label: str, part: str, cfg: dict[str, Any], backends: list[str], rows: list) -> None:
    peer = worker("implicit_ials", cfg, None, threads=2)
    rows.append({"part": part, "case": label, "who": "implicit", "cache": "-",
                 "first_fit_s": peer["first_fit_s"], "second_fit_s": peer["second_fit_s"]})  # fmt: skip
    for be in backends:
        with tempfile.TemporaryDirectory() as cache:
            cold = worker("cfcore_ials", {**cfg, "backend": be}, cache)
            warm = worker("cfcore_ials", {**cfg, "backend": be, "second": False}, cache)
        rows.append({"part": part, "case": label, "who": f"cfcore {be}", "cache": "empty",
                     **{k: cold[k] for k in ("first_fit_s", "second_fit_s", "continue_1_s")}})  # fmt: skip
        rows.append({"part": part, "case": label, "who": f"cfcore {be}", "cache": "filled",
                     "first_fit_s": warm["first_fit_s"]})  # fmt: skip


def part_ials_100k(backends: list[str], data_dir: str, rows: list[dict[str, Any]]) -> None:
    _fits("ml-100k", "ials-100k", {**IALS_100K, "data_dir": data_dir}, backends, rows)


def part_ml20m(backends, profiles, dims, shape, steps, rows: list[dict[str, Any]]) -> None:
    import numpy as np

    import cfcore

    for profile in profiles:
        r = cfcore.synthetic_ratings(*shape, seed=0, popularity=profile, distinct=True)
        pos = r.to_implicit(threshold=3.5)
        top = int(np.bincount(pos.items, minlength=pos.num_items).max())
        with tempfile.TemporaryDirectory() as tmp:
            npz = str(Path(tmp) / "positives.npz")
            np.savez(npz, users=pos.users, items=pos.items, values=pos.values,
                     shape=np.array([pos.num_users, pos.num_items]))  # fmt: skip
            for d in dims:
                label = (f"{profile}: {len(pos) / 1e6:.1f}M positives, top item in "
                         f"{top / pos.num_users:.0%} of users, d {d}")  # fmt: skip
                cfg = {"d": d, "steps": steps, "reg": 0.02, "unobserved": 0.1, "npz": npz}
                _fits(label, "ml-20m", cfg, backends, rows)


# ---------------------------------------------------------------------------- report


def _cell(column: str, x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return f"{x:.4f}" if column == "rmse" else f"{x:.2f}"
    return str(x)


def report(rows: list[dict[str, Any]], out_dir: Path, argv: list[str]) -> None:
    lines = ["# Time to result", "", stamp(), "", f"`python benchmarks/time_to_result.py "
             f"{' '.join(argv)}`", ""]  # fmt: skip
    for part, cols in (
        ("script", ("who", "cache", "wall_s", "rmse")),
        ("cli", ("who", "cache", "wall_s")),
        ("ials-100k", ("case", "who", "cache", "first_fit_s", "second_fit_s", "continue_1_s")),
        ("ml-20m", ("case", "who", "cache", "first_fit_s", "second_fit_s", "continue_1_s")),
        (
            "compile",
            (
                "case",
                "who",
                "first_fit_s",
                "second_fit_s",
                "compile_s",
                "sweep_s",
                "programs",
                "block_shapes",
                "load",
            ),
        ),
    ):
        sel = [r for r in rows if r["part"] == part]
        if not sel:
            continue
        cells = [[_cell(c, r.get(c)) for c in cols] for r in sel]
        lines += [f"## {part}", "", rp.md_table(cols, cells), ""]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "time_to_result.md").write_text("\n".join(lines))
    (out_dir / "time_to_result.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        result = globals()[f"worker_{argv[1]}"](json.loads(argv[2]))
        print(json.dumps(result))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", nargs="+", default=["script", "cli", "ials-100k", "ml-20m"])
    ap.add_argument("--backends", nargs="+", default=["jax", "tf", "torch"])
    ap.add_argument("--profiles", nargs="+", default=["ml-20m", "heavy-head"])
    ap.add_argument("--dims", nargs="+", type=int, default=[64, 128])
    ap.add_argument(
        "--sizes",
        nargs="+",
        type=int,
        default=[2_500_000, 12_500_000, ML20M[2]],
        help="ratings drawn for --parts compile (about 40%% are positives)",
    )
    ap.add_argument("--npz-dir", default=None, help="--parts compile: reuse drawn positives")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--data-dir", default=DATA_DIR)
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    shape, steps, dims = ML20M, 15, args.dims
    if args.quick:
        shape, dims = (ML20M[0], ML20M[1], ML20M[2] // 10), dims[:1]
    if args.smoke:
        shape, steps, dims = (2_000, 3_000, 20_000), 2, [8]
    rows: list[dict[str, Any]] = []
    if "script" in args.parts:
        part_script(args.backends, args.data_dir, rows)
    if "cli" in args.parts:
        part_cli(args.backends, args.data_dir, rows)
    if "ials-100k" in args.parts:
        part_ials_100k(args.backends, args.data_dir, rows)
    if "ml-20m" in args.parts:
        part_ml20m(args.backends, args.profiles, dims, shape, steps, rows)
    if "compile" in args.parts:
        part_compile(args.backends, args.sizes, rows, args.npz_dir)
    report(rows, Path(args.out_dir), argv)


if __name__ == "__main__":
    main()
