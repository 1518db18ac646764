"""Tests of the seeded synthetic ratings generator (`cfcore.synthetic_ratings`)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import cfcore
from cfcore.data.synthetic import _alias_table, item_popularity, synthetic_ratings


def _top_share(counts: np.ndarray, fraction: float) -> float:
    """Share of all ratings held by the most-rated `fraction` of the entries of `counts`."""
    ordered = np.sort(counts)[::-1]
    k = max(1, int(len(ordered) * fraction))
    return float(ordered[:k].sum() / ordered.sum())


def test_shapes_dtypes_and_catalog():
    r = cfcore.synthetic_ratings(num_users=700, num_items=300, n=12_345, seed=0)
    assert isinstance(r, cfcore.Ratings)
    assert len(r) == 12_345
    assert (r.num_users, r.num_items) == (700, 300)
    assert r.users.dtype == np.int32 and r.items.dtype == np.int32
    assert r.values.dtype == np.float32
    assert r.users.shape == r.items.shape == r.values.shape == (12_345,)
    assert 0 <= r.users.min() and r.users.max() < 700
    assert 0 <= r.items.min() and r.items.max() < 300
    # Ordered by user, as documented.
    assert np.all(np.diff(r.users) >= 0)


def test_values_are_integer_stars_with_movielens_like_moments():
    r = synthetic_ratings(2_000, 1_500, 200_000, seed=1)
    assert set(np.unique(r.values).tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert np.all(r.values == np.round(r.values))
    # MovieLens: mean 3.5, standard deviation 1.0-1.1; every star value occurs.
    assert 3.3 < r.values.mean() < 3.7
    assert 0.9 < r.values.std() < 1.2
    assert len(np.unique(r.values)) == 5


def test_value_model_without_signal_or_noise_is_the_rounded_clipped_mean():
    kw = dict(bias_stddev=0.0, signal_stddev=0.0, noise_stddev=0.0)
    r = synthetic_ratings(50, 40, 1_000, mean=2.2, **kw)
    assert np.all(r.values == 2.0)
    assert np.all(synthetic_ratings(50, 40, 1_000, mean=9.0, **kw).values == 5.0)
    assert np.all(synthetic_ratings(50, 40, 1_000, mean=-3.0, **kw).values == 1.0)


def test_item_biases_show_in_item_means():
    # With biases and no other spread, the per-item means differ far more than sampling noise.
    r = synthetic_ratings(
        3_000, 50, 300_000, seed=2, bias_stddev=0.5, signal_stddev=0.0, noise_stddev=0.3
    )
    item_means = np.bincount(r.items, r.values, 50) / np.bincount(r.items, minlength=50)
    flat = synthetic_ratings(
        3_000, 50, 300_000, seed=2, bias_stddev=0.0, signal_stddev=0.0, noise_stddev=0.3
    )
    flat_means = np.bincount(flat.items, flat.values, 50) / np.bincount(flat.items, minlength=50)
    assert item_means.std() > 5 * flat_means.std()


def test_seeded_reproducibility_and_chunk_independence():
    a = synthetic_ratings(3_000, 2_000, 100_001, seed=7)
    b = synthetic_ratings(3_000, 2_000, 100_001, seed=7)
    c = synthetic_ratings(3_000, 2_000, 100_001, seed=7, chunk_size=997)
    d = synthetic_ratings(3_000, 2_000, 100_001, seed=8)
    for name in ("users", "items", "values"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        np.testing.assert_array_equal(getattr(a, name), getattr(c, name))
    assert not np.array_equal(a.items, d.items)


def test_item_popularity_is_skewed():
    r = synthetic_ratings(20_000, 5_000, 1_000_000, seed=3)
    counts = np.bincount(r.items, minlength=r.num_items)
    # The top 1% of items hold far more than 1% of the ratings (MovieLens latest-small: 16%) and
    # the least-rated half hold far less than half (latest-small: 6%).
    assert _top_share(counts, 0.01) > 0.10
    assert _top_share(counts, 0.10) > 0.5
    assert 1 - _top_share(counts, 0.5) < 0.15
    # Popular items are scattered over the id range, not the lowest ids.
    top = np.argsort(counts)[::-1][:50]
    assert top.max() > r.num_items // 2


def test_skew_comes_from_the_parameters():
    # Switched off, items and users are (close to) uniform: the skew above is the model's doing.
    r = synthetic_ratings(
        2_000, 1_000, 500_000, seed=4, user_activity_sigma=0.0, item_popularity_exponent=0.0
    )
    items = np.bincount(r.items, minlength=r.num_items)
    users = np.bincount(r.users, minlength=r.num_users)
    assert _top_share(items, 0.01) < 0.015
    assert users.mean() / np.median(users) < 1.05


def test_user_activity_is_skewed_and_floor_is_kept():
    r = synthetic_ratings(10_000, 2_000, 1_000_000, seed=5)
    counts = np.bincount(r.users, minlength=r.num_users)
    # Log-normal activity: mean well above the median (ML-20M: 144 / 68).
    assert counts.mean() / np.median(counts) > 1.6
    assert counts.max() > 10 * counts.mean()
    floored = synthetic_ratings(1_000, 500, 100_000, seed=5, min_user_ratings=20)
    f_counts = np.bincount(floored.users, minlength=floored.num_users)
    assert f_counts.min() >= 20
    assert f_counts.sum() == 100_000


def test_item_popularity_law():
    for m in (1_000, 100_000):
        p = item_popularity(m)
        assert p.shape == (m,) and p.dtype == np.float64
        assert np.isclose(p.sum(), 1.0)
        assert np.all(np.diff(p) <= 0)
        # Written in relative rank: the top 1% share barely depends on the catalog size.
        assert 0.17 < p[: m // 100].sum() < 0.25


def test_alias_table_reproduces_the_distribution():
    p = item_popularity(777)
    prob, alias = _alias_table(p)
    # Bin k is drawn with probability 1/M; it keeps itself w.p. prob[k], else gives alias[k].
    implied = prob / len(p)
    np.add.at(implied, alias, (1.0 - prob) / len(p))
    np.testing.assert_allclose(implied, p, rtol=1e-9)


def test_empirical_item_frequencies_follow_the_law():
    m = 200
    r = synthetic_ratings(1_000, m, 400_000, seed=6)
    counts = np.bincount(r.items, minlength=m)
    expected = np.sort(item_popularity(m))[::-1] * len(r)
    # Compare sorted counts with sorted expectations: ids are a permutation of popularity ranks.
    observed = np.sort(counts)[::-1]
    assert np.abs(observed - expected).max() < 6 * np.sqrt(expected.max())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(num_users=0, num_items=5, n=10), "num_users must be an int >= 1, got 0"),
        (dict(num_users=5, num_items=5, n=0), "n must be an int >= 1, got 0"),
        (dict(num_users=5, num_items=2.5, n=10), "num_items must be an int >= 1, got 2.5"),
        (dict(num_users=5, num_items=5, n=10, rank=0), "rank must be an int >= 1"),
        (dict(num_users=5, num_items=5, n=10, noise_stddev=-1.0), "noise_stddev must be"),
        (dict(num_users=5, num_items=5, n=10, item_popularity_offset=0.0), "> 0, got 0.0"),
        (dict(num_users=5, num_items=5, n=10, min_user_ratings=3), "at least 15 ratings, got n=10"),
        (dict(num_users=5, num_items=5, n=10, mean=float("nan")), "mean must be finite"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic_ratings(**kwargs)


_MEMORY_PROBE = r"""
import json, resource, time
from cfcore.data.synthetic import synthetic_ratings
synthetic_ratings(100, 100, 1000)  # imports and first-call allocations out of the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
r = synthetic_ratings(50_000, 20_000, 4_000_000, seed=1)
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "bytes_per_rating": (peak - base) * 1024 / len(r)}))
"""


@pytest.mark.subprocess
def test_generation_is_fast_and_memory_lean():
    # A fresh process, so the peak resident size is this generation's alone.
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE], capture_output=True, text=True, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # The output is 12 bytes per rating; scratch is bounded by the chunk size. A version that
    # materialised float64 [n, rank] factor gathers would need over 128 bytes per rating.
    assert result["bytes_per_rating"] < 90, result
    assert result["seconds"] < 15, result  # about 1 s on 2 shared cores


def test_distinct_pairs_keep_each_users_count():
    kwargs = {"num_users": 400, "num_items": 3000, "n": 20_000, "seed": 3, "popularity": "ml-20m"}
    loose = synthetic_ratings(**kwargs)
    r = synthetic_ratings(**kwargs, distinct=True)
    key = r.users.astype(np.int64) * r.num_items + r.items
    assert len(np.unique(key)) == len(r)
    assert len(np.unique(loose.users.astype(np.int64) * 3000 + loose.items)) < len(loose)
    np.testing.assert_array_equal(r.users, loose.users)  # the same users and counts
    again = synthetic_ratings(**kwargs, distinct=True, chunk_size=999)
    np.testing.assert_array_equal(again.items, r.items)
    np.testing.assert_array_equal(again.values, r.values)


def test_distinct_pairs_for_users_close_to_every_item():
    # Users rating up to two thirds of a small catalogue under the heaviest head: the redraws
    # alone rarely finish, the last step hands out the items not rated yet.
    r = synthetic_ratings(50, 100, 2_000, seed=1, distinct=True, popularity="heavy-head",
                          user_activity_sigma=0.3)  # fmt: skip
    assert np.bincount(r.users).max() > 50
    key = r.users.astype(np.int64) * 100 + r.items
    assert len(np.unique(key)) == len(r)


def test_popularity_profiles_order_their_heads():
    share = {}
    for profile in ("latest-small", "ml-20m", "heavy-head"):
        r = synthetic_ratings(3_000, 4_000, 60_000, seed=0, popularity=profile, distinct=True)
        share[profile] = np.bincount(r.items).max() / r.num_users  # users rating the top item
    assert share["latest-small"] < share["ml-20m"] < share["heavy-head"] <= 1.0, share


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"popularity": "ml-30m"}, r"popularity='ml-30m' is not one of \['heavy-head'"),
        ({"distinct": True, "n": 5_000}, r"distinct=True: user \d+ draws \d+ ratings of 20 items"),
    ],
)
def test_bad_profile_or_impossible_distinct_pairs(kwargs, match):
    with pytest.raises(cfcore.CfcoreError, match=match):
        synthetic_ratings(**{"num_users": 30, "num_items": 20, "n": 100, **kwargs})
