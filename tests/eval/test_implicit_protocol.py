"""The strong-generalization protocol: split invariants and metrics against plain-Python loops."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import cfcore
from cfcore.eval.implicit import (
    KS,
    StrongGeneralizationSplit,
    evaluate_strong_generalization,
    strong_generalization_metrics,
    strong_generalization_split,
)
from cfcore.eval.metrics import ranking_metrics
from cfcore.eval.popularity import PopularityScorer
from cfcore.optimizers import SGD
from cfcore.retrieval import RatedItems

from ..conftest import load_backend

# ---------------------------------------------------------------------------- data


def half_star_ratings(
    seed: int = 0, num_users: int = 120, num_items: int = 90, n: int = 4000
) -> cfcore.Ratings:
    """Half-star ratings (3.5 is on the scale: it must not count), skewed item popularity,
    original ids with gaps, a catalog, timestamps, and a few pairs rated twice."""
    rng = np.random.default_rng(seed)
    pop = rng.pareto(1.5, num_items) + 0.1
    users = rng.integers(0, num_users, n)
    items = rng.choice(num_items, n, p=pop / pop.sum())
    values = rng.integers(1, 11, n) / 2
    dup = rng.choice(n, 50, replace=False)  # the same pairs again, rated anew
    users, items = np.concatenate([users, users[dup]]), np.concatenate([items, items[dup]])
    values = np.concatenate([values, rng.integers(1, 11, 50) / 2])
    catalog = pd.DataFrame({"item_id": 10 * np.arange(num_items) + 7, "title": "x"})
    return cfcore.Ratings(
        users,
        items,
        values,
        num_users,
        num_items,
        timestamps=rng.integers(0, 10**9, len(users)),
        user_ids=1000 + 3 * np.arange(num_users),
        item_ids=catalog["item_id"].to_numpy(),
        catalog=catalog,
    )


def positives_by_user(r: cfcore.Ratings, threshold: float = 3.5) -> dict[int, set[int]]:
    """Loop reference: each user's set of items rated above the threshold."""
    out: dict[int, set[int]] = {}
    for u, i, v in zip(r.users.tolist(), r.items.tolist(), r.values.tolist(), strict=True):
        if v > threshold:
            out.setdefault(u, set()).add(i)
    return out


def rows(rated: RatedItems) -> list[list[int]]:
    return [rated.row(h).tolist() for h in range(rated.num_rows)]


# ---------------------------------------------------------------------------- the split


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("share", [0.1, 0.2, 0.5])
def test_split_invariants(seed: int, share: float) -> None:
    r = half_star_ratings(seed)
    split = strong_generalization_split(r, heldout_share=share, seed=seed)
    pos = positives_by_user(r)
    eligible = {u for u, items in pos.items() if len(items) >= 5}
    train_users, held = set(split.users.tolist()), set(split.heldout_users.tolist())
    # Users: the eligible ones, split into disjoint groups of the requested size.
    assert not train_users & held
    assert len(split.users) + len(split.heldout_users) + split.dropped_users == len(eligible)
    assert train_users | held <= eligible
    n_held = round(share * len(eligible))
    assert len(split.heldout_users) + split.dropped_users == n_held
    held_all = eligible - train_users  # held-out users before any was dropped
    assert len(held_all) == n_held
    # Items: exactly those with a positive among the training users, in source order.
    train_items = set().union(*(pos[u] for u in train_users))
    assert split.items.tolist() == sorted(train_items)
    assert split.num_items == len(train_items)
    # Training positives: every positive of every training user, once, as value 1.0.
    t = split.train
    assert t.num_users == len(train_users) and t.num_items == len(train_items)
    got = {
        (int(split.users[u]), int(split.items[i])) for u, i in zip(t.users, t.items, strict=True)
    }
    assert len(got) == len(t)
    assert got == {(u, i) for u in train_users for i in pos[u]}
    assert (t.values == 1.0).all()
    np.testing.assert_array_equal(t.user_ids, np.asarray(r.user_ids)[split.users])
    np.testing.assert_array_equal(t.item_ids, np.asarray(r.item_ids)[split.items])
    pd.testing.assert_frame_equal(t.catalog, r.catalog.iloc[split.items].reset_index(drop=True))
    # Held-out users: fold-in and targets partition their positives on training items, 80/20.
    assert split.fold_in.num_rows == split.targets.num_rows == len(held)
    for h, u in enumerate(split.heldout_users.tolist()):
        fold, target = set(split.fold_in.row(h)), set(split.targets.row(h))
        mine = {int(np.flatnonzero(split.items == i)[0]) for i in pos[u] & train_items}
        assert not fold & target
        assert fold | target == mine
        assert len(target) == math.floor(0.2 * len(mine) + 1e-9) >= 1
        assert len(fold) == len(mine) - len(target)
        assert sorted(split.fold_in.row(h).tolist()) == split.fold_in.row(h).tolist()
    for u in held_all - held:  # dropped: too few positives left on training items
        assert len(pos[u] & train_items) < 5
    np.testing.assert_array_equal(
        split.heldout_user_ids, np.asarray(r.user_ids)[split.heldout_users]
    )
    # The ratings model.fold_in takes.
    f = split.fold_in_ratings()
    assert (f.num_users, f.num_items, len(f)) == (
        len(held),
        split.num_items,
        len(split.fold_in.indices),
    )
    assert [sorted(f.items[f.users == h].tolist()) for h in range(len(held))] == rows(split.fold_in)
    assert (f.values == 1.0).all()


def test_split_is_deterministic_by_seed() -> None:
    r = half_star_ratings(3)

    def parts(s: StrongGeneralizationSplit) -> list[np.ndarray]:
        return [
            s.users,
            s.heldout_users,
            s.items,
            s.fold_in.indptr,
            s.fold_in.indices,
            s.targets.indptr,
            s.targets.indices,
            s.train.users,
            s.train.items,
        ]

    a, b = (strong_generalization_split(r, heldout_share=0.2, seed=5) for _ in range(2))
    for x, y in zip(parts(a), parts(b), strict=True):
        np.testing.assert_array_equal(x, y)
    others = [strong_generalization_split(r, heldout_share=0.2, seed=s) for s in (6, 7)]
    assert any(not np.array_equal(a.heldout_users, o.heldout_users) for o in others)
    # Same held-out users, other targets: the within-user draw follows the seed too.
    assert not all(
        np.array_equal(a.targets.indices, o.targets.indices) for o in others if o.num_heldout
    )


def test_threshold_is_strict_and_pairs_count_once() -> None:
    # User 0 rates items 0..5 at 4 (positives), item 6 at 3.5 (not), item 0 again at 5 (once).
    # Users 1..4 like every item, so all items are training items whoever is held out.
    users = [0] * 8 + [u for u in range(1, 5) for _ in range(7)]
    items = [0, 1, 2, 3, 4, 5, 6, 0] + list(range(7)) * 4
    values = [4, 4, 4, 4, 4, 4, 3.5, 5] + [5] * 28
    r = cfcore.Ratings(users, items, values, 5, 7)
    for seed in range(50):
        split = strong_generalization_split(r, heldout_share=0.2, seed=seed)
        if split.heldout_users.tolist() == [0]:
            break
    else:
        pytest.fail("no seed in 0..49 held out user 0")
    assert sorted(split.fold_in.row(0).tolist() + split.targets.row(0).tolist()) == [
        0,
        1,
        2,
        3,
        4,
        5,
    ]
    assert len(split.targets.row(0)) == 1  # floor(0.2 * 6)
    assert split.train.user_ids.tolist() == [1, 2, 3, 4]  # source indices without a vocabulary


def test_heldout_user_without_enough_training_items_is_dropped() -> None:
    # User 0's positives are items 5..9, which no one else likes: held out, nothing is left.
    users = [0] * 5 + [u for u in range(1, 10) for _ in range(5)]
    items = list(range(5, 10)) + list(range(5)) * 9
    r = cfcore.Ratings(users, items, np.full(len(users), 5.0), 10, 10)
    seen = False
    for seed in range(20):
        split = strong_generalization_split(r, heldout_share=0.1, seed=seed)
        if 0 not in split.users:
            seen = True
            assert split.dropped_users == 1 and split.num_heldout == 0
            assert split.items.tolist() == [0, 1, 2, 3, 4]
    assert seen


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"heldout_share": 0.0}, r"heldout_share must be in \(0, 1\), got 0.0"),
        ({"heldout_share": 1.5}, r"heldout_share must be in \(0, 1\), got 1.5"),
        ({"heldout_share": "0.2"}, "heldout_share must be a number"),
        ({"heldout_share": 0.2, "target_share": 1.0}, r"target_share must be in \(0, 1\)"),
        ({"heldout_share": 0.2, "min_positives": 1}, "min_positives must be >= 2"),
        ({"heldout_share": 0.2, "threshold": float("nan")}, "threshold must be a finite number"),
        ({"heldout_share": 0.001}, "leaves 0 held-out"),
        ({"heldout_share": 0.2, "threshold": 5.0}, "0 users have at least 5 ratings above 5"),
    ],
)
def test_split_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        strong_generalization_split(half_star_ratings(), **kwargs)


def test_split_takes_a_dataset() -> None:
    class Dataset:
        ratings = half_star_ratings()

    a = strong_generalization_split(Dataset(), heldout_share=0.2)
    b = strong_generalization_split(Dataset.ratings, heldout_share=0.2)
    np.testing.assert_array_equal(a.heldout_users, b.heldout_users)
    with pytest.raises(ValueError, match="must be a cfcore.Ratings"):
        strong_generalization_split([1, 2], heldout_share=0.2)


# ---------------------------------------------------------------------------- metrics


def loop_metrics(top: list[list[int]], targets: list[list[int]], k: int) -> tuple[list, list]:
    """Recall@k = hits / min(k, |T|) and NDCG@k with binary gain, one user at a time."""
    recall, ndcg = [], []
    for ranked, target in zip(top, targets, strict=True):
        t = set(target)
        hits = 0
        dcg = 0.0
        for position, item in enumerate(ranked[:k]):
            if item in t:
                hits += 1
                dcg += 1.0 / math.log2(position + 2)
        n = min(k, len(t))
        idcg = sum(1.0 / math.log2(position + 2) for position in range(n))
        recall.append(hits / n)
        ndcg.append(dcg / idcg)
    return recall, ndcg


def csr(lists: list[list[int]], num_items: int) -> RatedItems:
    indptr = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int64)
    flat = np.array([i for x in lists for i in x], dtype=np.int32)
    return RatedItems(indptr, flat, num_items)


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_the_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m, h, width = 150, 40, 100
    top = np.stack([rng.permutation(m)[:width] for _ in range(h)])
    # Target sets from 1 item to more than the largest k, some mostly inside the top.
    targets = []
    for u in range(h):
        size = [1, 2, 5, 19, 20, 21, 49, 60, 110][u % 9]
        pool = top[u, :30] if u % 3 == 0 and size <= 30 else np.arange(m)
        targets.append(sorted(rng.choice(pool, min(size, len(pool)), replace=False).tolist()))
    got = strong_generalization_metrics(top, csr(targets, m), (20, 50, 100), per_user=True)
    means = strong_generalization_metrics(top, csr(targets, m), (20, 50, 100))
    for k in (20, 50, 100):
        recall, ndcg = loop_metrics(top.tolist(), targets, k)
        np.testing.assert_allclose(got[f"recall@{k}"], recall, rtol=1e-12)
        np.testing.assert_allclose(got[f"ndcg@{k}"], ndcg, rtol=1e-12)
        assert means[f"recall@{k}"] == pytest.approx(np.mean(recall), rel=1e-12)
        # NDCG is the one of cfcore.eval.metrics; recall differs from its hits/|T| exactly
        # where |T| > k.
        ref = ranking_metrics(top, [np.array(t) for t in targets], k, per_user=True)
        np.testing.assert_allclose(got[f"ndcg@{k}"], ref[f"ndcg@{k}"], rtol=1e-12)
        small = np.array([len(t) <= k for t in targets])
        np.testing.assert_allclose(got[f"recall@{k}"][small], ref[f"recall@{k}"][small])
        sizes = np.array([len(t) for t in targets], float)
        np.testing.assert_allclose(
            got[f"recall@{k}"][~small], ref[f"recall@{k}"][~small] * sizes[~small] / k
        )
        assert (~small).any() and small.any()
    assert list(means) == [f"{name}@{k}" for k in (20, 50, 100) for name in ("recall", "ndcg")]


def test_perfect_ranking_scores_one_even_with_many_targets() -> None:
    top = np.arange(100)[None, :]
    out = strong_generalization_metrics(top, csr([list(range(150))], 200), KS)
    assert all(v == pytest.approx(1.0) for v in out.values())


def test_metrics_errors() -> None:
    top = np.arange(30).reshape(1, 30)
    with pytest.raises(ValueError, match="k=50 is out of range: .* 1 and 30, the number of"):
        strong_generalization_metrics(top, csr([[1]], 40), (20, 50))
    with pytest.raises(ValueError, match="has no targets"):
        strong_generalization_metrics(top, csr([[]], 40), (20,))
    with pytest.raises(ValueError, match="2-D int array"):
        strong_generalization_metrics(top.astype(float), csr([[1]], 40), (20,))
    with pytest.raises(ValueError, match="1 rows but targets 2"):
        strong_generalization_metrics(top, csr([[1], [2]], 40), (20,))


# ---------------------------------------------------------------------------- evaluation


def loop_ranking(scores: np.ndarray, exclude: list[list[int]], k: int) -> list[list[int]]:
    """Best first, ties by the lowest index, the user's fold-in items left out."""
    out = []
    for row, left_out in zip(scores.tolist(), exclude, strict=True):
        skip = set(left_out)
        ranked = sorted((i for i in range(len(row)) if i not in skip), key=lambda i: (-row[i], i))
        out.append(ranked[:k])
    return out


class StubModel:
    """A model whose fold-in returns fixed rows; training it is an error."""

    def __init__(self, item_emb: np.ndarray, user_emb: np.ndarray) -> None:
        self.item_emb, self.user_emb = item_emb, user_emb
        self.calls: list[cfcore.Ratings] = []

    def embeddings_numpy(self) -> dict[str, np.ndarray]:
        return {"item": self.item_emb}

    def fold_in(self, ratings: cfcore.Ratings, *, backend=None) -> np.ndarray:
        self.calls.append(ratings)
        return self.user_emb

    def fit(self, *args, **kwargs):
        raise AssertionError("the protocol must never train on held-out users")


@pytest.mark.parametrize("chunk_rows", [None, 7])
def test_model_evaluation_matches_the_loop(chunk_rows: int | None) -> None:
    split = strong_generalization_split(half_star_ratings(1), heldout_share=0.3, seed=2)
    rng = np.random.default_rng(0)
    # Small integers: exact float32 scores with many ties, so the tie rule is checked too.
    item_emb = rng.integers(-2, 3, (split.num_items, 3)).astype(np.float32)
    user_emb = rng.integers(-2, 3, (split.num_heldout, 3)).astype(np.float32)
    model = StubModel(item_emb, user_emb)
    ks = (5, 20, 50)
    got = evaluate_strong_generalization(model, split, ks, chunk_rows=chunk_rows, per_user=True)
    assert len(model.calls) == 1
    folded = model.calls[0]
    assert [sorted(folded.items[folded.users == h].tolist()) for h in range(split.num_heldout)] == (
        rows(split.fold_in)
    )
    top = loop_ranking(user_emb.astype(np.float64) @ item_emb.T, rows(split.fold_in), max(ks))
    for k in ks:
        recall, ndcg = loop_metrics(top, rows(split.targets), k)
        np.testing.assert_allclose(got[f"recall@{k}"], recall, rtol=1e-12)
        np.testing.assert_allclose(got[f"ndcg@{k}"], ndcg, rtol=1e-12)
    assert got["users"] == split.num_heldout


def test_item_biases_of_a_scoring_table_count() -> None:
    # A biased model ranks by <u, v> + b_i: its scoring tables are [u, 1] and [v, b_i].
    split = strong_generalization_split(half_star_ratings(6), heldout_share=0.2, seed=3)
    rng = np.random.default_rng(1)
    item_emb = rng.integers(-2, 3, (split.num_items, 3)).astype(np.float32)
    user_emb = rng.integers(-2, 3, (split.num_heldout, 3)).astype(np.float32)
    bias = rng.integers(-4, 5, split.num_items).astype(np.float32)

    class Biased(StubModel):
        def scoring_embeddings(self) -> dict[str, np.ndarray]:
            return {"item": np.concatenate([self.item_emb, bias[:, None]], axis=1)}

    got = evaluate_strong_generalization(Biased(item_emb, user_emb), split, (10,), per_user=True)
    scores = user_emb.astype(np.float64) @ item_emb.T + bias[None, :]
    top = loop_ranking(scores, rows(split.fold_in), 10)
    recall, ndcg = loop_metrics(top, rows(split.targets), 10)
    np.testing.assert_allclose(got["recall@10"], recall, rtol=1e-12)
    np.testing.assert_allclose(got["ndcg@10"], ndcg, rtol=1e-12)
    unbiased = evaluate_strong_generalization(StubModel(item_emb, user_emb), split, (10,))
    assert unbiased["ndcg@10"] != pytest.approx(float(np.mean(ndcg)))


def test_popularity_matches_the_loop() -> None:
    split = strong_generalization_split(half_star_ratings(2), heldout_share=0.2, seed=0)
    counts = [0] * split.num_items
    for u in range(split.train.num_users):
        for i in set(split.train.items[split.train.users == u].tolist()):
            counts[i] += 1
    scorer = PopularityScorer.from_ratings(split.train)
    assert scorer.counts.tolist() == counts
    got = evaluate_strong_generalization(scorer, split, KS[:2], per_user=True)
    scores = np.tile(np.array(counts, float), (split.num_heldout, 1))
    top = loop_ranking(scores, rows(split.fold_in), 50)
    for k in KS[:2]:
        recall, ndcg = loop_metrics(top, rows(split.targets), k)
        np.testing.assert_allclose(got[f"recall@{k}"], recall, rtol=1e-12)
        np.testing.assert_allclose(got[f"ndcg@{k}"], ndcg, rtol=1e-12)


def test_a_fold_in_item_is_never_recommended(monkeypatch: pytest.MonkeyPatch) -> None:
    # A scorer that ranks each user's own fold-in items first: they must all be left out.
    from cfcore.eval import implicit

    split = strong_generalization_split(half_star_ratings(4), heldout_share=0.2, seed=1)
    captured = []
    original = implicit.strong_generalization_metrics

    def spy(top, targets, ks, *, per_user=False):
        captured.append(np.asarray(top))
        return original(top, targets, ks, per_user=per_user)

    monkeypatch.setattr(implicit, "strong_generalization_metrics", spy)
    evaluate_strong_generalization(
        lambda fold_in: fold_in.mask().astype(np.float32) * 100.0, split, (20,)
    )
    (top,) = captured
    assert top.shape == (split.num_heldout, 20)
    for h in range(split.num_heldout):
        assert not set(top[h].tolist()) & set(split.fold_in.row(h).tolist())


def test_evaluation_errors() -> None:
    split = strong_generalization_split(half_star_ratings(), heldout_share=0.2)
    m = split.num_items
    wrong = StubModel(np.zeros((m + 1, 2), np.float32), np.zeros((split.num_heldout, 2)))
    with pytest.raises(ValueError, match=f"has {m + 1} items but the split {m} training items"):
        evaluate_strong_generalization(wrong, split, (20,))
    bad_rows = StubModel(np.zeros((m, 2), np.float32), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="fold_in returned shape"):
        evaluate_strong_generalization(bad_rows, split, (20,))
    with pytest.raises(ValueError, match="the scorer returned shape"):
        evaluate_strong_generalization(lambda f: np.zeros((f.num_rows, m - 1)), split, (20,))
    with pytest.raises(ValueError, match=f"k={m + 1} is out of range: .* 1 and {m}, the number"):
        evaluate_strong_generalization(PopularityScorer.from_ratings(split.train), split, (m + 1,))
    with pytest.raises(ValueError, match="neither|must be a model"):
        evaluate_strong_generalization(42, split, (20,))
    with pytest.raises(ValueError, match="ks must name at least one cut-off"):
        evaluate_strong_generalization(PopularityScorer.from_ratings(split.train), split, ())


def test_real_model_folds_in_with_its_own_solve() -> None:
    # A regularized MF trained on the training positives: the evaluation's user rows are the
    # model's fold-in rows (its own λr and gravity), and the ranking is theirs.
    load_backend("jax")
    split = strong_generalization_split(half_star_ratings(5), heldout_share=0.2, seed=0)
    model = cfcore.RegularizedMF(
        embedding_dim=4, init_stddev=0.5, regularization_coeff=0.1, gravity_coeff=0.5
    )
    model.fit(split.train, steps=20, optimizer=SGD(1.0), backend="jax", progress=False)
    trained_users = model.embeddings["user"].copy()
    got = evaluate_strong_generalization(model, split, (10, 20), backend="numpy", per_user=True)
    np.testing.assert_array_equal(model.embeddings["user"], trained_users)  # model unchanged
    user_emb = model.fold_in(split.fold_in_ratings(), backend="numpy").astype(np.float64)
    item_emb = model.embeddings["item"].astype(np.float64)
    top = loop_ranking(user_emb @ item_emb.T, rows(split.fold_in), 20)
    for k in (10, 20):
        recall, ndcg = loop_metrics(top, rows(split.targets), k)
        np.testing.assert_allclose(got[f"recall@{k}"], recall, rtol=1e-12)
        np.testing.assert_allclose(got[f"ndcg@{k}"], ndcg, rtol=1e-12)


# ---------------------------------------------------------------------------- real data


@pytest.mark.parametrize(("name", "share"), [("100k", 0.2), ("latest-small", 0.1)])
def test_real_split_and_popularity(name: str, share: float, request: pytest.FixtureRequest) -> None:
    folder = request.getfixturevalue("ml100k_files" if name == "100k" else "latest_files")
    ml = cfcore.datasets.load_movielens(name, folder, download=False)
    split = strong_generalization_split(ml, heldout_share=share, seed=0)
    pos = positives_by_user(ml.ratings)
    eligible = [u for u, items in pos.items() if len(items) >= 5]
    assert len(split.users) + len(split.heldout_users) + split.dropped_users == len(eligible)
    assert len(split.heldout_users) + split.dropped_users == round(share * len(eligible))
    assert not set(split.users) & set(split.heldout_users)
    assert split.train.catalog["title"].tolist() == ml.items["title"].iloc[split.items].tolist()
    out = evaluate_strong_generalization(PopularityScorer.from_ratings(split.train), split)
    assert out["users"] == split.num_heldout
    # Popularity is far from useless and far from perfect; recall grows with k.
    assert 0.05 < out["recall@20"] < out["recall@50"] < out["recall@100"] < 0.8
