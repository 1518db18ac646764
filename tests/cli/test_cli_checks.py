"""Every command's options are checked before any work: before the data or the model is read.

Each case points the command at data that does not exist: had the command read it (or trained,
which needs it) before checking the option, the error would be about the missing data. So each
refusal below must name the option and its value, and not the missing path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_cli import assert_fails, invoke

MISSING = "/nonexistent/cfcore-data"


def _refused(result, text: str, *needles: str) -> None:
    assert_fails(result, text, *needles)
    assert "nonexistent" not in text, text


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("--model", "biased", "--posterior-samples", "-3"), ("--posterior-samples", "got -3")),
        (("--model", "biased", "--posterior-samples", "2", "--burn-in", "-1"), ("--burn-in", "got -1")),
        (("--model", "biased", "--posterior-samples", "2", "--thin", "0"), ("--thin", "got 0")),
        (("--model", "biased", "--posterior-samples", "2", "--noise-precision", "0"),
         ("--noise-precision", "got 0")),
        (("--steps", "-5"), ("--steps must be a positive int, got -5",)),
        (("--eval-every", "0"), ("--eval-every must be a positive int, got 0",)),
        (("--batch-size", "-1"), ("--batch-size", "got -1")),
        (("--seed", "-1"), ("--seed", "got -1")),
        (("--k", "0"), ("--k", "got 0")),
        (("--dim", "0"), ("--dim", "got 0")),
        (("--holdout", "0"), ("--holdout must be in (0, 1), got 0",)),
        (("--lr", "0"), ("--lr", "got 0")),
        (("--lr", "nan"), ("--lr", "got nan")),
        (("--init-stddev", "-1"), ("--init-stddev", "got -1")),
        (("--regularization", "-0.5"), ("--regularization", "got -0.5")),
        (("--gravity", "inf"), ("--gravity", "got inf")),
        (("--model", "biased", "--bias-regularization", "-1"), ("--bias-regularization", "got -1")),
        (("--model", "ials", "--unobserved-weight", "-1"), ("--unobserved-weight", "got -1")),
        (("--model", "ials", "--threshold", "nan"), ("--threshold", "got nan")),
        (("--fold", "u9"), ("unknown fold 'u9'", "u1, u2")),
        (("--mse", "sparse"), ("mse must be one of", "'sparse'")),
        (("--backend", "nope"), ("unknown backend 'nope'",)),
        # Options the model would ignore.
        (("--model", "wals", "--posterior-samples", "3"),
         ("--posterior-samples applies to --model biased, not --model wals",)),
        (("--model", "wals", "--optimizer", "adam"), ("--optimizer", "--model wals", "ALS sweeps")),
        (("--model", "ials", "--lr", "0.1"), ("--lr", "--model ials")),
        (("--model", "biased", "--lr", "0.1"), ("--lr", "give --optimizer too")),
        (("--model", "mf", "--regularization", "0.1"), ("--regularization", "--model mf")),
        (("--model", "ials", "--gravity", "1"), ("--gravity", "--model ials")),
        (("--model", "mf", "--solver", "cg"), ("--solver", "--model mf")),
        (("--model", "regularized", "--loss", "sampled"), ("--loss", "--model softmax")),
        (("--model", "mf", "--hidden-dims", "8"), ("--hidden-dims", "--model softmax")),
        (("--model", "softmax", "--dim", "3"), ("--dim", "--feature-dims")),
        (("--model", "softmax", "--regularization", "1"), ("--regularization", "--model softmax")),
        (("--model", "softmax", "--hidden-dims", "x"), ("--hidden-dims", "'x'")),
        (("--model", "softmax", "--feature-dims", "movie_id=a"), ("--feature-dims", "'a'")),
        # The model's own constructor, before the data too.
        (("--model", "wals", "--regularization", "0"), ("regularization_coeff", "got 0.0")),
        (("--model", "wals", "--solver", "cg", "--dim", "3", "--steps", "1", "--init-stddev",
          "0.1", "--regularization", "0.1", "--gravity", "-1"), ("--gravity", "got -1")),
    ],
)  # fmt: skip
def test_train_checks_options_before_reading_data(
    tmp_path: Path, args: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    result, text = invoke("train", "--dataset", MISSING, "--out", str(tmp_path / "run"), *args)
    _refused(result, text, *needles)
    assert not (tmp_path / "run").exists()


def test_train_checks_the_output_folder_first(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    result, text = invoke("train", "--dataset", MISSING, "--out", str(tmp_path / "file" / "run"))
    _refused(result, text, "is a file, not a folder")


def test_tsne_needs_the_report(tmp_path: Path) -> None:
    result, text = invoke("train", "--dataset", MISSING, "--out", str(tmp_path), "--tsne",
                          "--no-report")  # fmt: skip
    assert result.exit_code == 2 and "--tsne" in text and "nonexistent" not in text


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("--steps", "0"), ("--steps must be a positive int, got 0",)),
        (("--eval-every", "-2"), ("--eval-every", "got -2")),
        (("--holdout", "1"), ("--holdout", "got 1")),
        (("--lr", "-1"), ("--lr", "got -1")),
        (("--model", "wals"), ("--model wals is not supported by compare",)),
    ],
)
def test_compare_checks_options_first(
    tmp_path: Path, args: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    result, text = invoke("compare", "--dataset", MISSING, "--backends", "jax,tf", *args)
    if "not installed" in text:
        pytest.skip("compare needs jax and tf installed")
    _refused(result, text, *needles)


@pytest.mark.parametrize(
    ("command", "args", "needles"),
    [
        ("recommend", ("--user", "1", "--k", "0"), ("--k", "got 0")),
        ("recommend", ("--user-index", "-1"), ("--user-index", "got -1")),
        ("recommend", ("--user", "1", "--measure", "norm:x"), ("alpha of measure", "got 'x'")),
        ("recommend", ("--user", "1", "--backend", "nope"), ("unknown backend 'nope'",)),
        ("recommend", ("--all-users", "--out", "{tmp}/file/x.csv"), ("is a file, not a folder",)),
        ("neighbors", ("Aladdin", "--k", "-1"), ("--k", "got -1")),
        ("rate", ("--retrain-steps", "-1"), ("--retrain-steps", "got -1")),
        ("rate", ("--reg", "-1"), ("--reg", "got -1")),
        ("rate", ("--lr", "0"), ("--lr", "got 0")),
        ("rate", ("--save-model", "{tmp}/file/m.npz"), ("is a file, not a folder",)),
    ],
)
def test_retrieval_commands_check_options_before_reading_the_model(
    tmp_path: Path, command: str, args: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    (tmp_path / "file").write_text("x")
    args = tuple(a.replace("{tmp}", str(tmp_path)) for a in args)
    result, text = invoke(command, "--model", MISSING, *args)
    _refused(result, text, *needles)


@pytest.mark.parametrize(
    ("command", "args", "needles"),
    [
        ("explore", ("--out", "{tmp}/file/x"), ("is a file, not a folder",)),
        ("explore", ("--no-png", "--no-html"), ("leave nothing to write",)),
        ("plot", ("--embeddings", MISSING, "--perplexity", "0"), ("--perplexity", "got 0")),
        ("plot", ("--embeddings", MISSING, "--tsne-iter", "10"), ("--tsne-iter", "got 10")),
        ("plot", ("--embeddings", MISSING, "--out", "{tmp}/file/x"), ("is a file",)),
    ],
)
def test_viz_commands_check_options_first(
    tmp_path: Path, command: str, args: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    (tmp_path / "file").write_text("x")
    args = tuple(a.replace("{tmp}", str(tmp_path)) for a in args)
    result, text = invoke(command, "--dataset", MISSING, *args)
    _refused(result, text, *needles)
