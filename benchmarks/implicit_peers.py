"""cfcore's iALS against `implicit`'s ALS: seconds per sweep at ML-20M shape, side by side.

One iALS sweep (users then items) at ML-20M shape (138,493 × 26,744 synthetic ratings from
`cfcore.synthetic_ratings`, 20M, skewed; positives `to_implicit(threshold=3.5)`), cfcore on each
backend with Cholesky and CG, against `implicit`'s CPU ALS with 2 threads (its default CG solver
and its Cholesky), side by side in one process. A configuration over `--max-config-s` after its
first sweep is not repeated. With `--jax-devices K`, also "cfcore jax, K CPU devices": the tables
row-sharded over K virtual CPU devices (`fit(..., devices=K)`; XLA's CPU client runs each device on
its own thread), the process started with K host devices (the one-device contender then runs on
the first). A breakdown of one part of a fit: a whole `fit`'s time, cold and warm, beside
`implicit`'s whole `fit`, is `benchmarks/time_to_result.py`'s.

Accuracy against `implicit`, EASE and popularity (strong generalization, each tuned by the same
search) is an experiment config: `python benchmarks/experiment.py
benchmarks/experiments/ials_vs_implicit.toml` (the adapters are `benchmarks/experiment_peers.py`).

    python benchmarks/implicit_peers.py [--quick | --smoke] [--out-dir DIR] [--jax-devices K]

Writes `implicit_epoch.md`, `.png` and `.json` to `--out-dir`.
"""

from __future__ import annotations

import argparse
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
from _common import stamp
from experiment_peers import implicit_model, train_csr

ML20M = (138_493, 26_744, 20_000_263)


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

PEER_COLORS = {"implicit": "#7b3294"}


def color(label: str) -> str:
    """cfcore's backend palette for cfcore's rows; a fixed colour for `implicit`."""
    for peer, c in PEER_COLORS.items():
        if label.startswith(peer):
            return c
    return rp.color(label)


def plot(epoch, out_dir, footer, stem):
    plt = rp.pyplot()
    fig, ax = plt.subplots(1, 1, figsize=(6.5, 4.6))
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


def report(epoch, mode, out_dir, stem: str = "implicit_epoch") -> None:
    footer = stamp()
    png = plot(epoch, out_dir, footer, stem)
    n, m, _ = epoch["shape"]
    parts = [
        "# cfcore iALS against the implicit-feedback peers\n",
        f"![implicit peers]({png.name})\n",
        f"## iALS sweep time, {n:,} × {m:,} synthetic, {epoch['positives']:,} positives\n",
        "One sweep = every user row, then every item row. cfcore: `IALS` spec, sweep compiled "
        "(`first` includes compilation), then timed with the parameters synced to the host. "
        "implicit: `AlternatingLeastSquares(num_threads=2)`, one `fit` iteration (its CSR "
        'transpose included), its default CG (3 steps) or Cholesky. "K CPU devices": '
        "the tables row-sharded over K virtual CPU devices (`fit(devices=K)`). cfcore tf "
        "(one device) cuts each half-sweep into as many concurrent parts as the cores it "
        "may use, XLA calls run at once by TensorFlow's executor (`TFBackend(parts=None)`, "
        "`cfcore_tf.transforms.compile_parts`). A breakdown: whole fits are "
        "`benchmarks/time_to_result.py`'s.\n",
        rp.md_table(
            ["contender", "solver", "d", "setup s", "first sweep", "median sweep", "n", "status"],
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
        f"Mode: {mode}.\n",
        footer,
    ]
    rp.write_text(out_dir, f"{stem}.md", "\n".join(parts) + "\n")
    rp.write_json(out_dir, f"{stem}.json", {"epoch": epoch, "mode": mode})
    print("wrote", out_dir / f"{stem}.md")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    rp.add_common_args(p)
    p.add_argument("--backends", nargs="+", default=None,
                   help="cfcore backends (default jax tf torch; smoke: jax)")  # fmt: skip
    p.add_argument("--dims", nargs="+", type=int, default=None, help="d (64 128)")
    p.add_argument("--repeat", type=int, default=None, help="timed sweeps")
    p.add_argument("--solvers", nargs="+", default=["cg", "cholesky"], choices=("cg", "cholesky"),
                   help="cfcore's solvers (implicit runs both)")  # fmt: skip
    p.add_argument("--max-config-s", type=float, default=120.0,
                   help="a first sweep slower than this is not repeated")  # fmt: skip
    p.add_argument("--jax-devices", type=int, default=None,
                   help="also cfcore jax row-sharded over K virtual CPU devices")  # fmt: skip
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
    epoch_backends = args.backends or (["jax"] if mode == "smoke" else ["jax", "tf", "torch"])
    dims = args.dims or ([8] if mode == "smoke" else [64, 128])
    repeat = args.repeat or {"smoke": 1, "quick": 2, "full": 2}[mode]
    epoch = epoch_times(
        mode, epoch_backends, dims, repeat, args.max_config_s, args.solvers, args.jax_devices
    )
    report(epoch, mode, args.out_dir)


if __name__ == "__main__":
    main()
