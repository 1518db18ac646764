"""Full-matmul ("dense") vs gather MSE: time and peak memory of the loss and of a training step.

The dense form forms U·Vᵀ (`[N, M]`) and gathers the observed entries from it, as the course
notebook's first solution does: memory O(N·M). The gather form gathers the n observed user and
item rows and takes row-wise dot products: memory O(n·d). This script measures both, per backend,
as the catalog (N·M), the ratings (n) and the dimension (d) grow, on seeded synthetic ratings with
MovieLens-like skew (`cfcore.synthetic_ratings`), up to ML-20M shape.

Every (shape, backend, form) runs in a fresh subprocess (`_mem.run_isolated`), so its peak
resident memory is its own: the "working set" is the peak above the resident size once data and
parameters are in place (it includes the compiler's memory on the first call, tens of MB, which
matters only at the smallest sizes); the "total" counts from the resident size after importing the
framework, so it adds the data and the parameters. Times are medians of repeated calls,
synchronised (`block_until_ready` / `.numpy()`) before the clock stops; the first call, which
compiles, is reported separately. A configuration
whose estimated memory exceeds the budget is not run and its estimate is printed instead; one that
passes the budget while running is killed by the watchdog and reported so.

    python benchmarks/mse_scaling.py                 # full sweeps (about 10 min on 2 cores)
    python benchmarks/mse_scaling.py --quick         # small sweeps (a few minutes)
    python benchmarks/mse_scaling.py --device gpu    # JAX on the GPU (writes *_gpu.* files)

Writes `mse_scaling.md` and `mse_scaling.png` (or `mse_scaling_gpu.*`) to `--out-dir`.
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import _report as rp
from _common import CfcoreTraining, missing_gpu, stamp
from _mem import GB, run_isolated

from cfcore.data.synthetic import MOVIELENS_SHAPES

SCRIPT = Path(__file__).resolve()
FORMS = ("dense", "gather")
LR = 1.0  # plain SGD; only the cost of a step matters here, not where it goes
BASE_BYTES = 0.6 * GB  # interpreter + framework, for the estimates only

ONE_M_USERS = (1_000_000, 250_000, 50_000_000)  # the scale benchmark's largest case


# ------------------------------------------------------------------------------------ child side


def _sync(be: Any, tree: Any, scalar: Any) -> None:
    if be.name == "jax":
        import jax

        jax.block_until_ready(tree)
    else:
        be.to_numpy(scalar)  # TF runs the compiled function to completion before returning


def _time_calls(fn, min_time: float, min_repeats: int, max_repeats: int) -> tuple[float, float]:
    """(seconds of the first call, median seconds of the following ones)."""
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    if first > 5.0:  # a slow configuration: a couple of repeats say enough
        min_repeats = min(min_repeats, 2)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_repeats and (
        len(times) < min_repeats or time.perf_counter() - start < min_time
    ):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return first, statistics.median(times)


def measure(cfg: dict[str, Any], meter) -> dict[str, Any]:
    """Child: times the loss and one SGD step of MF with `cfg["form"]`, with their peak memory."""
    import cfcore
    from cfcore.init import init_mf_params
    from cfcore.optimizers import SGD

    be = cfcore.get_backend(cfg["backend"])
    if (reason := missing_gpu(cfg["device"])) is not None:
        return {"error": reason}
    meter.mark("imports")
    n_users, n_items, n, d, form = cfg["N"], cfg["M"], cfg["n"], cfg["d"], cfg["form"]
    ratings = cfcore.synthetic_ratings(n_users, n_items, n, seed=cfg["seed"])
    spec = cfcore.MFSpec(embedding_dim=d, init_stddev=0.1, mse=form)
    opt = SGD(LR)
    train = CfcoreTraining(
        be, spec, opt, init_mf_params(spec, n_users, n_items, cfg["seed"]), ratings
    )
    batch = train.data
    del ratings
    gc.collect()
    meter.mark("setup")
    U, V = train.params["user"], train.params["item"]
    timing = dict(min_time=cfg["min_time"], min_repeats=3, max_repeats=cfg["max_repeats"])

    def loss() -> None:
        value = be.sparse_mse(U, V, batch["users"], batch["items"], batch["values"], method=form)
        _sync(be, value, value)

    loss_first, loss_s = _time_calls(loss, **timing)
    # Never reset between the phases: allocators keep freed buffers (TF's do even after
    # malloc_trim), so a reset would hide what the step reuses from the loss. The step's peak above
    # the setup is then max(loss, step), which is the step's, since a step computes the loss.
    loss_ws = max(0, meter.peak() - meter.marks["setup"])

    def one_step() -> None:
        terms = train.steps(1)  # cfcore.train.make_step: loss, gradient and SGD update
        _sync(be, train.params, terms["total"])

    step_first, step_s = _time_calls(one_step, **timing)
    peak = meter.peak()
    return {
        "loss_s": loss_s,
        "loss_first_s": loss_first,
        "step_s": step_s,
        "step_first_s": step_first,
        "loss_ws": loss_ws,
        "step_ws": max(0, peak - meter.marks["setup"]),
        # Above the resident size after the imports: data, parameters, compiled code and the step.
        "step_total": max(0, peak - meter.marks["imports"]),
    }


# ------------------------------------------------------------------------------------ estimates


def data_bytes(N: int, M: int, n: int, d: int) -> float:
    """Ratings (int32 users and items, float32 values) and the two embedding tables."""
    return 12.0 * n + 4.0 * (N + M) * d


def estimate_step_bytes(form: str, N: int, M: int, n: int, d: int) -> float:
    """A step's working set, before calibration: the `[N, M]` product and its gradient (dense),
    or the gathered `[n, d]` rows and their gradients (gather), plus gradients and new parameters.
    """
    params = 4.0 * (N + M) * d
    if form == "dense":
        return 2 * 4.0 * N * M + 3 * params
    return 4 * 4.0 * n * d + 3 * params


def estimate_total_bytes(form: str, N: int, M: int, n: int, d: int) -> float:
    return BASE_BYTES + data_bytes(N, M, n, d) + estimate_step_bytes(form, N, M, n, d)


# ------------------------------------------------------------------------------------ sweeps


def sweeps(mode: str) -> dict[str, list[tuple[int, int, int, int]]]:
    """Named sweeps of (N, M, n, d)."""
    ml = MOVIELENS_SHAPES
    if mode == "smoke":
        return {"MovieLens shapes (d = 8)": [(*ml["ml-100k"], 8)]}
    if mode == "quick":
        return {
            "MovieLens shapes (d = 32)": [(*ml[k], 32) for k in ("ml-100k", "ml-1m")],
            "catalog grows (n = 100k, d = 32)": [
                (943, 1_682, 100_000, 32),
                (3_000, 1_800, 100_000, 32),
                (6_040, 3_706, 100_000, 32),
                (15_000, 6_000, 100_000, 32),
            ],
            "ratings grow (ml-1m catalog, d = 32)": [
                (6_040, 3_706, 100_000, 32),
                (*ml["ml-1m"], 32),
            ],
            "dimension grows (ml-100k shape)": [(*ml["ml-100k"], d) for d in (8, 32, 128)],
        }
    return {
        "MovieLens shapes (d = 32)": [(*ml[k], 32) for k in ml],
        "catalog grows (n = 1M, d = 32)": [
            (1_000, 600, 1_000_000, 32),
            (3_000, 1_800, 1_000_000, 32),
            (6_040, 3_706, 1_000_000, 32),
            (15_000, 6_000, 1_000_000, 32),
            (35_000, 10_000, 1_000_000, 32),
            (69_878, 10_677, 1_000_000, 32),
            (138_493, 26_744, 1_000_000, 32),
        ],
        "ratings grow (ml-1m catalog, d = 32)": [
            (6_040, 3_706, n, 32) for n in (100_000, 1_000_209, 4_000_000, 16_000_000)
        ],
        "dimension grows (ml-1m shape)": [(*ml["ml-1m"], d) for d in (8, 32, 128)],
    }


def selected_sweeps(args: argparse.Namespace) -> dict[str, list[tuple[int, int, int, int]]]:
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    sw = sweeps(mode)
    if args.sweeps:
        sw = {k: v for k, v in sw.items() if any(k.lower().startswith(p) for p in args.sweeps)}
    return sw


def shape_name(N: int, M: int, n: int) -> str:
    for name, shape in MOVIELENS_SHAPES.items():
        if shape == (N, M, n):
            return name
    return ""


def _fmt_count(x: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    timing = {
        "smoke": dict(min_time=0.0, max_repeats=2),
        "quick": dict(min_time=0.5, max_repeats=10),
        "full": dict(min_time=1.5, max_repeats=20),
    }[mode]
    unique: list[tuple[int, int, int, int]] = []
    for configs in selected_sweeps(args).values():
        unique += [c for c in configs if c not in unique]
    budget = args.mem_budget_gb * GB
    rows = []
    for N, M, n, d in unique:
        for be in args.backends:
            for form in FORMS:
                row: dict[str, Any] = dict(N=N, M=M, n=n, d=d, backend=be, form=form)
                est = estimate_total_bytes(form, N, M, n, d)
                row["est_total"] = est
                if est > budget:
                    row["status"] = f"not run: needs ≈ {rp.fmt_bytes(est)} (estimated) > budget"
                    print(f"{be:4} {form:6} N={N} M={M} n={n} d={d}: {row['status']}", flush=True)
                    rows.append(row)
                    continue
                cfg = dict(row, seed=0, device=args.device, **timing)
                rec = run_isolated(
                    SCRIPT,
                    "measure",
                    cfg,
                    budget_bytes=budget,
                    timeout_s=args.timeout,
                    env=rp.cpu_env(args.device),
                )
                row["status"] = "ok" if rec.ok else f"{rec.status}: {rec.message}"
                if rec.ok and rec.result is not None:
                    res = rec.result
                    marks = res.pop("marks")
                    row.update(res)
                    row["setup_rss"] = marks["setup"]
                    row["imports_rss"] = marks["imports"]
                rows.append(row)
                print(
                    f"{be:4} {form:6} N={N} M={M} n={n} d={d}: "
                    + (
                        f"loss {rp.fmt_s(row['loss_s'])}  step {rp.fmt_s(row['step_s'])}  "
                        f"step working set {rp.fmt_bytes(row['step_ws'])}  ({rec.seconds:.0f} s)"
                        if rec.ok
                        else row["status"]
                    ),
                    flush=True,
                )
    return rows


# ------------------------------------------------------------------------------------ report


def calibration(rows: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[float, str]]:
    """Measured step working set per byte of the leading term (4·N·M dense, 4·n·d gather).

    Per (backend, form), from the largest run that fit, where the leading term dominates the
    compiler's and runtime's fixed share. Returns `{(backend, form): (factor, which run)}`.
    """
    out: dict[tuple[str, str], tuple[float, str]] = {}
    best: dict[tuple[str, str], float] = {}
    for r in rows:
        if "step_ws" not in r:
            continue
        unit = _leading(r["form"], r["N"], r["M"], r["n"], r["d"])
        key = (r["backend"], r["form"])
        if unit >= 64 * 1024**2 and unit > best.get(key, 0.0):
            best[key] = unit
            where = f"{r['N']:,}×{r['M']:,}, n {_fmt_count(r['n'])}, d {r['d']}"
            out[key] = (r["step_ws"] / unit, where)
    return out


def _leading(form: str, N: int, M: int, n: int, d: int) -> float:
    return 4.0 * N * M if form == "dense" else 4.0 * n * d


def calibrated_total(
    backend: str, form: str, N: int, M: int, n: int, d: int, cal: dict
) -> tuple[float, bool]:
    """(estimated bytes, whether a measured factor was used) for data + parameters + a step."""
    factor, _ = cal.get((backend, form), (2.0 if form == "dense" else 4.0, ""))
    total = data_bytes(N, M, n, d) + factor * _leading(form, N, M, n, d) + 3 * 4.0 * (N + M) * d
    return total, (backend, form) in cal


def crossover(rows: list[dict[str, Any]], backend: str, sweep: str, configs) -> str:
    """Where the faster form changes along a sweep (log-log interpolation of the time ratio)."""
    label, xf = _sweep_axis(sweep)
    pts = []
    for c in configs:
        t = {}
        for r in rows:
            if (r["N"], r["M"], r["n"], r["d"], r["backend"]) == (*c, backend):
                t[r["form"]] = r.get("step_s")
        if t.get("dense") and t.get("gather"):
            pts.append((xf(*c), math.log(t["dense"] / t["gather"]), c))
    if not pts:
        return "not measured (dense and gather both needed)"
    for (x0, y0, c0), (x1, y1, _) in zip(pts, pts[1:], strict=False):
        if (y0 <= 0) != (y1 <= 0) and x1 != x0:
            x = math.exp(math.log(x0) + (math.log(x1) - math.log(x0)) * (-y0) / (y1 - y0))
            side = "dense" if y0 <= 0 else "gather"
            extra = f" (density n/(N·M) ≈ {c0[2] / x:.2%})" if label.startswith("N·M") else ""
            return f"{side} is faster below {label} ≈ {_fmt_count(x)}{extra}, the other above"
    if all(y > 0 for _, y, _ in pts):
        return "gather is faster at every measured size"
    if all(y <= 0 for _, y, _ in pts):
        return "dense is faster at every measured size (no crossover in range)"
    return "no single crossover (the ratio changes sign more than once)"


def table(rows: list[dict[str, Any]], configs) -> str:
    headers = [
        "N users", "M items", "n ratings", "d", "backend", "form", "loss", "loss+grad+SGD step",
        "step compile (1st call)", "loss working set", "step working set",
        "step total (data+params+step)", "pre-run estimate", "status",
    ]  # fmt: skip
    out = []
    for N, M, n, d in configs:
        for r in rows:
            if (r["N"], r["M"], r["n"], r["d"]) != (N, M, n, d):
                continue
            ok = "step_s" in r
            out.append(
                [
                    f"{N:,}",
                    f"{M:,}",
                    f"{n:,}" + (f" ({shape_name(N, M, n)})" if shape_name(N, M, n) else ""),
                    d,
                    r["backend"],
                    r["form"],
                    rp.fmt_s(r.get("loss_s")),
                    rp.fmt_s(r.get("step_s")),
                    rp.fmt_s(r["step_first_s"] - r["step_s"]) if ok else "",
                    rp.fmt_bytes(r.get("loss_ws")),
                    rp.fmt_bytes(r.get("step_ws")),
                    rp.fmt_bytes(r.get("step_total")),
                    rp.fmt_bytes(r["est_total"] - BASE_BYTES),
                    r["status"],
                ]
            )
    return rp.md_table(headers, out)


def plot(rows, sw: dict[str, list], backends, out_dir: Path, name: str, footer: str) -> Path:
    plt = rp.pyplot()
    names = list(sw)
    fig, axes = plt.subplots(len(names), 2, figsize=(12, 3.6 * len(names)), squeeze=False)
    # Colour: the backend (cfcore.viz's palette); line style: the MSE form.
    styles = {(be, form): (rp.color(be), "-" if form == "dense" else "--")
              for be in backends for form in FORMS}  # fmt: skip
    for ax_row, sweep in zip(axes, names, strict=True):
        configs = sw[sweep]
        xs_label, xf = _sweep_axis(sweep)
        for be in backends:
            for form in FORMS:
                color, ls = styles.get((be, form), (None, "-"))
                pts = [
                    (xf(*c), r)
                    for c in configs
                    for r in rows
                    if (r["N"], r["M"], r["n"], r["d"], r["backend"], r["form"]) == (*c, be, form)
                ]
                done = [(x, r) for x, r in pts if "step_s" in r]
                label = f"{be} {form}"
                if done:
                    ax_row[0].plot([x for x, _ in done], [r["step_s"] * 1e3 for _, r in done],
                                   ls, color=color, marker="o", label=label)  # fmt: skip
                    ax_row[1].plot([x for x, _ in done], [r["step_ws"] / GB for _, r in done],
                                   ls, color=color, marker="o", label=label)  # fmt: skip
                skipped = [(x, r) for x, r in pts if "step_s" not in r]
                if skipped:
                    ax_row[1].plot([x for x, _ in skipped],
                                   [(r["est_total"] - BASE_BYTES) / GB for _, r in skipped],
                                   "x", color=color, ms=9, label=f"{label} (not run: estimate)")  # fmt: skip
        for ax, ylabel in zip(ax_row, ("step time (ms)", "step working set (GiB)"), strict=True):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(xs_label)
            ax.set_ylabel(ylabel)
            ax.set_title(sweep, fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle("MF training step (loss + gradient + SGD): full-matmul (dense) vs gather MSE")
    fig.tight_layout(rect=(0, 0.04, 1, 0.98))
    return rp.save_figure(fig, out_dir, name, footer)


def _sweep_axis(sweep: str):
    if sweep.startswith("ratings"):
        return "n ratings", lambda N, M, n, d: n
    if sweep.startswith("dimension"):
        return "embedding dimension d", lambda N, M, n, d: d
    if sweep.startswith("MovieLens"):
        return "n ratings (MovieLens shapes)", lambda N, M, n, d: n
    return "N·M (catalog cells)", lambda N, M, n, d: N * M


def report(rows, args: argparse.Namespace) -> str:
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    sw = selected_sweeps(args)
    suffix = "_gpu" if args.device == "gpu" else ""
    footer = stamp() + f" Device: {args.device}. Memory budget {args.mem_budget_gb:g} GB."
    png = plot(rows, sw, args.backends, args.out_dir, f"mse_scaling{suffix}.png", footer)
    cal = calibration(rows)
    parts: list[str] = [
        f"# Full-matmul (dense) vs gather MSE{' on the GPU' if suffix else ''}\n",
        "Matrix factorization (`cfcore.MFSpec(mse=...)`), one loss evaluation (`backend.sparse_mse`) "
        "and one training step (loss + gradient + SGD update, `cfcore.train.make_step`), full "
        "batch, on seeded synthetic ratings with MovieLens-like skew (`cfcore.synthetic_ratings`). "
        "Each row ran in a fresh process; times are medians after the first (compiling) call, "
        "memory is the peak resident size (`VmHWM`): *working set* above the resident size once "
        "data and parameters are in place (compilation included: tens of MB, visible only at the "
        "smallest sizes), *total* above the size after importing the framework (so it adds the data "
        "and the parameters). "
        f"Mode: {mode}; memory budget {args.mem_budget_gb:g} GB; device: {args.device}.\n",
        f"![step time and memory]({png.name})\n",
        "## Crossover\n",
    ]
    for sweep, configs in sw.items():
        for be in args.backends:
            parts.append(f"- {sweep}, {be}: {crossover(rows, be, sweep, configs)}")
    parts.append("")
    for sweep, configs in sw.items():
        parts += [f"## {sweep}\n", table(rows, configs), ""]
    parts += [
        "## Estimated memory at the largest shapes\n",
        "Data + parameters + the step's working set, the latter as a multiple of its leading term "
        "(4·N·M bytes dense: the `[N, M]` product; 4·n·d bytes gather: the gathered rows) measured "
        "per backend on the largest run that fit; where none did, 2× (dense) and 4× (gather):\n",
        rp.md_table(
            ["backend", "form", "measured factor", "on"],
            [[b, f, f"{v:.2f}×", w] for (b, f), (v, w) in sorted(cal.items())],
        )
        if cal
        else "(no run was large enough to calibrate)",
        "",
    ]
    big = [("ml-20m", *MOVIELENS_SHAPES["ml-20m"], 32), ("1M users", *ONE_M_USERS, 32)]
    est_rows = []
    for name, N, M, n, d in big:
        for be in args.backends:
            for form in FORMS:
                est, measured = calibrated_total(be, form, N, M, n, d, cal)
                est_rows.append([name, f"{N:,} × {M:,}", f"{n:,}", d, be, form, rp.fmt_bytes(est),
                                 "measured factor" if measured else "default factor",
                                 "fits" if est <= args.mem_budget_gb * GB else "does not fit"])  # fmt: skip
    parts += [
        rp.md_table(
            [
                "shape",
                "N × M",
                "n",
                "d",
                "backend",
                "form",
                "estimated memory",
                "from",
                f"{args.mem_budget_gb:g} GB budget",
            ],
            est_rows,
        ),  # fmt: skip
        "",
        "The 1M-user case is trained (minibatches) by `benchmarks/scale.py`.\n",
    ]
    if args.device != "gpu":
        parts += [
            "## GPU rows\n",
            "Not measured: no GPU in this session. Run "
            "`python benchmarks/mse_scaling.py --device gpu` on a machine with one "
            "(JAX only; writes `mse_scaling_gpu.md`).\n",
        ]
    parts.append(footer + "\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    rp.add_common_args(p)
    p.add_argument("--backends", nargs="+", default=None, help="default: jax tf (jax on a GPU)")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument(
        "--mem-budget-gb",
        type=float,
        default=None,
        help="skip or stop configurations that need more (default: 60%% of the memory available)",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per configuration")
    p.add_argument(
        "--sweeps",
        nargs="+",
        choices=("movielens", "catalog", "ratings", "dimension"),
        default=None,
        help="run only these sweeps (default: all)",
    )
    rp.add_replot_arg(p)
    args = p.parse_args(argv)
    if args.replot:
        suffix = "_gpu" if args.device == "gpu" else ""
        rows, footer = rp.read_saved(args.out_dir, f"mse_scaling{suffix}")
        backends = args.backends or list(dict.fromkeys(r["backend"] for r in rows))
        name = f"mse_scaling{suffix}.png"
        print("wrote", plot(rows, selected_sweeps(args), backends, args.out_dir, name, footer))
        return
    if args.backends is None:
        args.backends = ["jax"] if args.device == "gpu" else ["jax", "tf"]
    if args.device == "gpu" and args.backends != ["jax"]:
        p.error("--device gpu measures the JAX backend only: pass --backends jax")
    if args.mem_budget_gb is None:
        args.mem_budget_gb = rp.default_budget_gb()
    rows = run_all(args)
    suffix = "_gpu" if args.device == "gpu" else ""
    text = report(rows, args)
    rp.write_json(args.out_dir, f"mse_scaling{suffix}.json", rows)
    print("wrote", rp.write_text(args.out_dir, f"mse_scaling{suffix}.md", text))
    if not any("step_s" in r for r in rows):
        sys.exit("no configuration ran: see the status column of the table")


if __name__ == "__main__":
    main()
