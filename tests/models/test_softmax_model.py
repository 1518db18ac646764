"""SoftmaxModel: training, history, evaluation (checked against NumPy), errors, and the baseline."""

import numpy as np
import pytest

import cfcore
from cfcore import reference as ref
from cfcore.data.features import HistoryFeatures, split_users
from cfcore.eval.popularity import evaluate_popularity
from cfcore.metrics import ranking_metrics
from cfcore.models.softmax import SoftmaxModel
from cfcore.optimizers import SGD, Adagrad

from ..conftest import load_backend
from .test_softmax_features import toy_dataset

SMALL = {"movie_id": 4, "genre": 2, "year": 2}


@pytest.fixture(scope="module")
def toy():
    return toy_dataset(num_users=60, num_items=30, seed=1)


def _fit(model, data, backend, steps=20, **kw):
    kw = {"optimizer": Adagrad(0.5), "batch_size": 8, "eval_every": 10, "progress": False} | kw
    return model.fit(data, steps=steps, backend=backend, **kw)


@pytest.mark.parametrize(("backend_name", "protocol"), [("jax", "notebook"), ("tf", "holdout")])
def test_fit_history_and_results(backend_name, toy, protocol):
    backend = load_backend(backend_name)
    model = SoftmaxModel(SMALL, hidden_dims=(4,))
    history = _fit(model, toy, backend, protocol=protocol)
    assert list(history["step"]) == [0, 10, 20] and model.step == 20
    assert list(history.columns) == [
        "step",
        "train_loss",
        "test_loss",
        "precision@10",
        "recall@10",
        "ndcg@10",
        "map@10",
        "hit_rate@10",
    ]
    assert (
        np.isnan(history["train_loss"].iloc[0])
        and np.isfinite(history["train_loss"].iloc[1:]).all()
    )
    emb = model.embeddings
    assert emb["item"].shape == (30, 4) and emb["item"].dtype == np.float32
    np.testing.assert_array_equal(emb["item"], emb["movie_id"])
    assert emb["genre"].shape == (4, 2) and emb["year"].shape == (7, 2)
    assert emb["hidden_0"].shape == (8, 4)
    out = model.evaluate(toy, k=5)
    assert set(out) == {
        "precision@5",
        "recall@5",
        "ndcg@5",
        "map@5",
        "hit_rate@5",
        "test_loss",
        "users",
    }
    assert out["users"] == 6 and model.protocol == protocol
    # The last history row is the evaluation at k=10 of the same parameters.
    at10 = model.evaluate(toy)
    assert at10["test_loss"] == pytest.approx(history["test_loss"].iloc[-1], rel=1e-5)
    assert at10["ndcg@10"] == pytest.approx(history["ndcg@10"].iloc[-1])
    # A second fit continues.
    history = _fit(model, toy, backend, steps=10, protocol=protocol)
    assert list(history["step"]) == [0, 10, 20, 30] and model.step == 30


@pytest.mark.parametrize(("backend_name", "protocol"), [("jax", "holdout"), ("tf", "notebook")])
def test_evaluate_matches_numpy(backend_name, toy, protocol):
    """Each backend under one protocol: the backend math is in the conformance suite."""
    backend = load_backend(backend_name)
    model = SoftmaxModel(SMALL, hidden_dims=(3, 4), activation="relu")
    _fit(model, toy, backend, steps=30, protocol=protocol)
    got = model.evaluate(toy, k=7)
    # The same evaluation written independently: float64 tower, scores, exclusion, loops.
    feats = HistoryFeatures.from_dataset(toy)
    split = split_users(feats, protocol, 0)
    params = model.embeddings
    rows = np.repeat(np.arange(len(split.test_users)), split.test_inputs.lengths)
    bags = feats.bags_from_pairs(
        rows, split.test_inputs.values, (len(split.test_users),), model.spec.feature_names
    )
    query = ref.softmax_query_embeddings(model.spec, params, bags.ids, bags.weights)
    scores = query @ params["item"].T.astype(np.float64)
    exclude = np.zeros(scores.shape, bool)
    if protocol == "holdout":
        exclude[rows, split.test_inputs.values] = True
    _, top = ref.top_k(scores, 7, exclude)
    expected = ref.ranking_metrics(top, split.test_targets.rows(), 7)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name
    t_rows = np.repeat(np.arange(len(split.test_users)), split.test_targets.lengths)
    loss, _, _ = ref.softmax_cross_entropy(query[t_rows], params["item"], split.test_targets.values)
    assert got["test_loss"] == pytest.approx(loss, rel=1e-5)


def test_sampled_softmax_model_trains(backend, toy):
    model = SoftmaxModel(SMALL, hidden_dims=(4,), loss="sampled")
    history = _fit(model, toy, backend, steps=40, eval_every=20, batch_size=16)
    assert np.isfinite(history["train_loss"].iloc[1:]).all()
    assert model.spec.loss == "sampled"


def test_divergence_keeps_the_last_finite_parameters(backend, toy):
    model = SoftmaxModel(SMALL, hidden_dims=(4,))
    with pytest.raises(cfcore.TrainingDivergedError, match="NaN or infinite at step") as info:
        _fit(model, toy, backend, steps=50, optimizer=SGD(1e12))
    assert 0 < info.value.step <= 50 and model.step == info.value.step - 1
    assert all(np.isfinite(v).all() for v in model.embeddings.values())


def test_bad_arguments_raise(toy):
    with pytest.raises(
        ValueError, match=r"query embedding dimension 35.*item embedding dimension 30"
    ):
        SoftmaxModel({"movie_id": 30, "genre": 3}, hidden_dims=(35,))
    with pytest.raises(ValueError, match="activation must be one of"):
        SoftmaxModel(activation="gelu")
    with pytest.raises(ValueError, match="combiner must be one of"):
        SoftmaxModel(combiner="max")
    with pytest.raises(RuntimeError, match="call fit"):
        SoftmaxModel().evaluate(toy)
    model = SoftmaxModel({"movie_id": 4, "age": 2}, hidden_dims=(4,))
    with pytest.raises(ValueError, match=r"unknown feature name\(s\) \['age'\]"):
        _fit(model, toy, "jax")
    model = SoftmaxModel(SMALL, hidden_dims=(4,))
    with pytest.raises(
        ValueError, match="k=31 is out of range: it must be between 1 and the catalogue size 30"
    ):
        _fit(model, toy, "jax", k=31)
    with pytest.raises(ValueError, match=r"batch_size must be an int in \[1, 53\]"):
        _fit(model, toy, "jax", batch_size=54)
    with pytest.raises(ValueError, match="protocol must be one of"):
        _fit(model, toy, "jax", protocol="leaky")
    _fit(model, toy, "jax", steps=10, protocol="holdout")
    with pytest.raises(
        ValueError, match="k=31 is out of range: it must be between 1 and the catalogue size 30"
    ):
        model.evaluate(toy, k=31)
    with pytest.raises(ValueError, match="cannot continue under 'notebook'"):
        _fit(model, toy, "jax", protocol="notebook")
    with pytest.raises(ValueError, match="vocabularies of sizes"):
        model.evaluate(toy_dataset(num_users=60, num_items=31, seed=1))
    assert model.user_embeddings(toy, [0, 1]).shape == (2, 4)
    with pytest.raises(ValueError, match="user 59 has no rated items"):
        model.user_embeddings(toy, [59])


@pytest.mark.slow
def test_softmax_beats_popularity_on_ml100k(ml100k):
    """Under the leak-free protocol the model must beat the popularity ranking on every metric."""
    model = SoftmaxModel()
    model.fit(
        ml100k,
        steps=1000,
        optimizer=Adagrad(8.0),
        backend=load_backend("jax"),
        eval_every=500,
        progress=False,
    )
    got = model.evaluate(ml100k)
    baseline = evaluate_popularity(ml100k, k=10, seed=0)
    assert got["users"] == baseline["users"] == 94
    for name in ("precision@10", "recall@10", "ndcg@10", "map@10", "hit_rate@10"):
        assert got[name] > baseline[name], (name, got[name], baseline[name])
    # Sanity of the metric computation on the same split: a random ranking is far worse.
    feats = HistoryFeatures.from_dataset(ml100k)
    split = split_users(feats, "holdout", 0)
    rng = np.random.default_rng(0)
    random_top = np.stack([rng.permutation(1682)[:10] for _ in split.test_users])
    assert ranking_metrics(random_top, split.test_targets, 10)["ndcg@10"] < got["ndcg@10"] / 5


def test_sparse_and_dense_bags_train_alike(toy, monkeypatch):
    """Bags sent as padded ids (large vocabularies) or as counts (small ones): one trajectory."""
    from cfcore.data import history

    runs = []
    for dense_vocab in (history.DENSE_VOCAB, 1):
        monkeypatch.setattr(history, "DENSE_VOCAB", dense_vocab)
        model = SoftmaxModel(SMALL, hidden_dims=(4,))
        runs.append(_fit(model, toy, load_backend("jax"), steps=20, protocol="holdout"))
    for col in ("train_loss", "test_loss", "ndcg@10"):
        np.testing.assert_allclose(runs[0][col], runs[1][col], rtol=1e-5, err_msg=col)
