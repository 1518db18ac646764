"""`cfcore compare` and what it shares with the cross-backend conformance tests
(`cfcore.eval.agreement`): the runs, the differences and the tolerances."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import cfcore
from cfcore.cli import app
from cfcore.eval import agreement
from cfcore.optimizers import SGD

from ..conftest import DATA_DIR, load_backend

runner = CliRunner()
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def invoke(*args: str):
    result = runner.invoke(app, ["compare", *args], env={"COLUMNS": "250", "FORCE_COLOR": None})
    return result, " ".join(ANSI.sub("", result.output).split())


@pytest.fixture(scope="module")
def ratings_csv(tmp_path_factory) -> Path:
    """A tiny synthetic problem (60 users, 40 items) as a CSV with MovieLens-style ids."""
    r = cfcore.data.synthetic.synthetic_ratings(60, 40, 1500, seed=3)
    df = pd.DataFrame({"userId": r.users + 1, "movieId": r.items * 10, "rating": r.values})
    path = tmp_path_factory.mktemp("data") / "mine.csv"
    df.to_csv(path, index=False)
    return path


TINY = ("--steps", "40", "--eval-every", "10", "--dim", "4", "--lr", "0.3", "--init-stddev", "0.3")


def _direct(be_name: str, path: Path):
    """The same run, written out by hand: the numbers compare must reproduce."""
    df = pd.read_csv(path)
    r = cfcore.Ratings.from_frame(df, "userId", "movieId", "rating")
    train, test = r.split(holdout_fraction=0.1, seed=0)
    m = cfcore.RegularizedMF(
        embedding_dim=4, init_stddev=0.3, regularization_coeff=0.1, gravity_coeff=1.0
    )
    m.fit(train, test=test, steps=40, optimizer=SGD(0.3), backend=be_name, eval_every=10,
          progress=False)  # fmt: skip
    return m, train, test


def test_compare_on_a_ratings_file(ratings_csv: Path, tmp_path: Path) -> None:
    names = ["jax", "tf", "torch"]
    for n in names:
        load_backend(n)
    result, text = invoke(
        "--ratings", str(ratings_csv), "--backends", *names, *TINY, "--out", str(tmp_path)
    )
    assert result.exit_code == 0, (text, result.exception)
    assert "the 3 backends agree within the tolerances" in text
    for needle in ("largest difference", "tolerance", "compile (s)", "time per step (ms)",
                   "peak memory (MiB)", "user embeddings", "item embeddings"):  # fmt: skip
        assert needle in text, needle
    assert "FAIL" not in text

    out = json.loads((tmp_path / "compare.json").read_text())
    assert list(out["backends"]) == names and out["agree"] is True
    assert out["steps"] == 40 and out["data"]["name"] == "mine.csv"
    diffs = {d["quantity"]: d for d in out["differences"]}
    assert set(diffs) == {
        "train_mse", "test_mse", "test_mse_history", "embeddings:user", "embeddings:item"
    }  # fmt: skip
    for q, d in diffs.items():
        assert d["tolerance"] == agreement.TOLERANCES["embeddings" if "emb" in q else q]
        assert 0 <= d["value"] <= d["tolerance"] and d["ok"], d
    for n in names:
        b = out["backends"][n]
        assert b["compile_s"] >= 0 and b["step_s"] > 0 and b["peak_rss_bytes"] > 2**20
    # The numbers are those of the same training done by hand (deterministic on a CPU).
    runs = {n: _direct(n, ratings_csv) for n in ("jax", "tf")}
    for n, (m, train, test) in runs.items():
        assert out["backends"][n]["train"]["mse"] == pytest.approx(
            m.evaluate(train)["mse"], abs=1e-6
        )
        assert out["backends"][n]["test"]["n"] == len(test) == 150
    emb = {n: m.embeddings["item"] for n, (m, _, _) in runs.items()}
    direct = float(np.max(np.abs(emb["jax"].astype(np.float64) - emb["tf"])))
    assert diffs["embeddings:item"]["value"] >= direct - 1e-6  # jax-tf is one of the pairs

    md = (tmp_path / "compare.md").read_text()
    assert "| quantity | jax | tf | torch | largest difference | tolerance | agrees |" in md
    assert "All backends agree within the tolerances." in md and "Measured on" in md
    assert not list(tmp_path.glob(".*.tmp"))


def test_compare_fails_when_a_difference_passes_its_tolerance(
    ratings_csv: Path, monkeypatch
) -> None:
    load_backend("jax")
    load_backend("tf")
    monkeypatch.setitem(agreement.TOLERANCES, "test_mse", -1.0)  # no difference can meet it
    result, text = invoke("--ratings", str(ratings_csv), "--backends", "jax,tf", *TINY)
    assert result.exit_code == 1 and "Traceback" not in text
    assert "FAIL" in text
    assert "backends disagree beyond the tolerances: test_mse differs by" in text
    assert "between jax and tf (tolerance -1)" in text


def test_compare_errors(ratings_csv: Path, tmp_path: Path) -> None:
    load_backend("jax")
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"u": [1], "movieId": [2], "rating": [3]}).to_csv(bad, index=False)
    cases = [
        (("--backends", "numpy", "jax"), "numpy is the float64 reference backend"),
        (("--backends", "jax"), "comparing needs at least two backends, got ['jax']"),
        (("--backends", "jax", "caffe"), "backend 'caffe' is not installed"),
        (("--backends", "jax", "jax"), "backend named twice"),
        (("jax", "tf"), "unexpected argument(s) ['jax', 'tf']: name backends with --backends"),
        (("--model", "softmax", "--backends", "jax,tf"), "--model softmax is not supported"),
        (("--ratings", str(bad), "--backends", "jax,tf"), "has no user column (it has ['u', "),
        (("--ratings", str(tmp_path / "no.csv"), "--backends", "jax,tf"), "does not exist"),
    ]
    for args, needle in cases:
        result, text = invoke(*args)
        assert result.exit_code == 1, (args, text)
        assert "error:" in text and needle in text, (needle, text)


def _run(name: str, item: np.ndarray, test_mse: list[float]) -> agreement.BackendRun:
    h = pd.DataFrame({"step": [0, 10], "test_mse": test_mse})
    emb = {"user": np.zeros((2, 2), np.float32), "item": item.astype(np.float32)}
    return agreement.BackendRun(name, h, emb, {"mse": 1.0}, {"mse": test_mse[-1]})


def test_largest_differences_over_every_pair() -> None:
    item = np.zeros((3, 2))
    runs = [
        _run("a", item, [2.0, 1.0]),
        _run("b", item + np.array([[0, 0], [0, 2e-3], [0, 0]]), [2.0, 1.0 + 5e-5]),
        _run("c", item, [2.0 + 3e-4, 1.0 - 2e-5]),
    ]
    d = {x.quantity: x for x in agreement.largest_differences(runs)}
    assert d["embeddings:item"].pair == ("a", "b") and not d["embeddings:item"].ok
    assert d["embeddings:item"].value == pytest.approx(2e-3)
    assert d["embeddings:user"].value == 0 and d["embeddings:user"].ok
    assert d["test_mse"].pair == ("b", "c") and d["test_mse"].value == pytest.approx(7e-5)
    assert d["test_mse"].ok and d["train_mse"].ok
    assert d["test_mse_history"].value == pytest.approx(3e-4) and not d["test_mse_history"].ok
    assert d["test_mse_history"].pair == ("a", "c")
    with pytest.raises(ValueError, match="needs at least two runs, got 1"):
        agreement.largest_differences(runs[:1])


@pytest.mark.slow  # ml-100k, 500 steps of the regularized model on two backends
def test_compare_on_ml100k(ml100k, tmp_path: Path) -> None:
    load_backend("jax")
    load_backend("tf")
    result, text = invoke(
        "--dataset", "100k", "--data-dir", str(DATA_DIR), "--backends", "jax", "tf",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert result.exit_code == 0, (text, result.exception)
    out = json.loads((tmp_path / "compare.json").read_text())
    assert out["agree"] and out["data"]["train_ratings"] == 90_000 and out["steps"] == 500
    # The regularized model's test MSE after 500 steps, as in the golden runs' trajectory.
    for b in out["backends"].values():
        assert 2.0 < b["test"]["mse"] < 3.5


def test_every_option_has_help() -> None:
    import typer

    cmd = typer.main.get_command(app).commands["compare"]
    assert cmd.help and "same start" in cmd.help
    for param in cmd.params:
        if param.name != "help":
            assert getattr(param, "help", None), f"compare --{param.name} has no help text"
    result, text = invoke("--help")
    assert result.exit_code == 0
    # Defaults in square brackets are escaped, so rich prints them instead of eating them.
    assert "Embedding dimension [mf: 30, regularized: 35]" in text
