"""The `Ratings` container, its splits and subsets, and the `MinibatchSampler`."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

import cfcore
from cfcore.data import MinibatchSampler, Ratings, RatingsError


def make(n: int = 50, num_users: int = 7, num_items: int = 11, seed: int = 0) -> Ratings:
    rng = np.random.default_rng(seed)
    return Ratings(
        users=rng.integers(0, num_users, n),
        items=rng.integers(0, num_items, n),
        values=rng.integers(1, 6, n).astype(np.float64),
        num_users=num_users,
        num_items=num_items,
        timestamps=rng.integers(0, 10**9, n),
    )


def triples(r: Ratings) -> list[tuple[int, int, float, int]]:
    """The ratings as sorted (user, item, value, timestamp) tuples: a multiset of rows."""
    ts = r.timestamps if r.timestamps is not None else np.zeros(len(r), dtype=np.int64)
    return sorted(
        zip(r.users.tolist(), r.items.tolist(), r.values.tolist(), ts.tolist(), strict=True)
    )


# ---------------------------------------------------------------------------- construction


def test_public_names() -> None:
    assert cfcore.Ratings is Ratings
    assert cfcore.RatingsError is RatingsError
    assert issubclass(RatingsError, ValueError)


def test_dtypes_shapes_and_values() -> None:
    r = Ratings(
        users=np.array([0, 2, 1], dtype=np.int64),
        items=[3, 0, 1],
        values=np.array([1, 5, 3], dtype=np.int64),
        num_users=3,
        num_items=4,
    )
    assert r.users.dtype == np.int32
    assert r.items.dtype == np.int32
    assert r.values.dtype == np.float32
    assert r.users.shape == r.items.shape == r.values.shape == (3,)
    np.testing.assert_array_equal(r.users, [0, 2, 1])
    np.testing.assert_array_equal(r.items, [3, 0, 1])
    np.testing.assert_array_equal(r.values, [1.0, 5.0, 3.0])
    assert (r.num_users, r.num_items) == (3, 4)
    assert isinstance(r.num_users, int) and isinstance(r.num_items, int)
    assert len(r) == 3
    assert r.timestamps is None and r.user_ids is None and r.item_ids is None


def test_timestamps_become_int64() -> None:
    r = Ratings([0, 1], [0, 1], [1.0, 2.0], 2, 2, timestamps=np.array([5, 6], dtype=np.int32))
    assert r.timestamps.dtype == np.int64
    np.testing.assert_array_equal(r.timestamps, [5, 6])


def test_integer_valued_float_ids_are_accepted() -> None:
    r = Ratings(np.array([0.0, 2.0]), np.array([1.0, 0.0]), [4.0, 3.0], 3, 2)
    assert r.users.dtype == np.int32
    np.testing.assert_array_equal(r.users, [0, 2])
    np.testing.assert_array_equal(r.items, [1, 0])


def test_arrays_are_read_only() -> None:
    r = make()
    for name in ("users", "items", "values"):
        arr = getattr(r, name)
        assert not arr.flags.writeable, name
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = 0


def test_timestamps_are_read_only() -> None:
    r = make()
    assert not r.timestamps.flags.writeable


def test_inputs_are_copied() -> None:
    users = np.array([0, 1], dtype=np.int32)
    values = np.array([1.0, 2.0], dtype=np.float32)
    r = Ratings(users, [0, 1], values, 2, 2)
    users[0] = 1
    values[0] = 99.0
    np.testing.assert_array_equal(r.users, [0, 1])
    np.testing.assert_array_equal(r.values, [1.0, 2.0])
    # The caller's arrays stay writable: the container does not freeze what it was given.
    assert users.flags.writeable and values.flags.writeable


def test_frozen() -> None:
    r = make()
    with pytest.raises(AttributeError):
        r.num_users = 3  # type: ignore[misc]


# ---------------------------------------------------------------------------- construction errors


@pytest.mark.parametrize(
    ("users", "items", "message"),
    [
        ([0, 3], [0, 1], r"user index 3 is out of range for 3 users \(valid: 0\.\.2\)"),
        ([0, 1], [0, 4], r"item index 4 is out of range for 4 items \(valid: 0\.\.3\)"),
        ([0, -1], [0, 1], r"user index -1 is negative; indices must be in \[0, 3\)"),
        ([0, 1], [-2, 1], r"item index -2 is negative; indices must be in \[0, 4\)"),
    ],
)
def test_index_out_of_range(users: list[int], items: list[int], message: str) -> None:
    with pytest.raises(RatingsError, match=message):
        Ratings(users, items, [1.0, 2.0], num_users=3, num_items=4)


def test_huge_int_index_does_not_wrap() -> None:
    with pytest.raises(RatingsError, match=r"user index 4294967296 is out of range for 3 users"):
        Ratings(np.array([2**32], dtype=np.int64), [0], [1.0], 3, 3)


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
def test_huge_float_index_is_named() -> None:
    with pytest.raises(RatingsError, match=r"out of range"):
        Ratings(np.array([1e20]), [0], [1.0], 3, 3)


@pytest.mark.parametrize(("bad", "shown"), [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_non_finite_ratings(bad: float, shown: str) -> None:
    values = [1.0, 2.0, bad, 4.0]
    with pytest.raises(RatingsError) as info:
        Ratings([0, 1, 2, 0], [0, 1, 1, 0], values, num_users=3, num_items=2)
    msg = str(info.value)
    assert "NaN or infinite" in msg
    assert f"the first is {shown} at position 2" in msg
    assert "user 2, item 1" in msg
    assert msg.startswith("1 rating(s)")


def test_non_finite_count_and_first_position() -> None:
    with pytest.raises(
        RatingsError, match=r"^2 rating\(s\) are NaN or infinite; the first is inf at position 1"
    ):
        Ratings([0, 0, 0], [0, 0, 0], [1.0, np.inf, np.nan], 1, 1)


@pytest.mark.parametrize(
    ("users", "items", "values", "lengths"),
    [
        ([0, 1, 0], [0, 1], [1.0, 2.0, 3.0], "users=3, items=2, values=3"),
        ([0, 1], [0, 1], [1.0], "users=2, items=2, values=1"),
    ],
)
def test_length_mismatch(users: list, items: list, values: list, lengths: str) -> None:
    with pytest.raises(RatingsError, match=re.escape(f"same length, got {lengths}")):
        Ratings(users, items, values, 2, 2)


def test_timestamp_length_mismatch() -> None:
    with pytest.raises(RatingsError, match=r"values=2, timestamps=3"):
        Ratings([0, 1], [0, 1], [1.0, 2.0], 2, 2, timestamps=[1, 2, 3])


def test_empty() -> None:
    with pytest.raises(RatingsError, match="empty: at least one rating is needed"):
        Ratings(np.array([], dtype=np.int32), np.array([], dtype=np.int32), [], 3, 3)


@pytest.mark.parametrize("field", ["users", "items"])
def test_non_integer_float_ids(field: str) -> None:
    args = {"users": [0, 1], "items": [0, 1]}
    args[field] = [0.0, 1.5]
    with pytest.raises(RatingsError, match=rf"{field} must be integer indices, got dtype float64"):
        Ratings(args["users"], args["items"], [1.0, 2.0], 2, 2)


def test_nan_ids_and_string_ids_rejected() -> None:
    with pytest.raises(RatingsError, match="users must be integer indices"):
        Ratings([0.0, np.nan], [0, 1], [1.0, 2.0], 2, 2)
    with pytest.raises(RatingsError, match=r"items must be integer indices, got dtype <U1"):
        Ratings([0, 1], ["a", "b"], [1.0, 2.0], 2, 2)


def test_bad_shapes_and_value_dtypes() -> None:
    with pytest.raises(RatingsError, match=r"users must be 1-D, got shape \(1, 2\)"):
        Ratings([[0, 1]], [0, 1], [1.0, 2.0], 2, 2)
    with pytest.raises(RatingsError, match=r"values must be 1-D, got shape \(2, 1\)"):
        Ratings([0, 1], [0, 1], [[1.0], [2.0]], 2, 2)
    with pytest.raises(RatingsError, match="values must be real numbers, got dtype complex128"):
        Ratings([0, 1], [0, 1], np.array([1 + 1j, 2]), 2, 2)


def test_non_positive_catalog() -> None:
    with pytest.raises(RatingsError, match="must be positive, got 0 and 2"):
        Ratings([0], [0], [1.0], 0, 2)


def test_vocabulary_sizes_checked() -> None:
    with pytest.raises(RatingsError, match="user_ids has 3 entries for 2 users"):
        Ratings([0], [0], [1.0], 2, 2, user_ids=np.array(["a", "b", "c"]))
    with pytest.raises(RatingsError, match="item_ids has 1 entries for 2 items"):
        Ratings([0], [0], [1.0], 2, 2, item_ids=np.array([7]))
    with pytest.raises(RatingsError, match="catalog has 3 rows for 2 items"):
        Ratings([0], [0], [1.0], 2, 2, catalog=pd.DataFrame({"t": [1, 2, 3]}))


# ---------------------------------------------------------------------------- from_frame


def test_from_frame_string_ids() -> None:
    df = pd.DataFrame(
        {
            "user_id": ["zoe", "adam", "mia", "adam", "zoe"],
            "item_id": ["x9", "b2", "b2", "a1", "x9"],
            "rating": [5, 3, 4, 1, 2],
        }
    )
    r = Ratings.from_frame(df)
    assert (r.num_users, r.num_items) == (3, 3)
    assert list(r.user_ids) == ["adam", "mia", "zoe"]  # sorted distinct ids
    assert list(r.item_ids) == ["a1", "b2", "x9"]
    np.testing.assert_array_equal(r.users, [2, 0, 1, 0, 2])
    np.testing.assert_array_equal(r.items, [2, 1, 1, 0, 2])
    assert r.users.dtype == np.int32 and r.values.dtype == np.float32
    # The vocabularies map indices back to the original ids, row by row.
    assert list(r.user_ids[r.users]) == list(df["user_id"])
    assert list(r.item_ids[r.items]) == list(df["item_id"])
    np.testing.assert_array_equal(r.values, df["rating"].to_numpy(dtype=np.float32))


def test_from_frame_custom_columns_and_timestamps() -> None:
    df = pd.DataFrame(
        {"u": [30, 10, 20], "m": [7, 7, 3], "score": [1.5, 2.5, 3.5], "t": [100, 200, 300]}
    )
    r = Ratings.from_frame(df, "u", "m", "score", timestamp_col="t")
    assert list(r.user_ids) == [10, 20, 30]
    assert list(r.item_ids) == [3, 7]
    np.testing.assert_array_equal(r.users, [2, 0, 1])
    np.testing.assert_array_equal(r.items, [1, 1, 0])
    np.testing.assert_array_equal(r.values, [1.5, 2.5, 3.5])
    assert r.timestamps.dtype == np.int64
    np.testing.assert_array_equal(r.timestamps, [100, 200, 300])


def test_from_frame_fixed_vocabulary() -> None:
    df = pd.DataFrame({"user_id": ["b", "a"], "item_id": [20, 10], "rating": [1.0, 2.0]})
    users = np.array(["c", "b", "a"])  # not sorted: its order is kept
    items = np.array([10, 20, 30, 40])  # includes items nobody rated
    catalog = pd.DataFrame({"title": ["t10", "t20", "t30", "t40"]})
    r = Ratings.from_frame(df, user_ids=users, item_ids=items, catalog=catalog)
    assert (r.num_users, r.num_items) == (3, 4)
    np.testing.assert_array_equal(r.users, [1, 2])
    np.testing.assert_array_equal(r.items, [1, 0])
    np.testing.assert_array_equal(r.user_ids, users)
    np.testing.assert_array_equal(r.item_ids, items)
    assert r.catalog is catalog
    assert list(r.user_ids[r.users]) == ["b", "a"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"user_ids": ["a", "b"]}, "user id 'zed' is not in the user vocabulary of 2 ids"),
        ({"item_ids": [10, 11]}, "item id 12 is not in the item vocabulary of 2 ids"),
    ],
)
def test_from_frame_unknown_id(kwargs: dict, message: str) -> None:
    df = pd.DataFrame({"user_id": ["a", "zed"], "item_id": [10, 12], "rating": [1.0, 2.0]})
    with pytest.raises(RatingsError, match=re.escape(message)):
        Ratings.from_frame(df, **kwargs)


def test_from_frame_duplicate_vocabulary() -> None:
    df = pd.DataFrame({"user_id": ["a"], "item_id": [1], "rating": [1.0]})
    with pytest.raises(RatingsError, match="the user vocabulary has duplicate ids"):
        Ratings.from_frame(df, user_ids=["a", "a"])


def test_from_frame_missing_column() -> None:
    df = pd.DataFrame({"user_id": [1], "item_id": [2], "score": [3.0]})
    with pytest.raises(RatingsError) as info:
        Ratings.from_frame(df)
    msg = str(info.value)
    assert "['rating'] not in the frame" in msg
    assert "it has ['user_id', 'item_id', 'score']" in msg
    with pytest.raises(RatingsError, match=r"\['ts'\] not in the frame"):
        Ratings.from_frame(df, rating_col="score", timestamp_col="ts")


def test_from_frame_missing_id_and_empty_frame() -> None:
    df = pd.DataFrame({"user_id": ["a", None], "item_id": [1, 2], "rating": [1.0, 2.0]})
    with pytest.raises(RatingsError, match="user ids contain missing values"):
        Ratings.from_frame(df)
    with pytest.raises(RatingsError, match="the ratings frame is empty"):
        Ratings.from_frame(df.iloc[:0])


def test_from_frame_non_numeric_rating_is_reported() -> None:
    df = pd.DataFrame({"user_id": [1, 2], "item_id": [1, 2], "rating": [4.0, "good"]})
    with pytest.raises(RatingsError, match="non-numeric value 'good' at row 1"):
        Ratings.from_frame(df)


def test_to_frame_round_trip() -> None:
    r = make(n=20)
    df = r.to_frame()
    assert list(df.columns) == ["user", "item", "rating", "timestamp"]
    back = Ratings.from_frame(
        df, "user", "item", "rating", timestamp_col="timestamp",
        user_ids=np.arange(r.num_users), item_ids=np.arange(r.num_items),
    )  # fmt: skip
    assert triples(back) == triples(r)


# ---------------------------------------------------------------------------- split and subset


@pytest.mark.parametrize(("n", "fraction"), [(50, 0.1), (1000, 0.1), (37, 0.25), (10, 0.5)])
def test_split_sizes(n: int, fraction: float) -> None:
    r = make(n=n)
    train, test = r.split(holdout_fraction=fraction, seed=3)
    assert len(test) == round(fraction * n)
    assert len(train) + len(test) == n


def test_split_default_fraction_is_a_tenth() -> None:
    train, test = make(n=200).split()
    assert (len(train), len(test)) == (180, 20)


def test_split_is_a_partition() -> None:
    r = make(n=300)
    train, test = r.split(0.2, seed=1)
    assert sorted(triples(train) + triples(test)) == triples(r)
    # Disjoint as positions: timestamps are drawn from 1e9 values, so rows are distinct here.
    assert len(set(triples(r))) == len(r)
    assert not set(triples(train)) & set(triples(test))


def test_split_keeps_catalog_and_vocabularies() -> None:
    df = pd.DataFrame(
        {"user_id": list("abcdefghij"), "item_id": list(range(10)), "rating": [1.0] * 10}
    )
    catalog = pd.DataFrame({"title": [f"m{i}" for i in range(12)]})
    r = Ratings.from_frame(df, item_ids=np.arange(12), catalog=catalog)
    train, test = r.split(0.3, seed=0)
    for part in (train, test):
        assert (part.num_users, part.num_items) == (10, 12)
        assert part.user_ids is r.user_ids and part.item_ids is r.item_ids
        assert part.catalog is catalog
        assert part.users.dtype == np.int32 and not part.users.flags.writeable


def test_split_seeded() -> None:
    r = make(n=500)
    a_train, a_test = r.split(0.1, seed=7)
    b_train, b_test = r.split(0.1, seed=7)
    np.testing.assert_array_equal(a_test.users, b_test.users)
    np.testing.assert_array_equal(a_test.items, b_test.items)
    np.testing.assert_array_equal(a_test.timestamps, b_test.timestamps)
    np.testing.assert_array_equal(a_train.timestamps, b_train.timestamps)
    _, c_test = r.split(0.1, seed=8)
    assert set(c_test.timestamps.tolist()) != set(a_test.timestamps.tolist())


def test_split_matches_documented_generator() -> None:
    r = make(n=100)
    _, test = r.split(0.1, seed=5)
    chosen = np.sort(np.random.default_rng(5).choice(100, size=10, replace=False))
    np.testing.assert_array_equal(test.timestamps, r.timestamps[chosen])


@pytest.mark.parametrize("fraction", [0, 0.0, 1, 1.0, -0.1, 1.5, float("nan")])
def test_split_bad_fraction(fraction: float) -> None:
    with pytest.raises(ValueError) as info:
        make().split(holdout_fraction=fraction)
    msg = str(info.value)
    assert "holdout_fraction must be strictly between 0 and 1" in msg
    assert f"got {fraction!r}" in msg


@pytest.mark.parametrize(("n", "fraction", "side"), [(10, 0.01, "test"), (10, 0.99, "train")])
def test_split_empty_side(n: int, fraction: float, side: str) -> None:
    with pytest.raises(
        RatingsError,
        match=rf"holdout_fraction={fraction} of {n} ratings leaves an empty {side} set",
    ):
        make(n=n).split(holdout_fraction=fraction)


def test_subset_positions_and_mask() -> None:
    r = make(n=10)
    s = r.subset(np.array([3, 0, 7]))
    assert len(s) == 3
    np.testing.assert_array_equal(s.users, r.users[[3, 0, 7]])
    np.testing.assert_array_equal(s.items, r.items[[3, 0, 7]])
    np.testing.assert_array_equal(s.values, r.values[[3, 0, 7]])
    np.testing.assert_array_equal(s.timestamps, r.timestamps[[3, 0, 7]])
    assert (s.num_users, s.num_items) == (r.num_users, r.num_items)
    assert s.users.dtype == np.int32 and not s.values.flags.writeable

    mask = r.values >= 3
    m = r.subset(mask)
    assert len(m) == int(mask.sum())
    np.testing.assert_array_equal(m.values, r.values[mask])


def test_subset_empty_is_an_error() -> None:
    r = make(n=10)
    with pytest.raises(RatingsError, match="empty"):
        r.subset(np.zeros(10, dtype=bool))


def test_repr() -> None:
    r = Ratings([0, 1], [0, 2], [1.0, 4.5], 2, 3)
    assert repr(r) == "Ratings(n=2, num_users=2, num_items=3, values in [1, 4.5])"


# ---------------------------------------------------------------------------- MinibatchSampler


def test_sampler_shapes() -> None:
    s = MinibatchSampler(10, 4, seed=0)
    batch = s.take(3)
    assert batch.shape == (3, 4)
    assert batch.dtype == np.int32
    assert batch.min() >= 0 and batch.max() < 10
    assert s.take(1).shape == (1, 4)


@pytest.mark.parametrize(("n", "batch_size", "epochs"), [(12, 4, 3), (10, 10, 2), (9, 1, 2)])
def test_sampler_epochs_cover_each_position_once(n: int, batch_size: int, epochs: int) -> None:
    s = MinibatchSampler(n, batch_size, seed=1)
    batches = s.take(n // batch_size * epochs)
    per_epoch = batches.reshape(epochs, n)
    for e in range(epochs):
        np.testing.assert_array_equal(np.sort(per_epoch[e]), np.arange(n))
    # Fresh permutations: the epochs are not all the same order.
    if n > 3:
        assert any(not np.array_equal(per_epoch[0], per_epoch[e]) for e in range(1, epochs)), (
            per_epoch
        )


def test_sampler_batches_cross_epochs() -> None:
    # 10 ratings in batches of 4: the stream of batches, read in runs of 10, is one epoch each.
    s = MinibatchSampler(10, 4, seed=2)
    stream = np.concatenate([s.take(2).ravel(), s.take(3).ravel()])  # 20 positions
    for start in (0, 10):
        np.testing.assert_array_equal(np.sort(stream[start : start + 10]), np.arange(10))


def test_sampler_takes_in_pieces_equal_one_take() -> None:
    whole = MinibatchSampler(7, 3, seed=4).take(9)
    s = MinibatchSampler(7, 3, seed=4)
    pieces = np.concatenate([s.take(2), s.take(4), s.take(3)])
    np.testing.assert_array_equal(pieces, whole)


def test_sampler_seeded() -> None:
    a = MinibatchSampler(100, 10, seed=3).take(25)
    b = MinibatchSampler(100, 10, seed=3).take(25)
    c = MinibatchSampler(100, 10, seed=4).take(25)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("batch_size", [0, -1, 11, 2.5, "4"])
def test_sampler_bad_batch_size(batch_size: object) -> None:
    with pytest.raises(ValueError) as info:
        MinibatchSampler(10, batch_size)  # type: ignore[arg-type]
    msg = str(info.value)
    assert "batch_size must be an int in [1, 10] (the number of ratings)" in msg
    assert f"got {batch_size!r}" in msg


def test_sampler_full_batch_is_allowed() -> None:
    s = MinibatchSampler(5, 5, seed=0)
    np.testing.assert_array_equal(np.sort(s.take(1)[0]), np.arange(5))


def test_from_frame_unknown_numeric_id_is_named() -> None:
    # Whatever the formatting of the id, the message names the bad value and the vocabulary size.
    df = pd.DataFrame({"user_id": ["a"], "item_id": [12], "rating": [1.0]})
    with pytest.raises(RatingsError, match=r"item id \S*12\S* is not in the item vocabulary of 2"):
        Ratings.from_frame(df, item_ids=[10, 11])
