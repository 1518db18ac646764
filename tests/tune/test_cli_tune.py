"""`cfcore tune` and `cfcore train --config`, run in process on a tiny release."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import cfcore

from .._support.tiny_data import write_tiny_release
from ..cli.test_cli import assert_fails, invoke

MISSING = "/nonexistent/cfcore-data"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_release(
        tmp_path_factory.mktemp("tune") / "data", users=60, items=40, per_user=12
    )


def _ok(result, text: str) -> None:
    assert result.exit_code == 0, text


def test_tune_then_train_the_best_setting(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "tune"
    result, text = invoke(
        "tune", "--model", "wals", "--dataset", str(tiny), "--backend", "jax", "--steps", "2",
        "--grid", "regularization_coeff=0.05,5", "--grid", "embedding_dim=3,4", "--out", str(out),
        "--batch", "4",
    )  # fmt: skip
    _ok(result, text)
    table = pd.read_csv(out / "tune.csv")
    assert len(table) == 4 and set(table["embedding_dim"]) == {3, 4}
    best = json.loads((out / "best.json").read_text())
    i = int(table["rmse"].to_numpy().argmin())
    assert best["model"] == "wals"
    assert best["settings"] == {
        "regularization_coeff": table["regularization_coeff"][i],
        "embedding_dim": table["embedding_dim"][i],
        "steps": 2,
    }
    assert "<html>" in (out / "report.html").read_text()

    run = tmp_path / "run"
    result, text = invoke(
        "train", "--config", str(out / "best.json"), "--dataset", str(tiny), "--backend", "jax",
        "--out", str(run), "--no-progress", "--no-report",
    )  # fmt: skip
    _ok(result, text)
    model = cfcore.load(run / "model.npz")
    assert type(model) is cfcore.WALS and model.step == 2
    assert model.spec.regularization_coeff == best["settings"]["regularization_coeff"]
    assert model.spec.embedding_dim == best["settings"]["embedding_dim"]

    # An option given on the command line wins over the file.
    other = 7 - best["settings"]["embedding_dim"]  # the other of 3 and 4
    result, text = invoke(
        "train", "--config", str(out / "best.json"), "--dataset", str(tiny), "--backend", "jax",
        "--out", str(run), "--no-progress", "--no-report", "--dim", str(other),
    )  # fmt: skip
    _ok(result, text)
    model = cfcore.load(run / "model.npz")
    assert model.spec.embedding_dim == other
    assert model.spec.regularization_coeff == best["settings"]["regularization_coeff"]


def _config(tmp_path: Path, model: str, settings: dict) -> str:
    path = tmp_path / "best.json"
    path.write_text(json.dumps({"model": model, "settings": settings}))
    return str(path)


@pytest.mark.parametrize(
    ("model", "settings", "args", "needles"),
    [
        ("wals", {"cg_steps": 5}, (), ("'cg_steps'", "--model wals")),
        ("wals", {"learning_rate": 0.1}, (), ("'learning_rate'",)),
        ("ials", {"regularization_exponent": 0.5}, (), ("'regularization_exponent'",)),
        ("wals", {"regularization_coeff": 0.1}, ("--model", "ials"), ("--model wals, not --model ials",)),
        ("nope", {}, (), ("unknown model 'nope'",)),
        ("wals", {"solver": "qr"}, (), ("'solver'", "'qr'")),
        ("wals", {"regularization_coeff": -1.0}, (), ("--regularization", "got -1")),
    ],
)  # fmt: skip
def test_train_config_refuses_what_it_cannot_use_before_reading_data(
    tmp_path: Path, model: str, settings: dict, args: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    path = _config(tmp_path, model, settings)
    result, text = invoke(
        "train", "--config", path, "--dataset", MISSING, "--out", str(tmp_path / "r"), *args
    )
    assert_fails(result, text, *needles)
    assert "nonexistent" not in text, text


def test_train_config_missing_file(tmp_path: Path) -> None:
    result, text = invoke("train", "--config", str(tmp_path / "none.json"), "--dataset", MISSING)
    assert_fails(result, text, "no such config file")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("--grid", "regularization_coeff"), ("--grid expects NAME=VALUE", "'regularization_coeff'")),
        (("--grid", "regularization_coef=0.1"), ("no hyper-parameter 'regularization_coef'",)),
        (("--grid", "regularization_coeff=0.1,-3"), ("regularization_coeff", "-3")),
        (("--model", "ials", "--grid", "learning_rate=0.1"), ("'learning_rate'",)),
        (("--search", "random", "--trials", "0"), ("trials", "got 0")),
        (("--budget-seconds", "-1"), ("budget_seconds", "got -1")),
        (("--metric", "ndcg@10"), ("'ndcg@10'",)),
        (("--validation", "1"), ("validation", "got 1")),
        (("--eval-every", "0"), ("--eval-every", "got 0")),
        (("--batch", "0"), ("batch", "got 0")),
        (("--fold", "u9"), ("unknown fold 'u9'",)),
        (("--backend", "nope"), ("unknown backend 'nope'",)),
        (("--space", "{tmp}/none.json"), ("no such --space file",)),
        (("--space", "{tmp}/bad.json"), ("'regularization_coeff'", "loguniform")),
        (("--space", "{tmp}/good.json", "--grid", "regularization_coeff=1"), ("already in the space",)),
        (("--out", "{tmp}/file/x"), ("is a file, not a folder",)),
    ],
)  # fmt: skip
def test_tune_checks_every_option_before_reading_data(
    tmp_path: Path, args: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "bad.json").write_text(json.dumps({"regularization_coeff": {"loguniform": [0, 1]}}))
    (tmp_path / "good.json").write_text(
        json.dumps({"regularization_coeff": {"loguniform": [0.01, 1]}})
    )
    args = tuple(a.replace("{tmp}", str(tmp_path)) for a in args)
    result, text = invoke("tune", "--model", "wals", "--dataset", MISSING, *args)
    assert_fails(result, text, *needles)
    assert "nonexistent" not in text, text
