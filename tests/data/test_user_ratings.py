"""Reading a user's ratings: title search and resolution, CSV columns, the rating scale."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import cfcore
from cfcore.data.user_ratings import (
    UserRatingsError,
    check_rating,
    fold_in_arrays,
    normalize_title,
    read_user_ratings,
    resolve_title,
    search_titles,
    write_user_ratings,
)

CATALOG = pd.DataFrame(
    {
        "item_id": [10, 20, 30, 40, 50, 60, 70],
        "title": [
            "Aladdin (1992)",
            "Aladdin and the King of Thieves (1996)",
            "Lion King, The (1994)",
            "Hamlet (1990)",
            "Hamlet (1996)",
            "Dr. Strangelove (1963)",
            "Jungle Book, The (1994)",
        ],
    }
)
SCALE = (1.0, 5.0)


def read(text: str, **kwargs) -> pd.DataFrame:
    return read_user_ratings(
        io.StringIO(text), catalog=CATALOG, scale=kwargs.pop("scale", SCALE), **kwargs
    )


# ---------------------------------------------------------------------------- titles


@pytest.mark.parametrize(
    ("title", "normalized"),
    [
        ("Lion King, The (1994)", "the lion king (1994)"),
        ("  The   LION king ", "the lion king"),
        ("Jungle Book, The", "the jungle book"),
        ("Dr. Strangelove (1963)", "dr. strangelove (1963)"),
    ],
)
def test_normalize_title(title, normalized):
    assert normalize_title(title) == normalized


@pytest.mark.parametrize(
    ("query", "rows"),
    [
        ("aladdin", [0, 1]),
        ("ALADDIN (1992)", [0]),
        ("the lion king", [2]),
        ("lion king, the", [2]),
        ("Dr.", [5]),  # literal: "." is not a regular-expression wildcard
        ("(199", [0, 1, 2, 3, 4, 6]),  # nor is "(" an error
        ("zorro", []),
    ],
)
def test_search_titles(query, rows):
    assert search_titles(CATALOG, query).tolist() == rows


@pytest.mark.parametrize(
    ("query", "row"),
    [
        ("Aladdin", 0),  # exact once the year is set aside, though two titles contain it
        ("aladdin (1992)", 0),
        ("king of thieves", 1),
        ("The Lion King", 2),
        ("Lion King", 2),
        ("Jungle Book", 6),
        ("Hamlet (1996)", 4),
    ],
)
def test_resolve_title(query, row):
    assert resolve_title(CATALOG, query) == row


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("Hamlet", r"2 titles match 'Hamlet': Hamlet \(1990\); Hamlet \(1996\)\. Give the full"),
        ("a", "titles match 'a'"),
        ("Zorro", "no title in the catalog contains 'Zorro'"),
        ("  ", "the title to search for is empty"),
    ],
)
def test_resolve_title_errors(query, message):
    with pytest.raises(UserRatingsError, match=message):
        resolve_title(CATALOG, query)


def test_real_titles(ml100k):
    items = ml100k.items
    assert items["title"][resolve_title(items, "Lion King")] == "Lion King, The (1994)"
    assert items["title"][resolve_title(items, "aladdin")] == "Aladdin (1992)"
    assert items["title"][resolve_title(items, "Star Wars")] == "Star Wars (1977)"
    assert items["title"][resolve_title(items, "Batman")] == "Batman (1989)"  # not "Batman Forever"
    assert items["title"][resolve_title(items, "The Godfather")] == "Godfather, The (1972)"
    with pytest.raises(UserRatingsError, match="8 titles match 'Star Trek': Star Trek: First"):
        resolve_title(items, "Star Trek")


# ---------------------------------------------------------------------------- reading ratings


def test_read_titles_and_ids_with_blank_ratings_skipped():
    frame = read(
        "Title,Rating,movie_id\n"
        "Aladdin,5,\n"
        "Lion King,,\n"  # not rated: skipped, as a blank cell in the notebook's spreadsheet
        "Hamlet (1990),3.5,\n"
        ",2,60\n"
        "anything,4,70\n"  # the id wins over the title
    )
    assert frame["item_id"].tolist() == [10, 40, 60, 70]
    assert frame["item_index"].tolist() == [0, 3, 5, 6]
    assert frame["title"].tolist() == [CATALOG["title"][i] for i in (0, 3, 5, 6)]
    assert frame["rating"].tolist() == [5.0, 3.5, 2.0, 4.0]
    assert frame["rating"].dtype == np.float32


def test_read_csv_file_and_write_round_trip(tmp_path: Path):
    path = tmp_path / "mine.csv"
    path.write_text("item_id,rating\n20,1\n30,5\n")
    frame = read_user_ratings(path, catalog=CATALOG, scale=SCALE)
    assert frame["item_id"].tolist() == [20, 30]
    out = write_user_ratings(tmp_path / "copy.csv", frame)
    again = read_user_ratings(out, catalog=CATALOG, scale=SCALE)
    pd.testing.assert_frame_equal(frame, again)


def test_read_mapping_and_frame_with_users():
    frame = read_user_ratings({"Aladdin": 5, 30: 4.0}, catalog=CATALOG, scale=SCALE)
    assert frame["item_id"].tolist() == [10, 30]
    multi = read_user_ratings(
        pd.DataFrame({"user_id": ["a", "b", "a"], "item_id": [10, 10, 20], "rating": [5, 4, 3]}),
        catalog=CATALOG,
    )
    assert multi["user_id"].tolist() == ["a", "b", "a"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("title,score\nAladdin,5\n", r"lacks 'rating'; its columns are \['title', 'score'\]"),
        (
            "rating\n5\n",
            r"lacks an item column \('item_id', 'movie_id', 'movieId' or 'id'\) or 'title'",
        ),
        ("foo,bar\n1,2\n", "lacks 'rating' and an item column"),
        (
            "title,rating\nAladdin,6\n",
            r"rating 6 on row 1 of the ratings CSV is outside the rating scale 1..5",
        ),
        ("title,rating\nAladdin,0.5\n", "rating 0.5 on row 1 .* outside the rating scale 1..5"),
        (
            "title,rating\nAladdin,five\n",
            "rating 'five' on row 1 of the ratings CSV is not a number",
        ),
        ("title,rating\nAladdin,nan\n", "rating 'nan' on row 1 .* not a finite number"),
        (
            "title,rating\nAladdin,4\nZorro,3\n",
            "no title in the catalog contains 'Zorro' \\(on row 2",
        ),
        ("title,rating\nHamlet,4\n", r"2 titles match 'Hamlet'.* \(on row 1"),
        (
            "item_id,rating\n11,4\n",
            r"item id '11' on row 1 .* not in the catalog of 7 items \(ids 10..70\)",
        ),
        ("item_id,rating\nx,4\n", "item id 'x' on row 1 .* is not a number"),
        ("item_id,title,rating\n,,4\n", "row 1 of the ratings CSV names no item"),
        (
            "title,rating\nAladdin,4\naladdin (1992),5\n",
            r"'Aladdin \(1992\)' is rated twice .* \(rows 1 and 2\)",
        ),
        ("title,rating\nAladdin,\n", "holds no ratings"),
        ("", "cannot read the ratings as CSV"),
    ],
)
def test_read_errors(text, message):
    with pytest.raises(UserRatingsError, match=message):
        read(text)


def test_read_errors_without_sources(tmp_path: Path):
    with pytest.raises(UserRatingsError, match="ratings file .*nope.csv does not exist"):
        read_user_ratings(tmp_path / "nope.csv", catalog=CATALOG)
    with pytest.raises(UserRatingsError, match="give a model, a catalog or item_ids"):
        read_user_ratings(io.StringIO("item_id,rating\n1,2\n"))
    with pytest.raises(UserRatingsError, match="cannot look up the title 'Aladdin'.*no catalog"):
        read_user_ratings(io.StringIO("title,rating\nAladdin,2\n"), item_ids=[1, 2])
    with pytest.raises(UserRatingsError, match="must be a CSV path, a file object"):
        read_user_ratings(42, catalog=CATALOG)


def test_check_rating():
    assert check_rating("4.5", SCALE, "here") == 4.5
    assert check_rating(7, None, "here") == 7.0
    with pytest.raises(UserRatingsError, match=r"rating 5.5 here is outside the rating scale 1..5"):
        check_rating(5.5, SCALE, "here")


def test_fold_in_arrays_from_ratings_checks_the_scale():
    class Model:
        catalog = CATALOG
        item_ids = CATALOG["item_id"].to_numpy()
        rating_scale = SCALE

        @staticmethod
        def embeddings_numpy():
            return {"item": np.zeros((7, 2)), "user": np.zeros((3, 2))}

    rows, items, values, num, ids = fold_in_arrays(
        cfcore.Ratings([1, 0, 1], [2, 3, 6], [1.0, 5.0, 2.5], 2, 7), Model()
    )
    assert (rows.tolist(), items.tolist(), values.tolist(), num, ids) == (
        [1, 0, 1],
        [2, 3, 6],
        [1.0, 5.0, 2.5],
        2,
        None,
    )
    with pytest.raises(
        UserRatingsError, match=r"rating 9 at position 1 \(item index 3\) is outside"
    ):
        fold_in_arrays(cfcore.Ratings([0, 0], [2, 3], [1.0, 9.0], 1, 7), Model())
    rows, items, values, num, ids = fold_in_arrays(
        pd.DataFrame(
            {
                "user_id": ["b", "a", "b"],
                "title": ["Aladdin", "Hamlet (1990)", "Lion King"],
                "rating": [1, 2, 3],
            }
        ),
        Model(),
    )
    assert rows.tolist() == [0, 1, 0] and ids.tolist() == ["b", "a"] and num == 2
    assert items.tolist() == [0, 3, 2]
