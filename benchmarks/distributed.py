"""Sharded training against the device count: step time, per-device memory, collective volume.

Runs the JAX regularized-MF step as `fit(..., devices=k)` compiles it (tables row-sharded, the
shard_map gather of the pairs' rows, per-shard Gramians) on k = 1, 2, 4, 8 virtual CPU devices
(`--xla_force_host_platform_device_count`), each k in its own process, at ML-20M table shape
(138,493 users x 26,744 items, d = 32) on `cfcore.synthetic_ratings`:

* a minibatch Adam step (`--batch` ratings, default 65,536), the way a large catalogue trains;
* a full-batch SGD step over `--ratings` ratings (default 1,000,000).

Per configuration: the median step time, XLA's per-device memory of the compiled step
(`compiled.memory_analysis()`: arguments + outputs + temporaries, per device) and the bytes each
device moves per step by collective (all-reduce, reduce-scatter, all-gather, all-to-all,
collective-permute), read from the compiled HLO. Virtual devices share this machine's cores, so
the step time shows the cost of the partitioned program, not a speed-up.

`--quick`: a 1/10 shape (13,849 x 2,674, 100k ratings, batch 8,192); `--smoke`: a tiny one.
`gpu_rows()` is the prepared GPU measurement (the regularized full-batch step at ML-20M shape,
d 32/64/128, on every visible GPU count against one device): `--gpu` runs it; not run on CPU.

Results: benchmarks/results/distributed.md and .json (`--out-dir` to write elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import stamp
from _report import md_table, write_json, write_text

ML20M = {"users": 138_493, "items": 26_744, "ratings": 1_000_000, "batch": 65_536, "dim": 32}
QUICK = {"users": 13_849, "items": 2_674, "ratings": 100_000, "batch": 8_192, "dim": 32}
SMOKE = {"users": 200, "items": 100, "ratings": 2_000, "batch": 64, "dim": 4}
# Published single-H100 figures of the hand-written JAX step at ML-20M shape (issue 10): the
# regularized full-batch step, d = 32 / 64 / 128, in ms.
GPU_TARGET_MS = {32: 6.1, 64: 10.4, 128: 15.7}

_COLLECTIVE = re.compile(
    r"= (\(?[a-z0-9]+\[[\d,]*\][^=]*?) (all-gather|all-reduce|reduce-scatter|all-to-all|"
    r"collective-permute)(?:-start)?\("
)
_SHAPE = re.compile(r"([a-z]+)(\d*)\[([\d,]*)\]")
_BYTES = {"f": 4, "s": 4, "u": 4, "pred": 1, "bf": 2}


def collective_bytes(hlo: str) -> dict[str, int]:
    """Bytes of every collective's result in the compiled HLO, by kind (per device, per call)."""
    out: dict[str, int] = {}
    for operands, kind in _COLLECTIVE.findall(hlo):
        for dtype, bits, dims in _SHAPE.findall(operands):
            size = 1
            for x in filter(None, dims.split(",")):
                size *= int(x)
            width = int(bits) // 8 if bits else _BYTES.get(dtype, 4)
            out[kind] = out.get(kind, 0) + size * width
    return out


def fmt_bytes(b: float | None) -> str:
    if b is None:
        return ""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= size:
            return f"{b / size:.1f} {unit}"
    return f"{int(b)} B"


def _time(fn: Any, repeats: int) -> float:
    fn()  # compiled and warm
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def measure(k: int, shape: dict[str, int], repeats: int, platform: str = "cpu") -> list[dict]:
    """The two steps on the first k devices of `platform` (run inside a worker process)."""
    import jax
    import numpy as np

    import cfcore
    from cfcore.init import init_mf_params
    from cfcore.maths.objectives import mf_loss
    from cfcore.optim import make_rule
    from cfcore.train.loop import gradient_update
    from cfcore.train.sharding import make_placement

    be = cfcore.get_backend("jax")
    spec = cfcore.RegularizedMF(embedding_dim=shape["dim"]).spec
    ratings = cfcore.synthetic_ratings(shape["users"], shape["items"], shape["ratings"], seed=0)
    devices = jax.devices(platform)[:k]
    placement = make_placement(be, devices)
    init = init_mf_params(spec, shape["users"], shape["items"], 0)
    loss = placement.placed(mf_loss(be, spec))
    data = placement.data(be.device_batch(ratings))
    rows = []
    for name, optimizer in (
        ("minibatch Adam", cfcore.optimizers.Adam(0.01)),
        ("full-batch SGD", cfcore.optimizers.SGD(1.0)),
    ):
        rule = make_rule(be, optimizer)
        params = placement.params(init)
        opt = rule.init(params)
        update = gradient_update(be, loss, rule)
        if name == "minibatch Adam":
            rng = np.random.default_rng(0)
            idx = placement.data(
                rng.integers(0, len(ratings), (1, shape["batch"])).astype(np.int32)
            )

            def step(p, o, d, x, update=update):
                batch = {c: jax.numpy.take(d[c], x[0]) for c in ("users", "items", "values")}
                return update(p, o, batch)

            args: tuple = (params, opt, data, idx)
        else:

            def step(p, o, d, update=update):
                return update(p, o, d)

            args = (params, opt, data)
        compiled = jax.jit(step).lower(*args).compile()
        mem = compiled.memory_analysis()
        per_device = None
        if mem is not None:
            per_device = int(
                mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
            )
        volume = collective_bytes(compiled.as_text())

        def once(compiled=compiled, args=args) -> None:
            jax.block_until_ready(compiled(*args))

        rows.append(
            {
                "step": name,
                "devices": k,
                "platform": platform,
                "shape": shape,
                "step_s": _time(once, repeats),
                "device_bytes": per_device,
                "collective_bytes": volume,
            }
        )
    return rows


def gpu_rows(dims: tuple[int, ...] = (32, 64, 128), repeats: int = 20) -> list[dict]:
    """The GPU rows (prepared, not run on CPU): the regularized full-batch step at ML-20M shape
    with all 20,000,263 ratings on 1..G visible GPUs, against `GPU_TARGET_MS` of one H100."""
    import jax

    count = len(jax.devices("gpu"))
    rows = []
    for d in dims:
        shape = {**ML20M, "ratings": 20_000_263, "dim": d}
        k = 1
        while k <= count:
            rows += [
                {**r, "target_ms": GPU_TARGET_MS[d]}
                for r in measure(k, shape, repeats, platform="gpu")
                if r["step"] == "full-batch SGD"
            ]
            k *= 2
    return rows


def _shape(args: argparse.Namespace) -> dict[str, int]:
    return SMOKE if args.smoke else QUICK if args.quick else ML20M


def _worker(args: argparse.Namespace) -> None:
    shape = _shape(args)
    rows = measure(args.worker, shape, args.repeats)
    print("ROWS " + json.dumps(rows), flush=True)


def report(rows: list[dict], size: str) -> str:
    shape = rows[0]["shape"]
    lines = [
        "# Sharded training against the device count (virtual CPU devices)",
        "",
        stamp(),
        "",
        f"Shape: {shape['users']:,} users x {shape['items']:,} items, d = {shape['dim']}; "
        f"minibatch of {shape['batch']:,} ratings (Adam), full batch of {shape['ratings']:,} "
        f"ratings (SGD), `cfcore.synthetic_ratings`. "
        + ({"full": "ML-20M table shape. "}.get(size, f"`--{size}` size. "))
        + "Each device count in its own process; the k virtual devices share the machine's "
        "cores, so the step time measures the partitioned program's overhead, not a speed-up. "
        "Memory: XLA's per-device arguments + outputs + temporaries of the compiled step. "
        "Collectives: the summed result sizes of each kind in the compiled step's HLO, per "
        "device and step (a device receives about (k-1)/k of an all-gather's result).",
        "",
    ]
    table = []
    for r in rows:
        vol = r["collective_bytes"]
        table.append(
            [
                r["step"],
                r["devices"],
                f"{r['step_s'] * 1000:.1f} ms",
                fmt_bytes(r["device_bytes"]),
                fmt_bytes(vol.get("all-reduce", 0)),
                fmt_bytes(vol.get("reduce-scatter", 0)),
                fmt_bytes(vol.get("all-gather", 0)),
                fmt_bytes(vol.get("collective-permute", 0)),
            ]
        )
    lines.append(
        md_table(
            [
                "step",
                "devices",
                "step time",
                "memory / device",
                "all-reduce",
                "reduce-scatter",
                "all-gather",
                "collective-permute",
            ],
            table,
        )
    )
    lines += [
        "",
        "Reading: the tables, the optimizer state and the pairs' gathered rows are divided by "
        "k: the pair gather passes each device's `[n/k, d]` request round the ring of devices "
        "(collective-permutes, forward and backward: O(n·d) per device and step in k hops), so "
        "no device holds all n pairs' rows. A permute's result is what the device receives, so "
        "the k hops add up to n·d per table and direction: what a reduce-scatter and an "
        "all-gather of the `[n, d]` rows (the previous design) also send per device on a ring, "
        "(k-1)/k of it, though their results count only `[n/k, d]` and `[n, d]`. The other "
        "collectives are the two d x d Gramians (all-reduce, with the minibatch's ratings taken "
        "from the split set); never a whole table.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--devices", default="1,2,4,8", help="device counts (comma-separated)")
    p.add_argument("--quick", action="store_true", help="a 1/10 shape")
    p.add_argument("--smoke", action="store_true", help="a tiny shape: proves the script runs")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    p.add_argument("--gpu", action="store_true", help="run gpu_rows() instead (needs a GPU)")
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        _worker(args)
        return
    if args.gpu:
        print(json.dumps(gpu_rows(repeats=args.repeats), indent=1))
        return
    counts = [int(x) for x in args.devices.split(",")]
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={max(counts)}",
        "JAX_PLATFORMS": "cpu",
    }
    rows: list[dict] = []
    for k in counts:
        cmd = [sys.executable, __file__, "--worker", str(k), "--repeats", str(args.repeats)]
        cmd += ["--quick"] if args.quick else ["--smoke"] if args.smoke else []
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"devices={k} failed:\n{out.stderr[-3000:]}")
        line = next(x for x in out.stdout.splitlines() if x.startswith("ROWS "))
        rows += json.loads(line[5:])
        print(f"devices={k} done", flush=True)
    rows.sort(key=lambda r: (r["step"], r["devices"]))
    out_dir = Path(args.out_dir)
    size = "smoke" if args.smoke else "quick" if args.quick else "full"
    name = "distributed" if size == "full" else f"distributed_{size}"
    write_json(out_dir, f"{name}.json", rows)
    path = write_text(out_dir, f"{name}.md", report(rows, size))
    print(path.read_text())


if __name__ == "__main__":
    main()
