"""cfcore against its peers on MovieLens 100K: scikit-surprise's SVD, and the notebook's TF1 loop.

1. **Time to a test RMSE** on the canonical folds u1..u5. scikit-surprise's `SVD()` at its
   defaults (100 factors, biases, 20 epochs of per-rating SGD, lr 0.005, reg 0.02) gives the target
   for each fold and its fit time. cfcore trains a matrix factorization with minibatch Adam and
   checks the test RMSE after every epoch, stopping at the first epoch at or below the target: the
   table gives epochs, steps, seconds from the model's creation (compilation and evaluations
   included) and the RMSE there, or the best RMSE it reached when it never gets there. Surprise
   clips its predictions to the rating scale; cfcore's are clipped to [1, 5] the same way before
   the RMSE (the unclipped RMSE is shown beside it).
2. **Per-step time against the notebook's own loop**: the course notebook builds a TF1 graph
   (`tf.compat.v1`, a `SparseTensor` of ratings, the dense `U·Vᵀ` then `gather_nd` MSE,
   `GradientDescentOptimizer(10)`) and calls `session.run((train_op, metrics))` once per iteration.
   That graph is rebuilt here in a separate process (`disable_eager_execution` is global; cfcore
   itself never uses `tf.compat.v1`) and timed in alternation with cfcore's TensorFlow step on the
   same data, model (MF d = 30, init σ 0.5, SGD lr 10) and initial values.

    python benchmarks/peers.py [--quick | --smoke] [--out-dir DIR]

Writes `peers.md` and `peers.png` to `--out-dir`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _report as rp
import numpy as np
from _common import DATA_DIR, CfcoreTraining, stamp

FOLDS = ("u1", "u2", "u3", "u4", "u5")
SCRIPT = Path(__file__).resolve()


@dataclass(frozen=True)
class Setting:
    """A cfcore training recipe for the time-to-RMSE race."""

    name: str
    embedding_dim: int
    regularization_coeff: float
    learning_rate: float
    batch_size: int
    init_stddev: float = 0.1

    def describe(self) -> str:
        reg = (
            f"L2 λr {self.regularization_coeff:g}, no gravity"
            if self.regularization_coeff
            else "no regularization"
        )
        return (
            f"MF d={self.embedding_dim}, {reg}, init σ {self.init_stddev:g}, "
            f"Adam lr {self.learning_rate:g}, batch {self.batch_size:,}"
        )


SETTINGS = (
    Setting("A", 20, 0.02, 0.005, 1_000),
    Setting("B", 20, 0.03, 0.003, 1_000),
    Setting("C (plain MF)", 20, 0.0, 0.005, 1_000),
)


# ------------------------------------------------------------------------------------ surprise


def surprise_svd(train, test, seed: int = 0) -> dict[str, float]:
    """scikit-surprise's SVD at its defaults: fit seconds and test RMSE (predictions clipped)."""
    import pandas as pd
    from surprise import SVD, Dataset, Reader

    frame = pd.DataFrame({"u": train.users, "i": train.items, "r": train.values.astype(float)})
    trainset = Dataset.load_from_df(frame, Reader(rating_scale=(1, 5))).build_full_trainset()
    algo = SVD(random_state=seed)
    t = time.perf_counter()
    algo.fit(trainset)
    fit_s = time.perf_counter() - t
    pred = np.array(
        [
            algo.predict(u, i).est
            for u, i in zip(test.users.tolist(), test.items.tolist(), strict=True)
        ]
    )
    return {"fit_s": fit_s, "rmse": float(np.sqrt(np.mean((pred - test.values) ** 2)))}


# ------------------------------------------------------------------------------------ cfcore race


def time_to_rmse(train, test, target: float, setting: Setting, backend: str, max_epochs: int):
    """Trains epoch by epoch until the clipped test RMSE is at most `target`."""
    import cfcore
    from cfcore.optimizers import Adam

    t0 = time.perf_counter()
    model = cfcore.RegularizedMF(
        embedding_dim=setting.embedding_dim,
        init_stddev=setting.init_stddev,
        regularization_coeff=setting.regularization_coeff,
        gravity_coeff=0.0,
    )
    if setting.regularization_coeff == 0:
        model = cfcore.MatrixFactorization(setting.embedding_dim, setting.init_stddev)
    steps_per_epoch = len(train) // setting.batch_size
    opt = Adam(setting.learning_rate)
    best, rmse, raw = float("inf"), float("inf"), float("inf")
    epochs = 0
    for _ in range(max_epochs):
        epochs += 1
        model.fit(train, test=test, steps=steps_per_epoch, optimizer=opt, backend=backend,
                  batch_size=setting.batch_size, eval_every=steps_per_epoch, progress=False)  # fmt: skip
        pred = model.predict(test.users, test.items).astype(np.float64)
        rmse = float(np.sqrt(np.mean((np.clip(pred, 1, 5) - test.values) ** 2)))
        raw = float(np.sqrt(np.mean((pred - test.values) ** 2)))
        best = min(best, rmse)
        if rmse <= target:
            break
    return {
        "reached": rmse <= target,
        "epochs": epochs,
        "steps": model.step,
        "seconds": time.perf_counter() - t0,
        "rmse": rmse,
        "raw_rmse": raw,
        "best_rmse": best,
    }


# ------------------------------------------------------------------------------------ TF1 loop


def _tf1_worker() -> None:
    """Child process: the notebook's TF1 graph, timed on request ("run K VARIANT" on stdin)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    v1 = tf.compat.v1
    v1.disable_eager_execution()  # global and irreversible: this process does nothing else
    cfg = json.loads(sys.stdin.readline())
    data = np.load(cfg["data"])

    def sparse(users, items, values):
        idx = np.stack([users, items], axis=1).astype(np.int64)
        return tf.SparseTensor(idx, values.astype(np.float32), [cfg["N"], cfg["M"]])

    a_train = sparse(data["train_users"], data["train_items"], data["train_values"])
    a_test = sparse(data["test_users"], data["test_items"], data["test_values"])
    # Same initial values as cfcore's run (the notebook draws them with tf.random_normal).
    U = v1.Variable(data["user0"])
    V = v1.Variable(data["item0"])

    def observed_mse(a, U, V):
        # The notebook's first solution: the full [N, M] product, then the observed entries.
        pred = tf.gather_nd(tf.matmul(U, V, transpose_b=True), a.indices)
        return v1.losses.mean_squared_error(a.values, pred)

    train_loss = observed_mse(a_train, U, V)
    test_loss = observed_mse(a_test, U, V)
    metrics = [{"train_error": train_loss, "test_error": test_loss}]
    train_op = v1.train.GradientDescentOptimizer(cfg["lr"]).minimize(train_loss)
    sess = v1.Session()
    sess.run(v1.global_variables_initializer())
    fetches = {"notebook": (train_op, metrics), "train_op": train_op}
    t = time.perf_counter()
    sess.run(fetches["notebook"])
    print(json.dumps({"first_s": time.perf_counter() - t}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        k, variant = int(cmd[1]), cmd[2]
        t = time.perf_counter()
        for _ in range(k):
            out = sess.run(fetches[variant])
        seconds = time.perf_counter() - t
        last = out[1][0] if variant == "notebook" else None
        print(json.dumps({"seconds": seconds, "metrics": {k: float(v) for k, v in (last or {}).items()}}),
              flush=True)  # fmt: skip


class TF1Loop:
    """Parent side of the TF1 worker."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        env = {**os.environ, **rp.cpu_env("cpu")}
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--tf1-worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self._send(json.dumps(cfg))
        self.first_s = self._read()["first_s"]

    def _send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the TF1 worker exited early (run it with --tf1-worker to see why)")
        return json.loads(line)

    def run(self, k: int, variant: str) -> dict[str, Any]:
        self._send(f"run {k} {variant}")
        return self._read()

    def close(self) -> None:
        self._send("quit")
        self.proc.wait(timeout=30)


def per_step_race(ml, steps: int, repeats: int, tmp: Path) -> list[dict[str, Any]]:
    """The notebook's TF1 loop against cfcore's TF (and JAX) steps, in alternation."""
    import cfcore
    from cfcore.init import init_mf_params
    from cfcore.optimizers import SGD

    train, test = ml.ratings.split(0.1, seed=0)
    spec = cfcore.MFSpec(embedding_dim=30, init_stddev=0.5, mse="dense")
    params = init_mf_params(spec, train.num_users, train.num_items, seed=0)
    data_path = tmp / "tf1_data.npz"
    np.savez(data_path, train_users=train.users, train_items=train.items,
             train_values=train.values, test_users=test.users, test_items=test.items,
             test_values=test.values, user0=params["user"], item0=params["item"])  # fmt: skip
    tf1 = TF1Loop(dict(data=str(data_path), N=train.num_users, M=train.num_items, lr=10.0))
    opt = SGD(10.0)
    contenders: dict[str, Any] = {
        "notebook TF1 loop: session.run((train_op, metrics)) per step": lambda k: tf1.run(
            k, "notebook"
        )["seconds"],
        "notebook TF1 loop: session.run(train_op) per step": lambda k: tf1.run(k, "train_op")[
            "seconds"
        ],
    }
    for be_name in ("tf", "jax"):
        be = cfcore.get_backend(be_name)
        for form in ("dense", "gather"):
            s = cfcore.MFSpec(embedding_dim=30, init_stddev=0.5, mse=form)
            contenders[f"cfcore {be_name} make_step ({form})"] = _cf_step(be, s, opt, params, train)
            contenders[f"cfcore {be_name} fit loop, chunks of 10 ({form})"] = _cf_chunk(
                be, s, opt, params, train
            )
    first = {}
    for name, run in contenders.items():
        t = time.perf_counter()
        inner = run(10)
        first[name] = time.perf_counter() - t
        if isinstance(inner, float):  # TF1: its own clock, plus the worker's first session.run
            first[name] = inner + (tf1.first_s if name == next(iter(contenders)) else 0.0)
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            t = time.perf_counter()
            inner = run(steps)
            outer = time.perf_counter() - t
            # The TF1 worker times itself (no pipe round trip); cfcore is timed here.
            times[name].append((inner if isinstance(inner, float) else outer) / steps)
    tf1.close()
    return [
        {"contender": k, "ms": statistics.median(v) * 1e3, "first_10_s": first[k]}
        for k, v in times.items()
    ]


def _cf_step(be, spec, opt, params, train):
    cf = CfcoreTraining(be, spec, opt, params, train)

    def run(k: int) -> None:
        terms = cf.steps(k)
        be.to_numpy(terms["total"])

    return run


def _cf_chunk(be, spec, opt, params, train):
    cf = CfcoreTraining(be, spec, opt, params, train)

    def run(k: int) -> None:
        for _ in range(max(1, k // 10)):
            cf.chunk(10)  # reads the divergence flag after every chunk, as fit does
        be.to_numpy(cf.params["item"])

    return run


# ------------------------------------------------------------------------------------ report


def plot(race_rows, step_rows, folds, out_dir: Path, footer: str):
    """Left: seconds to surprise's RMSE per fold; right: ms per step. One colour per backend
    (`cfcore.viz.BACKEND_COLORS`), in both panels and in their legends."""
    from matplotlib.patches import Patch

    plt = rp.pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    markers = {"A": "o", "B": "^", "C": "v"}
    missed_label = "target not reached"
    for i, (label, rows) in enumerate(race_rows.items()):
        xs = [folds.index(r["fold"]) + 0.1 * i for r in rows]
        setting = rows[0].get("setting", "")
        marker = "s" if label.startswith("surprise") else markers.get(setting[:1], "o")
        ax1.scatter([x for x in xs], [r["seconds"] for r in rows], label=label, marker=marker,
                    color=rp.color(label))  # fmt: skip
        missed = [(x, r) for x, r in zip(xs, rows, strict=True) if not r.get("reached", True)]
        if missed:
            ax1.scatter([x for x, _ in missed], [r["seconds"] for _, r in missed], marker="x",
                        color="k", s=60, label=missed_label)  # fmt: skip
            missed_label = "_nolegend_"  # one legend entry however many misses
    ax1.set_xticks(range(len(folds)))
    ax1.set_xticklabels(folds)
    ax1.set_ylabel("seconds")
    ax1.set_yscale("log")
    from matplotlib.ticker import FuncFormatter

    for which in (ax1.yaxis.set_major_formatter, ax1.yaxis.set_minor_formatter):
        which(FuncFormatter(lambda v, _: f"{v:g}"))
    ax1.set_title("surprise SVD fit vs cfcore's time to the same test RMSE", fontsize=10)
    ax1.legend(fontsize=6)
    names = [r["contender"] for r in step_rows]
    colors = [rp.color(n) for n in names]
    ax2.barh(range(len(names)), [r["ms"] for r in step_rows], color=colors)
    ax2.set_yticks(range(len(names)))
    ax2.set_yticklabels([n.replace(": ", ":\n") for n in names], fontsize=6)
    ax2.set_xscale("log")
    ax2.set_xlabel("ms per training step (ml-100k, MF d=30, SGD lr 10)")
    ax2.set_title("the notebook's TF1 loop vs cfcore's tf and jax", fontsize=10)
    # The legend is drawn from the bars' own colours, so it cannot disagree with them.
    shown = {"notebook TF1 loop": "notebook", "cfcore tf": "tf", "cfcore jax": "jax",
             "cfcore torch": "torch"}  # fmt: skip
    handles = [Patch(color=rp.color(key), label=text) for text, key in shown.items()
               if any(rp.color(n) == rp.color(key) for n in names)]  # fmt: skip
    ax2.legend(handles=handles, fontsize=7, loc="lower right")
    ax2.invert_yaxis()
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return rp.save_figure(fig, out_dir, "peers.png", footer)


def replot(out_dir: Path) -> Path:
    """peers.png again from peers.json, without running anything."""
    data, footer = rp.read_saved(out_dir, "peers")
    race = data["race"]
    folds = list(dict.fromkeys(r["fold"] for rows in race.values() for r in rows))
    return plot(race, data["per_step"], folds, out_dir, footer)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    rp.add_common_args(p)
    p.add_argument("--backends", nargs="+", default=None, help="cfcore backends (default jax tf)")
    p.add_argument("--folds", nargs="+", default=None, choices=FOLDS)
    p.add_argument("--max-epochs", type=int, default=None)
    rp.add_replot_arg(p)
    args = p.parse_args(argv)
    if args.replot:
        print("wrote", replot(args.out_dir))
        return
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    os.environ.update(rp.cpu_env("cpu"))
    backends = args.backends or (["jax"] if mode == "smoke" else ["jax", "tf"])
    folds = args.folds or {"smoke": ["u1"], "quick": ["u1", "u2"], "full": list(FOLDS)}[mode]
    settings = SETTINGS[:1] if mode != "full" else SETTINGS
    max_epochs = args.max_epochs or {"smoke": 2, "quick": 30, "full": 40}[mode]
    steps, repeats = {"smoke": (10, 1), "quick": (20, 3), "full": (50, 5)}[mode]

    import cfcore

    ml = cfcore.datasets.load_movielens("100k", data_dir=DATA_DIR)
    for be in backends:  # import the frameworks now: their import time is not training time
        cfcore.get_backend(be)
    surprise_rows: list[dict[str, Any]] = []
    race: dict[str, list[dict[str, Any]]] = {}
    for fold in folds:
        train, test = ml.fold(fold)
        s = surprise_svd(train, test)
        surprise_rows.append({"fold": fold, **s})
        race.setdefault("surprise SVD (fit)", []).append({"fold": fold, "seconds": s["fit_s"]})
        print(f"{fold}: surprise SVD rmse {s['rmse']:.4f} fit {s['fit_s']:.2f} s", flush=True)
        for setting in settings:
            for be in backends:
                r = time_to_rmse(train, test, s["rmse"], setting, be, max_epochs)
                r.update(fold=fold, setting=setting.name, backend=be, target=s["rmse"])
                race.setdefault(f"cfcore {be} {setting.name}", []).append(r)
                print(f"{fold}: cfcore {be} {setting.name}: "
                      f"{'reached' if r['reached'] else 'NOT reached'} after {r['epochs']} epochs, "
                      f"{r['seconds']:.2f} s, rmse {r['rmse']:.4f} (best {r['best_rmse']:.4f})",
                      flush=True)  # fmt: skip
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        step_rows = per_step_race(ml, steps, repeats, Path(tmp))
    for r in step_rows:
        print(f"{r['contender']:62} {r['ms']:8.2f} ms/step", flush=True)

    footer = stamp()
    png = plot(race, step_rows, folds, args.out_dir, footer)
    mean_rmse = statistics.mean(r["rmse"] for r in surprise_rows)
    mean_fit = statistics.mean(r["fit_s"] for r in surprise_rows)
    race_table = []
    for key, rows in race.items():
        if key.startswith("surprise"):
            continue
        for r in rows:
            race_table.append([
                r["fold"], r["backend"], r["setting"], f"{r['target']:.4f}",
                "yes" if r["reached"] else "**no**", r["epochs"], r["steps"],
                f"{r['seconds']:.2f}", f"{r['rmse']:.4f}", f"{r['raw_rmse']:.4f}",
                f"{r['best_rmse']:.4f}",
            ])  # fmt: skip
    summary = []
    for key, rows in race.items():
        if key.startswith("surprise"):
            continue
        reached = [r for r in rows if r["reached"]]
        summary.append([
            key, f"{len(reached)}/{len(rows)}",
            f"{statistics.mean(r['seconds'] for r in reached):.2f}" if reached else "",
            f"{statistics.mean(r['rmse'] for r in rows):.4f}",
            f"{statistics.mean(r['seconds'] for r in rows) / mean_fit:.1f}×",
        ])  # fmt: skip
    parts = [
        "# cfcore vs its peers on MovieLens 100K\n",
        f"![peers]({png.name})\n",
        "## Time to surprise SVD's test RMSE (folds " + ", ".join(folds) + ")\n",
        "scikit-surprise `SVD()` at its defaults (biased MF, 100 factors, 20 epochs of per-rating "
        "SGD), predictions clipped to [1, 5]:\n",
        rp.md_table(
            ["fold", "test RMSE", "fit seconds"],
            [[r["fold"], f"{r['rmse']:.4f}", f"{r['fit_s']:.2f}"] for r in surprise_rows]
            + [["mean", f"{mean_rmse:.4f}", f"{mean_fit:.2f}"]],
        ),
        "",
        "cfcore recipes (no biases: cfcore's MF has none; minibatch Adam; the test RMSE is "
        "checked after every epoch, predictions clipped to [1, 5] as surprise does):\n",
        *[f"- **{s.name}**: {s.describe()}" for s in settings],
        f"- at most {max_epochs} epochs; seconds count from the model's creation (compilation "
        "and the per-epoch evaluations included).\n",
        rp.md_table(
            [
                "recipe",
                "folds reached",
                "mean seconds (reached)",
                "mean RMSE at stop",
                "mean seconds / surprise fit",
            ],
            summary,
        ),  # fmt: skip
        "",
        rp.md_table(
            [
                "fold",
                "backend",
                "recipe",
                "target RMSE",
                "reached",
                "epochs",
                "steps",
                "seconds",
                "RMSE at stop (clipped)",
                "unclipped",
                "best clipped RMSE seen",
            ],
            race_table,
        ),  # fmt: skip
        "",
        "## Per-step time against the notebook's TF1 loop\n",
        "ml-100k 90/10 split (seed 0), MF d = 30, init σ 0.5, SGD lr 10, full batch, same initial "
        f"values; median of {repeats} repeats of {steps} steps, contenders alternated. The TF1 "
        "graph ran in its own process under `tf.compat.v1` with eager execution disabled (the "
        "library never uses `tf.compat.v1`); its time is measured inside that process.\n",
        rp.md_table(
            ["contender", "ms / step", "first 10 steps incl. build/compile (s)"],
            [[r["contender"], f"{r['ms']:.2f}", f"{r['first_10_s']:.2f}"] for r in step_rows],
        ),
        "",
        footer + "\n",
    ]
    rp.write_json(args.out_dir, "peers.json",
                  {"surprise": surprise_rows, "race": race, "per_step": step_rows})  # fmt: skip
    print("wrote", rp.write_text(args.out_dir, "peers.md", "\n".join(parts)))


if __name__ == "__main__":
    if sys.argv[1:] == ["--tf1-worker"]:
        _tf1_worker()
    else:
        main()
