"""The `recommend`, `neighbors` and `rate` commands, run in process on a model of ml-100k."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

import cfcore
from cfcore import retrieval
from cfcore.cli.retrieval import register
from cfcore.optimizers import SGD

from ..conftest import load_backend

runner = CliRunner()
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture(scope="module")
def model_dir(ml100k, tmp_path_factory) -> Path:
    """A regularized model trained briefly on 90% of ml-100k, saved as <dir>/model.npz."""
    load_backend("jax")
    train, _ = ml100k.ratings.split(holdout_fraction=0.1, seed=0)
    model = cfcore.RegularizedMF(embedding_dim=35, init_stddev=0.05)
    model.fit(train, steps=200, optimizer=SGD(20.0), backend="jax", progress=False, eval_every=100)
    folder = tmp_path_factory.mktemp("cli-model")
    model.save(folder / "model.npz")
    return folder


@pytest.fixture(scope="module")
def model(model_dir):
    return cfcore.load(model_dir / "model.npz")


def invoke(app, *args: str, input: str | None = None):
    """Runs a command; returns the result and its output with ANSI codes and line wraps removed."""
    result = runner.invoke(app, list(args), input=input, env={"COLUMNS": "250"})
    return result, " ".join(ANSI.sub("", result.output).split())


def assert_ok(result, text: str) -> None:
    assert result.exit_code == 0, (text, result.exception)


def assert_fails(result, text: str, *needles: str) -> None:
    assert result.exit_code == 1, text
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # no crash
    assert "Traceback" not in text and "error:" in text
    for needle in needles:
        assert needle in text, f"{needle!r} not in {text!r}"


def in_order(text: str, words: list[str]) -> bool:
    pos = [text.find(w) for w in words]
    return all(p >= 0 for p in pos) and pos == sorted(pos)


# ---------------------------------------------------------------------------- recommend


def test_recommend_one_user(app, model_dir, model):
    result, text = invoke(app, "recommend", "--model", str(model_dir), "--user", "1", "-k", "5")
    assert_ok(result, text)
    expected = retrieval.recommend(model, 1, k=5)
    assert "Top 5 for user 1" in text and "dot score" in text
    assert in_order(text, expected["title"].tolist())
    rated = set(model.train_ratings.items[model.train_ratings.users == 0])
    assert not rated & set(expected.attrs["item_index"])


def test_recommend_include_rated_to_csv(app, model_dir, model, tmp_path: Path):
    out = tmp_path / "recs.csv"
    result, text = invoke(
        app,
        "recommend",
        "--model",
        str(model_dir / "model.npz"),
        "--user-index",
        "9",
        "--include-rated",
        "--measure",
        "norm:0.5",
        "--out",
        str(out),
    )
    assert_ok(result, text)
    written = pd.read_csv(out)
    expected = retrieval.recommend(model, user_index=9, measure=("norm", 0.5), exclude_rated=False)
    assert written["item_id"].tolist() == expected["item_id"].tolist()
    assert written["user_id"].unique().tolist() == [10]
    assert written["rank"].tolist() == list(range(1, 11))
    np.testing.assert_allclose(written["score"], expected["score"], rtol=1e-5)


def test_recommend_all_users_batched_on_tf(app, model_dir, model, tmp_path: Path):
    tf = load_backend("tf")
    out = tmp_path / "all.csv"
    result, text = invoke(
        app,
        "recommend",
        "--model",
        str(model_dir),
        "--all-users",
        "-k",
        "3",
        "--measure",
        "cosine",
        "--backend",
        "tf",
        "--out",
        str(out),
        "--no-progress",
    )
    assert_ok(result, text)
    assert "wrote 2829 recommendations for 943 users" in text
    written = pd.read_csv(out)
    _, idx = retrieval.batch_recommend(model, k=3, measure="cosine", backend=tf)
    np.testing.assert_array_equal(
        written["item_id"].to_numpy().reshape(943, 3), model.item_ids[idx]
    )
    assert written["user_id"].iloc[::3].tolist() == model.user_ids.tolist()


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("--user", "944"), ["user id '944' is not among the model's 943 users (ids 1..943)"]),
        (("--user", "1", "-k", "0"), ["--k must be a positive int, got 0"]),
        (("--user", "1", "-k", "1683"), ["k=1683 is out of range", "catalogue size 1682"]),
        (("--user", "1", "--measure", "euclid"), ["unknown similarity measure 'euclid'"]),
        ((), ["give exactly one of --user, --user-index and --all-users"]),
        (("--user", "1", "--user-index", "0"), ["give exactly one of"]),
        (("--all-users",), ["--all-users writes a CSV: give it with --out"]),
        (("--user-index", "943"), ["user index 943 is out of range for 943 users"]),
    ],
)
def test_recommend_bad_input(app, model_dir, args, needles):
    result, text = invoke(app, "recommend", "--model", str(model_dir), *args)
    assert_fails(result, text, *needles)


def test_missing_and_foreign_model_files(app, tmp_path: Path):
    result, text = invoke(app, "recommend", "--model", str(tmp_path), "--user", "1")
    assert_fails(result, text, f"no model at {tmp_path / 'model.npz'}")
    foreign = tmp_path / "embeddings.npz"
    np.savez(foreign, user=np.ones((2, 2)), item=np.ones((2, 2)))
    result, text = invoke(app, "neighbors", "Aladdin", "--model", str(foreign))
    assert_fails(result, text, "not a cfcore model file")


# ---------------------------------------------------------------------------- neighbors


def test_neighbors_by_title_lists_other_matches(app, model_dir, model):
    result, text = invoke(
        app, "neighbors", "aladdin", "--model", str(model_dir), "--measure", "cosine"
    )
    assert_ok(result, text)
    assert "Nearest neighbours of Aladdin (1992)" in text
    assert "1 other title matches 'aladdin': Aladdin and the King of Thieves (1996)" in text
    with pytest.warns(UserWarning):
        expected = retrieval.neighbors(model, "aladdin", measure="cosine")
    assert in_order(text, expected["title"].tolist())
    same, same_text = invoke(
        app, "neighbors", "--item-id", "95", "--model", str(model_dir), "--measure", "cosine"
    )
    assert_ok(same, same_text)
    assert in_order(same_text, expected["title"].tolist())
    assert "other title" not in same_text


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("Zzyzx",), ["no title in the catalog contains 'Zzyzx'"]),
        (("--item-id", "0"), ["item id '0' is not among the model's 1682 items"]),
        ((), ["give a TITLE or --item-id"]),
        (("Heat", "-k", "-2"), ["--k must be a positive int, got -2"]),
    ],
)
def test_neighbors_bad_input(app, model_dir, args, needles):
    result, text = invoke(app, "neighbors", *args, "--model", str(model_dir))
    assert_fails(result, text, *needles)


# ---------------------------------------------------------------------------- rate


def test_rate_from_csv_then_serve_the_saved_model(app, model_dir, model, tmp_path: Path):
    mine = tmp_path / "mine.csv"
    mine.write_text("title,rating\nAladdin,5\nLion King,5\nBeauty and the Beast,4\nStar Wars,\n")
    saved = tmp_path / "with-me.npz"
    result, text = invoke(
        app,
        "rate",
        "--model",
        str(model_dir),
        "--ratings",
        str(mine),
        "-k",
        "5",
        "--save-model",
        str(saved),
    )
    assert_ok(result, text)
    assert "added you as user 944 with 3 ratings" in text
    assert "Top 5 for you" in text and "Aladdin (1992)" not in text.split("Top 5 for you")[1]
    # The same recommendations through the API, and the saved model serves user 944.
    expected_model = cfcore.load(model_dir / "model.npz")
    expected_model.add_users(mine)
    expected = retrieval.recommend(expected_model, 944, k=5)
    assert in_order(text.split("Top 5 for you")[1], expected["title"].tolist())
    result, text = invoke(app, "recommend", "--model", str(saved), "--user", "944", "-k", "5")
    assert_ok(result, text)
    assert in_order(text, expected["title"].tolist())


def test_rate_interactive(app, model_dir, tmp_path: Path):
    answers = [
        "aladdin",  # two titles contain it: pick from the list
        "1",
        "5",
        "lion king",  # one title: straight to the rating
        "9",  # outside 1..5: asked again
        "five",  # not a number: asked again
        "4.5",
        "zzyzx",  # nothing matches: ask for another title
        "star trek",
        "42",  # not in the list: skipped
        "",  # empty title: done
    ]
    saved = tmp_path / "mine.csv"
    result, text = invoke(
        app,
        "rate",
        "--model",
        str(model_dir),
        "--save-ratings",
        str(saved),
        "-k",
        "3",
        input="\n".join(answers) + "\n",
    )
    assert_ok(result, text)
    assert "1. Aladdin (1992) 2. Aladdin and the King of Thieves (1996)" in text
    assert "rating 9 for 'Lion King, The (1994)' is outside the rating scale 1..5" in text
    assert "rating 'five' for 'Lion King, The (1994)' is not a number" in text
    assert "no title contains 'zzyzx'" in text
    assert "'42' is not a number between 1 and 8" in text
    assert "added you as user 944 with 2 ratings" in text
    written = pd.read_csv(saved)
    assert written["title"].tolist() == ["Aladdin (1992)", "Lion King, The (1994)"]
    assert written["rating"].tolist() == [5.0, 4.5]
    assert written["item_id"].tolist() == [95, 71]


def test_rate_then_retrain(app, model_dir, model, tmp_path: Path):
    saved = tmp_path / "retrained.npz"
    result, text = invoke(
        app,
        "rate",
        "--model",
        str(model_dir),
        "--no-progress",
        "--retrain-steps",
        "5",
        "--save-model",
        str(saved),
        input="Toy Story\n5\n\n",
    )
    assert_ok(result, text)
    assert "Top 10 for you after 5 more steps" in text
    again = cfcore.load(saved)
    assert again.step == model.step + 5
    assert again.history["step"].iloc[-1] == model.step + 5
    assert again.train_ratings.num_users == 944


@pytest.mark.parametrize(
    ("csv", "needles"),
    [
        ("movie,score\nAladdin,5\n", ["lacks 'rating'", "['movie', 'score']"]),
        ("title,rating\nAladdin,6\n", ["rating 6 on row 1", "outside the rating scale 1..5"]),
        ("movie_id,rating\n1683,3\n", ["item id '1683' on row 1", "not in the catalog of 1682"]),
    ],
)
def test_rate_bad_csv(app, model_dir, tmp_path: Path, csv, needles):
    mine = tmp_path / "mine.csv"
    mine.write_text(csv)
    result, text = invoke(app, "rate", "--model", str(model_dir), "--ratings", str(mine))
    assert_fails(result, text, *needles)


def test_rate_with_nothing_entered(app, model_dir):
    result, text = invoke(app, "rate", "--model", str(model_dir), input="\n")
    assert_fails(result, text, "no ratings were entered")
    result, text = invoke(app, "rate", "--model", str(model_dir), input="")  # end of input
    assert_fails(result, text, "no ratings were entered")


# ---------------------------------------------------------------------------- help


def test_every_option_has_help(app):
    group = typer.main.get_command(app)
    assert set(group.commands) == {"recommend", "neighbors", "rate"}
    for name, command in group.commands.items():
        assert command.help, name
        for param in command.params:
            assert getattr(param, "help", None), f"{name} {param.name} has no help"
        result, text = invoke(app, name, "--help")
        assert_ok(result, text)
