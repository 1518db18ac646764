"""The `cfcore train` command, run in process on the shared MovieLens 100K copy (read-only)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

import cfcore
from cfcore.cli import app

from ..conftest import DATA_DIR, load_backend

runner = CliRunner()
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def invoke(*args: str):
    """Runs the CLI; returns the result and its output with ANSI codes and line wraps removed.

    A wide terminal keeps every option's help on one line of the help table.
    """
    result = runner.invoke(app, list(args), env={"COLUMNS": "400", "FORCE_COLOR": None})
    text = " ".join(ANSI.sub("", result.output).split())
    return result, text


def train(tmp_path: Path, *args: str):
    return invoke(
        "train", "--data-dir", str(DATA_DIR), "--out", str(tmp_path), "--no-progress", *args
    )


def assert_ok(result, text: str) -> None:
    assert result.exit_code == 0, (text, result.exception)
    assert result.exception is None


def assert_fails(result, text: str, *needles: str) -> None:
    assert result.exit_code == 1, text
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # no crash
    assert "Traceback" not in text
    assert "error:" in text
    for needle in needles:
        assert needle in text, f"{needle!r} not in {text!r}"


# ---------------------------------------------------------------------------- successful runs


def test_train_mf_jax(ml100k, tmp_path: Path) -> None:
    load_backend("jax")
    result, text = train(tmp_path, "--model", "mf", "--steps", "20", "--backend", "jax")
    assert_ok(result, text)
    assert "MatrixFactorization(embedding_dim=30, init_stddev=0.5" in text
    assert "(90000 train / 10000 test ratings), backend jax, SGD(learning_rate=10.0)" in text
    assert "after 20 steps" in text
    for header in ("split", "MSE", "RMSE", "MAE", "ratings"):
        assert header in text
    assert "loss parts" not in text  # only for the regularized model

    history = pd.read_csv(tmp_path / "history.csv")
    assert list(history.columns) == ["step", "train_mse", "test_mse"]
    assert history["step"].tolist() == [0, 10, 20]
    assert history["step"].iloc[-1] == 20
    assert np.isfinite(history[["train_mse", "test_mse"]].to_numpy()).all()
    assert history["train_mse"].iloc[-1] < history["train_mse"].iloc[0]
    # The table's rows are the final evaluation: MSE, RMSE = sqrt(MSE), then the rating count.
    for split, n in (("train", 90000), ("test", 10000)):
        mse = history[f"{split}_mse"].iloc[-1]
        row = re.search(rf"│ {split} │ ([\d.]+) │ ([\d.]+) │ ([\d.]+) │ (\d+) │", text)
        assert row is not None, text
        assert float(row.group(1)) == pytest.approx(mse, abs=2e-4)
        assert float(row.group(2)) == pytest.approx(np.sqrt(mse), abs=2e-4)
        assert 0 < float(row.group(3)) <= float(row.group(2)) + 1e-4  # MAE <= RMSE
        assert int(row.group(4)) == n

    with np.load(tmp_path / "embeddings.npz") as emb:
        assert sorted(emb.files) == ["item", "user"]
        assert emb["user"].shape == (943, 30) and emb["user"].dtype == np.float32
        assert emb["item"].shape == (1682, 30) and emb["item"].dtype == np.float32
        assert np.isfinite(emb["user"]).all() and np.isfinite(emb["item"]).all()
    assert (
        f"wrote {tmp_path / 'history.csv'}, {tmp_path / 'embeddings.npz'} and {tmp_path / 'model.npz'}"
        in text
    )
    loaded = cfcore.load(tmp_path / "model.npz")
    with np.load(tmp_path / "embeddings.npz") as emb:
        np.testing.assert_array_equal(loaded.embeddings["item"], emb["item"])
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_train_regularized_tf(ml100k, tmp_path: Path) -> None:
    load_backend("tf")
    out = tmp_path / "nested" / "run"  # created on demand
    result, text = train(out, "--steps", "20", "--backend", "tf", "--dim", "8")
    assert_ok(result, text)
    assert "RegularizedMF(embedding_dim=8, init_stddev=0.05" in text
    assert "regularization_coeff=0.1, gravity_coeff=1.0" in text
    assert "backend tf, SGD(learning_rate=20.0)" in text
    history = pd.read_csv(out / "history.csv")
    assert list(history.columns) == [
        "step",
        "train_mse",
        "test_mse",
        "observed_loss",
        "regularization_loss",
        "gravity_loss",
        "total_loss",
    ]
    assert history["step"].tolist() == [0, 10, 20]
    last = history.iloc[-1]
    assert last["observed_loss"] == pytest.approx(last["train_mse"])
    assert last["total_loss"] == pytest.approx(
        last["observed_loss"] + last["regularization_loss"] + last["gravity_loss"], rel=1e-5
    )
    assert (
        f"loss parts: observed {last['observed_loss']:.4f}, "
        f"regularization {last['regularization_loss']:.4f}, gravity {last['gravity_loss']:.4f}"
    ) in text
    with np.load(out / "embeddings.npz") as emb:
        assert emb["user"].shape == (943, 8) and emb["item"].shape == (1682, 8)


def test_train_writes_an_offline_report(ml100k, tmp_path: Path) -> None:
    from cfcore import viz

    load_backend("jax")
    result, text = train(tmp_path, "--steps", "20", "--backend", "jax", "--dim", "5")
    assert_ok(result, text)
    page = tmp_path / "report.html"
    assert f"report: {page}" in text and page.resolve().as_uri() in text
    html = page.read_text()
    assert "cdn.jsdelivr.net" not in html and "vegaEmbed" in html  # the libraries are inside
    # Curves with the loss parts, then the norms; no t-SNE unless asked for (it takes ~20 s).
    sections = dict(viz.read_page(page))
    assert list(sections) == ["training curves", "embedding norm against number of ratings"]
    curves = json.dumps(sections["training curves"])
    history = pd.read_csv(tmp_path / "history.csv")
    for col in ("train_mse", "test_mse", "observed_loss", "regularization_loss", "gravity_loss"):
        assert f'"metric": "{col}"' in curves, col
    last = history["gravity_loss"].iloc[-1]
    assert f'"metric": "gravity_loss", "value": {json.dumps(float(last))}' in curves
    with np.load(tmp_path / "embeddings.npz") as emb:
        first = float(np.linalg.norm(emb["item"][0].astype(np.float64)))
    assert f'"norm_0": {json.dumps(first)}' in json.dumps(sections[list(sections)[1]])
    # A page holds the libraries once: well under two copies of the ~0.9 MB bundle.
    assert page.stat().st_size < 1.6e6

    result, text = train(tmp_path / "bare", "--steps", "10", "--backend", "jax", "--no-report")
    assert_ok(result, text)
    assert not (tmp_path / "bare" / "report.html").exists() and "report:" not in text
    result, text = train(tmp_path / "x", "--steps", "10", "--no-report", "--tsne")
    assert result.exit_code == 2 and "--tsne draws into report.html: it needs --report" in text
    assert not (tmp_path / "x").exists()


def test_train_fold(ml100k, tmp_path: Path) -> None:
    load_backend("jax")
    result, text = train(
        tmp_path, "--model", "mf", "--fold", "u1", "--steps", "10", "--dim", "4", "--backend", "jax"
    )
    assert_ok(result, text)
    assert "(80000 train / 20000 test ratings)" in text
    assert "80000 train" in text
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["step"].tolist() == [0, 10]


def test_train_regularized_without_penalties(ml100k, tmp_path: Path) -> None:
    load_backend("jax")
    result, text = train(
        tmp_path,
        *("--regularization", "0", "--gravity", "0", "--steps", "10", "--dim", "4"),
        *("--backend", "jax"),
    )
    assert_ok(result, text)
    assert (tmp_path / "history.csv").is_file()


# ---------------------------------------------------------------------------- errors


def test_unknown_backend(ml100k, tmp_path: Path) -> None:
    result, text = train(tmp_path, "--model", "mf", "--steps", "5", "--backend", "nope")
    assert_fails(
        result,
        text,
        "unknown backend 'nope'",
        f"available backends: {cfcore.available_backends()}",
    )
    assert not (tmp_path / "history.csv").exists()


def test_unknown_fold(ml100k, tmp_path: Path) -> None:
    result, text = train(tmp_path, "--fold", "u9", "--steps", "5", "--backend", "jax")
    assert_fails(result, text, "unknown fold 'u9'", "valid folds are u1, u2, u3, u4, u5, ua, ub")


def test_divergence(ml100k, tmp_path: Path) -> None:
    load_backend("jax")
    result, text = train(
        tmp_path, "--model", "mf", "--lr", "1e6", "--steps", "50", "--backend", "jax"
    )
    assert_fails(result, text, "NaN or infinite at step", "Lower the learning rate (now 1e+06)")
    step = int(re.search(r"NaN or infinite at step (\d+)", text).group(1))
    assert 1 <= step <= 50
    assert f"kept the parameters of step {step - 1}" in text


def test_nonexistent_dataset_path(tmp_path: Path) -> None:
    result, text = invoke(
        "train", "--dataset", "/nonexistent/path", "--out", str(tmp_path), "--no-progress"
    )
    assert_fails(
        result,
        text,
        "'/nonexistent/path'",
        "valid names are '100k' (or 'ml-100k'), '1m' (or 'ml-1m'), '10m' (or 'ml-10m'), "
        "'20m' (or 'ml-20m'), '25m' (or 'ml-25m'), 'latest' (or 'ml-latest'), "
        "'latest-small' (or 'ml-latest-small')",
    )


def test_zero_steps(ml100k, tmp_path: Path) -> None:
    load_backend("jax")
    result, text = train(tmp_path, "--steps", "0", "--backend", "jax")
    assert_fails(result, text, "steps must be a positive int, got 0")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--eval-every", "0"), "--eval-every must be a positive int, got 0"),
        (("--holdout", "1.5"), "--holdout must be in (0, 1), got 1.5"),
        (("--batch-size", "0"), "--batch-size must be a positive int, got 0"),
        (("--dim", "0"), "--dim must be a positive int, got 0"),
        (("--mse", "sparse"), "mse must be one of ('gather', 'dense'), got 'sparse'"),
    ],
)
def test_bad_settings(ml100k, tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    load_backend("jax")
    result, text = train(tmp_path, "--model", "mf", "--steps", "5", "--backend", "jax", *args)
    assert_fails(result, text, message)


def test_bad_choice_is_a_usage_error(tmp_path: Path) -> None:
    result, text = invoke("train", "--model", "svd", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert "svd" in text and "mf" in text and "regularized" in text


# ---------------------------------------------------------------------------- help


def _train_options() -> list:
    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    return [p for p in command.params if p.param_type_name == "option"]


def test_train_help_lists_every_option() -> None:
    result, text = invoke("train", "--help")
    assert result.exit_code == 0, text
    assert "Train a matrix-factorization model and write its history and embeddings." in text
    options = _train_options()
    names = {p.name for p in options}
    assert {
        "model", "backend", "dataset", "data_dir", "dim", "steps", "learning_rate", "optimizer",
        "init_stddev", "regularization", "gravity", "mse", "batch_size", "holdout", "fold",
        "seed", "eval_every", "out", "progress",
    } <= names  # fmt: skip
    for p in options:
        assert p.help, f"option {p.name} has no help text"
        for opt in (*p.opts, *p.secondary_opts):
            assert opt in text, f"{opt} missing from --help"
        # The first words of the help text are shown (later ones may hold markup-like brackets).
        head = p.help.split("[")[0].rstrip("\\ ").strip()  # drop the markup escape
        assert head in text, f"help of {p.name} ({head!r}) missing from --help"


def test_top_level_help() -> None:
    result, text = invoke("--help")
    assert result.exit_code == 0
    assert "train" in text
    assert "Train a matrix-factorization model" in text


def test_train_help_shows_model_defaults() -> None:
    result, text = invoke("train", "--help")
    assert result.exit_code == 0
    assert "[mf: 30, regularized: 35, " in text
    assert "[mf: 1000, regularized: 2000, " in text
    # Every model's declared default is shown, a model the command line does not name too.
    from cfcore.models.base import command_line_models

    for name, cls in command_line_models().items():
        line = cls.command_line
        assert line is not None
        if "--dim" in line.defaults:
            assert f"{name}: {line.defaults['--dim']}" in text
