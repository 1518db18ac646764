"""TensorFlow vs JAX on the same specs: compile time, full-batch step time, minibatch throughput.

Both backends run in one process and are timed in alternation (jax, tf, jax, tf, ...), so drift on a
shared machine hits both alike and their ratio is meaningful. Every number goes through cfcore's
trainer (`cfcore.train`): `make_step` (one compiled step called from Python), `make_chunk` (what
`fit` runs: many guarded steps in one compiled loop, full batch or with `[k, B]` minibatch
positions drawn by `cfcore.data.MinibatchSampler`). Clocks stop after a sync (`backend.sync`:
`block_until_ready` / `.numpy()`).

* compile: the first call's time minus the median of the later ones (tracing + XLA compilation).
* full batch: milliseconds per step, from the single step and from the chunked loop (10 steps
  per call, reading the divergence flag after each chunk as `fit` does).
* minibatch: ratings per second through the chunked loop at several batch sizes, the host-side
  index draw and transfer included, as in `fit`.

    python benchmarks/backends.py [--quick | --smoke] [--out-dir DIR] [--device gpu]

Writes `backends.md` and `backends.png` (`backends_gpu.*` with `--device gpu`, JAX only).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

import _report as rp
from _common import DATA_DIR, CfcoreTraining, missing_gpu, stamp

import cfcore
from cfcore._backend import Batch
from cfcore.data import MinibatchSampler
from cfcore.init import init_mf_params
from cfcore.optimizers import SGD, Adagrad

SPECS = {
    "MF gather": cfcore.MFSpec(embedding_dim=32, init_stddev=0.1, mse="gather"),
    "MF dense": cfcore.MFSpec(embedding_dim=32, init_stddev=0.1, mse="dense"),
    "regularized gather": cfcore.MFSpec(
        embedding_dim=32, init_stddev=0.1, regularization_coeff=0.1, gravity_coeff=1.0
    ),
}
FULL_OPT = SGD(1.0)
MINI_OPT = Adagrad(0.1)


class Contender:
    """One timed thing: `run(k)` does k units of work and syncs; `per` converts to a rate."""

    def __init__(self, backend: Any, run, unit: float) -> None:
        self.backend, self.run, self.unit = backend, run, unit
        self.first_s = 0.0
        self.times: list[float] = []


def full_batch(be: Any, spec: cfcore.MFSpec, params, data: Batch, chunked: bool) -> Contender:
    train = CfcoreTraining(be, spec, FULL_OPT, params, data)
    if chunked:

        def run(k: int) -> None:
            for _ in range(max(1, k // 10)):
                train.chunk(10)  # reads the divergence flag after every chunk, as fit does
            train.sync()

        return Contender(be, run, unit=1.0)

    def run_steps(k: int) -> None:
        train.steps(k)
        train.sync()

    return Contender(be, run_steps, unit=1.0)


def minibatch(
    be: Any, spec: cfcore.MFSpec, params, data: Batch, batch_size: int, k: int
) -> Contender:
    train = CfcoreTraining(be, spec, MINI_OPT, params, data)
    sampler = MinibatchSampler(len(data.values), batch_size, seed=0)

    def run(calls: int) -> None:
        for _ in range(calls):
            train.chunk(k, sampler.take(k))
        train.sync()

    return Contender(be, run, unit=float(k * batch_size))


def race(contenders: dict[str, Contender], work: int, repeats: int) -> None:
    """Times every contender `repeats` times, in alternation, after a first (compiling) call."""
    for c in contenders.values():
        t = time.perf_counter()
        c.run(1 if c.unit > 1 else 10)
        c.first_s = time.perf_counter() - t
    for _ in range(repeats):
        for c in contenders.values():
            t = time.perf_counter()
            c.run(work)
            c.times.append((time.perf_counter() - t) / work)


def datasets(mode: str) -> dict[str, cfcore.Ratings]:
    out = {}
    ml = cfcore.datasets.load_movielens("100k", data_dir=DATA_DIR).ratings
    out["ml-100k (90% train)"] = ml.split(0.1, seed=0)[0]
    if mode == "full":
        n_users, n_items, n = cfcore.MOVIELENS_SHAPES["ml-1m"]
        out["synthetic ml-1m shape"] = cfcore.synthetic_ratings(n_users, n_items, n, seed=0)
    return out


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    repeats = {"smoke": 1, "quick": 3, "full": 5}[mode]
    base_steps = {"smoke": 10, "quick": 20, "full": 30}[mode]
    specs = SPECS if mode != "smoke" else {"MF gather": SPECS["MF gather"]}
    backends = {name: _load(name) for name in args.backends}
    rows = []
    for data_name, ratings in datasets(mode).items():
        data = Batch.from_ratings(ratings)
        # About 100k ratings' worth of full-batch steps per repeat: a few steps on larger data.
        steps = max(5, min(base_steps, base_steps * 100_000 // len(ratings)))
        for spec_name, spec in specs.items():
            params = init_mf_params(spec, ratings.num_users, ratings.num_items, seed=0)
            for how in ("single step", "fit loop (chunks of 10)"):
                cs = {
                    b: full_batch(be, spec, params, data, chunked=how != "single step")
                    for b, be in backends.items()
                }
                race(cs, steps, repeats)
                for b, c in cs.items():
                    ms = statistics.median(c.times) * 1e3
                    rows.append(dict(data=data_name, spec=spec_name, kind="full batch", how=how,
                                     backend=b, ms=ms, first_s=c.first_s,
                                     compile_s=max(0.0, c.first_s - 10 * ms / 1e3)))  # fmt: skip
                    print(f"{data_name:24} {spec_name:18} full {how:24} {b:4} {ms:8.2f} ms/step"
                          f"  compile {rows[-1]['compile_s']:.2f} s", flush=True)  # fmt: skip
            if spec.mse == "dense":
                continue  # minibatches of a dense spec still form all of U·Vᵀ: not a use case
            sizes = [b for b in args.batch_sizes if b <= len(ratings)]
            for bs in sizes:
                k = max(2, min(100, 2_000_000 // bs)) if mode != "smoke" else 2
                cs = {b: minibatch(be, spec, params, data, bs, k) for b, be in backends.items()}
                race(cs, 1, repeats)
                for b, c in cs.items():
                    per_call = statistics.median(c.times)
                    rate = c.unit / per_call
                    compile_s = max(0.0, c.first_s - per_call)
                    rows.append(dict(data=data_name, spec=spec_name, kind="minibatch",
                                     how=f"batch {bs:,} ({k} steps per chunk)", backend=b,
                                     batch=bs, rate=rate, ms=per_call / k * 1e3,
                                     first_s=c.first_s, compile_s=compile_s))  # fmt: skip
                    print(f"{data_name:24} {spec_name:18} batch {bs:>7,} {b:4} "
                          f"{rate / 1e6:8.2f} M ratings/s  compile {compile_s:.2f} s",
                          flush=True)  # fmt: skip
    return rows


def _load(name: str) -> Any:
    be = cfcore.get_backend(name)
    if name == "tf":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)
    return be


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    suffix = "_gpu" if args.device == "gpu" else ""
    footer = stamp() + f" Device: {args.device}."
    backends = args.backends
    # One line per configuration, the backends side by side.
    keys: list[tuple] = []
    for r in rows:
        key = (r["data"], r["spec"], r["kind"], r["how"])
        if key not in keys:
            keys.append(key)

    def cell(key, b, field, fmt):
        for r in rows:
            if (r["data"], r["spec"], r["kind"], r["how"], r["backend"]) == (*key, b):
                return fmt(r[field])
        return ""

    full_rows, mini_rows = [], []
    for key in keys:
        base = list(key[:2]) + [key[3]]
        if key[2] == "full batch":
            ms = [cell(key, b, "ms", lambda v: f"{v:.2f}") for b in backends]
            comp = [cell(key, b, "compile_s", lambda v: f"{v:.2f}") for b in backends]
            ratio = _ratio(rows, key, backends, "ms")
            full_rows.append(base + ms + comp + [ratio])
        else:
            rate = [cell(key, b, "rate", lambda v: f"{v / 1e6:.2f}") for b in backends]
            comp = [cell(key, b, "compile_s", lambda v: f"{v:.2f}") for b in backends]
            ratio = _ratio(rows, key, backends, "rate", invert=True)
            mini_rows.append(base + rate + comp + [ratio])
    ratio_name = "tf / jax time" if backends == ["jax", "tf"] else "ratio"
    png = plot(rows, backends, args, f"backends{suffix}.png", footer)
    parts = [
        f"# TensorFlow vs JAX{' on the GPU' if suffix else ''}: the same specs, side by side\n",
        "Contenders timed in alternation in one process (median of "
        f"{'1' if args.smoke else '3' if args.quick else '5'} repeats). d = 32. Full batch: SGD; "
        "minibatch: Adagrad (lr 0.1), positions drawn by `MinibatchSampler` on the host and sent "
        "with each chunk, as `fit` does. Compile = first call − a steady call.\n",
        f"![backends]({png.name})\n",
        "## Full-batch step (ms / step)\n",
        rp.md_table(
            ["data", "spec", "how"]
            + [f"{b} ms" for b in backends]
            + [f"{b} compile s" for b in backends]
            + [ratio_name],
            full_rows,
        ),
        "",
        "## Minibatch throughput (million ratings / s)\n",
        rp.md_table(
            ["data", "spec", "batches"]
            + [f"{b} M ratings/s" for b in backends]
            + [f"{b} compile s" for b in backends]
            + [ratio_name],
            mini_rows,
        ),
        "",
    ]
    if args.device != "gpu":
        parts += [
            "## GPU rows\n",
            "Not measured: no GPU in this session. `python benchmarks/backends.py --device gpu "
            "--backends jax` measures JAX there (the TensorFlow wheel here has no CUDA).\n",
        ]
    parts.append(footer + "\n")
    return "\n".join(parts)


def _ratio(rows, key, backends, field, invert=False) -> str:
    if backends != ["jax", "tf"]:
        return ""
    v = {}
    for r in rows:
        if (r["data"], r["spec"], r["kind"], r["how"]) == key:
            v[r["backend"]] = r[field]
    if "jax" not in v or "tf" not in v:
        return ""
    ratio = v["jax"] / v["tf"] if invert else v["tf"] / v["jax"]
    return f"{ratio:.2f}"


def plot(rows, backends, args, name: str, footer: str):
    plt = rp.pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    full = [r for r in rows if r["kind"] == "full batch" and r["how"] != "single step"]
    labels = []
    for r in full:
        lab = f"{r['data'].split(' (')[0]}\n{r['spec']}"
        if lab not in labels:
            labels.append(lab)
    width = 0.8 / max(1, len(backends))
    for i, b in enumerate(backends):
        ys = []
        for lab in labels:
            match = [r["ms"] for r in full
                     if r["backend"] == b and f"{r['data'].split(' (')[0]}\n{r['spec']}" == lab]  # fmt: skip
            ys.append(match[0] if match else 0)
        ax1.bar([x + i * width for x in range(len(labels))], ys, width, label=b, color=rp.color(b))
    ax1.set_xticks([x + width * (len(backends) - 1) / 2 for x in range(len(labels))])
    ax1.set_xticklabels(labels, fontsize=7)
    ax1.set_ylabel("ms per full-batch step (fit loop)")
    ax1.legend()
    ax1.set_title("full-batch step", fontsize=10)
    mini = [r for r in rows if r["kind"] == "minibatch"]
    # Colour: the backend (cfcore.viz's palette); line style: the data set and spec.
    combos = list(dict.fromkeys((r["data"], r["spec"]) for r in mini))
    styles = {c: ("-", "--", ":", "-.")[i % 4] for i, c in enumerate(combos)}
    for b in backends:
        for data in dict.fromkeys(r["data"] for r in mini):
            for spec in dict.fromkeys(r["spec"] for r in mini):
                pts = sorted((r["batch"], r["rate"]) for r in mini
                             if (r["backend"], r["data"], r["spec"]) == (b, data, spec))  # fmt: skip
                if pts:
                    ax2.plot([p[0] for p in pts], [p[1] / 1e6 for p in pts], marker="o",
                             ls=styles[(data, spec)], color=rp.color(b),
                             label=f"{b}: {data.split(' (')[0]}, {spec}")  # fmt: skip
    ax2.set_xscale("log")
    ax2.set_xlabel("batch size (ratings)")
    ax2.set_ylabel("million ratings / s")
    ax2.set_title("minibatch throughput (fit loop)", fontsize=10)
    ax2.legend(fontsize=7)
    ax2.grid(True, which="both", alpha=0.3)
    fig.suptitle("cfcore: TensorFlow vs JAX on the same specs")
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    return rp.save_figure(fig, args.out_dir, name, footer)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    rp.add_common_args(p)
    p.add_argument("--backends", nargs="+", default=None, help="default: jax tf (jax on a GPU)")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=None)
    rp.add_replot_arg(p)
    args = p.parse_args(argv)
    if args.replot:
        suffix = "_gpu" if args.device == "gpu" else ""
        rows, footer = rp.read_saved(args.out_dir, f"backends{suffix}")
        backends = list(dict.fromkeys(r["backend"] for r in rows))
        print("wrote", plot(rows, backends, args, f"backends{suffix}.png", footer))
        return
    if args.backends is None:
        args.backends = ["jax"] if args.device == "gpu" else ["jax", "tf"]
    if args.batch_sizes is None:
        args.batch_sizes = [1_000] if args.smoke else [1_000, 10_000, 100_000]
    # The accelerator is chosen before either framework is imported.
    os.environ.update(rp.cpu_env(args.device))
    if (reason := missing_gpu(args.device)) is not None:
        sys.exit(f"--device gpu: {reason}")
    rows = run_all(args)
    suffix = "_gpu" if args.device == "gpu" else ""
    rp.write_json(args.out_dir, f"backends{suffix}.json", rows)
    print("wrote", rp.write_text(args.out_dir, f"backends{suffix}.md", report(rows, args)))


if __name__ == "__main__":
    main()
