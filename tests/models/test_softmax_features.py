"""Bag-of-words features, splits and seeded batches of the softmax model (NumPy only)."""

import numpy as np
import pandas as pd
import pytest

import cfcore
from cfcore import reference as ref
from cfcore.data import history
from cfcore.data.features import HistoryFeatures, SoftmaxBatcher, input_bags, split_users
from cfcore.eval.popularity import evaluate_popularity, popularity_ranking, popularity_scores
from cfcore.models.softmax import label_log_probabilities

GENRES = ["Action", "Comedy", "Drama"]


def toy_dataset(num_users=40, num_items=25, seed=0, empty_user=True):
    """Ratings with a catalog: years (one missing), genre flags (one item without any)."""
    rng = np.random.default_rng(seed)
    flags = (rng.random((num_items, len(GENRES))) < 0.4).astype(np.int64)
    flags[0] = 0  # no genre: "Other"
    flags[1] = 1  # every genre
    year = pd.array(rng.integers(1990, 1996, num_items), dtype="Int64")
    year[2] = pd.NA
    catalog = pd.DataFrame({"item_id": np.arange(100, 100 + num_items), "title": "t", "year": year})
    catalog = pd.concat([catalog, pd.DataFrame(flags, columns=GENRES)], axis=1)
    users, items = [], []
    for u in range(num_users - (1 if empty_user else 0)):  # the last user rates nothing
        chosen = rng.choice(num_items, size=rng.integers(2, 12), replace=False)
        users += [u] * len(chosen)
        items += list(chosen)
    return cfcore.Ratings(
        np.array(users),
        np.array(items),
        np.ones(len(users)),
        num_users,
        num_items,
        catalog=catalog,
    )


@pytest.fixture
def toy():
    return toy_dataset()


@pytest.fixture
def feats(toy):
    return HistoryFeatures.from_dataset(toy, genre_columns=GENRES)


def test_vocabularies(toy, feats):
    assert feats.vocabularies["movie_id"].tokens == tuple(str(i) for i in range(100, 125))
    assert feats.vocabularies["genre"].tokens == (*GENRES, "Other")
    years = sorted({int(y) for y in toy.catalog["year"].dropna()})
    assert feats.vocabularies["year"].tokens == (*map(str, years), "<missing>")
    assert feats.vocabularies["year"].index("<missing>") == len(years)
    with pytest.raises(ValueError, match=r"token 1800 is not in the vocabulary of feature 'year'"):
        feats.vocabularies["year"].index(1800)
    # Genre columns are found without being named: the 0/1 integer columns of the catalog.
    inferred = HistoryFeatures.from_dataset(toy)
    assert inferred.vocabularies["genre"].tokens == feats.vocabularies["genre"].tokens


def test_bags_count_the_tokens_of_the_input_movies(toy, feats):
    rng = np.random.default_rng(1)
    users = np.arange(10)
    items, valid = feats.padded_histories(users)
    mask = valid & (rng.random(valid.shape) < 0.7)
    mask[:, 0] = True
    bags = feats.bags(items, mask, feats.feature_names)
    catalog = toy.catalog
    for row in range(len(users)):
        inputs = items[row][mask[row]]
        movie = np.zeros(toy.num_items)
        movie[inputs] = 1
        np.testing.assert_array_equal(bags.weights["movie_id"][row], movie)
        genre = np.zeros(len(GENRES) + 1)
        year = np.zeros(len(feats.vocabularies["year"]))
        for i in inputs:
            active = catalog.loc[i, GENRES].to_numpy().nonzero()[0]
            genre[active if len(active) else [len(GENRES)]] += 1
            y = catalog.loc[i, "year"]
            year[feats.vocabularies["year"].index("<missing>" if pd.isna(y) else y)] += 1
        np.testing.assert_array_equal(bags.weights["genre"][row], genre)
        np.testing.assert_array_equal(bags.weights["year"][row], year)
    assert bags.ids == {} and bags.labels is None


def test_sparse_bags_equal_dense_bags(toy, feats, monkeypatch):
    rng = np.random.default_rng(2)
    users = np.arange(12)
    items, valid = feats.padded_histories(users)
    dense = feats.bags(items, valid, feats.feature_names)
    monkeypatch.setattr(history, "DENSE_VOCAB", 2)  # every vocabulary is now "large"
    sparse = feats.bags(items, valid, feats.feature_names)
    for f in feats.feature_names:
        assert sparse.ids[f].shape == sparse.weights[f].shape == (12, feats.width(f))
        table = rng.normal(size=(len(feats.vocabularies[f]), 3))
        np.testing.assert_allclose(
            ref.bag_of_words(table, sparse.ids[f], sparse.weights[f]),
            ref.bag_of_words(table, None, dense.weights[f]),
            atol=1e-12,
        )


@pytest.mark.parametrize("protocol", ["holdout", "notebook"])
def test_split_users(feats, protocol):
    split = split_users(feats, protocol, seed=3)
    eligible = np.flatnonzero(feats.histories.lengths >= 1)
    assert np.intersect1d(split.train_users, split.test_users).size == 0
    np.testing.assert_array_equal(np.union1d(split.train_users, split.test_users), eligible)
    assert len(split.test_users) == round(0.1 * len(eligible))
    for row, u in enumerate(split.test_users):
        history = feats.histories.row(u)
        inputs, targets = split.test_inputs.row(row), split.test_targets.row(row)
        if protocol == "notebook":
            np.testing.assert_array_equal(inputs, history)
            assert len(targets) == 1 and targets[0] in history
        else:
            assert np.intersect1d(inputs, targets).size == 0
            np.testing.assert_array_equal(np.union1d(inputs, targets), history)
            n = len(history)
            assert len(targets) == min(max(round(0.2 * n), 1), n - 1)
    again = split_users(feats, protocol, seed=3)
    np.testing.assert_array_equal(again.test_users, split.test_users)
    np.testing.assert_array_equal(again.test_targets.values, split.test_targets.values)
    assert split.exclude_inputs == (protocol == "holdout")


def test_batches_are_seeded_and_leak_free(feats):
    split = split_users(feats, "holdout", 0)
    a = SoftmaxBatcher(feats, split.train_users, 8, seed=5).take(6)
    b = SoftmaxBatcher(feats, split.train_users, 8, seed=5).take(6)
    c = SoftmaxBatcher(feats, split.train_users, 8, seed=6).take(6)
    for f in feats.feature_names:
        np.testing.assert_array_equal(a.weights[f], b.weights[f])
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)
    assert a.labels.shape == (6, 8) and a.weights["movie_id"].shape == (6, 8, feats.num_items)
    assert a.labels.dtype == np.int32 and a.weights["genre"].dtype == np.float32
    movie = a.weights["movie_id"]
    for step in range(6):
        for row in range(8):
            inputs = np.flatnonzero(movie[step, row])
            label = a.labels[step, row]
            assert len(inputs) >= 1 and label not in inputs
            # Inputs and label come from one training user's history.
            owners = [
                u
                for u in split.train_users
                if np.isin(np.append(inputs, label), feats.histories.row(u)).all()
            ]
            assert owners


def test_notebook_batches_keep_the_label_in_the_input(feats):
    split = split_users(feats, "notebook", 0)
    batch = SoftmaxBatcher(feats, split.train_users, 10, 0, "notebook").take(3)
    movie = batch.weights["movie_id"]
    for step in range(3):
        for row in range(10):
            assert movie[step, row, batch.labels[step, row]] == 1.0


def test_input_share_and_label_frequencies(ml100k):
    feats = HistoryFeatures.from_dataset(ml100k)
    split = split_users(feats, "holdout", 0)
    batch = SoftmaxBatcher(feats, split.train_users, 200, 0).take(50)
    lengths = feats.histories.lengths
    # Each movie is in the input with probability 0.8 (up to the forced one on each side).
    share = batch.weights["movie_id"].sum() / lengths[split.train_users].mean() / (50 * 200)
    assert 0.78 < share < 0.81
    # The logQ correction is the labels' distribution, q(j) = mean over users of [j in H_u] / |H_u|.
    log_q = label_log_probabilities(feats, split.train_users)
    q = np.zeros(feats.num_items)
    for u in split.train_users:
        history = feats.histories.row(u)
        q[history] += 1.0 / len(history) / len(split.train_users)
    np.testing.assert_allclose(np.exp(log_q[q > 0].astype(np.float64)), q[q > 0], rtol=1e-5)
    # ... and the labels drawn follow it.
    counts = np.bincount(batch.labels.ravel(), minlength=feats.num_items)
    assert np.corrcoef(counts, q)[0, 1] > 0.9


def test_movielens_features(ml100k):
    feats = HistoryFeatures.from_dataset(ml100k)
    assert feats.vocab_sizes == {"movie_id": 1682, "genre": 19, "year": 72}
    assert feats.num_users == 943 and feats.max_history == 737
    assert "Film-Noir" in feats.vocabularies["genre"].tokens  # one token, not "Film" and "Noir"
    bags = input_bags(feats, split_users(feats, "holdout", 0), feats.feature_names)
    assert bags.weights["movie_id"].shape == (94, 1682)


def test_popularity_ranking(feats):
    split = split_users(feats, "holdout", 1)
    counts = popularity_scores(feats, split.train_users)
    top = popularity_ranking(feats, split, 5)
    for row, inputs in enumerate(split.test_inputs.rows()):
        # The most rated items among the training users, the test user's inputs left out,
        # ties by the lowest index.
        ranked = [i for i in sorted(range(feats.num_items), key=lambda i: (-counts[i], i))]
        expected = [i for i in ranked if i not in inputs][:5]
        np.testing.assert_array_equal(top[row], expected)
    out = evaluate_popularity(feats, k=5, seed=1)
    assert out["users"] == len(split.test_users) and 0 <= out["precision@5"] <= 1


def test_bad_inputs_raise(toy, feats):
    with pytest.raises(ValueError, match=r"unknown feature name\(s\) \['age'\]"):
        feats.check_features(["movie_id", "age"])
    with pytest.raises(ValueError, match="user 39 has no rated items"):
        feats.padded_histories(np.array([3, 39]))
    with pytest.raises(ValueError, match="user id 40 is out of range for 40 users"):
        feats.padded_histories(np.array([40]))
    items, valid = feats.padded_histories(np.array([0, 1]))
    valid[1] = False
    with pytest.raises(ValueError, match="row 1 of the batch has an empty input"):
        feats.bags(items, valid, ["movie_id"])
    with pytest.raises(ValueError, match="needs item metadata"):
        HistoryFeatures.from_dataset(cfcore.Ratings([0, 1], [1, 0], [1.0, 2.0], 2, 2))
    with pytest.raises(ValueError, match="protocol must be one of"):
        split_users(feats, "leaky")
    one = cfcore.Ratings([0, 1, 1], [0, 0, 1], [1.0, 1, 1], 2, 2, catalog=toy.catalog.iloc[:2])
    with pytest.raises(ValueError, match=r"only 1 user\(s\) have at least 2 rated item\(s\)"):
        split_users(HistoryFeatures.from_dataset(one), "holdout")
    with pytest.raises(ValueError, match="user 0 has 1 rated item"):
        SoftmaxBatcher(HistoryFeatures.from_dataset(one), np.array([0, 1]), 1)
    with pytest.raises(TypeError, match="expected a dataset"):
        HistoryFeatures.from_dataset(np.zeros(3))


@pytest.mark.parametrize("protocol", ["holdout", "notebook"])
def test_batches_do_not_depend_on_the_chunking(feats, protocol):
    split = split_users(feats, protocol, 0)
    one = SoftmaxBatcher(feats, split.train_users, 8, 2, protocol).take(6)
    parts = SoftmaxBatcher(feats, split.train_users, 8, 2, protocol)
    two = [parts.take(2), parts.take(4)]
    np.testing.assert_array_equal(one.labels, np.concatenate([b.labels for b in two]))
    for f in feats.feature_names:
        np.testing.assert_array_equal(one.weights[f], np.concatenate([b.weights[f] for b in two]))
