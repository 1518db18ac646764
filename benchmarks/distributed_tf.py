"""Sharded TensorFlow training (DTensor) against the device count: step time, memory, collectives.

Runs `RegularizedMF.fit(..., backend="tf", devices=k)` on k logical CPU devices, each k in its own
process (TensorFlow fixes its logical devices when it first runs an op), on
`cfcore.synthetic_ratings` of a moderate shape (default 6,040 users x 3,706 items, the ML-1M
shape, 200,000 ratings, d 32):

* a full-batch SGD step over all the ratings;
* a minibatch Adam step (`--batch` ratings, default 8,192).

Per configuration: the step time (the median over `--repeats` of a `fit` of `--steps` steps less
one of 1 step, divided by `--steps` - 1, both compiled beforehand: each `fit`'s fixed cost left
out); TensorFlow's allocator bytes (`tf.config.experimental.get_memory_info`, one allocator shared
by the k logical CPU devices, so all of them together) held before the timed fits (the placed
tables, optimizer state and ratings) and at their peak, with the peak divided by k (each device
runs the same program on its part); and the collectives of DTensor's SPMD-expanded step
(`TF_DUMP_GRAPH_PREFIX`): each collective's kind and the global shape of its result, with the
bytes one device receives per step (an all-gather or all-reduce of `[R, C]` float32 leaves
`4·R·C` bytes on every device; DTensor lowers both to all-reduces on CPU).

`k = 0` runs the same fit without `devices` (one device, no DTensor) as the baseline. `--quick`:
50,000 ratings, batches of 2,048; `--smoke`: a tiny shape.

Results: benchmarks/results/distributed_tf.md and .json (`--out-dir` to write elsewhere;
`--tag` names the code measured, e.g. before/after a change).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import stamp
from _report import md_table, write_json, write_text

SHAPE = {"users": 6_040, "items": 3_706, "ratings": 200_000, "batch": 8_192, "dim": 32}
QUICK = {"users": 6_040, "items": 3_706, "ratings": 50_000, "batch": 2_048, "dim": 32}
SMOKE = {"users": 200, "items": 101, "ratings": 2_000, "batch": 64, "dim": 4}
# `"tf.DTensorAllGather"(%x) ... : (tensor<10x4xf32>) -> tensor<40x4xf32>`: kind, result shape.
_OP = re.compile(r'"tf\.DTensor(AllGather|AllReduce|ReduceScatter|AllToAll)"')
_TYPE = re.compile(r"tensor<([\dx]*?)x?(f32|i32|i64|i1)>")
_WIDTH = {"f32": 4, "i32": 4, "i64": 8, "i1": 1}


def _collectives(folder: Path) -> list[tuple[str, str, int]]:
    """(kind, result type, count) of the collectives in the last SPMD-expanded step in `folder`."""
    files = sorted(folder.rglob("*after_DTensorSPMDExpansion.__inference_one_step_*.mlir"))
    if not files:
        return []
    counts: dict[tuple[str, str], int] = {}
    for line in files[-1].read_text().splitlines():
        op = _OP.search(line)
        if op is None:
            continue
        result = _TYPE.findall(line.rsplit("->", 1)[-1])
        if not result:
            continue
        dims, dtype = result[-1]
        key = (op.group(1), f"{dtype}[{dims.replace('x', ',')}]")
        counts[key] = counts.get(key, 0) + 1
    return [(kind, shape, n) for (kind, shape), n in sorted(counts.items())]


def _bytes(shape: str) -> int:
    dtype, dims = shape[:-1].split("[")
    size = 1
    for x in filter(None, dims.split(",")):
        size *= int(x)
    return size * _WIDTH[dtype]


def _gib(res: dict[str, Any], key: str) -> str:
    return f"{res[key]:.2f}" if key in res else "n/a"


def als_worker(k: int, cfg: dict[str, Any], backend: str) -> dict[str, Any]:
    """An iALS fit (CG, 3 steps) on `backend` in this process: TensorFlow on k logical devices
    (0: one device, no DTensor) or JAX on k host devices (the caller set `XLA_FLAGS`; 0: no
    `devices`). The implicit positives are `synthetic_ratings(...).to_implicit(threshold=3.5)`.
    Times the first `fit` of one sweep (setup, tracing, DTensor's expansion, one sweep) and a
    sweep (as `worker` times a step)."""
    if backend == "tf" and k:
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * k
        )
    import cfcore

    r = cfcore.synthetic_ratings(cfg["users"], cfg["items"], cfg["ratings"], seed=0)
    r = r.to_implicit(threshold=3.5)
    model = cfcore.IALS(embedding_dim=cfg["dim"], solver="cg")
    kw: dict[str, Any] = {"backend": backend, "devices": k or None, "progress": False}

    def fit(steps: int) -> float:
        t0 = time.perf_counter()
        model.fit(r, steps=steps, eval_every=steps, **kw)
        model.embeddings  # noqa: B018  (reads the tables back: the sweeps are done)
        return time.perf_counter() - t0

    first = fit(1)
    fit(cfg["steps"])  # warm: a chunk of several sweeps may expand again (DTensor)
    many, one = [], []
    for _ in range(cfg["repeats"]):
        many.append(fit(cfg["steps"]))
        one.append(fit(1))
    # A difference of medians: below the timer's noise (tiny smoke shapes) it can dip under 0,
    # which is reported as 0 rather than as a negative time.
    sweep = max(0.0, (statistics.median(many) - statistics.median(one)) / (cfg["steps"] - 1))
    # ru_maxrss is in KiB on Linux: the process's peak resident set over all the fits above.
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 2**10
    memory: dict[str, float] = {}
    if backend == "tf":
        import tensorflow as tf

        # One allocator for all the logical CPU devices: its bytes are all of them together.
        info = tf.config.experimental.get_memory_info(tf.config.list_logical_devices("CPU")[0].name)
        memory = {"alloc_peak_gib": info["peak"] / 2**30, "alloc_held_gib": info["current"] / 2**30}
    return {
        "k": k,
        "run": f"ials_{backend}",
        "positives": len(r),
        "sweep_s": sweep,
        "first_fit_s": first,
        "fit1_s": statistics.median(one),
        "peak_rss_gib": peak_rss / 2**30,
        **memory,
    }


def worker(k: int, cfg: dict[str, Any], run: str) -> dict[str, Any]:
    """One configuration in this process: k logical devices (0: no DTensor), `run` "sgd"/"adam"."""
    if run.startswith("ials_"):
        return als_worker(k, cfg, run.removeprefix("ials_"))
    dump = tempfile.mkdtemp(prefix="cfcore_dtensor_")
    if k:
        os.environ["TF_CPP_VMODULE"] = "dtensor_mlir_passes=4"
        os.environ["TF_DUMP_GRAPH_PREFIX"] = dump
    import tensorflow as tf

    if k:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * k
        )
    import cfcore

    r = cfcore.synthetic_ratings(cfg["users"], cfg["items"], cfg["ratings"], seed=0)
    model = cfcore.RegularizedMF(embedding_dim=cfg["dim"], init_stddev=0.1)
    if run == "sgd":
        kw: dict[str, Any] = {"optimizer": cfcore.optimizers.SGD(1.0), "batch_size": None}
    else:
        kw = {"optimizer": cfcore.optimizers.Adam(0.01), "batch_size": cfg["batch"]}
    kw |= {"backend": "tf", "devices": k or None, "progress": False}

    def fit(steps: int) -> float:
        t0 = time.perf_counter()
        model.fit(r, steps=steps, eval_every=steps, **kw)
        model.embeddings  # noqa: B018  (reads the tables back: the steps are done)
        return time.perf_counter() - t0

    t0 = time.perf_counter()
    fit(1)
    compile_s = time.perf_counter() - t0
    fit(cfg["steps"])  # each chunk length compiles once: both warm before timing
    # TensorFlow's CPU allocator is shared by the logical CPU devices: its peak is all of them.
    device = tf.config.list_logical_devices("CPU")[0].name
    tf.config.experimental.reset_memory_stats(device)
    held = tf.config.experimental.get_memory_info(device)["current"]
    many, one = [], []
    for _ in range(cfg["repeats"]):
        many.append(fit(cfg["steps"]))
        one.append(fit(1))
    peak = tf.config.experimental.get_memory_info(device)["peak"]
    step = max(0.0, (statistics.median(many) - statistics.median(one)) / (cfg["steps"] - 1))
    return {
        "k": k,
        "run": run,
        "step_ms": 1e3 * step,
        "first_fit_s": compile_s,
        "held_mib": held / 2**20,
        "peak_mib": peak / 2**20,
        "collectives": _collectives(Path(dump)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", default="0,2,4", help="device counts (0: no DTensor)")
    p.add_argument(
        "--runs",
        default="sgd,adam",
        help="sgd, adam (RegularizedMF steps), ials_tf, ials_jax (iALS sweeps, d from --dim)",
    )
    for name in SHAPE:
        p.add_argument(f"--{name}", type=int, help=f"default {SHAPE[name]:,}")
    p.add_argument("--quick", action="store_true", help=f"a smaller shape: {QUICK}")
    p.add_argument("--smoke", action="store_true", help="a tiny shape: proves the script runs")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tag", default="", help="names the code measured (e.g. before / after)")
    p.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    base = SMOKE if args.smoke else QUICK if args.quick else SHAPE
    cfg = {
        name: base[name] if getattr(args, name) is None else getattr(args, name) for name in SHAPE
    }
    cfg |= {
        "steps": args.steps,
        "repeats": args.repeats,
    }
    if args.worker:
        k, run = args.worker.split(":")
        print("@@result " + json.dumps(worker(int(k), cfg, run)))
        return
    rows = []
    for run in args.runs.split(","):
        for k in map(int, args.devices.split(",")):
            cmd = [sys.executable, __file__, "--worker", f"{k}:{run}", *sys.argv[1:]]
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
            if run == "ials_jax":
                env |= {"JAX_PLATFORMS": "cpu"}
                if k:
                    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={k}"
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            lines = [x for x in out.stdout.splitlines() if x.startswith("@@result ")]
            if not lines:
                raise RuntimeError(f"k={k} {run}: {out.stderr[-2000:]}")
            res = json.loads(lines[-1].removeprefix("@@result "))
            print(json.dumps(res), flush=True)
            rows.append(res)
    table, als_table, mem_table = [], [], []
    for res in rows:
        if res["run"].startswith("ials_"):
            backend = res["run"].removeprefix("ials_")
            devices = f"{res['k']}" if res["k"] else "1 (no devices=)"
            als_table.append(
                [
                    "TensorFlow (DTensor)" if backend == "tf" and res["k"] else backend,
                    devices,
                    f"{res['positives']:,}",
                    f"{res['first_fit_s']:.1f}",
                    f"{res['sweep_s']:.2f}",
                ]
            )
            mem_table.append(
                [
                    f"{als_table[-1][0]}, {devices} device(s)",
                    *(
                        _gib(res, key)
                        for key in ("peak_rss_gib", "alloc_peak_gib", "alloc_held_gib")
                    ),
                ]
            )
            continue
        moved = sum(_bytes(shape) * n for _, shape, n in res["collectives"])
        listed = ", ".join(f"{n}× {kind} {shape}" for kind, shape, n in res["collectives"])
        table.append(
            [
                res["run"],
                res["k"] or "1 (no DTensor)",
                f"{res['step_ms']:.0f}",
                f"{res['first_fit_s']:.1f}",
                f"{res['held_mib']:.1f}",
                f"{res['peak_mib']:.1f}",
                f"{res['peak_mib'] / max(res['k'], 1):.1f}",
                f"{moved / 2**20:.1f}",
                listed,
            ]
        )
    head = [
        "run",
        "devices",
        "step ms",
        "first fit s",
        "held MiB",
        "peak MiB",
        "peak MiB / device",
        "collective MiB/device/step",
        "collectives of the expanded step (global result shapes)",
    ]
    tag = f" ({args.tag})" if args.tag else ""
    text = f"# Sharded TensorFlow step{tag}\n\n{stamp()}\n\nShape: {cfg}\n\n"
    if table:
        text += f"{md_table(head, table)}\n"
    if als_table:
        als_head = ["iALS (CG, 3 steps)", "devices", "positives", "first fit s", "sweep s"]
        text += f"\n{md_table(als_head, als_table)}\n"
        mem_head = [
            "iALS memory",
            "process peak RSS GiB",
            "TF allocator peak GiB",
            "TF allocator held at the end GiB",
        ]
        text += f"\n{md_table(mem_head, mem_table)}\n"
    out_dir = Path(args.out_dir)
    name = (
        "distributed_tf" + (f"_{args.tag}" if args.tag else "") + ("_smoke" if args.smoke else "")
    )
    write_text(out_dir, f"{name}.md", text)
    write_json(out_dir, f"{name}.json", {"config": cfg, "tag": args.tag, "rows": rows})
    print(text)


if __name__ == "__main__":
    main()
