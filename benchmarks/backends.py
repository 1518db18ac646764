"""TensorFlow vs JAX vs PyTorch on the same specs: compile time, full-batch step, minibatch
throughput, and the gather path at 1M and 20M ratings.

The backends run in one process and are timed in alternation (jax, tf, torch, jax, ...), so drift
on a shared machine hits them alike and their ratios are meaningful. Every number goes through
cfcore's trainer (`cfcore.train`): `make_step` (one compiled step called from Python), `make_chunk`
(what `fit` runs: many guarded steps in one compiled loop, full batch or with `[k, B]` minibatch
positions drawn by `cfcore.data.MinibatchSampler`). Full-batch gather steps get the backend's
pair layout as `fit` gives it (`Backend.pair_layout`: JAX's segment-layout kernel on the CPU).
Clocks stop after a sync (`backend.sync`: `block_until_ready` / `.numpy()`).

* compile: the first call's time minus the median of the later ones (tracing + XLA compilation).
* full batch: milliseconds per step, from the single step and from the chunked loop (10 steps
  per call, reading the divergence flag after each chunk as `fit` does).
* minibatch: ratings per second through the chunked loop at several batch sizes, the host-side
  index draw and transfer included, as in `fit`.
* gather path at scale (`--sizes`, synthetic ids at ML-1M and ML-20M shape, d = 32): per backend
  and JAX kernel ("jax-segment": the segment layout; "jax-gather": the plain gathers), the compiled
  gather loss (forward only) and the full-batch `fit` step (a compiled chunk of guarded SGD steps),
  their ratios to TensorFlow, the time to build JAX's layout; the dense form where its `[N, M]`
  product fits in memory.

    python benchmarks/backends.py [--quick | --smoke] [--out DIR] [--device auto|cpu|gpu]
        [--backends jax,tf,torch] [--sizes 1m,20m] [--parts specs,scale]

Backends that are not installed are skipped (so are the ml-100k rows without the MovieLens
files). `--device auto` (the default) leaves each framework on its default device (a GPU when it
sees one); the devices used are printed in the machine line. Writes `backends.md`, `.json` and
`.png` (`backends_gpu.*` when a backend ran on a GPU).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import _report as rp
from _common import DATA_DIR, CfcoreTraining, missing_gpu, stamp
from _mem import GB, run_isolated

import cfcore
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
ALL_BACKENDS = ("jax", "tf", "torch")
#: The gather path at scale: (users, items, ratings) of synthetic ids.
SIZES = {
    "tiny": (2_000, 500, 50_000),
    "1m": (6_040, 3_706, 1_000_209),
    "20m": (138_493, 26_744, 20_000_263),
}
#: Repeats and steps per timed chunk of the scale section, per size.
SCALE_RUNS = {"tiny": (2, 3), "1m": (5, 5), "20m": (2, 2)}
#: Above this many ratings each scale contender runs alone in a fresh process.
ISOLATE_ABOVE = 5_000_000
SCRIPT = Path(__file__).resolve()


class Contender:
    """One timed thing: `run(k)` does k units of work and syncs; `per` converts to a rate."""

    def __init__(self, backend: Any, run, unit: float) -> None:
        self.backend, self.run, self.unit = backend, run, unit
        self.first_s = 0.0
        self.times: list[float] = []


def full_batch(be: Any, spec: cfcore.MFSpec, params, data, chunked: bool) -> Contender:
    # The pair layout as `fit` builds it for full-batch gather steps (one per training set).
    train = CfcoreTraining(be, spec, FULL_OPT, params, data, pair_layout=chunked)
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


def minibatch(be: Any, spec: cfcore.MFSpec, params, data, batch_size: int, k: int) -> Contender:
    train = CfcoreTraining(be, spec, MINI_OPT, params, data)
    sampler = MinibatchSampler(len(data.values), batch_size, seed=0)

    def run(calls: int) -> None:
        for _ in range(calls):
            train.chunk(k, sampler.take(k))
        train.sync()

    return Contender(be, run, unit=float(k * batch_size))


def race(contenders: dict[str, Contender], work: int, repeats: int, first: int | None = None):
    """Times every contender `repeats` times, in alternation, after a first (compiling) call."""
    for c in contenders.values():
        t = time.perf_counter()
        c.run(first if first is not None else 1 if c.unit > 1 else 10)
        c.first_s = time.perf_counter() - t
    for _ in range(repeats):
        for c in contenders.values():
            t = time.perf_counter()
            c.run(work)
            c.times.append((time.perf_counter() - t) / work)


def datasets(mode: str) -> dict[str, cfcore.Ratings]:
    out = {}
    if (Path(DATA_DIR) / "ml-100k" / "u.data").exists():
        ml = cfcore.datasets.load_movielens("100k", data_dir=DATA_DIR).ratings
        out["ml-100k (90% train)"] = ml.split(0.1, seed=0)[0]
    else:
        print(f"ml-100k not found under {DATA_DIR}: its rows are skipped", flush=True)
    if mode == "full":
        n_users, n_items, n = cfcore.MOVIELENS_SHAPES["ml-1m"]
        out["synthetic ml-1m shape"] = cfcore.synthetic_ratings(n_users, n_items, n, seed=0)
    elif mode == "smoke" and not out:
        out["synthetic tiny"] = cfcore.synthetic_ratings(*SIZES["tiny"], seed=0)
    return out


def spec_rows(args: argparse.Namespace, backends: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-spec tables: full-batch step and minibatch throughput, backends side by side."""
    mode = args.mode
    repeats = {"smoke": 1, "quick": 3, "full": 5}[mode]
    base_steps = {"smoke": 10, "quick": 20, "full": 30}[mode]
    specs = SPECS if mode != "smoke" else {"MF gather": SPECS["MF gather"]}
    rows = []
    for data_name, ratings in datasets(mode).items():
        # About 100k ratings' worth of full-batch steps per repeat: a few steps on larger data.
        steps = max(5, min(base_steps, base_steps * 100_000 // len(ratings)))
        for spec_name, spec in specs.items():
            params = init_mf_params(spec, ratings.num_users, ratings.num_items, seed=0)
            for how in ("single step", "fit loop (chunks of 10)"):
                cs = {
                    b: full_batch(be, spec, params, ratings, chunked=how != "single step")
                    for b, be in backends.items()
                }
                race(cs, steps, repeats)
                for b, c in cs.items():
                    ms = statistics.median(c.times) * 1e3
                    rows.append(dict(data=data_name, spec=spec_name, kind="full batch", how=how,
                                     backend=b, ms=ms, first_s=c.first_s,
                                     compile_s=max(0.0, c.first_s - 10 * ms / 1e3)))  # fmt: skip
                    print(f"{data_name:24} {spec_name:18} full {how:24} {b:5} {ms:8.2f} ms/step"
                          f"  compile {rows[-1]['compile_s']:.2f} s", flush=True)  # fmt: skip
            if spec.mse == "dense":
                continue  # minibatches of a dense spec still form all of U·Vᵀ: not a use case
            sizes = [b for b in args.batch_sizes if b <= len(ratings)]
            for bs in sizes:
                k = max(2, min(100, 2_000_000 // bs)) if mode != "smoke" else 2
                cs = {b: minibatch(be, spec, params, ratings, bs, k) for b, be in backends.items()}
                race(cs, 1, repeats)
                for b, c in cs.items():
                    per_call = statistics.median(c.times)
                    rate = c.unit / per_call
                    compile_s = max(0.0, c.first_s - per_call)
                    rows.append(dict(data=data_name, spec=spec_name, kind="minibatch",
                                     how=f"batch {bs:,} ({k} steps per chunk)", backend=b,
                                     batch=bs, rate=rate, ms=per_call / k * 1e3,
                                     first_s=c.first_s, compile_s=compile_s))  # fmt: skip
                    print(f"{data_name:24} {spec_name:18} batch {bs:>7,} {b:5} "
                          f"{rate / 1e6:8.2f} M ratings/s  compile {compile_s:.2f} s",
                          flush=True)  # fmt: skip
    return rows


# ------------------------------------------------------------------------------ gather at scale


def scale_contenders(backends: dict[str, Any], form: str) -> dict[str, Any]:
    """The scale section's contenders: for the gather form JAX once per gather kernel
    ("jax-segment", "jax-gather"), the others as they are."""
    out = {}
    for name, be in backends.items():
        if name != "jax" or form != "gather":
            out[name] = be
            continue
        from cfcore_jax import JaxBackend

        for kernel in ("segment", "gather"):
            out[f"jax-{kernel}"] = cfcore.get_backend(JaxBackend(kernel))
    return out


def dense_fits(num_users: int, num_items: int) -> tuple[bool, float]:
    """Whether a dense step may run: three `[N, M]` float32 arrays (product, its gradient, one
    temporary) within half the memory available now."""
    need = 3 * 4.0 * num_users * num_items
    return need <= 0.5 * rp.available_bytes(), need


def scale_rows(args: argparse.Namespace, backends: dict[str, Any]) -> list[dict[str, Any]]:
    """Forward loss and full-batch `fit` step of the gather (and dense) form at `args.sizes`.

    Up to `ISOLATE_ABOVE` ratings the contenders share this process and run in alternation;
    above it each runs alone in a fresh process under the memory budget (`_mem.run_isolated`),
    so that one contender's peak (JAX's plain gathers hold `[n, d]` blocks: gigabytes at 20M)
    neither adds to another's nor takes the shared machine down.
    """
    rows: list[dict[str, Any]] = []
    default_kernel = backends["jax"].ops.gather_kernel() if "jax" in backends else None
    for size in args.sizes:
        num_users, num_items, n = SIZES[size]
        repeats, k = SCALE_RUNS[size]
        if args.mode == "smoke":
            repeats, k = 1, 2
        data_name = f"{size}: {n:,} ratings ({num_users:,} x {num_items:,})"
        forms = ["gather"]
        ok, need = dense_fits(num_users, num_items)
        if ok:
            forms.append("dense")
        else:
            rows.append(dict(data=data_name, kind="scale", form="dense", backend="all",
                             skipped=f"not run: three [N, M] float32 arrays need "
                                     f"{rp.fmt_bytes(need)}, over half the memory available"))  # fmt: skip
        isolate = n > args.isolate_above
        for form in forms:
            # "device" picks the child's memory meter: host RSS, or the GPU's allocator.
            device = "gpu" if args.suffix else "cpu"
            cfg = dict(size=size, form=form, repeats=repeats, k=k, device=device)
            names = list(scale_contenders(backends, form))
            if isolate:
                measured = {b: _isolated(args, dict(cfg, backend=b)) for b in names}
            else:
                measured = scale_measure(cfg, scale_contenders(backends, form))
            for b in names:
                row = dict(data=data_name, kind="scale", form=form, backend=b, n=n,
                           repeats=repeats, steps_per_chunk=k, isolated=isolate,
                           default=b == f"jax-{default_kernel}", **measured[b])  # fmt: skip
                rows.append(row)
                if "skipped" in row:
                    print(f"{data_name:42} {form:6} {b:12} {row['skipped']}", flush=True)
                    continue
                print(f"{data_name:42} {form:6} {b:12} forward {row['fwd_ms']:9.1f} ms  "
                      f"step {row['step_ms']:9.1f} ms  data+layout {row['data_s']:.2f} s"
                      + (f"  step peak {rp.fmt_bytes(row['step_ws'])}" if isolate else ""),
                      flush=True)  # fmt: skip
            if form == "gather" and "jax" in backends:
                rows.append(_layout_timing(data_name, size, repeats))
            gc.collect()
    return rows


def _peak_above_setup(name: str, meter: Any) -> int | None:
    """Peak memory above the size once data, parameters and layout are in place: host RSS on
    the CPU; on a GPU the framework's own allocator peak (JAX's through the meter, torch's), None
    for TensorFlow there."""
    if meter.device != "gpu":
        return max(0, meter.peak() - meter.marks["setup"])
    if name.startswith("jax"):
        return max(0, meter.peak() - meter.marks["setup"])
    if name == "torch":
        import torch

        return int(torch.cuda.max_memory_allocated())
    return None


def _isolated(args: argparse.Namespace, cfg: dict[str, Any]) -> dict[str, Any]:
    """`scale_child` in a fresh process: its numbers, or why there are none."""
    env = rp.cpu_env(args.device) if args.device != "auto" else None
    rec = run_isolated(SCRIPT, "scale_child", cfg, budget_bytes=int(args.mem_budget_gb * GB),
                       timeout_s=args.timeout, env=env)  # fmt: skip
    if not rec.ok or rec.result is None:
        return {"skipped": f"{rec.status}: {rec.message}"}
    out = dict(rec.result)
    out.pop("marks", None)
    return out


def scale_child(cfg: dict[str, Any], meter: Any) -> dict[str, Any]:
    """Child process: one contender of the scale section, with its peak memory."""
    name = cfg["backend"]
    base = name.split("-")[0]
    _load(base)
    be = scale_contenders({base: cfcore.get_backend(base)}, cfg["form"])[name]
    meter.mark("imports")
    result = scale_measure(cfg, {name: be}, meter)[name]
    return result


def scale_measure(
    cfg: dict[str, Any], contenders: dict[str, Any], meter: Any = None
) -> dict[str, dict[str, Any]]:
    """Times the compiled loss and `fit`'s step for each contender, in alternation."""
    from cfcore.maths import objectives as losses

    num_users, num_items, n = SIZES[cfg["size"]]
    repeats, k = cfg["repeats"], cfg["k"]
    ratings = cfcore.synthetic_ratings(num_users, num_items, n, seed=0)
    spec = cfcore.MFSpec(embedding_dim=32, init_stddev=0.1, mse=cfg["form"])
    params = init_mf_params(spec, num_users, num_items, seed=0)
    data_s: dict[str, float] = {}
    fwd: dict[str, Contender] = {}
    step: dict[str, Contender] = {}
    for b, be in contenders.items():
        t = time.perf_counter()
        train = CfcoreTraining(be, spec, FULL_OPT, params, ratings, pair_layout=True)
        be.sync(train.data)
        data_s[b] = time.perf_counter() - t
        fwd[b] = _forward(be, spec, train, losses)
        step[b] = _fit_step(be, train, k)
    del ratings
    gc.collect()
    if meter is not None:
        meter.mark("setup")
    race(fwd, 1, repeats, first=1)
    race(step, 1, repeats, first=1)
    out = {}
    for b in contenders:
        out[b] = dict(
            fwd_ms=statistics.median(fwd[b].times) * 1e3,
            fwd_first_s=fwd[b].first_s,
            step_ms=statistics.median(step[b].times) / k * 1e3,
            step_first_s=step[b].first_s,
            data_s=data_s[b],
        )
        if meter is not None:
            out[b]["step_ws"] = _peak_above_setup(b, meter)
    return out


def _forward(be: Any, spec: cfcore.MFSpec, train: CfcoreTraining, losses: Any) -> Contender:
    """The compiled MSE of the training pairs (`sparse_mse`, with the layout where there is one)."""
    data = train.data
    args = [train.params["user"], train.params["item"], data["users"], data["items"]]
    args += [data["values"]]
    method = spec.mse
    if "layout" in data:
        fn = be.compile(lambda u, v, us, it, r, lay: losses.sparse_mse(be, u, v, us, it, r,
                                                                       method, lay))  # fmt: skip
        args.append(data["layout"])
    else:
        fn = be.compile(lambda u, v, us, it, r: losses.sparse_mse(be, u, v, us, it, r, method))

    def run(k: int) -> None:
        for _ in range(k):
            out = fn(*args)
        be.sync(out)

    return Contender(be, run, unit=1.0)


def _fit_step(be: Any, train: CfcoreTraining, k: int) -> Contender:
    """`fit`'s compiled chunk of `k` guarded SGD steps (the flag read after it); per step."""

    def run(calls: int) -> None:
        for _ in range(calls):
            train.chunk(k)
        train.sync()

    return Contender(be, run, unit=1.0)


def _layout_timing(data_name: str, size: str, repeats: int) -> dict[str, Any]:
    """`make_pair_layout` alone (NumPy, on the host): median of `repeats` runs."""
    from cfcore_jax.pair_kernel import make_pair_layout

    ratings = cfcore.synthetic_ratings(*SIZES[size], seed=0)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        make_pair_layout(ratings.users, ratings.items, ratings.num_users, ratings.num_items)
        times.append(time.perf_counter() - t)
    s = statistics.median(times)
    print(f"{data_name:42} make_pair_layout {s:.2f} s", flush=True)
    return dict(data=data_name, kind="layout", backend="jax", layout_s=s, repeats=repeats)


# ------------------------------------------------------------------------------ report


def _load(name: str) -> Any:
    be = cfcore.get_backend(name)
    if name == "tf":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)
    return be


def device_names(backends: dict[str, Any]) -> dict[str, str]:
    """The device each backend computes on: its framework's default."""
    out = {}
    for name in backends:
        if name == "jax":
            import jax

            d = jax.devices()[0]
            out[name] = f"{d.platform} ({d.device_kind})"
        elif name == "tf":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                out[name] = f"gpu ({details.get('device_name', gpus[0].name)})"
            else:
                out[name] = "cpu"
        elif name == "torch":
            import torch

            cuda = torch.cuda.is_available()
            out[name] = f"gpu ({torch.cuda.get_device_name(0)})" if cuda else "cpu"
        else:
            out[name] = "default"
    return out


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    footer = stamp() + " Devices: " + ", ".join(f"{b}: {d}" for b, d in args.devices.items()) + "."
    backends = list(args.backends)
    keys: list[tuple] = []
    for r in rows:
        if r["kind"] in ("full batch", "minibatch"):
            key = (r["data"], r["spec"], r["kind"], r["how"])
            if key not in keys:
                keys.append(key)

    def cell(key, b, field, fmt):
        for r in rows:
            if r["kind"] in ("full batch", "minibatch") and (
                r["data"],
                r["spec"],
                r["kind"],
                r["how"],
                r["backend"],
            ) == (*key, b):
                return fmt(r[field])
        return ""

    full_rows, mini_rows = [], []
    for key in keys:
        base = list(key[:2]) + [key[3]]
        if key[2] == "full batch":
            ms = [cell(key, b, "ms", lambda v: f"{v:.2f}") for b in backends]
            comp = [cell(key, b, "compile_s", lambda v: f"{v:.2f}") for b in backends]
            full_rows.append(base + ms + comp + [_ratio(rows, key, "ms")])
        else:
            rate = [cell(key, b, "rate", lambda v: f"{v / 1e6:.2f}") for b in backends]
            comp = [cell(key, b, "compile_s", lambda v: f"{v:.2f}") for b in backends]
            mini_rows.append(base + rate + comp + [_ratio(rows, key, "rate", invert=True)])
    png = plot(rows, backends, args, f"backends{args.suffix}.png", footer)
    repeats = {"smoke": 1, "quick": 3, "full": 5}[args.mode]
    names = " vs ".join({"jax": "JAX", "tf": "TensorFlow", "torch": "PyTorch"}.get(b, b)
                        for b in backends)  # fmt: skip
    parts = [
        f"# {names}{' on the GPU' if args.suffix else ''}: the same specs, side by side\n",
        f"Contenders timed in alternation in one process (median of {repeats} repeats). d = 32. "
        "Full batch: SGD (the fit loop's gather steps with the backend's pair layout, as `fit` "
        "runs them; the single step without); minibatch: Adagrad (lr 0.1), positions drawn by "
        "`MinibatchSampler` on the host and sent with each chunk, as `fit` does. Compile = first "
        "call − a steady call.\n",
        f"![backends]({png.name})\n",
    ]
    if full_rows or mini_rows:
        parts += [
            "## Full-batch step (ms / step)\n",
            rp.md_table(
                ["data", "spec", "how"]
                + [f"{b} ms" for b in backends]
                + [f"{b} compile s" for b in backends]
                + ["tf / jax time"],
                full_rows,
            ),
            "",
            "## Minibatch throughput (million ratings / s)\n",
            rp.md_table(
                ["data", "spec", "batches"]
                + [f"{b} M ratings/s" for b in backends]
                + [f"{b} compile s" for b in backends]
                + ["tf / jax time"],
                mini_rows,
            ),
            "",
        ]
    parts += scale_report(rows, args.isolate_above)
    if not args.suffix:
        parts += [
            "## GPU rows\n",
            "Not measured here (no GPU in this session). On a machine with one, "
            "`python benchmarks/backends.py` runs each framework on its default device (the GPU) "
            "and writes `backends_gpu.*`; `--backends jax,torch` leaves out a TensorFlow without "
            "CUDA.\n",
        ]
    parts.append(footer + "\n")
    return "\n".join(parts)


def scale_report(rows: list[dict[str, Any]], isolate_above: int) -> list[str]:
    scale = [r for r in rows if r["kind"] == "scale" and "skipped" not in r]
    if not scale:
        return []
    table = []
    for r in scale:
        tf = next((x for x in scale if (x["data"], x["form"], x["backend"]) ==
                   (r["data"], r["form"], "tf")), None)  # fmt: skip
        table.append([
            r["data"], r["form"], r["backend"] + (" (default)" if r.get("default") else ""),
            f"{r['fwd_ms']:.1f}", f"{r['fwd_ms'] / tf['fwd_ms']:.2f}" if tf else "",
            f"{r['step_ms']:.1f}", f"{r['step_ms'] / tf['step_ms']:.2f}" if tf else "",
            f"{r['fwd_first_s']:.2f}", f"{r['step_first_s']:.2f}", f"{r['data_s']:.2f}",
            rp.fmt_bytes(r.get("step_ws")),
        ])  # fmt: skip
    headers = ["data", "form", "backend", "forward ms", "/ tf", "fit step ms", "/ tf",
               "forward first call s", "step first call s", "data s", "step peak"]  # fmt: skip
    out = [
        "## The gather path at scale (synthetic ids, d = 32)\n",
        "*forward*: the compiled MSE of all training pairs (`sparse_mse`; JAX's segment kernel "
        "with its layout). *fit step*: `fit`'s compiled chunk of guarded full-batch SGD steps, "
        "the divergence flag read after each chunk, per step. */ tf*: time relative to "
        "TensorFlow's (below 1: faster). *first call*: compile + one run. *data s*: putting the "
        "ratings on the device, JAX's pair layout included. jax-segment / jax-gather: the JAX "
        "backend with each gather kernel (`CFCORE_JAX_PAIR_KERNEL`); (default) marks the one it "
        "picks on this device. Medians of repeats (counts in the JSON). Up to "
        f"{isolate_above:,} ratings the contenders share one process and alternate; above, each "
        "runs alone in a fresh process under the memory budget (drift between those runs is "
        "not evened out), and *step peak* is its resident peak above the data, parameters and "
        "layout.\n",
        rp.md_table(headers, table),
        "",
    ]
    for r in rows:
        if r["kind"] == "layout":
            out.append(f"- `make_pair_layout` at {r['data']}: {r['layout_s']:.2f} s (median of "
                       f"{r['repeats']}; NumPy on the host, once per training set).")  # fmt: skip
        elif r["kind"] == "scale" and "skipped" in r:
            out.append(f"- {r['data']}, {r['form']} form, {r['backend']}: {r['skipped']}.")
    out.append("")
    return out


def _ratio(rows, key, field, invert=False) -> str:
    v = {}
    for r in rows:
        if (
            r["kind"] in ("full batch", "minibatch")
            and (r["data"], r["spec"], r["kind"], r["how"]) == key
        ):
            v[r["backend"]] = r[field]
    if "jax" not in v or "tf" not in v:
        return ""
    ratio = v["jax"] / v["tf"] if invert else v["tf"] / v["jax"]
    return f"{ratio:.2f}"


def plot(rows, backends, args, name: str, footer: str):
    plt = rp.pyplot()
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(19, 4.8))
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
    if mini:
        ax2.legend(fontsize=6)
    ax2.grid(True, which="both", alpha=0.3)
    scale = [r for r in rows if r["kind"] == "scale" and "skipped" not in r]
    groups = list(dict.fromkeys((r["data"].split(":")[0], r["form"]) for r in scale))
    who = list(dict.fromkeys(r["backend"] for r in scale))
    width = 0.8 / max(1, len(who))
    for i, b in enumerate(who):
        ys = []
        for g in groups:
            match = [r["step_ms"] for r in scale
                     if (r["data"].split(":")[0], r["form"], r["backend"]) == (*g, b)]  # fmt: skip
            ys.append(match[0] if match else 0)
        ax3.bar([x + i * width for x in range(len(groups))], ys, width, label=b, color=rp.color(b))
    ax3.set_xticks([x + width * (len(who) - 1) / 2 for x in range(len(groups))])
    ax3.set_xticklabels([f"{g[0]} ratings\n{g[1]}" for g in groups], fontsize=8)
    ax3.set_yscale("log")
    ax3.set_ylabel("ms per full-batch fit step (log)")
    ax3.set_title("gather path at scale: fit step", fontsize=10)
    if scale:
        ax3.legend(fontsize=7)
    fig.suptitle("cfcore: the backends on the same specs")
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    return rp.save_figure(fig, args.out_dir, name, footer)


def _names(values: list[str] | None, default: tuple[str, ...]) -> list[str]:
    """`["jax,tf", "torch"]` or `["jax", "tf"]` -> `["jax", "tf", "torch"]`."""
    if not values:
        return list(default)
    return [v for item in values for v in item.split(",") if v]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    rp.add_common_args(p)
    p.add_argument("--out", dest="out_dir", type=Path, help="same as --out-dir")
    p.add_argument("--backends", nargs="+", default=None,
                   help="default: every installed one of jax, tf, torch")  # fmt: skip
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                   help="auto: each framework's default device; cpu: hide GPUs; "
                        "gpu: require JAX to see one")  # fmt: skip
    p.add_argument("--sizes", nargs="+", default=None,
                   help=f"sizes of the scale section, of {', '.join(SIZES)} "
                        "(default 1m,20m; quick 1m; smoke tiny)")  # fmt: skip
    p.add_argument("--parts", nargs="+", default=None, help="specs, scale (default both)")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=None)
    p.add_argument("--mem-budget-gb", type=float, default=None,
                   help="memory limit of an isolated scale run (default: 60%% of what is "
                        "available at the start)")  # fmt: skip
    p.add_argument("--timeout", type=float, default=1800, help="seconds per isolated scale run")
    p.add_argument("--isolate-above", type=int, default=ISOLATE_ABOVE,
                   help="scale sizes with more ratings run each contender in its own process")  # fmt: skip
    rp.add_replot_arg(p)
    args = p.parse_args(argv)
    if args.replot:
        for suffix in ("", "_gpu"):
            if (args.out_dir / f"backends{suffix}.json").is_file() or not suffix:
                break
        saved, footer = rp.read_saved(args.out_dir, f"backends{suffix}")
        rows = saved["rows"] if isinstance(saved, dict) else saved
        backends = list(
            dict.fromkeys(r["backend"] for r in rows if r["kind"] in ("full batch", "minibatch"))
        )
        print("wrote", plot(rows, backends, args, f"backends{suffix}.png", footer))
        return
    if args.mem_budget_gb is None:
        args.mem_budget_gb = rp.default_budget_gb()
    args.mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    default_sizes = {"smoke": ("tiny",), "quick": ("1m",), "full": ("1m", "20m")}[args.mode]
    args.sizes = _names(args.sizes, default_sizes)
    args.parts = _names(args.parts, ("specs", "scale"))
    for what, got, valid in (("--sizes", args.sizes, SIZES), ("--parts", args.parts,
                                                                ("specs", "scale"))):  # fmt: skip
        bad = [v for v in got if v not in valid]
        if bad:
            p.error(f"{what}: unknown {bad}; expected some of {', '.join(valid)}")
    if args.batch_sizes is None:
        args.batch_sizes = [1_000] if args.smoke else [1_000, 10_000, 100_000]
    # The accelerator is chosen before any framework is imported.
    if args.device != "auto":
        os.environ.update(rp.cpu_env(args.device))
    if (reason := missing_gpu(args.device)) is not None:
        sys.exit(f"--device gpu: {reason}")
    wanted = _names(args.backends, ALL_BACKENDS)
    available = set(cfcore.available_backends())
    for name in wanted:
        if name not in available:
            print(f"backend {name!r} is not installed: skipped", flush=True)
    args.backends = [b for b in wanted if b in available]
    if not args.backends:
        sys.exit(f"none of the backends {wanted} is installed")
    backends = {name: _load(name) for name in args.backends}
    args.devices = device_names(backends)
    on_gpu = args.device == "gpu" or any(d.startswith("gpu") for d in args.devices.values())
    args.suffix = "_gpu" if on_gpu else ""
    print("devices:", args.devices, flush=True)
    rows = spec_rows(args, backends) if "specs" in args.parts else []
    if "scale" in args.parts:
        rows += scale_rows(args, backends)
    rp.write_json(args.out_dir, f"backends{args.suffix}.json",
                  {"devices": args.devices, "rows": rows})  # fmt: skip
    print("wrote", rp.write_text(args.out_dir, f"backends{args.suffix}.md", report(rows, args)))


if __name__ == "__main__":
    main()
