"""`cfcore train --model wals|ials|biased` on the shared MovieLens 100K copy, and their pictures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import cfcore
from cfcore import viz

from ..conftest import load_backend
from .test_cli import assert_fails, assert_ok, train


@pytest.mark.parametrize(
    ("model", "needles", "columns"),
    [
        (
            "wals",
            ["WALS(embedding_dim=4", "ALS sweeps", "after 2 steps", "loss parts: observed"],
            ["step", "train_mse", "test_mse", "observed_loss", "regularization_loss",
             "gravity_loss", "total_loss"],
        ),
        (
            "ials",
            ["IALS(embedding_dim=4", "positives: ratings > 3.5", "recall@10", "ndcg@10"],
            ["step", "observed_loss", "unobserved_loss", "regularization_loss", "total_loss"],
        ),
        (
            "biased",
            ["BiasedMF(embedding_dim=4", "gravity_coeff=0.0", "ALS sweeps", "RMSE"],
            ["step", "train_mse", "test_mse", "observed_loss", "regularization_loss",
             "bias_regularization_loss", "gravity_loss", "total_loss"],
        ),
    ],
)  # fmt: skip
def test_train_als_models(ml100k, tmp_path: Path, model, needles, columns) -> None:
    load_backend("jax")
    result, text = train(tmp_path, "--model", model, "--steps", "2", "--dim", "4",
                         "--backend", "jax")  # fmt: skip
    assert_ok(result, text)
    for needle in needles:
        assert needle in text, (needle, text)
    history = pd.read_csv(tmp_path / "history.csv")
    # Sweep models record step 0 and one row after the last sweep unless --eval-every says.
    assert list(history.columns) == columns and history["step"].tolist() == [0, 2]
    loaded = cfcore.load(tmp_path / "model.npz")
    assert type(loaded).__name__ == {"wals": "WALS", "ials": "IALS", "biased": "BiasedMF"}[model]
    assert loaded.step == 2
    emb = np.load(tmp_path / "embeddings.npz")
    np.testing.assert_array_equal(emb["item"], loaded.embeddings["item"])
    # The run's pictures: curves of its loss parts.
    chart = viz.training_curves_chart(history)
    assert chart is not None


def test_train_biased_by_gradient_steps(ml100k, tmp_path: Path) -> None:
    load_backend("jax")
    result, text = train(tmp_path, "--model", "biased", "--steps", "20", "--dim", "4",
                         "--optimizer", "adam", "--lr", "0.05", "--eval-every", "10",
                         "--backend", "jax")  # fmt: skip
    assert_ok(result, text)
    assert "Adam(learning_rate=0.05" in text and "after 20 steps" in text
    assert pd.read_csv(tmp_path / "history.csv")["step"].tolist() == [0, 10, 20]


def test_train_biased_posterior_average(ml100k, tmp_path: Path) -> None:
    load_backend("jax")
    result, text = train(tmp_path, "--model", "biased", "--steps", "2", "--dim", "3",
                         "--posterior-samples", "4", "--burn-in", "1", "--noise-precision", "3",
                         "--thin", "2",
                         "--backend", "jax")  # fmt: skip
    assert_ok(result, text)
    assert "posterior average: 4 Gibbs draws after 1 of burn-in (one in 2 kept), noise" in text
    assert "after 2 steps" in text and "RMSE" in text
    history = pd.read_csv(tmp_path / "history.csv")
    assert list(history.columns) == ["sweep", "kept", "train_mse", "test_mse", "seconds"]
    assert history["kept"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4]
    loaded = cfcore.load(tmp_path / "model.npz")
    assert type(loaded).__name__ == "BiasedMF" and loaded.spec.embedding_dim == 3 * 4
    # The history's last test MSE is the saved model's own.
    _, test = ml100k.ratings.split(holdout_fraction=0.1, seed=0)
    assert loaded.evaluate(test)["mse"] == pytest.approx(history["test_mse"].iloc[-1], rel=1e-4)


def test_posterior_samples_need_the_biased_model(ml100k, tmp_path: Path) -> None:
    result, text = train(tmp_path, "--model", "wals", "--steps", "1", "--posterior-samples", "3")
    assert_fails(result, text, "--posterior-samples applies to --model biased, not --model wals")


def test_train_als_bad_settings(ml100k, tmp_path: Path) -> None:
    load_backend("jax")
    result, text = train(tmp_path, "--model", "wals", "--steps", "1", "--regularization", "0",
                         "--backend", "jax")  # fmt: skip
    assert_fails(result, text, "regularization_coeff must be a finite number > 0, got 0.0")


def test_loss_part_layouts_of_each_model() -> None:
    steps = [0, 1]
    ials = pd.DataFrame({"step": steps, "observed_loss": [3.0, 2.0], "unobserved_loss": [1.0, 2.0],
                         "regularization_loss": [0.1, 0.2], "total_loss": [4.1, 4.2]})  # fmt: skip
    assert viz.training_curves_chart(ials) is not None
    with pytest.raises(ValueError, match=r"lacks \['regularization_loss'\]"):
        viz.training_curves_chart(ials.drop(columns="regularization_loss"))
    biased = ials.drop(columns="unobserved_loss").assign(bias_regularization_loss=[0.1, 0.1])
    with pytest.raises(ValueError, match=r"lacks \['gravity_loss'\]"):
        viz.training_curves_chart(biased)
    assert viz.training_curves_chart(biased.assign(gravity_loss=[0.0, 0.0])) is not None
