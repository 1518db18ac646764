"""cfcore's iALS against the implicit-feedback peers: accuracy under strong generalization, epoch time.

1. **Accuracy** (`--part accuracy`): the strong-generalization protocol of `cfcore.eval.implicit`
   (Liang et al. 2018; Rendle et al. 2022) on ml-100k (20% of the users held out) and
   ml-latest-small (10%), seeds 0-2, Recall@20, Recall@50 and NDCG@100, for

   * cfcore `IALS` (frequency-scaled λ, ν = 1, init σ 0.1/√d), held-out users folded in by
     `IALS.fold_in` (one row solve each);
   * `implicit`'s CPU `AlternatingLeastSquares` (Hu et al. 2008 with its conjugate-gradient
     solver), held-out users folded in by its own `recalculate_user` (the solve of
     `partial_fit_users`, without storing them);
   * EASE (Steck 2019), written here in NumPy as a baseline: `P = (XᵀX + λI)⁻¹`,
     `B = I − P·diag(1/diag(P))`, scores `x_u·B`;
   * popularity (`cfcore.eval.popularity.PopularityScorer`).

   Every contender is tuned on a validation split drawn from that seed's *training users only*
   (the same protocol again on them: the same held-out share, their positives split 80/20), by
   NDCG@100; the chosen values are refitted on all training users and scored on the test users
   once. The test targets are never looked at before that.
2. **Epoch time** (`--part epoch`): one iALS sweep (users then items) at ML-20M shape
   (138,493 × 26,744 synthetic ratings from `cfcore.synthetic_ratings`, 20M, skewed; positives
   `to_implicit(threshold=3.5)`), cfcore on each backend with Cholesky and CG, against `implicit`'s
   CPU ALS with 2 threads (its default CG solver and its Cholesky), side by side in one process.
   A configuration over `--max-config-s` after its first sweep is not repeated. With
   `--jax-devices K`, also "cfcore jax, K CPU devices": the tables row-sharded over K virtual CPU
   devices (`fit(..., devices=K)`; XLA's CPU client runs each device on its own thread), the
   process started with K host devices (the one-device contender then runs on the first).

    python benchmarks/implicit_peers.py [--quick | --smoke] [--part accuracy epoch] [--out-dir DIR]
        [--jax-devices K]

Writes `implicit_peers.md`, `.png` and `.json` to `--out-dir` (`implicit_epoch.*` when
`--part epoch` runs alone).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

# implicit's solver runs its own threads; a multi-threaded BLAS under them oversubscribes the two
# cores (implicit warns about it). Set before numpy loads its BLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import _report as rp
import numpy as np
from _common import DATA_DIR, stamp

KS = (20, 50, 100)
METRICS = ("recall@20", "recall@50", "ndcg@100")
SELECT = "ndcg@100"
DATASETS = {"ml-100k": ("100k", 0.2), "ml-latest-small": ("latest-small", 0.1)}
ML20M = (138_493, 26_744, 20_000_263)


# ------------------------------------------------------------------------------------ contenders


def csr(rows: Any, num_items: int):
    """A `cfcore.retrieval.RatedItems` (or its `indptr`/`indices`) as a SciPy CSR of ones."""
    import scipy.sparse as sp

    data = np.ones(len(rows.indices), np.float32)
    indptr = np.asarray(rows.indptr) - rows.indptr[0]
    return sp.csr_matrix((data, rows.indices, indptr), shape=(len(indptr) - 1, num_items))


def train_csr(train):
    import scipy.sparse as sp

    return sp.csr_matrix(
        (np.ones(len(train), np.float32), (train.users, train.items)),
        shape=(train.num_users, train.num_items),
    )


class EASE:
    """Steck 2019's EASE^R: `B = I − P·diag(1/diag(P))`, `P = (XᵀX + λI)⁻¹`, `diag(B) = 0`."""

    def __init__(self, train) -> None:
        x = train_csr(train)
        self.gram = (x.T @ x).toarray().astype(np.float64)

    def weights(self, lam: float) -> np.ndarray:
        """`B` `[M, M]` float32 for one λ: one `M × M` inverse (symmetric positive definite)."""
        p = np.linalg.inv(self.gram + lam * np.eye(len(self.gram)))
        b = -p / np.diag(p)[None, :]
        np.fill_diagonal(b, 0.0)
        return b.astype(np.float32)

    @staticmethod
    def scorer(b: np.ndarray) -> Callable[[Any], np.ndarray]:
        return lambda fold_in: csr(fold_in, b.shape[0]) @ b


def implicit_model(factors: int, regularization: float, alpha: float, iterations: int, seed: int):
    from implicit.cpu.als import AlternatingLeastSquares

    return AlternatingLeastSquares(
        factors=factors,
        regularization=regularization,
        alpha=alpha,
        iterations=iterations,
        random_state=seed,
        num_threads=2,
    )


def implicit_scorer(model) -> Callable[[Any], np.ndarray]:
    """Scores from `implicit`'s own fold-in of each held-out user (`recalculate_user`)."""
    items = np.asarray(model.item_factors)

    def score(fold_in) -> np.ndarray:
        x = csr(fold_in, items.shape[0])
        users = model.recalculate_user(np.arange(x.shape[0]), x)
        return users @ items.T

    return score


# ------------------------------------------------------------------------------------ tuning


def evaluate(model_or_scorer: Any, split) -> dict[str, float]:
    from cfcore.eval.implicit import evaluate_strong_generalization

    out = evaluate_strong_generalization(model_or_scorer, split, KS, backend="numpy")
    return {k: float(out[k]) for k in METRICS}


def run_ials(train, grid_point: dict[str, Any], checkpoints: Sequence[int], split, backend: str):
    """Fits cfcore IALS, scoring `split` after each number of sweeps in `checkpoints`."""
    import cfcore

    d = grid_point["d"]
    model = cfcore.IALS(
        embedding_dim=d,
        init_stddev=0.1 / np.sqrt(d),
        regularization_coeff=grid_point["lambda"],
        unobserved_weight=grid_point["alpha0"],
        regularization_exponent=1.0,
        # CG (3 steps, warm-started): as accurate here (validation NDCG@100 within 0.001 of
        # exact Cholesky solves at the same points) and faster per sweep; implicit's default
        # solver is the same.
        solver="cg",
    )
    out, done = {}, 0
    for sweeps in checkpoints:
        model.fit(train, steps=sweeps - done, backend=backend, progress=False)
        done = sweeps
        out[sweeps] = evaluate(model, split)
    return out


def run_implicit(train, grid_point: dict[str, Any], checkpoints: Sequence[int], split, seed: int):
    """Fits `implicit`'s ALS, scoring `split` after each number of iterations in `checkpoints`."""
    model = implicit_model(
        grid_point["d"], grid_point["lambda"], grid_point["alpha"], max(checkpoints), seed
    )
    out: dict[int, dict[str, float]] = {}

    def callback(iteration: int, _elapsed: float, _loss: Any) -> None:
        if iteration + 1 in checkpoints:
            out[iteration + 1] = evaluate(implicit_scorer(model), split)

    model.fit(train_csr(train), show_progress=False, callback=callback)
    return out


def grid(space: dict[str, Sequence[Any]]) -> list[dict[str, Any]]:
    keys = list(space)
    return [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*space.values())]


def tune_and_test(name: str, split, val, cfg: dict[str, Any], seed: int, backend: str):
    """Picks the best grid point on `val` (by NDCG@100), then fits it on `split.train` and tests."""
    from cfcore.eval.popularity import PopularityScorer

    if name == "popularity":
        return {}, evaluate(PopularityScorer.from_ratings(split.train), split), 0.0
    best_score, best_hp = -1.0, {}
    t0 = time.perf_counter()
    if name == "EASE":
        ease = EASE(val.train)
        for lam in cfg["ease_lambda"]:
            s = evaluate(EASE.scorer(ease.weights(lam)), val)[SELECT]
            if s > best_score:
                best_score, best_hp = s, {"lambda": lam}
        tune_s = time.perf_counter() - t0
        test = evaluate(EASE.scorer(EASE(split.train).weights(best_hp["lambda"])), split)
        return {**best_hp, "val_ndcg@100": best_score}, test, tune_s
    space, checkpoints = cfg[name], cfg["checkpoints"]
    if not name.startswith("cfcore"):
        checkpoints = cfg.get("implicit_checkpoints", checkpoints)
    for point in grid(space):
        if name.startswith("cfcore"):
            by_sweeps = run_ials(val.train, point, checkpoints, val, backend)
        else:
            by_sweeps = run_implicit(val.train, point, checkpoints, val, seed)
        for sweeps, metrics in by_sweeps.items():
            if metrics[SELECT] > best_score:
                best_score, best_hp = metrics[SELECT], {**point, "iterations": sweeps}
    tune_s = time.perf_counter() - t0
    its = best_hp["iterations"]
    if name.startswith("cfcore"):
        test = run_ials(split.train, best_hp, [its], split, backend)[its]
    else:
        test = run_implicit(split.train, best_hp, [its], split, seed)[its]
    return {**best_hp, "val_ndcg@100": best_score}, test, tune_s


def accuracy(mode: str, backends: Sequence[str], datasets: Sequence[str], seeds: Sequence[int]):
    import cfcore
    from cfcore.eval.implicit import strong_generalization_split

    cfg: dict[str, Any] = {
        "smoke": dict(
            checkpoints=(2,),
            ease_lambda=(100.0,),
            implicit=dict(d=(16,), **{"lambda": (0.1,)}, alpha=(5.0,)),
            ials=dict(d=(16,), **{"lambda": (0.01,)}, alpha0=(0.1,)),
        ),
        "quick": dict(
            checkpoints=(8, 16),
            ease_lambda=(50.0, 200.0, 500.0),
            implicit=dict(d=(64,), **{"lambda": (0.1, 1.0)}, alpha=(3.0, 10.0)),
            ials=dict(d=(64,), **{"lambda": (0.01, 0.03)}, alpha0=(0.03, 0.1)),
        ),
        # Narrowed on the validation splits only (never the test targets): first float64 NumPy
        # prototypes on seed 0's (ml-100k), then cfcore's JAX IALS on all six (both data sets,
        # seeds 0-2; benchmarks/results/notes.md has the numbers). cfcore's iALS has a ridge along
        # λ·α₀ ≈ 0.002-0.004 (ν = 1 scales λ by |S_r| + α₀·M): ml-100k peaks at λ 0.02 / α₀ 0.1
        # or λ 0.01 / α₀ 0.5, ml-latest-small at λ 0.005 / α₀ 0.5-0.8, where d 256 beats d 128
        # on every seed (not on ml-100k); λ 0.035+ and α₀ 0.05 never came close; ν 0.75, d 64
        # and exact Cholesky solves (instead of 3 warm-started CG steps) gained at most 0.002
        # of NDCG@100, 32 sweeps little. implicit's ALS peaks near its λ 10-30, alpha 3-10,
        # falls off past λ 30 (λ 100 and alpha 30 were worse on every split) and below alpha 1,
        # and gains from d 256 on ml-latest-small as cfcore does: it gets d 256 too, and 32
        # iterations as cfcore. Widened on 2026-11-30 at the grid's edges, for both contenders
        # alike: d 512, since d 256 (the widest) won on every ml-latest-small seed for both;
        # 4 and 6 sweeps, since 8 (the fewest) won for cfcore on every ml-100k seed, whose
        # validation NDCG@100 peaks at 3-6 sweeps.
        "full": dict(
            checkpoints=(4, 6, 8, 16, 32),
            ease_lambda=(100.0, 200.0, 300.0, 500.0, 1000.0),
            implicit=dict(
                d=(32, 64, 128, 256, 512),
                **{"lambda": (3.0, 10.0, 30.0)},
                alpha=(1.0, 3.0, 10.0),
            ),
            ials=dict(d=(128, 256, 512), **{"lambda": (0.005, 0.01, 0.02)}, alpha0=(0.1, 0.2, 0.5)),
        ),
    }[mode]
    contenders = [*(f"cfcore IALS {be}" for be in backends), "implicit ALS", "EASE", "popularity"]
    cfg.update(
        {f"cfcore IALS {be}": cfg["ials"] for be in backends}, **{"implicit ALS": cfg["implicit"]}
    )
    rows: list[dict[str, Any]] = []
    for ds in datasets:
        release, share = DATASETS[ds]
        ml = cfcore.datasets.load_movielens(release, data_dir=DATA_DIR)
        for seed in seeds:
            split = strong_generalization_split(ml, heldout_share=share, seed=seed)
            # Validation from the training users only: their positives are all 1.0, so any
            # threshold below 1 keeps every one of them.
            val = strong_generalization_split(
                split.train, heldout_share=share, seed=1000 + seed, threshold=0.5
            )
            print(f"{ds} seed {seed}: {split!r}\n  validation: {val!r}", flush=True)
            for name in contenders:
                be = name.split()[-1]
                hp, test, tune_s = tune_and_test(name, split, val, cfg, seed, be)
                rows.append({"dataset": ds, "seed": seed, "contender": name, "chosen": hp,
                             "tune_s": tune_s, **test})  # fmt: skip
                print(f"  {name:20s} " + "  ".join(f"{k} {test[k]:.4f}" for k in METRICS)
                      + f"   chosen {hp}  (tuning {tune_s:.0f} s)", flush=True)  # fmt: skip
    return rows, cfg


# ------------------------------------------------------------------------------------ epoch time


def epoch_times(
    mode: str,
    backends: Sequence[str],
    dims: Sequence[int],
    repeat: int,
    max_s: float,
    solvers: Sequence[str] = ("cg", "cholesky"),
    jax_devices: int | None = None,
):
    """Seconds per iALS sweep at ML-20M shape (or smaller in quick/smoke), side by side; with
    `jax_devices`, JAX row-sharded over that many devices too (the process must have them)."""
    import cfcore
    from cfcore.init import init_mf_params
    from cfcore.models import als
    from cfcore.train.sharding import make_placement

    shape = {"smoke": (2_000, 500, 40_000), "quick": (34_600, 6_700, 5_000_000), "full": ML20M}[
        mode
    ]
    t = time.perf_counter()
    r = cfcore.synthetic_ratings(*shape, seed=0).to_implicit(threshold=3.5)
    print(f"epoch: {shape[0]:,} x {shape[1]:,}, {len(r):,} positives "
          f"({time.perf_counter() - t:.0f} s to generate)", flush=True)  # fmt: skip
    x = train_csr(r)
    rows: list[dict[str, Any]] = []
    contenders: list[tuple[str, str, int, Callable[[], Callable[[], Any]]]] = []
    for d in dims:
        placements = [(be_name, None) for be_name in backends]
        if jax_devices and "jax" in backends:
            placements.insert(backends.index("jax") + 1, ("jax", jax_devices))
        for be_name, devices in placements:
            for solver in solvers:

                def make(be_name=be_name, solver=solver, d=d, devices=devices):
                    be = cfcore.get_backend(be_name)
                    spec = cfcore.IALS(d, solver=solver).spec
                    place = make_placement(be, devices)
                    data = place.data(als.ials_blocks(spec, r, place))
                    run = be.compile(als.ials_sweep(be, spec, place))
                    state = {"p": place.params(init_mf_params(spec, r.num_users, r.num_items, 0))}

                    def sweep() -> None:
                        _, state["p"] = run(state["p"], data)
                        place.to_host(state["p"])

                    return sweep

                label = f"cfcore {be_name}" + (f", {devices} CPU devices" if devices else "")
                contenders.append((label, solver, d, make))
        for solver in ("cg", "cholesky"):

            def make_implicit(solver=solver, d=d):
                model = implicit_model(d, 0.01, 1.0, 1, 0)
                model.use_cg = solver == "cg"
                model.fit(x, show_progress=False)  # allocates the factors: not timed

                def sweep() -> float:
                    # implicit's own clock of its iteration (its CSR transpose left out).
                    elapsed: list[float] = []
                    model.fit(x, show_progress=False, callback=lambda _i, s, _l: elapsed.append(s))
                    return elapsed[0]

                return sweep

            contenders.append(("implicit (2 threads)", solver, d, make_implicit))
    for label, solver, d, make in contenders:
        t = time.perf_counter()
        try:
            sweep = make()
            setup = time.perf_counter() - t
            t = time.perf_counter()
            inner = sweep()
            first = inner if inner is not None else time.perf_counter() - t
            times = []
            for _ in range(repeat if first < max_s else 0):
                t = time.perf_counter()
                inner = sweep()
                times.append(inner if inner is not None else time.perf_counter() - t)
            row = {"contender": label, "solver": solver, "d": d, "setup_s": setup,
                   "first_s": first, "sweep_s": statistics.median(times) if times else None,
                   "n": len(times), "status": "ok"}  # fmt: skip
        except Exception as e:  # noqa: BLE001  (a contender that fails is reported, not fatal)
            row = {
                "contender": label,
                "solver": solver,
                "d": d,
                "status": f"{type(e).__name__}: {e}"[:200],
            }
        rows.append(row)
        print(f"  {label:26s} {solver:9s} d {d:4d}: " + (
            f"first {row['first_s']:.2f} s, sweep {rp.fmt_s(row['sweep_s'])} (n={row['n']})"
            if row["status"] == "ok" else row["status"]), flush=True)  # fmt: skip
    return {"shape": list(shape), "positives": len(r), "rows": rows}


# ------------------------------------------------------------------------------------ report

PEER_COLORS = {"implicit": "#7b3294", "EASE": "#8c510a", "popularity": "#999999"}


def color(label: str) -> str:
    """cfcore's backend palette for cfcore's rows; fixed colours for the peers, which it lacks."""
    for peer, c in PEER_COLORS.items():
        if label.startswith(peer):
            return c
    return rp.color(label)


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        for name in dict.fromkeys(r["contender"] for r in rows if r["dataset"] == ds):
            mine = [r for r in rows if r["dataset"] == ds and r["contender"] == name]
            out.append({"dataset": ds, "contender": name, "seeds": len(mine),
                        **{k: statistics.mean(r[k] for r in mine) for k in METRICS},
                        **{f"{k}_sd": statistics.pstdev(r[k] for r in mine) for k in METRICS}})  # fmt: skip
    return out


def plot(summary, epoch, out_dir, footer, stem):
    plt = rp.pyplot()
    # One panel per part that has rows: an epoch-only run draws no empty accuracy panel.
    has_epoch = bool(epoch and epoch["rows"])
    panels = max(1, bool(summary) + has_epoch)
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.6), squeeze=False)
    if summary:
        ax = axes[0][0]
        datasets = list(dict.fromkeys(s["dataset"] for s in summary))
        names = list(dict.fromkeys(s["contender"] for s in summary))
        width = 0.8 / max(len(names), 1)
        for j, name in enumerate(names):
            vals = [next((s[SELECT] for s in summary
                          if s["dataset"] == ds and s["contender"] == name), 0.0)
                    for ds in datasets]  # fmt: skip
            ax.bar(np.arange(len(datasets)) + j * width, vals, width, label=name,
                   color=color(name))  # fmt: skip
        ax.set_xticks(np.arange(len(datasets)) + 0.4 - width / 2)
        ax.set_xticklabels(datasets)
        ax.set_ylabel("NDCG@100 (mean over seeds)")
        ax.set_title("strong generalization, held-out users folded in", fontsize=10)
        ax.legend(fontsize=7)
    if has_epoch:
        assert epoch is not None
        ax = axes[0][panels - 1]
        ok = [r for r in epoch["rows"] if r.get("sweep_s") or r.get("first_s")]
        labels = [f"{r['contender']} {r['solver']} d{r['d']}" for r in ok]
        ax.barh(range(len(ok)), [r["sweep_s"] or r["first_s"] for r in ok],
                color=[color(r["contender"]) for r in ok])  # fmt: skip
        ax.set_yticks(range(len(ok)))
        ax.set_yticklabels(labels, fontsize=6)
        ax.set_xscale("log")
        ax.invert_yaxis()
        n, m = epoch["shape"][:2]
        ax.set_xlabel(f"seconds per iALS sweep, {n:,} x {m:,}, {epoch['positives']:,} positives")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return rp.save_figure(fig, out_dir, f"{stem}.png", footer)


def report(rows, cfg, epoch, mode, out_dir, stem: str = "implicit_peers") -> None:
    footer = stamp()
    summary = summarize(rows) if rows else []
    png = plot(summary, epoch, out_dir, footer, stem)
    parts = [
        "# cfcore iALS against the implicit-feedback peers\n",
        f"![implicit peers]({png.name})\n",
    ]
    if rows:
        seeds = sorted({r["seed"] for r in rows})
        parts += [
            "## Strong generalization (held-out users folded in; seeds "
            + ", ".join(map(str, seeds))
            + ")\n",
            "Positives: ratings > 3.5; users with ≥ 5 of them; ml-100k holds out 20% of the users, "
            "ml-latest-small 10%; each held-out user's positives split 80/20 into fold-in items and "
            "targets; all training items but the fold-in ones are ranked. Each contender was tuned "
            "by NDCG@100 on a validation split of that seed's training users, then refitted on all "
            "training users. Means over seeds (± population sd):\n",
            rp.md_table(
                ["dataset", "contender", *METRICS],
                [
                    [
                        s["dataset"],
                        s["contender"],
                        *(f"{s[k]:.4f} ± {s[k + '_sd']:.4f}" for k in METRICS),
                    ]
                    for s in summary
                ],
            ),  # fmt: skip
            "",
            "Chosen hyper-parameters per seed (d; λ: cfcore's frequency-scaled λ, implicit's plain "
            "λ, EASE's λ; α₀: cfcore's weight on every pair; alpha: implicit's confidence of a "
            "positive, its unobserved pairs weighing 1; iterations: sweeps):\n",
            rp.md_table(
                ["dataset", "seed", "contender", "chosen", "tuning s", *METRICS],
                [
                    [
                        r["dataset"],
                        r["seed"],
                        r["contender"],
                        ", ".join(
                            f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in r["chosen"].items()
                        ),
                        f"{r['tune_s']:.0f}",
                        *(f"{r[k]:.4f}" for k in METRICS),
                    ]
                    for r in rows
                ],
            ),  # fmt: skip
            "",
            "Grids (every combination; iterations = each checkpoint): "
            + "; ".join(
                f"{name}: " + ", ".join(f"{k} {list(v)}" for k, v in cfg[name].items())
                for name in ("ials", "implicit")
            )
            + f"; checkpoints {list(cfg['checkpoints'])} (implicit: "
            + f"{list(cfg.get('implicit_checkpoints', cfg['checkpoints']))})"
            + f"; EASE λ {list(cfg['ease_lambda'])}.\n",
        ]
    if epoch:
        n, m, _ = epoch["shape"]
        parts += [
            f"## iALS sweep time, {n:,} × {m:,} synthetic, {epoch['positives']:,} positives\n",
            "One sweep = every user row, then every item row. cfcore: `IALS` spec, sweep compiled "
            "(`first` includes compilation), then timed with the parameters synced to the host. "
            "implicit: `AlternatingLeastSquares(num_threads=2)`, one `fit` iteration (its CSR "
            'transpose included), its default CG (3 steps) or Cholesky. "K CPU devices": '
            "the tables row-sharded over K virtual CPU devices (`fit(devices=K)`). cfcore tf "
            "(one device) cuts each half-sweep into as many concurrent parts as the cores it "
            "may use, XLA calls run at once by TensorFlow's executor (`TFBackend(parts=None)`, "
            "`cfcore_tf.transforms.compile_parts`).\n",
            rp.md_table(
                [
                    "contender",
                    "solver",
                    "d",
                    "setup s",
                    "first sweep",
                    "median sweep",
                    "n",
                    "status",
                ],
                [
                    [
                        r["contender"],
                        r["solver"],
                        r["d"],
                        f"{r.get('setup_s', 0):.1f}",
                        rp.fmt_s(r.get("first_s")),
                        rp.fmt_s(r.get("sweep_s")),
                        r.get("n", ""),
                        r["status"],
                    ]
                    for r in epoch["rows"]
                ],
            ),  # fmt: skip
            "",
        ]
    parts += [f"Mode: {mode}.\n", footer]
    rp.write_text(out_dir, f"{stem}.md", "\n".join(parts) + "\n")
    rp.write_json(out_dir, f"{stem}.json",
                  {"accuracy": rows, "summary": summary, "epoch": epoch, "mode": mode})  # fmt: skip
    print("wrote", out_dir / f"{stem}.md")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    rp.add_common_args(p)
    p.add_argument(
        "--part", nargs="+", default=["accuracy", "epoch"], choices=("accuracy", "epoch")
    )
    p.add_argument("--backends", nargs="+", default=None, help="cfcore backends (default jax)")
    p.add_argument("--datasets", nargs="+", default=None, choices=sorted(DATASETS))
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    p.add_argument("--dims", nargs="+", type=int, default=None, help="epoch part: d (64 128)")
    p.add_argument("--repeat", type=int, default=None, help="epoch part: timed sweeps")
    p.add_argument("--solvers", nargs="+", default=["cg", "cholesky"], choices=("cg", "cholesky"),
                   help="epoch part: cfcore's solvers (implicit runs both)")  # fmt: skip
    p.add_argument("--max-config-s", type=float, default=120.0,
                   help="epoch part: a first sweep slower than this is not repeated")  # fmt: skip
    p.add_argument("--jax-devices", type=int, default=None,
                   help="epoch part: also cfcore jax row-sharded over K virtual CPU devices")  # fmt: skip
    args = p.parse_args(argv)
    if args.jax_devices is not None and args.jax_devices < 2:
        p.error(f"--jax-devices must be at least 2 (one device is the plain contender), "
                f"got {args.jax_devices}")  # fmt: skip
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    os.environ.update(rp.cpu_env("cpu"))
    if args.jax_devices:
        # JAX reads its host device count once, when its CPU client starts: before any import.
        if "jax" in sys.modules:
            p.error("--jax-devices must be set before JAX starts; it was already imported")
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (
            f"{flags} --xla_force_host_platform_device_count={args.jax_devices}".strip()
        )
    backends = args.backends or ["jax"]
    rows, cfg, epoch = [], {}, None
    if "accuracy" in args.part:
        datasets = args.datasets or (["ml-100k"] if mode != "full" else list(DATASETS))
        seeds = args.seeds or ([0] if mode != "full" else [0, 1, 2])
        rows, cfg = accuracy(mode, backends, datasets, seeds)
    if "epoch" in args.part:
        epoch_backends = args.backends or (["jax"] if mode == "smoke" else ["jax", "tf", "torch"])
        dims = args.dims or ([8] if mode == "smoke" else [64, 128])
        repeat = args.repeat or {"smoke": 1, "quick": 2, "full": 2}[mode]
        epoch = epoch_times(
            mode, epoch_backends, dims, repeat, args.max_config_s, args.solvers, args.jax_devices
        )
    # The epoch part alone writes its own files, so the two parts can run (and be re-run) apart.
    stem = "implicit_epoch" if set(args.part) == {"epoch"} else "implicit_peers"
    report(rows, cfg, epoch, mode, args.out_dir, stem)


if __name__ == "__main__":
    main()
