"""Where a fresh JAX process's time goes once the compilation cache is filled (issue #25 item 4).

For three things a user runs on ml-100k, each in fresh processes sharing one private compilation
cache (filled by a first, untimed run):

* **script**: `time_to_result.py`'s script: load u1, `BiasedMF().fit(train, steps=20,
  backend="jax")`, evaluate on the test fold;
* **cli**: `cfcore train --model biased --fold u1 --backend jax` (its `app`, called in process);
* **ials**: load ml-100k's positives, a first `IALS(d 128, CG).fit(steps=16)` (`IALS_100K`).

Inside each process the phases are timed from the outside (`import jax`, `import cfcore`, data
loading, `fit`, evaluation) and split with JAX's own `jax.monitoring` events, which time each
jitted program's tracing to a jaxpr (`jaxpr_trace_duration`), its lowering to StableHLO
(`jaxpr_to_mlir_module_duration`) and its backend compilation (`backend_compile_duration`: with a
filled cache, the cache key's hashing, the entry's read and the executable's load;
`cache_retrieval_time_sec` is the read and load alone). Nested spans (a jit traced inside
another's trace) are merged, so no time counts twice; what is left of a phase ("rest") is
host-side work outside JAX's compile path: layouts, dispatch, the run itself, Python.

    python benchmarks/jax_startup.py [--repeats 5] [--scenarios script cli ials]
        [--variants cache "cache + export"] [--smoke] [--out-dir DIR]

Writes `jax_startup.md` and `.json`; each figure is the fastest of `--repeats` processes (the
machine is shared), the scenarios alternating within a round.
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

# `_common` imports cfcore: the driver imports it, not the timed worker.

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCENARIOS = ("script", "cli", "ials")
EVENTS = {
    "trace": "/jax/core/compile/jaxpr_trace_duration",
    "lower": "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "compile": "/jax/core/compile/backend_compile_duration",
}
RETRIEVAL = "/jax/compilation_cache/cache_retrieval_time_sec"
PHASE_COLUMNS = ("trace", "lower", "compile", "rest")


def _union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _length(spans: list[tuple[float, float]], lo: float, hi: float) -> float:
    return sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in spans)


def _minus(spans: list[tuple[float, float]], cut: list[tuple[float, float]]):
    """`spans` less the time covered by `cut` (both merged, sorted)."""
    out: list[tuple[float, float]] = []
    for a, b in spans:
        pieces = [(a, b)]
        for c, d in cut:
            pieces = [p for x, y in pieces for p in ((x, min(y, c)), (max(x, d), y)) if p[1] > p[0]]
        out.extend(pieces)
    return out


# ---------------------------------------------------------------------------- in the process

EXPORT_ENV = "JAX_STARTUP_EXPORT_DIR"
MODE_ENV = "JAX_STARTUP_EXPORT_MODE"


def _export_jit(folder: Path, mode: str) -> None:
    """The experiment: every later `jax.jit` (no static or donated arguments) keeps its programs
    in `folder` and a later process calls those instead of tracing and lowering: `jax.export`
    serializations (`mode` "export", called through a `jax.jit` of `Exported.call`: lowered and
    then read from the compilation cache) or the compiled executables themselves ("executable",
    `jax.experimental.serialize_executable`). Keyed by the function's module and name, the arguments' tree and types only:
    enough for these fixed scenarios, NOT a safe key (closures, source and versions are left out).
    """
    import hashlib

    import jax
    import jax.export
    from jax.core import Tracer

    plain = jax.jit
    folder.mkdir(parents=True, exist_ok=True)
    executable = mode == "executable"

    def load_export(jitted: Any, path: Path, args: tuple) -> Any:
        try:
            exported = jax.export.deserialize(bytearray(path.read_bytes()))
        except FileNotFoundError:
            exported = jax.export.export(jitted)(*args)
            path.write_bytes(exported.serialize())
        return plain(exported.call)

    def load_executable(jitted: Any, path: Path, args: tuple) -> Any:
        import pickle

        from jax.experimental import serialize_executable as se

        try:
            blob, in_tree, out_tree = pickle.loads(path.read_bytes())
            return se.deserialize_and_load(blob, in_tree, out_tree)
        except FileNotFoundError:
            compiled = jitted.trace(*args).lower().compile()
            path.write_bytes(pickle.dumps(se.serialize(compiled)))
            return compiled

    class Exporting:
        def __init__(self, fun: Any, jitted: Any) -> None:
            self.fun, self.jitted, self.calls = fun, jitted, {}

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            if kwargs:
                return self.jitted(*args, **kwargs)
            leaves, tree = jax.tree.flatten(args)
            if any(isinstance(x, Tracer) for x in leaves):  # inside another's trace
                return self.jitted(*args)
            types = [str(jax.typeof(x)) for x in leaves]
            name = f"{self.fun.__module__}.{getattr(self.fun, '__qualname__', '?')}"
            key = hashlib.sha256(repr((name, str(tree), types)).encode()).hexdigest()
            call = self.calls.get(key)
            if call is None:
                call = self.calls[key] = (load_executable if executable else load_export)(
                    self.jitted, folder / key, args
                )
            return call(*args)

        def __getattr__(self, attr: str) -> Any:
            return getattr(self.jitted, attr)

    def jit(fun: Any = None, **kw: Any) -> Any:
        if fun is None:
            return lambda f: jit(f, **kw)
        jitted = plain(fun, **kw)
        if any(kw.get(k) for k in ("static_argnums", "static_argnames", "donate_argnums",
                                   "donate_argnames")):  # fmt: skip
            return jitted
        return Exporting(fun, jitted)

    jax.jit = jit


def worker(scenario: str, data_dir: str) -> dict[str, Any]:
    """One fresh process: phases (wall, seconds) and, per phase, JAX's compile-path share."""
    marks: list[tuple[str, float, float]] = []

    def phase(name: str, start: float) -> float:
        end = time.time()
        marks.append((name, start, end))
        return end

    t = time.time()
    import jax
    import jax.numpy  # noqa: F401  (what time_to_result.py's "import jax alone" imports)

    spans: dict[str, list[tuple[float, float]]] = {k: [] for k in EVENTS}
    counts: dict[str, int] = {k: 0 for k in EVENTS}
    retrieval = [0.0]
    names = {v: k for k, v in EVENTS.items()}

    def on_span(event: str, start_time: float, end_time: float, **_: str | int) -> None:
        if event in names:
            spans[names[event]].append((start_time, end_time))
            counts[names[event]] += 1

    def on_duration(event: str, duration_secs: float, **_: str | int) -> None:
        if event == RETRIEVAL:
            retrieval[0] += duration_secs

    if os.environ.get(EXPORT_ENV):
        _export_jit(Path(os.environ[EXPORT_ENV]), os.environ.get(MODE_ENV, "export"))
    jax.monitoring.register_event_time_span_listener(on_span)
    jax.monitoring.register_event_duration_secs_listener(on_duration)
    t = phase("import jax", t)
    import cfcore

    t = phase("import cfcore", t)
    rmse = None
    if scenario == "script":
        ds = cfcore.datasets.load_movielens("100k", data_dir=data_dir)
        train, test = ds.fold("u1")
        t = phase("load data", t)
        model = cfcore.BiasedMF()
        model.fit(train, steps=20, backend="jax", progress=False)
        t = phase("fit", t)
        rmse = model.evaluate(test)["rmse"]
        t = phase("evaluate", t)
    elif scenario == "cli":
        from cfcore.cli import app

        with tempfile.TemporaryDirectory() as out:
            args = ["train", "--model", "biased", "--fold", "u1", "--backend", "jax",
                    "--dataset", str(Path(data_dir) / "ml-100k"), "--out", out]  # fmt: skip
            app(args, standalone_mode=False)
            t = phase("cli command", t)
    else:
        ds = cfcore.datasets.load_movielens("100k", data_dir=data_dir)
        r = ds.ratings.to_implicit(threshold=3.5)
        t = phase("load data", t)
        d = 128
        cfcore.IALS(
            embedding_dim=d, init_stddev=0.1 / d**0.5, unobserved_weight=0.1,
            regularization_coeff=0.02, solver="cg",
        ).fit(r, steps=16, backend="jax", progress=False)  # fmt: skip
        t = phase("fit", t)
    merged = {k: _union(v) for k, v in spans.items()}
    # Exclusive shares: lowering less any tracing inside it, compilation less both.
    merged["lower"] = _minus(merged["lower"], merged["trace"])
    merged["compile"] = _minus(merged["compile"], _union(merged["trace"] + merged["lower"]))
    phases = []
    for name, lo, hi in marks:
        row = {"phase": name, "wall": hi - lo}
        for k in EVENTS:
            row[k] = _length(merged[k], lo, hi)
        row["rest"] = row["wall"] - sum(row[k] for k in EVENTS)
        phases.append(row)
    out = {"phases": phases, "programs": counts, "retrieval": retrieval[0]}
    if rmse is not None:
        out["rmse"] = float(rmse)
    return out


# ---------------------------------------------------------------------------- driver


VARIANTS = ("cache", "cache + export")


def run_one(scenario: str, folder: str, variant: str, data_dir: str) -> dict[str, Any]:
    """`scenario` in a fresh process; its result and its whole wall (start to exit)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "backends")])
    env["CFCORE_COMPILATION_CACHE"] = str(Path(folder) / "compilation")
    env.pop(EXPORT_ENV, None)
    if variant == "cache + export":
        env[EXPORT_ENV] = str(Path(folder) / "export")
        env[MODE_ENV] = "export"
    cmd = [sys.executable, str(Path(__file__)), "--worker", scenario, data_dir]
    start = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{scenario} failed ({out.returncode}):\n{out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_wall"] = wall
    return result


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest process (by its whole wall), and each phase's minimum over the processes."""
    fastest = min(runs, key=lambda r: r["process_wall"])
    phases = []
    for i, row in enumerate(fastest["phases"]):
        phases.append({k: (min(r["phases"][i][k] for r in runs) if k != "phase" else v)
                       for k, v in row.items()})  # fmt: skip
    return {**fastest, "phases_min": phases, "walls": sorted(r["process_wall"] for r in runs)}


def _table(res: dict[str, Any]) -> list[str]:
    total = {k: sum(p[k] for p in res["phases_min"]) for k in (*PHASE_COLUMNS, "wall")}
    lines = [
        "| phase | wall | " + " | ".join(PHASE_COLUMNS) + " |",
        "|---|---:|" + "---:|" * len(PHASE_COLUMNS),
    ]
    for p in res["phases_min"]:
        cells = " | ".join(f"{p[k]:.3f}" for k in PHASE_COLUMNS)
        lines.append(f"| {p['phase']} | {p['wall']:.3f} | {cells} |")
    cells = " | ".join(f"{total[k]:.3f}" for k in PHASE_COLUMNS)
    start_exit = res["process_wall"] - total["wall"]
    lines += [
        f"| **sum of phases** | {total['wall']:.3f} | {cells} |",
        f"| interpreter start + exit (whole process less the phases) | {start_exit:.3f} | | | | |",
        "",
    ]
    return lines


def report(results: dict[str, dict[str, dict[str, Any]]], repeats: int, out_dir: str | None):
    from _common import stamp, write_result

    lines = [
        "# Where a fresh JAX process's time goes with the compilation cache filled",
        "",
        stamp(),
        "",
        f"`python benchmarks/jax_startup.py --repeats {repeats}`. Each scenario runs in "
        f"{repeats} fresh processes per variant, scenarios and variants alternating, after one "
        "untimed run per variant that filled its private folder (`CFCORE_COMPILATION_CACHE`). "
        "Seconds. The whole process is the fastest process's wall from start to exit; each "
        "phase cell is that phase's minimum over the processes (the machine is shared). "
        "trace: jitted functions traced to jaxprs; lower: jaxprs lowered to StableHLO; "
        "compile: the backend's compile call, with the cache filled the key's hashing, the "
        "entry's read and the executable's load; rest: everything else in the phase (host "
        "layouts, placement, dispatch, the run, Python). From `jax.monitoring`'s events, nested "
        "spans merged.",
        "",
        "Variants: **cache**: cfcore as it is, compilation cache filled; **cache + export**: "
        "the experiment in this script (`_export_jit`): each top-level `jax.jit` call's program "
        "kept as a `jax.export` serialization and, in a later process, deserialized and called "
        "through `jax.jit(exported.call)` instead of traced and lowered (the wrapper is still "
        "lowered, and its compilation read from the cache).",
        "",
        "| scenario | variant | whole process (fastest; all) | fit: trace | lower | compile "
        "| rest | test RMSE |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for scenario, by_variant in results.items():
        for variant, res in by_variant.items():
            fit = res["phases_min"][-1] if scenario == "cli" else res["phases_min"][3]
            walls = ", ".join(f"{w:.2f}" for w in res["walls"])
            cells = " | ".join(f"{fit[k]:.3f}" for k in PHASE_COLUMNS)
            lines.append(
                f"| {scenario} | {variant} | {res['process_wall']:.2f} ({walls}) | {cells} "
                f"| {res.get('rmse', '-')} |"
            )
    lines.append("")
    for scenario, by_variant in results.items():
        for variant, res in by_variant.items():
            lines += [
                f"## {scenario}, {variant}: whole process {res['process_wall']:.2f} s; "
                f"programs traced {res['programs']['trace']}, lowered "
                f"{res['programs']['lower']}, compiled or loaded {res['programs']['compile']} "
                f"(cache read + load {res['retrieval']:.3f} s)",
                "",
                *_table(res),
            ]
    text = "\n".join(lines)
    write_result("jax_startup.md", text + "\n", out_dir)
    write_result("jax_startup.json", json.dumps(results, indent=1), out_dir)
    return text


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        print(json.dumps(worker(argv[1], argv[2])))
        return
    from _common import DATA_DIR

    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--data-dir", default=DATA_DIR)
    ap.add_argument("--out-dir", default=None)
    ap.add_argument("--smoke", action="store_true", help="one process per scenario and variant")
    args = ap.parse_args(argv)
    if args.smoke:
        args.repeats = 1
    runs = {s: {v: [] for v in args.variants} for s in args.scenarios}
    with tempfile.TemporaryDirectory() as base:
        folders = {v: str(Path(base) / str(i)) for i, v in enumerate(args.variants)}
        for s in args.scenarios:
            for v in args.variants:
                run_one(s, folders[v], v, args.data_dir)  # fills the folders
        for _ in range(args.repeats):
            for s in args.scenarios:
                for v in args.variants:
                    runs[s][v].append(run_one(s, folders[v], v, args.data_dir))
    results = {s: {v: best(r) for v, r in by.items()} for s, by in runs.items()}
    print(report(results, args.repeats, args.out_dir))


if __name__ == "__main__":
    main()
