"""The benchmark scripts still run (their --smoke modes), and their measuring tools are right."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import DATA_DIR

pytestmark = pytest.mark.benchmark

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


@pytest.fixture(scope="module")
def bench_modules():
    """The benchmark helpers, imported the way the scripts import them (benchmarks/ on the path)."""
    sys.path.insert(0, str(BENCH))
    try:
        yield {
            name: importlib.import_module(name) for name in ("_mem", "mse_scaling", "jax_startup")
        }
    finally:
        sys.path.remove(str(BENCH))


# ------------------------------------------------------------------------------------ _mem

_CHILD = """
import numpy as np

def allocate(cfg, meter):
    meter.mark("imports")
    keep = np.ones(cfg["mb"] * 2**20 // 8)  # touched: resident
    meter.mark("setup")
    scratch = np.ones(cfg["scratch_mb"] * 2**20 // 8)
    peak = meter.peak()
    del scratch
    return {"peak_above_setup": peak - meter.marks["setup"], "kept": float(keep[0])}

def fail(cfg, meter):
    raise ValueError("bad configuration 42")

def hog(cfg, meter):
    blocks = []
    while True:
        blocks.append(np.ones(2**24))  # 128 MB each, until the watchdog stops it
"""


@pytest.fixture
def child_script(tmp_path):
    path = tmp_path / "child_bench.py"
    path.write_text(_CHILD)
    return path


def test_isolated_run_measures_the_peak_of_a_phase(bench_modules, child_script):
    mem = bench_modules["_mem"]
    rec = mem.run_isolated(
        child_script, "allocate", {"mb": 150, "scratch_mb": 200}, budget_bytes=None, timeout_s=60
    )
    assert rec.ok, rec.message
    # 200 MB allocated after the setup mark; the 150 MB before it are not counted.
    above = rec.result["peak_above_setup"] / 2**20
    assert 190 < above < 260, above
    marks = rec.result["marks"]
    assert marks["setup"] - marks["imports"] > 140 * 2**20
    assert rec.max_rss > 300 * 2**20


def test_isolated_run_reports_a_failing_child(bench_modules, child_script):
    rec = bench_modules["_mem"].run_isolated(
        child_script, "fail", {}, budget_bytes=None, timeout_s=60
    )
    assert rec.status == "error"
    assert "ValueError: bad configuration 42" in rec.message


def test_watchdog_stops_a_child_past_the_budget(bench_modules, child_script):
    mem = bench_modules["_mem"]
    rec = mem.run_isolated(child_script, "hog", {}, budget_bytes=600 * 2**20, timeout_s=60)
    assert rec.status == "over budget"
    assert "0.6 GB memory budget" in rec.message
    assert rec.max_rss > 600 * 2**20


# ------------------------------------------------------------------------------------ analysis


def _row(N, M, n, d, backend, form, step_s=None, step_ws=None):
    r = dict(N=N, M=M, n=n, d=d, backend=backend, form=form)
    if step_s is not None:
        r.update(step_s=step_s, step_ws=step_ws)
    return r


def test_crossover_interpolates_where_dense_stops_winning(bench_modules):
    ms = bench_modules["mse_scaling"]
    configs = [(100, 100, 1000, 8), (1000, 1000, 1000, 8)]
    rows = [
        _row(100, 100, 1000, 8, "jax", "dense", 1.0, 0),
        _row(100, 100, 1000, 8, "jax", "gather", 4.0, 0),
        _row(1000, 1000, 1000, 8, "jax", "dense", 16.0, 0),
        _row(1000, 1000, 1000, 8, "jax", "gather", 4.0, 0),
    ]
    # log(dense/gather) goes from log(1/4) at N·M = 1e4 to log(4) at 1e6: zero halfway, at 1e5.
    text = ms.crossover(rows, "jax", "catalog grows", configs)
    assert text.startswith("dense is faster below N·M (catalog cells) ≈ 100k"), text
    assert "density n/(N·M) ≈ 1.00%" in text
    rows[2]["step_s"] = 2.0
    assert "dense is faster at every measured size" in ms.crossover(
        rows, "jax", "catalog grows", configs
    )


def test_calibration_uses_the_largest_run_per_backend_and_form(bench_modules):
    ms = bench_modules["mse_scaling"]
    unit_small = 4.0 * 5000 * 4000  # 80 MB: large enough to count
    unit_big = 4.0 * 10000 * 8000
    rows = [
        _row(5000, 4000, 10, 8, "tf", "dense", 1.0, 3.0 * unit_small),
        _row(10000, 8000, 10, 8, "tf", "dense", 1.0, 2.5 * unit_big),
        _row(100, 100, 10, 8, "jax", "dense", 1.0, 1e9),  # too small to calibrate
        _row(100, 100, 10, 8, "jax", "gather"),  # not run
    ]
    cal = ms.calibration(rows)
    assert set(cal) == {("tf", "dense")}
    assert cal[("tf", "dense")][0] == pytest.approx(2.5)
    est, measured = ms.calibrated_total("tf", "dense", 10000, 8000, 10, 8, cal)
    assert measured
    expected = ms.data_bytes(10000, 8000, 10, 8) + 2.5 * unit_big + 3 * 4.0 * 18000 * 8
    assert est == pytest.approx(expected)
    _, measured = ms.calibrated_total("jax", "gather", 10, 10, 10, 8, cal)
    assert not measured


def test_dense_estimate_at_the_one_million_user_case(bench_modules):
    ms = bench_modules["mse_scaling"]
    N, M, n, d = ms.ONE_M_USERS + (32,)
    # Two [N, M] float32 matrices alone are 2 TB: the "about 1.9 TB" (1.8 TiB).
    est = ms.estimate_step_bytes("dense", N, M, n, d)
    assert est >= 2 * 4 * N * M
    assert 1.8 < est / 2**40 < 1.9
    assert ms.estimate_step_bytes("gather", N, M, n, d) < 30 * 2**30


# ------------------------------------------------------------------------------------ smoke runs


def _run_script(name: str, *args: str, out_dir: Path, timeout: float = 300) -> str:
    env = {**os.environ, "CFCORE_DATA_DIR": str(DATA_DIR)}
    proc = subprocess.run(
        [sys.executable, str(BENCH / name), "--smoke", "--out-dir", str(out_dir), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def _check_outputs(out_dir: Path, stem: str) -> str:
    md = (out_dir / f"{stem}.md").read_text()
    png = (out_dir / f"{stem}.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Measured " in md and "cores visible" in md  # the machine/version stamp
    assert f"]({stem}.png)" in md
    return md


def test_mse_scaling_smoke(tmp_path):
    _run_script("mse_scaling.py", "--backends", "jax", out_dir=tmp_path)
    md = _check_outputs(tmp_path, "mse_scaling")
    assert md.count("| ok |") == 2  # dense and gather
    assert "Not measured: no GPU in this session" in md
    assert "1.82 TiB" in md  # the dense 1M-user case, estimated instead of run


def test_scale_smoke(tmp_path):
    _run_script("scale.py", "--backends", "jax", "--cases", "ml-20m", out_dir=tmp_path)
    md = _check_outputs(tmp_path, "scale")
    assert "| ok |" in md


def test_layouts_smoke(tmp_path):
    # Both columns from one tree (this one as its own "before"): every part timed in each.
    _run_script("layouts.py", "--tree", str(ROOT), "--second-fit", out_dir=tmp_path)
    md = (tmp_path / "layouts_smoke.md").read_text()
    assert "Measured " in md and "cores visible" in md
    for part in ("ials_pair_check", "ials_blocks", "wals_blocks", "biased_blocks", "pair_layout"):
        assert re.search(rf"\| {part} \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|", md), part
    assert "IALS first fit, host total" in md


def test_jax_startup_smoke(tmp_path, ml100k_files):
    _run_script("jax_startup.py", "--scenarios", "script", out_dir=tmp_path)
    md = (tmp_path / "jax_startup.md").read_text()
    assert "Measured " in md and "cores visible" in md
    script = json.loads((tmp_path / "jax_startup.json").read_text())["script"]
    plain, exported = script["cache"], script["cache + export"]
    # The exported programs give the same fit bit for bit (how much faster is the benchmark's
    # answer, not a test's).
    assert exported["rmse"] == plain["rmse"]
    for run in (plain, exported):
        assert {p["phase"] for p in run["phases_min"]} >= {"fit"}


def test_jax_startup_counts_nested_spans_once(bench_modules):
    js = bench_modules["jax_startup"]
    traced = js._union([(0.0, 4.0), (1.0, 2.0), (6.0, 7.0)])  # a jit traced inside another's
    assert traced == [(0.0, 4.0), (6.0, 7.0)]
    lowered = js._minus(js._union([(3.0, 6.5)]), traced)
    assert lowered == [(4.0, 6.0)]
    assert js._length(traced, 1.0, 6.5) == 3.5


def test_distributed_smoke(tmp_path):
    _run_script("distributed.py", "--devices", "1,2", "--repeats", "1", out_dir=tmp_path)
    md = (tmp_path / "distributed_smoke.md").read_text()
    assert "Measured " in md and "cores visible" in md
    # Two steps (minibatch Adam, full-batch SGD) on 1 and 2 devices.
    assert len(re.findall(r"^\| (minibatch Adam|full-batch SGD) \| [12] \|", md, re.M)) == 4


def test_distributed_tf_smoke(tmp_path):
    pytest.importorskip("tensorflow")
    _run_script("distributed_tf.py", "--devices", "0,2", "--repeats", "1", out_dir=tmp_path)
    md = (tmp_path / "distributed_tf_smoke.md").read_text()
    assert "Measured " in md and "cores visible" in md
    # Full-batch SGD and minibatch Adam, on one device without DTensor and on 2 devices.
    assert len(re.findall(r"^\| (sgd|adam) \| (1 \(no DTensor\)|2) \|", md, re.M)) == 4
    # The 2-device steps' collectives read from DTensor's expansion: the ratings' rows, no table.
    assert "AllReduce f32[2000,4]" in md
    assert not any(f"f32[{rows},4]" in md for rows in (200, 101, 102)), md


def test_distributed_tf_als_smoke(tmp_path):
    pytest.importorskip("tensorflow")
    args = ("--runs", "ials_tf", "--devices", "0,2", "--steps", "2", "--repeats", "1")
    _run_script("distributed_tf.py", *args, out_dir=tmp_path)
    md = (tmp_path / "distributed_tf_smoke.md").read_text()
    # An iALS row on one TensorFlow device and one on 2 (DTensor), each with both times.
    rows = re.findall(r"^\| (tf|TensorFlow \(DTensor\)) \| (1 \(no devices=\)|2) \| [\d,]+ \| "
                      r"[\d.]+ \| [\d.]+ \|$", md, re.M)  # fmt: skip
    assert rows == [("tf", "1 (no devices=)"), ("TensorFlow (DTensor)", "2")], md


def test_distributed_counts_collective_bytes(bench_modules):
    sys.path.insert(0, str(BENCH))
    try:
        distributed = importlib.import_module("distributed")
    finally:
        sys.path.remove(str(BENCH))
    hlo = (
        "  %a = f32[63,4]{1,0} reduce-scatter(f32[504,4]{1,0} %x), dimensions={0}\n"
        "  %b = (f32[4,4]{1,0}, f32[4,4]{1,0}) all-reduce(%g, %h), to_apply=%add\n"
        "  %c = s32[504]{0} all-gather(s32[63]{0} %i), dimensions={0}\n"
        "  %d = f32[504,4]{1,0} all-gather-start(f32[63,4]{1,0} %y), dimensions={0}\n"
        "  %e = f32[504,4]{1,0} add(f32[504,4]{1,0} %p, f32[504,4]{1,0} %q)\n"
    )
    assert distributed.collective_bytes(hlo) == {
        "reduce-scatter": 63 * 4 * 4,
        "all-reduce": 2 * 4 * 4 * 4,
        "all-gather": 504 * 4 + 504 * 4 * 4,
    }


@pytest.mark.slow
def test_mse_scaling_and_scale_smoke_tf(tmp_path):
    _run_script("mse_scaling.py", "--backends", "tf", out_dir=tmp_path)
    assert _check_outputs(tmp_path, "mse_scaling").count("| ok |") == 2
    _run_script("scale.py", "--backends", "tf", "--cases", "1m-users", out_dir=tmp_path)
    assert "| ok |" in _check_outputs(tmp_path, "scale")


@pytest.mark.slow
def test_backends_smoke(tmp_path, ml100k):
    _run_script("backends.py", out_dir=tmp_path)
    md = _check_outputs(tmp_path, "backends")
    assert "| ml-100k (90% train) | MF gather | single step |" in md
    # The gather path at scale (tiny in --smoke): both JAX kernels beside TensorFlow, ratios to it.
    scale = md.split("## The gather path at scale")[1]
    for who in ("jax-segment", "jax-gather"):
        assert who in scale, who
    assert re.search(r"\| gather \| tf \| [0-9.]+ \| 1\.00 \| [0-9.]+ \| 1\.00 \|", scale), scale
    assert "`make_pair_layout` at tiny" in scale


@pytest.mark.slow
def test_backends_smoke_without_tensorflow_or_movielens(tmp_path):
    """As on a GPU machine with jax and torch only and no MovieLens files: missing pieces are
    skipped, the rest runs (here with every contender in its own process)."""
    env_data = tmp_path / "no-data"
    env_data.mkdir()
    proc = subprocess.run(
        [sys.executable, str(BENCH / "backends.py"), "--smoke", "--out", str(tmp_path),
         "--backends", "jax,nosuch", "--sizes", "tiny", "--isolate-above", "0"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "CFCORE_DATA_DIR": str(env_data)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "backend 'nosuch' is not installed: skipped" in proc.stdout
    assert "ml-100k not found" in proc.stdout
    md = _check_outputs(tmp_path, "backends")
    assert "Devices: jax: cpu" in md
    assert "| jax-segment (default) |" in md and "| jax-gather |" in md
    assert "| tf |" not in md


@pytest.mark.slow
def test_peers_smoke(tmp_path, ml100k):
    if importlib.util.find_spec("surprise") is None:
        msg = "scikit-surprise is not installed (pip install 'cfcore[bench]')"
        if os.environ.get("CI") or os.environ.get("CFCORE_REQUIRE_BACKENDS"):
            pytest.fail(msg + "; CI runs every benchmark")
        pytest.skip(msg)
    out = _run_script("peers.py", out_dir=tmp_path)
    md = _check_outputs(tmp_path, "peers")
    assert "notebook TF1 loop: session.run((train_op, metrics)) per step" in md
    # surprise's RMSE on u1 at its defaults, recomputed by the script: near the figure.
    rmse = float(out.split("surprise SVD rmse ")[1].split()[0])
    assert 0.93 < rmse < 0.97


def _need(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        msg = f"{what} is not installed (pip install 'cfcore[bench]')"
        if os.environ.get("CI") or os.environ.get("CFCORE_REQUIRE_BACKENDS"):
            pytest.fail(msg + "; CI runs every benchmark")
        pytest.skip(msg)


def _table_value(md: str, row_start: str, column: int) -> float:
    """The number in `column` (0-based, after the leading pipe) of the first row starting so."""
    line = next(ln for ln in md.splitlines() if ln.startswith(row_start))
    return float(line.split("|")[column + 1].split()[0])


@pytest.mark.slow
def test_implicit_peers_smoke(tmp_path, ml100k):
    _need("implicit", "implicit")
    _run_script("implicit_peers.py", out_dir=tmp_path)
    md = _check_outputs(tmp_path, "implicit_epoch")
    # A sweep time for cfcore and for implicit, each solver.
    for row in (
        "| cfcore jax | cg |",
        "| implicit (2 threads) | cg |",
        "| cfcore jax | cholesky |",
    ):
        assert any(ln.startswith(row) and ln.endswith("| ok |") for ln in md.splitlines()), row


def _toml(value) -> str:
    """A TOML value (inline tables and arrays) of a JSON-like one."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)  # strings, numbers, true / false


def _small_experiment(
    config: str, tmp_path: Path, protocol: dict, first_only: bool = True,
    overrides: dict | None = None,
) -> Path:  # fmt: skip
    """The shipped experiment `config` made small (`protocol` overridden, each space cut to its
    first value, `overrides[name]` merged into the contender of that name, its `space` key by
    key): the path of the smaller config."""
    import tomllib

    cfg = tomllib.loads((BENCH / "experiments" / config).read_text())
    cfg["protocol"].update(protocol)
    lines = [f"name = {_toml(cfg['name'])}", "", "[protocol]"]
    lines += [f"{k} = {_toml(v)}" for k, v in cfg["protocol"].items()]
    for c in cfg["contender"]:
        more = dict((overrides or {}).get(c.get("name"), {}))
        c = {**c, "space": {**c.get("space", {}), **more.pop("space", {})}, **more}
        lines += ["", "[[contender]]"]
        for k, v in c.items():
            if k == "space":
                cut = {n: (x[0] if isinstance(x, list) and first_only else x) for n, x in v.items()}
                lines.append(f"space = {_toml(cut)}")
            else:
                lines.append(f"{k} = {_toml(v)}")
    path = tmp_path / config
    path.write_text("\n".join(lines) + "\n")
    return path


def _run_experiment(config: Path, out_dir: Path) -> None:
    """`benchmarks/experiment.py CONFIG --out-dir OUT` in a fresh process, which must succeed."""
    env = {**os.environ, "CFCORE_DATA_DIR": str(DATA_DIR)}
    proc = subprocess.run(
        [sys.executable, str(BENCH / "experiment.py"), str(config), "--out-dir", str(out_dir)],
        capture_output=True, text=True, timeout=900, cwd=ROOT, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_ials_vs_implicit_experiment_smoke(tmp_path, ml100k):
    """The accuracy comparison of iALS with `implicit`, EASE and popularity (the config that
    replaced `implicit_peers.py`'s accuracy part), on one dataset and seed: every contender
    scored by the protocol, the models well above popularity, popularity well above chance."""
    _need("implicit", "implicit")
    small = _small_experiment(
        "ials_vs_implicit.toml", tmp_path, {"datasets": [{"name": "100k", "test_share": 0.2}],
                                            "seeds": [0]},
    )  # fmt: skip
    _run_experiment(small, tmp_path)
    doc = json.loads((tmp_path / "ials_vs_implicit.json").read_text())
    ndcg = {s["contender"]: s["mean"] for s in doc["summary"] if s["metric"] == "ndcg@100"}
    assert set(ndcg) == {"iALS", "implicit ALS", "EASE", "popularity"}, ndcg
    assert 0.15 < ndcg["popularity"] < 0.35, ndcg
    for name in ("iALS", "implicit ALS", "EASE"):
        assert ndcg[name] > ndcg["popularity"] + 0.05, ndcg


@pytest.mark.slow
def test_biased_peers_smoke(tmp_path, ml100k):
    """The accuracy comparison (the config that replaced `biased_peers.py`'s tuning) on u1,
    then the race that reads the settings it chose: each solver reaches a sane RMSE, trains
    what the experiment chose, and a filled compilation cache changes no number."""
    _need("surprise", "scikit-surprise")
    small = _small_experiment(
        "biased_vs_surprise.toml", tmp_path, {"folds": ["u1"]},
        overrides={"BiasedMF (ALS)": {"steps": 3}, "BiasedMF (Adam)": {"steps": 144},
                   "BiasedMF posterior average": {"space": {"samples": 3}}},
    )  # fmt: skip
    _run_experiment(small, tmp_path)
    settings = tmp_path / "biased_vs_surprise.json"
    runs = {r["contender"]: r for r in json.loads(settings.read_text())["runs"]}
    assert set(runs) == {"BiasedMF (ALS)", "BiasedMF (Adam)", "BiasedMF posterior average",
                         "surprise SVD"}, set(runs)  # fmt: skip
    for run in runs.values():
        assert 0.85 < run["rmse"] < 1.2, run
    out = _run_script("biased_peers.py", "--settings", str(settings), out_dir=tmp_path)
    timing = _check_outputs(tmp_path, "biased_timing")
    for solver in ("als", "adam", "gibbs"):
        rmse = _table_value(timing, f"| u1 | BiasedMF {solver} | jax |", 4)
        assert 0.85 < rmse < 1.3, (solver, rmse)
    # The race trains the experiment's choice: ALS's sweeps (at most 2 in smoke mode).
    als = json.loads(runs["BiasedMF (ALS)"]["best"])
    assert f"embedding_dim {als['embedding_dim']}" in timing
    assert re.search(r"als jax: test rmse [\d.]+ after 2 sweeps", out), out
    # surprise's RMSE on u1 at its defaults, recomputed here: near the figure.
    assert 0.93 < float(out.split("surprise SVD rmse ")[1].split()[0]) < 0.97
    # With a compilation cache, twice: the first run fills it, the second starts with it full
    # and computes the same RMSEs.
    cache = tmp_path / "compiled"
    for run in (1, 2):
        out = _run_script(
            "biased_peers.py", "--settings", str(settings), "--compilation-cache", str(cache),
            out_dir=tmp_path,
        )  # fmt: skip
        cached = _check_outputs(tmp_path, "biased_timing_cached")
        found = re.search(r"compilation cache .*: (\d+) entries at the start", out)
        assert found is not None, out
        entries = int(found[1])
        assert (entries == 0) == (run == 1), (run, out)
        assert f"{entries} compiled programs in it when this process started" in cached
    for solver in ("als", "adam", "gibbs"):
        row = f"| u1 | BiasedMF {solver} | jax |"
        assert _table_value(cached, row, 4) == _table_value(timing, row, 4), solver


# ------------------------------------------------------------------------------------ overhead, golden


@pytest.mark.slow
def test_overhead_smoke(tmp_path, ml100k):
    out = _run_script("overhead.py", out_dir=tmp_path)
    text = (tmp_path / "overhead.md").read_text()
    # Every contender of both backends has a row with a positive time and a ratio.
    for name in (
        "hand-written jax.jit",
        "hand-written tf.function(jit_compile=True)",
        "cfcore make_step",
        "cfcore fit loop (chunks of 10)",
        "hand-written tf.function(jit_compile=True), functional",
    ):
        assert f"| {name} |" in text, name
    assert "Measured" in text  # the machine and versions stamp
    assert "wrote" in out


@pytest.mark.slow
def test_golden_smoke(tmp_path, ml100k):
    _run_script("golden.py", "--seeds", "0", out_dir=tmp_path)
    text = (tmp_path / "golden.md").read_text()
    for exp in ("MF d=30, init 0.5", "MF d=30, init 0.05", "Regularized d=35"):
        assert exp in text
    assert " | jax | " in text and " | tf | " in text  # a row per backend


@pytest.mark.parametrize("stem", ["peers", "backends", "mse_scaling", "scale"])
def test_replot_redraws_the_png_from_the_saved_results(tmp_path, stem):
    import shutil

    for ext in ("json", "md"):
        shutil.copy(BENCH / "results" / f"{stem}.{ext}", tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    proc = subprocess.run(
        [sys.executable, str(BENCH / f"{stem}.py"), "--replot", "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Nothing measured, nothing else rewritten: the tables and the numbers stay as they were.
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.suffix != ".png"} == before
    (tmp_path / f"{stem}.json").unlink()
    proc = subprocess.run(
        [sys.executable, str(BENCH / f"{stem}.py"), "--replot", "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode != 0 and f"{stem}.json does not exist" in proc.stderr


@pytest.mark.slow
def test_time_to_result_smoke(tmp_path, ml100k):
    _need("surprise", "scikit-surprise")
    _need("implicit", "implicit")
    _run_script("time_to_result.py", "--backends", "jax", out_dir=tmp_path, timeout=900)
    rows = json.loads((tmp_path / "time_to_result.json").read_text())
    md = (tmp_path / "time_to_result.md").read_text()
    assert "Measured " in md and "cores visible" in md
    script = {(r["who"], r["cache"]): r for r in rows if r["part"] == "script"}
    # A filled cache changes how long, never what: the same RMSE bit for bit, and a sane one.
    empty, filled = script[("cfcore jax", "empty")], script[("cfcore jax", "filled")]
    assert empty["rmse"] == filled["rmse"] and 0.85 < empty["rmse"] < 1.05
    assert 0.85 < script[("surprise SVD", "-")]["rmse"] < 1.05
    assert {r["cache"] for r in rows if r["part"] == "cli"} == {"-", "empty", "filled"}
    for part in ("ials-100k", "ml-20m"):
        fits = [r for r in rows if r["part"] == part]
        assert {r["who"] for r in fits} == {"implicit", "cfcore jax"}, part
        assert all(r["first_fit_s"] > 0 for r in fits), part


@pytest.mark.subprocess
def test_interrupt_stress_smoke(tmp_path, ml100k_files):
    proc = subprocess.run(
        [sys.executable, str(BENCH / "interrupt_stress.py"), "--runs", "2", "--from", "0",
         "--to", "0.1", "--name", "smoke", "--out-dir", str(tmp_path), "--",
         "explore", "--dataset", str(ml100k_files), "--out", str(tmp_path / "explore")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (tmp_path / "smoke.md").read_text()
    assert "Measured " in md and "cores visible" in md
    codes = re.search(r"Exit codes: (.+)$", md, re.M)
    assert codes is not None, md
    # Each run ends cleanly: interrupted (130) or finished first (0), two runs in all.
    counts = dict(x.split(": ") for x in codes.group(1).split(", "))
    assert set(counts) <= {"0", "130"} and sum(map(int, counts.values())) == 2, md


def test_tune_batch_smoke(tmp_path, ml100k_files):
    _run_script("tune_batch.py", "--grids", "ials", "--batch", "4", out_dir=tmp_path)
    md = (tmp_path / "tune_batch_smoke.md").read_text()
    assert "Measured " in md and "cores visible" in md
    rows = json.loads((tmp_path / "tune_batch_smoke.json").read_text())["rows"]
    # The same best point either way (how fast is the benchmark's answer, not a test's).
    assert rows[0]["best, batch 1"] == pytest.approx(rows[0]["best, batched"], rel=1e-5)


@pytest.mark.slow
def test_ials_fits_smoke(tmp_path, ml100k):
    """Whole fits in fresh processes, this checkout and a --tree one (here the same code)."""
    pytest.importorskip("torch")
    env = {**os.environ, "CFCORE_DATA_DIR": str(DATA_DIR)}
    proc = subprocess.run(
        [sys.executable, str(BENCH / "ials_fits.py"), "--data", "ml-100k", "--backends", "torch",
         "--no-implicit", "--tree", f"again={ROOT}", "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = json.loads((tmp_path / "ials_fits.json").read_text())["rows"]
    assert [(r["who"], r["code"]) for r in rows] == [
        ("cfcore torch", "this"),
        ("cfcore torch", "again"),
    ]
    for r in rows:
        # Every whole call timed; `sweep_s` is a difference of two of them, so on a loaded
        # machine it may even come out below zero: finite is all a test can ask of it.
        assert all(r[k] > 0 for k in ("first_fit_s", "second_fit_s", "continue_1_s")), r
        assert math.isfinite(r["sweep_s"]), r
    md = (tmp_path / "ials_fits.md").read_text()
    assert "Measured " in md and md.count("| cfcore torch |") == 2
