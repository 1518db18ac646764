"""Ranking metrics: the vectorised NumPy code against the plain-loop reference, and by hand."""

import numpy as np
import pytest

from cfcore import metrics
from cfcore import reference as ref
from cfcore.data.features import Ragged


def _random_case(seed, users=60, items=40, width=15):
    rng = np.random.default_rng(seed)
    top = np.stack([rng.permutation(items)[:width] for _ in range(users)])
    targets = [rng.choice(items, size=rng.integers(1, 25), replace=False) for _ in range(users)]
    return top, targets


@pytest.mark.parametrize("k", [1, 5, 10, 15])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_loop_reference(k, seed):
    top, targets = _random_case(seed)
    got = metrics.ranking_metrics(top, targets, k)
    expected = ref.ranking_metrics(top, targets, k)
    assert set(got) == set(expected) == {f"{m}@{k}" for m in metrics.METRICS}
    for name in expected:
        assert np.isclose(got[name], expected[name], rtol=1e-12, atol=1e-15), name


def test_per_user_means_are_the_averages():
    top, targets = _random_case(3)
    per_user = metrics.ranking_metrics(top, targets, 10, per_user=True)
    means = metrics.ranking_metrics(top, targets, 10)
    for name, values in per_user.items():
        assert values.shape == (len(top),)
        assert np.isclose(values.mean(), means[name])


def test_hand_computed_example():
    # User 0: ranked [3, 1, 4], targets {1, 9}: one hit at rank 2.
    # User 1: ranked [0, 2, 5], target {7}: no hit.
    top = np.array([[3, 1, 4], [0, 2, 5]])
    m = metrics.ranking_metrics(top, [np.array([1, 9]), np.array([7])], k=3, per_user=True)
    np.testing.assert_allclose(m["precision@3"], [1 / 3, 0])
    np.testing.assert_allclose(m["recall@3"], [1 / 2, 0])
    # DCG = 1/log2(3); IDCG over min(3, 2) = 2 targets = 1 + 1/log2(3).
    np.testing.assert_allclose(m["ndcg@3"], [(1 / np.log2(3)) / (1 + 1 / np.log2(3)), 0])
    # AP = (1/min(3, 2)) * P@2 = (1/2) * (1/2).
    np.testing.assert_allclose(m["map@3"], [0.25, 0])
    np.testing.assert_allclose(m["hit_rate@3"], [1, 0])


def test_perfect_ranking_scores_one():
    top = np.array([[5, 2, 8, 0, 1], [7, 6, 3, 4, 9]])
    targets = [np.array([2, 5]), np.array([3, 4, 6, 7, 9, 11])]  # 2 < k and 6 > k targets
    m = metrics.ranking_metrics(top, targets, k=5, per_user=True)
    # User 0 has its two targets first: NDCG and MAP are 1 (denominators min(k, |T|) = 2).
    assert m["ndcg@5"][0] == pytest.approx(1.0) and m["map@5"][0] == pytest.approx(1.0)
    # User 1's five ranked items are all targets: precision, NDCG and MAP are 1, recall 5/6.
    assert m["precision@5"][1] == 1.0 and m["recall@5"][1] == pytest.approx(5 / 6)
    assert m["ndcg@5"][1] == pytest.approx(1.0) and m["map@5"][1] == pytest.approx(1.0)


def test_single_target_precision_is_capped_at_one_over_k():
    # The notebook's set-up: one label per user; TensorFlow's precision_at_k is [y in top-k] / k.
    rng = np.random.default_rng(4)
    top = np.stack([rng.permutation(30)[:10] for _ in range(50)])
    labels = rng.integers(0, 30, 50)
    p = metrics.precision_at_k(top, [np.array([y]) for y in labels], 10)
    assert p == pytest.approx(
        np.mean([(y in row) / 10 for y, row in zip(labels, top, strict=True)])
    )
    assert p <= 0.1


def test_single_metric_functions_and_ragged_targets():
    top, targets = _random_case(5)
    ragged = Ragged.from_rows(targets)
    full = metrics.ranking_metrics(top, ragged, 7)
    assert metrics.precision_at_k(top, targets, 7) == full["precision@7"]
    assert metrics.recall_at_k(top, targets, 7) == full["recall@7"]
    assert metrics.ndcg_at_k(top, targets, 7) == full["ndcg@7"]
    assert metrics.map_at_k(top, targets, 7) == full["map@7"]
    assert metrics.hit_rate_at_k(top, targets, 7) == full["hit_rate@7"]


def test_duplicate_targets_count_once_and_negative_ranks_never_hit():
    top = np.array([[1, -1, 2]])
    m = metrics.ranking_metrics(top, [np.array([1, 1, 2])], 3)
    assert m["recall@3"] == 1.0 and m["precision@3"] == pytest.approx(2 / 3)


def test_bad_arguments_raise():
    top = np.array([[0, 1, 2]])
    with pytest.raises(
        ValueError, match=r"k=4 is out of range: .* number of items ranked per user 3"
    ):
        metrics.ranking_metrics(top, [np.array([1])], 4)
    with pytest.raises(ValueError, match="k=0 is out of range"):
        metrics.ranking_metrics(top, [np.array([1])], 0)
    with pytest.raises(ValueError, match="k must be a positive int, got 2.0"):
        metrics.ranking_metrics(top, [np.array([1])], 2.0)
    with pytest.raises(ValueError, match="user row 1 has no targets"):
        metrics.ranking_metrics(np.array([[0], [1]]), [np.array([1]), np.array([], int)], 1)
    with pytest.raises(ValueError, match="targets are given for 2 users but rankings for 1"):
        metrics.ranking_metrics(top, [np.array([1]), np.array([2])], 1)
    with pytest.raises(ValueError, match="2-D int array"):
        metrics.ranking_metrics(np.array([0.5, 1.0]), [np.array([1])], 1)
