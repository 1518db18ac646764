"""`cfcore.BPR`: its loss on every backend, that it learns, its files, seeds, fold-in and CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cfcore
from cfcore.models.bpr import bpr_loss_terms
from cfcore.testing import LossProblem, check_loss

from ..cli.test_cli import assert_ok, train
from ..conftest import BACKENDS, load_backend


def _reference(spec):
    """BPR's objective in float64 NumPy, written apart from the model's."""

    def reference(p, b):
        u, i, j = b["users"], b["items"], b["negatives"]
        x = np.sum(p["user"][u] * (p["item"][i] - p["item"][j]), axis=1)
        pen = np.sum(p["user"] ** 2) / len(p["user"]) + np.sum(p["item"] ** 2) / len(p["item"])
        if spec.item_bias:
            x = x + p["item_bias"][i] - p["item_bias"][j]
            pen += np.sum(p["item_bias"] ** 2) / len(p["item_bias"])
        ranking = float(np.mean(np.log1p(np.exp(-x))))
        reg = spec.regularization_coeff * float(pen)
        return {"ranking": ranking, "regularization": reg, "total": ranking + reg}

    return reference


@pytest.mark.parametrize("item_bias", [True, False])
def test_backends_agree_with_the_float64_reference(item_bias: bool) -> None:
    for name in BACKENDS:
        load_backend(name)
    spec = cfcore.BPR(embedding_dim=3, regularization_coeff=0.3, item_bias=item_bias).spec
    rng = np.random.default_rng(0)
    params = {"user": rng.normal(0, 1, (7, 3)), "item": rng.normal(0, 1, (9, 3))}
    params["item_bias"] = rng.normal(0, 1, 9)
    params = {k: v.astype(np.float32) for k, v in params.items() if item_bias or k != "item_bias"}
    batch = {k: rng.integers(0, n, 40).astype(np.int32)
             for k, n in (("users", 7), ("items", 9), ("negatives", 9))}  # fmt: skip

    def terms(be, p, b):
        return bpr_loss_terms(be, spec, p, b)

    check_loss(BACKENDS, LossProblem(terms, _reference(spec), params, batch, name="BPR"))


@pytest.fixture(scope="module")
def trained(ml100k):
    load_backend("jax")
    tr, te = (r.to_implicit(3.5) for r in ml100k.ratings.split(holdout_fraction=0.1, seed=0))
    model = cfcore.BPR(embedding_dim=16)
    model.fit(tr, steps=60, optimizer=cfcore.optimizers.Adam(0.05), backend="jax",
              progress=False, eval_every=20)  # fmt: skip
    return model, tr, te


def _auc(scores: np.ndarray, tr, te, rng) -> float:
    """Share of held-out positives scored above a random item the user never rated."""
    seen = set(zip(tr.users.tolist(), tr.items.tolist(), strict=True))
    seen |= set(zip(te.users.tolist(), te.items.tolist(), strict=True))
    neg = rng.integers(0, tr.num_items, len(te))
    keep = np.array([(u, j) not in seen for u, j in zip(te.users, neg, strict=True)])
    u, i, j = te.users[keep], te.items[keep], neg[keep]
    return float(np.mean(scores[u, i] > scores[u, j]))


def test_bpr_learns_to_rank_held_out_positives(trained) -> None:
    model, tr, te = trained
    emb = model.scoring_embeddings()
    learned = _auc(emb["user"] @ emb["item"].T, tr, te, np.random.default_rng(1))
    random = _auc(np.random.default_rng(2).random((tr.num_users, tr.num_items)), tr, te,
                  np.random.default_rng(1))  # fmt: skip
    assert learned > random + 0.25, (learned, random)
    assert model.history["train_loss"].dropna().is_monotonic_decreasing


def test_fold_in_ranks_like_the_trained_rows(trained) -> None:
    # Each test user folded in from their training positives: the new rows rank the user's
    # held-out positives about as well as the trained rows, far above random.
    model, tr, te = trained
    users = np.unique(te.users)[:100]
    pick = np.isin(tr.users, users)
    new = cfcore.Ratings(np.searchsorted(users, tr.users[pick]), tr.items[pick],
                         tr.values[pick], len(users), tr.num_items)  # fmt: skip
    rows = model.fold_in(new, backend="jax")
    emb = model.scoring_embeddings()
    scores = np.zeros((tr.num_users, tr.num_items), np.float32)
    scores[users] = np.concatenate([rows, np.ones((len(users), 1), np.float32)], 1) @ emb["item"].T
    sub = np.isin(te.users, users)
    te_sub = cfcore.Ratings(
        te.users[sub], te.items[sub], te.values[sub], te.num_users, te.num_items
    )
    folded = _auc(scores, tr, te_sub, np.random.default_rng(3))
    own = _auc(emb["user"] @ emb["item"].T, tr, te_sub, np.random.default_rng(3))
    assert folded > 0.75 and folded > own - 0.05, (folded, own)


def test_save_load_round_trip(tmp_path: Path) -> None:
    r = cfcore.synthetic_ratings(20, 15, 120, seed=0)
    model = cfcore.BPR(embedding_dim=4, regularization_coeff=0.05)
    model.fit(r, steps=5, optimizer=cfcore.optimizers.Adam(0.1), backend=BACKENDS[0],
              progress=False)  # fmt: skip
    loaded = cfcore.load(model.save(tmp_path / "bpr.npz"))
    assert type(loaded) is cfcore.BPR and loaded.spec == model.spec and loaded.step == 5
    for k, v in model.embeddings.items():
        np.testing.assert_array_equal(loaded.embeddings[k], v)
    assert set(loaded.embeddings) == {"user", "item", "item_bias"}
    np.testing.assert_array_equal(loaded.predict([0, 3], [1, 2]), model.predict([0, 3], [1, 2]))
    pd_got = cfcore.retrieval.recommend(loaded, user_index=3, k=5)
    pd_want = cfcore.retrieval.recommend(model, user_index=3, k=5)
    assert pd_got.equals(pd_want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeded_runs_repeat(backend: str) -> None:
    load_backend(backend)
    r = cfcore.synthetic_ratings(20, 15, 120, seed=0)

    def run(seed: int) -> dict[str, np.ndarray]:
        m = cfcore.BPR(embedding_dim=4)
        m.fit(r, steps=6, optimizer=cfcore.optimizers.SGD(0.5), backend=backend, seed=seed,
              progress=False, eval_every=3)  # fmt: skip
        return m.embeddings

    a, b, c = run(1), run(1), run(2)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["item"], c["item"])


def test_cli_trains_bpr(ml100k, tmp_path: Path) -> None:
    load_backend("jax")
    result, text = train(tmp_path, "--model", "bpr", "--steps", "20", "--dim", "8",
                         "--backend", "jax")  # fmt: skip
    assert_ok(result, text)
    for needle in ("BPR(embedding_dim=8", "positives: ratings > 3.5", "recall@10", "Adam("):
        assert needle in text, (needle, text)
    loaded = cfcore.load(tmp_path / "model.npz")
    assert type(loaded) is cfcore.BPR and loaded.step == 20


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"embedding_dim": 0}, "embedding_dim"), ({"init_stddev": -1.0}, "init_stddev"),
     ({"regularization_coeff": float("nan")}, "regularization_coeff"),
     ({"item_bias": "yes"}, "item_bias")],
)  # fmt: skip
def test_bad_settings_are_refused(kwargs, needle: str) -> None:
    with pytest.raises(cfcore.CfcoreError, match=needle):
        cfcore.BPR(**kwargs)
