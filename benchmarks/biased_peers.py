"""cfcore's BiasedMF against scikit-surprise's SVD on ml-100k u1..u5: time to surprise's RMSE.

The accuracy comparison is the `cfcore experiment` config `experiments/biased_vs_surprise.toml`
(every contender tuned on a validation split of each fold's training part, refitted, tested
once: `python benchmarks/experiment.py benchmarks/experiments/biased_vs_surprise.toml` writes
`biased_vs_surprise.md`). This script is the race that follows it: with the settings that
experiment chose for each fold (read from `--settings`, its JSON), side by side in one process,

* scikit-surprise `SVD()` at its defaults (biased MF, 100 factors, 20 epochs of per-rating SGD):
  its fit time and test RMSE (predictions clipped to [1, 5]), the target of the race;
* cfcore `BiasedMF` (μ + b_u + b_i + ⟨u, v⟩) trained by ALS sweeps ("als") and by minibatch
  Adam ("adam"), on each backend, and its Bayesian average (`BiasedMF.sample_posterior`: a few
  ALS sweeps, then Gibbs-sampled biased ALS, the predictions of the kept draws averaged;
  "gibbs"), each trained on the whole training fold for the chosen number of sweeps, steps or
  kept draws, the test RMSE read after each sweep, epoch or draw:

* **test RMSE** is the one after the chosen number (no test-based early stopping);
* **time to surprise's RMSE** is the time from the model's creation (compilation and the
  per-sweep evaluations included) to the first sweep/epoch whose test RMSE is at or below
  surprise's on that fold, as in `peers.py`.

Predictions are clipped to [1, 5] before the RMSE, as surprise clips its own.

    python benchmarks/biased_peers.py [--smoke] [--backends jax tf] [--solvers als adam]
    python benchmarks/biased_peers.py --solvers als adam --compilation-cache DIR

Writes `biased_timing.md`, `.png` and `.json` to `--out-dir`. `--compilation-cache DIR` keeps
the compiled programs in DIR (`cfcore.enable_compilation_cache`) and writes
`biased_timing_cached.*`: run it twice, and the second run times processes that read their
programs from DIR instead of compiling them (the report says how many programs DIR held when
the run started). `--timing-only` is accepted for the commands of earlier results: the race is
all this script runs now.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import time
import tomllib
from pathlib import Path
from typing import Any

import _report as rp
import numpy as np
from _common import DATA_DIR, RESULTS, stamp
from peers import FOLDS, surprise_svd

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = RESULTS / "biased_vs_surprise.json"
# The experiment's contenders (their names in the config) and the solver each one races as.
CONTENDERS = {"BiasedMF (ALS)": "als", "BiasedMF (Adam)": "adam",
              "BiasedMF posterior average": "gibbs"}  # fmt: skip
UNITS = {"als": "sweeps", "adam": "steps", "gibbs": "kept draws"}


def rmse(model, ratings) -> float:
    pred = np.clip(model.predict(ratings.users, ratings.items).astype(np.float64), 1, 5)
    return float(np.sqrt(np.mean((pred - ratings.values) ** 2)))


def new_model(point: dict[str, Any]):
    import cfcore

    keys = ("embedding_dim", "regularization_coeff", "bias_regularization_coeff")
    return cfcore.BiasedMF(**{k: point[k] for k in keys if k in point})


def read_settings(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """`{(fold, solver): point}` from an experiment's results JSON: each contender's chosen
    hyper-parameters and its number of sweeps, steps or kept draws (`steps`), and for Adam the
    minibatch size of the config's `fit_options`."""
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: run the experiment first ("
                         "python benchmarks/experiment.py "
                         "benchmarks/experiments/biased_vs_surprise.toml)")  # fmt: skip
    doc = json.loads(path.read_text())
    config = ROOT / doc["config"] if not Path(doc["config"]).is_absolute() else Path(doc["config"])
    batch = {c.get("name"): c.get("fit_options", {}).get("batch_size")
             for c in tomllib.loads(config.read_text())["contender"]}  # fmt: skip
    out = {}
    for run in doc["runs"]:
        solver = CONTENDERS.get(run["contender"])
        if solver is None:
            continue
        point = json.loads(run["best"])
        if solver == "gibbs":
            point["steps"] = point.pop("samples", 200)
        if solver == "adam":
            point["batch"] = batch.get(run["contender"]) or 1_000
        out[(run["seed"], solver)] = point
    return out


def train_and_watch(point: dict[str, Any], solver: str, train, watch, backend: str,
                    target: float | None = None) -> dict[str, Any]:  # fmt: skip
    """ALS: `point["steps"]` sweeps, the RMSE on `watch` after each. Adam: `point["steps"]`
    minibatch steps of `point["batch"]` ratings, the RMSE after each epoch (and after the last
    step). Gibbs: see `sample_and_watch`."""
    from cfcore.optimizers import Adam

    if solver == "gibbs":
        return sample_and_watch(point, train, watch, backend, target)
    t0 = time.perf_counter()
    model = new_model(point)
    curve: list[float] = []
    reached_s = None
    if solver == "als":
        chunks = [1] * point["steps"]
    else:
        per_epoch = max(1, len(train) // point["batch"])
        full, rest = divmod(point["steps"], per_epoch)
        chunks = [per_epoch] * full + ([rest] if rest else [])
    opt = Adam(point["learning_rate"]) if solver == "adam" else None
    for steps in chunks:
        if solver == "als":
            model.fit(train, steps=1, solver="als", backend=backend, progress=False)
        else:
            model.fit(train, steps=steps, optimizer=opt, batch_size=point["batch"],
                      eval_every=steps, backend=backend, progress=False)  # fmt: skip
        curve.append(rmse(model, watch))
        if target is not None and reached_s is None and curve[-1] <= target:
            reached_s = time.perf_counter() - t0
    return {"curve": curve, "seconds": time.perf_counter() - t0, "reached_s": reached_s}


GIBBS_WARM = 5  # ALS sweeps before the chain starts (as experiment_peers.BiasedPosterior)
GIBBS_BURN_IN = 5  # draws discarded before the kept ones


def sample_and_watch(point: dict[str, Any], train, watch, backend: str,
                     target: float | None = None) -> dict[str, Any]:  # fmt: skip
    """`GIBBS_WARM` ALS sweeps, then `BiasedMF.sample_posterior` (burn-in `GIBBS_BURN_IN`,
    `point["steps"]` kept, noise precision `point["noise_precision"]`). The curve is the RMSE
    on `watch` of the average of the first 1, 2, ... kept draws, unclipped (the chain's own
    history; clipping only lowers it, so the time to `target` is, if anything, late); the last
    entry is the returned model's clipped RMSE."""
    t0 = time.perf_counter()
    model = new_model(point)
    model.fit(train, steps=GIBBS_WARM, solver="als", backend=backend, progress=False)
    warm_s = time.perf_counter() - t0
    post = model.sample_posterior(train, samples=point["steps"], burn_in=GIBBS_BURN_IN,
                                  noise_precision=point.get("noise_precision", 2.0), test=watch,
                                  backend=backend, progress=False)  # fmt: skip
    seconds = time.perf_counter() - t0
    kept = post.history[post.history["kept"] > 0]
    curve = [math.sqrt(v) for v in kept["test_mse"]]
    curve[-1] = rmse(post, watch)
    reached_s = None
    if target is not None:
        hit = [warm_s + s for c, s in zip(curve, kept["seconds"], strict=True) if c <= target]
        reached_s = hit[0] if hit else None
    return {"curve": curve, "seconds": seconds, "reached_s": reached_s}


def start_framework(backend: str) -> None:
    """Imports the backend's framework and runs its one-time start-up outside the timed region,
    as surprise's import is: one trivial compiled op (XLA's first compilation in a process sets
    its compiler up) and one 2 × 2 Cholesky factorization (jaxlib initialises LAPACK at the first
    one, importing `scipy.linalg`: 0.34 s). Nothing cfcore compiles for a model is run here."""
    import cfcore

    cfcore.get_backend(backend)
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        jax.block_until_ready(jax.jit(lambda x: x + 1.0)(jnp.float32(1.0)))
        jax.block_until_ready(jnp.linalg.cholesky(jnp.eye(2, dtype=jnp.float32)))
    elif backend == "tf":
        import tensorflow as tf

        tf.function(lambda x: x + 1.0, jit_compile=True)(tf.constant(1.0)).numpy()
        tf.linalg.cholesky(tf.eye(2)).numpy()


def plot(rows, surprise_rows, out_dir, footer, stem="biased_peers"):
    plt = rp.pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.4))
    folds = [r["fold"] for r in surprise_rows]
    x = np.arange(len(folds))
    ax1.plot(x, [r["rmse"] for r in surprise_rows], "s-", color=rp.color("surprise"),
             label="surprise SVD")  # fmt: skip
    ax2.plot(x, [r["fit_s"] for r in surprise_rows], "s-", color=rp.color("surprise"),
             label="surprise SVD fit")  # fmt: skip
    for (be, solver), marker in zip(
        dict.fromkeys((r["backend"], r["solver"]) for r in rows),
        itertools.cycle("o^v<>"),
        strict=False,
    ):
        mine = [next(r for r in rows if r["fold"] == f and r["backend"] == be
                     and r["solver"] == solver) for f in folds]  # fmt: skip
        label = f"cfcore {be} BiasedMF {solver}"
        ax1.plot(x, [r["test_rmse"] for r in mine], marker + "--", color=rp.color(be), label=label)
        ax2.plot(x, [r["reached_s"] if r["reached_s"] is not None else np.nan for r in mine],
                 marker + "--", color=rp.color(be), label=label + " (to surprise's RMSE)")  # fmt: skip
    for ax in (ax1, ax2):
        ax.set_xticks(x)
        ax.set_xticklabels(folds)
        ax.legend(fontsize=6)
    ax1.set_ylabel("test RMSE (clipped)")
    ax2.set_ylabel("seconds")
    ax2.set_yscale("log")
    ax1.set_title("test RMSE per fold (hyper-parameters tuned on validation)", fontsize=10)
    ax2.set_title("surprise's fit vs cfcore's time to surprise's RMSE", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return rp.save_figure(fig, out_dir, f"{stem}.png", footer)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    rp.add_common_args(p)
    p.add_argument("--backends", nargs="+", default=None, help="cfcore backends (default jax tf)")
    p.add_argument("--folds", nargs="+", default=None, choices=FOLDS)
    p.add_argument("--solvers", nargs="+", default=["als", "adam", "gibbs"],
                   choices=("als", "adam", "gibbs"))  # fmt: skip
    p.add_argument("--settings", type=Path, default=SETTINGS,
                   help="the experiment's results JSON whose chosen settings race "
                        f"(default {SETTINGS.relative_to(ROOT)})")  # fmt: skip
    p.add_argument("--timing-only", action="store_true",
                   help="accepted for earlier commands: the race is all this script runs")  # fmt: skip
    p.add_argument("--compilation-cache", type=Path, default=None, metavar="DIR",
                   help="keep compiled programs in DIR (cfcore.enable_compilation_cache); run "
                        "twice to time a process that finds them there")  # fmt: skip
    args = p.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    settings = read_settings(args.settings)
    os.environ.update(rp.cpu_env("cpu"))
    backends = args.backends or (["jax"] if mode == "smoke" else ["jax", "tf"])
    folds = args.folds or {"smoke": ["u1"], "quick": ["u1", "u2"], "full": list(FOLDS)}[mode]

    import cfcore
    from cfcore.backend import compilation_cache

    cache = None
    if args.compilation_cache is not None:
        # Before the backends load: TensorFlow reads the flag when it first lists its devices.
        folder = cfcore.enable_compilation_cache(args.compilation_cache)
        assert folder is not None  # a folder was given
        sidecar = compilation_cache.SIDECAR  # cfcore's checksums, not programs
        entries = sum(1 for f in folder.rglob("*") if f.is_file() and f.suffix != sidecar)
        cache = {"folder": str(folder), "entries_at_start": entries}
        print(f"compilation cache {folder}: {entries} entries at the start", flush=True)
    ml = cfcore.datasets.load_movielens("100k", data_dir=DATA_DIR)
    for be in backends:  # the frameworks' start-up is not training time (nor is surprise's)
        start_framework(be)
    surprise_rows, rows = [], []
    for fold in folds:
        train, test = ml.fold(fold)
        s = surprise_svd(train, test)
        surprise_rows.append({"fold": fold, **s})
        print(f"{fold}: surprise SVD rmse {s['rmse']:.4f} fit {s['fit_s']:.2f} s", flush=True)
        for solver in args.solvers:
            chosen = settings.get((fold, solver))
            if chosen is None:
                raise SystemExit(f"{args.settings} has no setting of {solver} on {fold}")
            point = dict(chosen)
            if mode == "smoke":  # at most 2 sweeps, epochs or kept draws
                per_epoch = len(train) // point["batch"] if solver == "adam" else 1
                point["steps"] = min(point["steps"], 2 * per_epoch)
            for be in backends:
                run = train_and_watch(point, solver, train, test, be, s["rmse"])
                row = {"fold": fold, "solver": solver, "backend": be, "chosen": point,
                       "test_rmse": run["curve"][-1], "target": s["rmse"],
                       "surprise_fit_s": s["fit_s"], **run}  # fmt: skip
                rows.append(row)
                reached = (
                    f"reached surprise's {s['rmse']:.4f} in {run['reached_s']:.2f} s"
                    if run["reached_s"] is not None
                    else "never reached surprise's RMSE"
                )
                print(f"  {solver} {be}: test rmse {row['test_rmse']:.4f} after "
                      f"{point['steps']} {UNITS[solver]} ({run['seconds']:.2f} s); {reached}",
                      flush=True)  # fmt: skip
    report(rows, surprise_rows, mode, args.out_dir, args.settings, cache=cache)


def report(rows, surprise_rows, mode, out_dir, settings: Path, cache=None) -> None:
    stem = "biased_timing" + ("_cached" if cache else "")
    footer = stamp()
    png = plot(rows, surprise_rows, out_dir, footer, stem)
    mean_fit = statistics.mean(r["fit_s"] for r in surprise_rows)
    mean_rmse = statistics.mean(r["rmse"] for r in surprise_rows)
    summary = []
    for be, solver in dict.fromkeys((r["backend"], r["solver"]) for r in rows):
        mine = [r for r in rows if r["backend"] == be and r["solver"] == solver]
        reached = [r for r in mine if r["reached_s"] is not None]
        faster = [r for r in reached if r["reached_s"] < r["surprise_fit_s"]]
        m = statistics.mean(r["test_rmse"] for r in mine)
        summary.append([
            f"BiasedMF {solver}", be, f"{m:.4f}", f"{len(reached)}/{len(mine)}",
            f"{statistics.mean(r['reached_s'] for r in reached):.2f}" if reached else "",
            f"{statistics.mean(r['reached_s'] for r in reached) / mean_fit:.2f}×" if reached else "",
            f"{len(faster)}/{len(mine)}",
        ])  # fmt: skip
    source = settings.resolve()
    source = source.relative_to(ROOT) if source.is_relative_to(ROOT) else source
    parts = [
        "# BiasedMF against scikit-surprise's SVD on MovieLens 100K: time to surprise's RMSE\n",
        f"![biased peers]({png.name})\n",
        "scikit-surprise `SVD()` at its defaults, predictions clipped to [1, 5]:\n",
        rp.md_table(
            ["fold", "test RMSE", "fit seconds"],
            [[r["fold"], f"{r['rmse']:.4f}", f"{r['fit_s']:.2f}"] for r in surprise_rows]
            + [["mean", f"{mean_rmse:.4f}", f"{mean_fit:.2f}"]],
        ),
        "",
        f"cfcore `BiasedMF` with the settings `cfcore experiment` chose on each fold's "
        f"validation split (`{source}`), trained on the whole training fold: test RMSE "
        f"(clipped to [1, 5]) after the chosen number of sweeps (ALS), minibatch steps (Adam, "
        f"read after each epoch) or kept draws (gibbs: {GIBBS_WARM} ALS sweeps, "
        f"{GIBBS_BURN_IN} draws of burn-in, then the draws averaged); and the seconds to "
        "surprise's RMSE on each fold against surprise's fit (from the model's creation, "
        "compilation and per-sweep evaluations included; each framework's import and one-time "
        "start-up, a trivial compiled op and a 2 × 2 Cholesky, run before, as surprise's import "
        "does):\n",
        rp.md_table(
            ["model", "backend", "mean test RMSE", "folds reaching surprise",
             "mean s to surprise's RMSE", "÷ surprise's mean fit", "folds faster than surprise"],
            summary,
        ),  # fmt: skip
        "",
        rp.md_table(
            ["fold", "model", "backend", "chosen (validation)", "test RMSE", "surprise RMSE",
             "s to surprise's RMSE", "surprise fit s", "s for all sweeps/epochs"],
            [[r["fold"], f"BiasedMF {r['solver']}", r["backend"],
              ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in r["chosen"].items()),
              f"{r['test_rmse']:.4f}", f"{r['target']:.4f}",
              f"{r['reached_s']:.2f}" if r["reached_s"] is not None else "not reached",
              f"{r['surprise_fit_s']:.2f}", f"{r['seconds']:.2f}"] for r in rows],
        ),  # fmt: skip
        "",
        (f"Compilation cache (`--compilation-cache`, `cfcore.enable_compilation_cache`): "
         f"{cache['entries_at_start']} compiled programs in it when this process started"
         + (" (empty: every program compiled here, as without a cache).\n"
            if not cache["entries_at_start"] else
            ", written by an earlier run of the same command: the programs this run "
            "needed were read from it instead of compiled (tracing and lowering still "
            "happen in each process).\n")) if cache else "",
        f"Mode: {mode}.\n",
        footer,
    ]  # fmt: skip
    rp.write_text(out_dir, f"{stem}.md", "\n".join(parts) + "\n")
    rp.write_json(out_dir, f"{stem}.json",
                  {"rows": rows, "surprise": surprise_rows, "mode": mode,
                   "settings": str(source), "compilation_cache": cache})  # fmt: skip
    print("wrote", out_dir / f"{stem}.md")


if __name__ == "__main__":
    main()
