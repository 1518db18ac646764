"""Seeded synthetic ratings with MovieLens-like skew, for benchmarks and tests at any scale.

Example:
    >>> import cfcore
    >>> r = cfcore.synthetic_ratings(num_users=1000, num_items=500, n=20_000, seed=0)
    >>> r.users.dtype, r.values.dtype, len(r)
    (dtype('int32'), dtype('float32'), 20000)
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ArgumentValueError
from .ratings import Ratings

# (num_users, num_items, num_ratings) of the GroupLens releases, for benchmarks at their shapes.
MOVIELENS_SHAPES: dict[str, tuple[int, int, int]] = {
    "ml-100k": (943, 1_682, 100_000),
    "ml-1m": (6_040, 3_706, 1_000_209),
    "ml-10m": (69_878, 10_677, 10_000_054),
    "ml-20m": (138_493, 26_744, 20_000_263),
}

# Ratings generated per pass: bounds the temporaries (about 100 bytes per rating at rank 8).
DEFAULT_CHUNK = 1 << 21

# `item_popularity` (exponent, offset) pairs for `synthetic_ratings(..., popularity=...)`.
# "ml-20m": fitted, for `distinct=True` at ML-20M's shape, to the published per-movie counts of
# MovieLens 20M: the most-rated movie in 67,310 of 138,493 users' rows (49%), the tenth in
# 50,054, the median movie 18 ratings (of 26,744). Drawn at that shape (seed 0): the top item in
# 47% of the users' rows, the tenth in 61,016, the median item 39 (the redraws of repeated
# pairs move some mass into the tail). "heavy-head": the top item in 78% of the rows, heavier
# than any MovieLens release, for timing the worst case of per-item work. "latest-small": the
# default law (see `item_popularity`).
POPULARITY_PROFILES: dict[str, tuple[float, float]] = {
    "latest-small": (1.5, 0.02),
    "ml-20m": (1.96, 0.0053),
    "heavy-head": (1.62, 0.00087),
}
# Rounds of redrawing repeated (user, item) pairs for `distinct=True` before giving up.
DISTINCT_ROUNDS = 64


def _check_int(name: str, value: object, low: int) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < low:
        raise ArgumentValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def _check_float(name: str, value: object, *, positive: bool = False) -> float:
    if isinstance(value, int | float | np.floating) and not isinstance(value, bool):
        x = float(value)
        if math.isfinite(x) and (x > 0 if positive else x >= 0):
            return x
    raise ArgumentValueError(
        f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}"
    )


def item_popularity(num_items: int, exponent: float = 1.5, offset: float = 0.02) -> np.ndarray:
    """Zipf–Mandelbrot item popularity in relative rank: `p(k) ∝ (k/M + offset)^(−exponent)`.

    The law is written in the relative rank `k/M`, so the share held by the top 1% or 10% of the
    catalog is about the same for every catalog size. The defaults were fitted to the item counts
    of MovieLens latest-small: there the top 1% of items hold 16% of the ratings, the top 10% hold
    60% and the least-rated half 6.3%; this law gives about 21%, 68% and 6.6%.

    Args:
        num_items: M.
        exponent: tail exponent; larger is more skewed.
        offset: flattens the head; `offset -> 0` gives a pure power law.

    Returns:
        float64 `[M]` probabilities, in decreasing order (index = popularity rank), summing to 1.
    """
    rank = np.arange(num_items, dtype=np.float64) / num_items
    w = (rank + offset) ** (-exponent)
    return w / w.sum()


def _alias_table(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table (Vose's construction) for drawing from `p` in O(1) per draw.

    Bin `k` keeps itself with probability `prob[k]`, else gives `alias[k]`; drawing a uniform bin
    and a uniform coin then yields index `j` with probability `p[j]` exactly (up to rounding).

    Returns:
        `(prob float64 [M], alias int32 [M])`.
    """
    m = len(p)
    scaled = (p * m).tolist()
    prob = np.ones(m)
    alias = np.arange(m, dtype=np.int32)
    small = [i for i, q in enumerate(scaled) if q < 1.0]
    large = [i for i, q in enumerate(scaled) if q >= 1.0]
    while small and large:
        s, g = small.pop(), large[-1]
        prob[s], alias[s] = scaled[s], g
        scaled[g] += scaled[s] - 1.0
        if scaled[g] < 1.0:
            small.append(large.pop())
    return prob, alias


def synthetic_ratings(
    num_users: int,
    num_items: int,
    n: int,
    *,
    seed: int = 0,
    rank: int = 8,
    user_activity_sigma: float = 1.2,
    item_popularity_exponent: float = 1.5,
    item_popularity_offset: float = 0.02,
    min_user_ratings: int = 0,
    popularity: str | None = None,
    distinct: bool = False,
    mean: float = 3.55,
    bias_stddev: float = 0.45,
    signal_stddev: float = 0.7,
    noise_stddev: float = 0.6,
    chunk_size: int = DEFAULT_CHUNK,
) -> Ratings:
    """Draws `n` ratings 1..5 over `num_users × num_items` with realistic skew and a low-rank signal.

    The model, every part drawn from `numpy.random.default_rng` streams spawned from `seed`:

    * User activity: weights `a_u ~ LogNormal(0, user_activity_sigma²)`; the number of ratings of
      each user is `min_user_ratings` plus a multinomial draw of the rest with probabilities
      `a / Σa`. σ = 1.2 gives a mean/median ratio of about 2 (ML-20M: 144/68; latest-small 2.3).
    * Item popularity: each rating's item is drawn independently from `item_popularity` (a
      Zipf–Mandelbrot law in relative rank); popularity ranks are then mapped to item ids by a
      random permutation, so popular items are scattered over the id range as in real catalogs.
    * Values: `clip(round(mean + b_u + b_i + ⟨p_u, q_i⟩ + ε), 1, 5)` with biases
      `b ~ N(0, bias_stddev²)`, factors `p_u, q_i ~ N(0, s²·I_rank)` scaled so that the dot product
      has standard deviation `signal_stddev`, and noise `ε ~ N(0, noise_stddev²)`. The defaults give
      a mean of 3.5 and a standard deviation of 1.06 (ml-100k: 3.53 and 1.13; latest-small: 3.50
      and 1.04), with 4% ones and 19% fives.

    Pairs are drawn with replacement, so a (user, item) pair can occur more than once: about 7% of
    the ratings repeat an earlier pair at ML-20M shape, mostly heavy users on popular items (who
    then rate the most popular item several times instead of once, so it reaches far fewer
    users than its count says). With `distinct=True` every repeated pair's item is drawn again
    from the same law until each user's items are distinct, as in a real release; the users'
    counts are kept (each must be at most `num_items`).
    Ratings come ordered by user (as MovieLens files are), items in random order within a user.

    Generation is vectorised and runs in chunks of `chunk_size` ratings into preallocated int32 /
    float32 arrays, so its memory is the output (12 bytes per rating) plus a bounded scratch. On 2
    cores, 20M ratings take 3-5 s and 50M about 10 s (a third of it in `Ratings`' own checks, which
    briefly widen the ids to int64). The result does not depend on `chunk_size`.

    Args:
        num_users: N, the users in the catalog (some may have no rating when n is small).
        num_items: M, the items in the catalog.
        n: number of ratings.
        seed: seeds every draw; the same arguments give bit-identical ratings on every machine.
        rank: rank of the hidden signal.
        user_activity_sigma: σ of the log-normal user activity (0: every user equally active).
        item_popularity_exponent: see `item_popularity`.
        item_popularity_offset: see `item_popularity`.
        min_user_ratings: ratings every user gets before the skewed draw; needs
            `n >= num_users * min_user_ratings`.
        popularity: a name of `POPULARITY_PROFILES` ("ml-20m", "heavy-head", "latest-small")
            setting both `item_popularity_exponent` and `item_popularity_offset` (None: those
            two as given).
        distinct: every (user, item) pair at most once (see above).
        mean: global mean of the signal before rounding.
        bias_stddev: standard deviation of the user and item biases.
        signal_stddev: standard deviation of the low-rank interaction `⟨p_u, q_i⟩`.
        noise_stddev: standard deviation of the noise added to each rating.
        chunk_size: ratings generated per pass.

    Returns:
        `Ratings` with int32 `users`/`items` of shape `[n]`, float32 `values` in {1, 2, 3, 4, 5}, and
        the catalog sizes `num_users`, `num_items`.

    Raises:
        ArgumentValueError: a size or parameter is out of range (a `ValueError` too).
    """
    num_users = _check_int("num_users", num_users, 1)
    num_items = _check_int("num_items", num_items, 1)
    n = _check_int("n", n, 1)
    rank = _check_int("rank", rank, 1)
    min_user_ratings = _check_int("min_user_ratings", min_user_ratings, 0)
    chunk_size = _check_int("chunk_size", chunk_size, 1)
    for name, value in (("num_users", num_users), ("num_items", num_items)):
        if value > np.iinfo(np.int32).max:
            raise ArgumentValueError(f"{name}={value} does not fit the int32 ids cfcore uses")
    sigma = _check_float("user_activity_sigma", user_activity_sigma)
    exponent = _check_float("item_popularity_exponent", item_popularity_exponent)
    offset = _check_float("item_popularity_offset", item_popularity_offset, positive=True)
    mean = float(mean)
    if not math.isfinite(mean):
        raise ArgumentValueError(f"mean must be finite, got {mean!r}")
    if popularity is not None:
        if popularity not in POPULARITY_PROFILES:
            raise ArgumentValueError(
                f"popularity={popularity!r} is not one of {sorted(POPULARITY_PROFILES)}"
            )
        exponent, offset = POPULARITY_PROFILES[popularity]
    bias_sd = _check_float("bias_stddev", bias_stddev)
    signal_sd = _check_float("signal_stddev", signal_stddev)
    noise_sd = _check_float("noise_stddev", noise_stddev)
    if num_users * min_user_ratings > n:
        raise ArgumentValueError(
            f"min_user_ratings={min_user_ratings} for {num_users} users needs at least "
            f"{num_users * min_user_ratings} ratings, got n={n}"
        )

    # Independent streams: each one is consumed in order, so chunking does not change the result.
    users_rng, items_rng, factors_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
    )

    activity = users_rng.lognormal(0.0, sigma, num_users) if sigma > 0 else np.ones(num_users)
    counts = users_rng.multinomial(n - num_users * min_user_ratings, activity / activity.sum())
    counts += min_user_ratings
    if distinct and counts.max() > num_items:
        raise ArgumentValueError(
            f"distinct=True: user {int(counts.argmax())} draws {int(counts.max())} ratings of "
            f"{num_items} items; lower n or user_activity_sigma, or raise num_items"
        )
    users = np.repeat(np.arange(num_users, dtype=np.int32), counts)

    prob, alias = _alias_table(item_popularity(num_items, exponent, offset))
    rank_to_id = items_rng.permutation(num_items).astype(np.int32)

    # The dot product of two independent N(0, s²·I_rank) vectors has variance rank·s⁴.
    s = (signal_sd**2 / rank) ** 0.25
    user_f = factors_rng.normal(0.0, s, (num_users, rank)).astype(np.float32)
    item_f = factors_rng.normal(0.0, s, (num_items, rank)).astype(np.float32)
    user_b = factors_rng.normal(0.0, bias_sd, num_users).astype(np.float32)
    item_b = factors_rng.normal(0.0, bias_sd, num_items).astype(np.float32)

    def draw_items(size: int) -> np.ndarray:
        # Walker's alias method: one uniform gives a bin (integer part) and a coin (fraction).
        draw = items_rng.random(size) * num_items
        k = np.minimum(draw.astype(np.int32), num_items - 1)
        return rank_to_id[np.where(draw - k < prob[k], k, alias[k])]

    items = np.empty(n, dtype=np.int32)
    values = np.empty(n, dtype=np.float32)
    if distinct:
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            items[start:stop] = draw_items(stop - start)
        _redraw_repeats(users, items, num_items, draw_items)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        u = users[start:stop]
        if distinct:
            it = items[start:stop]
        else:
            it = draw_items(stop - start)
            items[start:stop] = it
        x = np.einsum("kr,kr->k", user_f[u], item_f[it])
        x += user_b[u]
        x += item_b[it]
        x += noise_rng.standard_normal(stop - start, dtype=np.float32) * np.float32(noise_sd)
        x += np.float32(mean)
        np.clip(np.rint(x, out=x), 1.0, 5.0, out=values[start:stop])
    return Ratings(users, items, values, num_users, num_items)


def _redraw_repeats(users: np.ndarray, items: np.ndarray, num_items: int, draw) -> None:
    """Draws `items` again, in place, wherever a (user, item) pair repeats an earlier one, until
    none does (`users` sorted; `draw(size)` gives items from the popularity law)."""
    rows = np.arange(len(users))
    for _ in range(DISTINCT_ROUNDS):
        repeat = rows[_repeated(users[rows], items[rows], num_items)]
        if len(repeat) == 0:
            return
        items[repeat] = draw(len(repeat))
        # Only the users who had a repeat can have one now: the next round sorts their rows.
        rows = np.flatnonzero(np.isin(users, np.unique(users[repeat])))
    # A user close to rating every item: hand the repeats the items they have not rated yet.
    for u in np.unique(users[_repeated(users, items, num_items)]):
        rows = np.flatnonzero(users == u)
        free = np.setdiff1d(np.arange(num_items, dtype=np.int32), items[rows])
        first = np.unique(items[rows], return_index=True)[1]
        again = np.setdiff1d(np.arange(len(rows)), first)
        items[rows[again]] = free[: len(again)]


def _repeated(users: np.ndarray, items: np.ndarray, num_items: int) -> np.ndarray:
    """Positions whose (user, item) pair occurs at an earlier position (in sorted-key order)."""
    key = users.astype(np.int64) * num_items + items
    order = np.argsort(key, kind="stable")
    return order[1:][key[order[1:]] == key[order[:-1]]]
