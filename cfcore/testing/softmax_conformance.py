"""Conformance of a backend's softmax model against the float64 NumPy reference (needs pytest).

Use from a test module by subclassing with a `backend` fixture::

    import pytest
    from cfcore.testing.softmax_conformance import SoftmaxConformance

    class TestMyBackendSoftmax(SoftmaxConformance):
        @pytest.fixture
        def backend(self):
            return my_backend_instance

The reference gradients (`cfcore.reference.softmax_loss_and_grads`) are back-propagated by hand;
`test_reference_gradients_match_finite_differences` checks them against central differences in
float64, so the backends are compared with an independently verified oracle. Tolerances are those
of `cfcore.testing.conformance` (relative 1e-5 for values, `1e-5 · max|reference|` per element
for arrays).

`SoftmaxCrossBackend` trains the notebook's model 200 steps on two backends from the same initial
values and batches and requires the same trajectory.
"""

from __future__ import annotations

import numpy as np
import pytest

from .. import reference as ref
from ..backend.protocol import Tree
from ..data.features import HistoryFeatures, SoftmaxBatcher, split_users
from ..maths import functional
from ..maths import objectives as model_losses
from ..models.softmax import init_softmax_params, label_log_probabilities
from ..optim import make_rule
from ..optimizers import SGD, Adagrad
from ..specs import SoftmaxSpec
from ..train.loop import LOSS_NOT_FINITE, make_chunk, make_step
from .conformance import RTOL, assert_array_close, assert_scalar_close


class _Trainer:
    """The softmax loss of `spec` with `opt` on `backend`: compiled steps and chunks, as `fit`."""

    def __init__(self, backend, spec, opt, params):
        rule = make_rule(backend, opt)
        loss = model_losses.softmax_loss(backend, spec)
        self.backend = backend
        self.params = backend.params_from_numpy(params)
        self.opt_state = rule.init(self.params)
        self.chunk = make_chunk(backend, loss, rule, lambda log_q, batch: (batch, log_q))
        self.step = make_step(backend, loss, rule)
        self.grad = backend.value_and_grad(loss)

    def native(self, tree: Tree) -> Tree:
        be = self.backend
        if isinstance(tree, dict):
            return {k: self.native(v) for k, v in tree.items()}
        return None if tree is None else be.asarray(tree)

    def run_chunk(self, batches, log_q=None):
        """Runs the stacked `batches` from the current state (not kept); a ChunkResult."""
        p, o = self.params, self.opt_state
        return self.chunk(p, o, p, o, self.native(log_q), xs=self.native(batches))

    def run_steps(self, batches, log_q=None):
        """Steps one at a time from the current state (kept): each step's loss, before it."""
        out = []
        for i in range(len(batches["labels"])):
            batch = self.native(_steps(batches, i, i + 1))
            batch = {
                "ids": {f: a[0] for f, a in batch["ids"].items()},
                "weights": {f: a[0] for f, a in batch["weights"].items()},
                "labels": batch["labels"][0],
            }
            self.params, self.opt_state, parts = self.step(
                self.params, self.opt_state, (batch, self.native(log_q))
            )
            out.append(float(np.asarray(self.backend.to_numpy(parts["loss"]))))
        return np.asarray(out, np.float32)


VOCAB = {"movie_id": 13, "genre": 5, "year": 7}

SPECS = {
    "notebook-like": SoftmaxSpec({"movie_id": 6, "genre": 3, "year": 2}, hidden_dims=(6,)),
    "two-layers-relu": SoftmaxSpec(
        {"movie_id": 4, "genre": 3, "year": 2}, hidden_dims=(5, 4), activation="relu"
    ),
    "tanh-sum": SoftmaxSpec(
        {"movie_id": 5, "year": 3}, hidden_dims=(5,), activation="tanh", combiner="sum"
    ),
    "no-hidden": SoftmaxSpec({"movie_id": 5}, hidden_dims=(), hidden_scale=1.0),
    "sampled": SoftmaxSpec(
        {"movie_id": 6, "genre": 3, "year": 2}, hidden_dims=(6,), activation="tanh", loss="sampled"
    ),
}


def make_softmax_problem(spec: SoftmaxSpec, batch_size: int = 9, seed: int = 0):
    """Random parameters and a batch for `spec`: "genre" bags sparse (ids + weights, with padding),
    the others dense (`[B, V]` counts); labels with repeats (accidental hits for sampled softmax).

    Returns:
        `(params, batch, log_q)`: float32 parameters, the batch pytree, `[M]` log probabilities.
    """
    rng = np.random.default_rng(seed)
    params = init_softmax_params(spec, VOCAB, seed)
    # Larger values than the init's, so that every term of the gradient matters.
    params = {k: (v * 3).astype(np.float32) for k, v in params.items()}
    ids, weights = {}, {}
    for f in spec.feature_names:
        if f == "genre":
            ids[f] = rng.integers(0, VOCAB[f], (batch_size, 4)).astype(np.int32)
            w = rng.integers(0, 3, (batch_size, 4)).astype(np.float32)
            w[:, 0] = 1.0  # no empty bag
            weights[f] = w
        else:
            w = (rng.random((batch_size, VOCAB[f])) < 0.4).astype(np.float32)
            w[np.arange(batch_size), rng.integers(0, VOCAB[f], batch_size)] += 2.0
            weights[f] = w
    labels = rng.integers(0, VOCAB["movie_id"], batch_size).astype(np.int32)
    labels[1] = labels[0]  # a repeated label
    q = rng.random(VOCAB["movie_id"]) + 0.1
    log_q = np.log(q / q.sum()).astype(np.float32)
    return params, {"ids": ids, "weights": weights, "labels": labels}, log_q


def _np(backend, x) -> np.ndarray:
    return np.asarray(backend.to_numpy(x))


def _stack(batches: list[dict]) -> dict:
    """Batches stacked along a new leading `[k]` axis, as a training chunk takes them."""
    first = batches[0]
    return {
        "ids": {f: np.stack([b["ids"][f] for b in batches]) for f in first["ids"]},
        "weights": {f: np.stack([b["weights"][f] for b in batches]) for f in first["weights"]},
        "labels": np.stack([b["labels"] for b in batches]),
    }


def _steps(stacked: dict, start: int, stop: int) -> dict:
    """Steps `start:stop` of a stacked chunk."""
    return {
        "ids": {f: a[start:stop] for f, a in stacked["ids"].items()},
        "weights": {f: a[start:stop] for f, a in stacked["weights"].items()},
        "labels": stacked["labels"][start:stop],
    }


class SoftmaxConformance:
    """Checks one backend's softmax model (the `backend` fixture) against `cfcore.reference`."""

    # ------------------------------------------------------------------ the oracle itself

    @pytest.mark.parametrize("name", ["two-layers-relu", "tanh-sum", "sampled"])
    def test_reference_gradients_match_finite_differences(self, name):
        spec = SPECS[name]
        params, batch, log_q = make_softmax_problem(spec, batch_size=5, seed=3)
        p64 = {k: v.astype(np.float64) for k, v in params.items()}
        _, grads = ref.softmax_loss_and_grads(spec, p64, batch, log_q)
        rng = np.random.default_rng(0)
        eps = 1e-6
        for k, v in p64.items():
            # A sample of entries per parameter keeps the test fast.
            for flat in rng.choice(v.size, size=min(v.size, 12), replace=False):
                idx = np.unravel_index(flat, v.shape)
                up = {n: a.copy() for n, a in p64.items()}
                down = {n: a.copy() for n, a in p64.items()}
                up[k][idx] += eps
                down[k][idx] -= eps
                numeric = (
                    ref.softmax_loss_and_grads(spec, up, batch, log_q)[0]
                    - ref.softmax_loss_and_grads(spec, down, batch, log_q)[0]
                ) / (2 * eps)
                assert abs(numeric - grads[k][idx]) <= 1e-7 + 1e-5 * abs(numeric), (
                    f"{name} d/d{k}{idx}: analytic {grads[k][idx]} vs numeric {numeric}"
                )

    # ------------------------------------------------------------------ bag of words

    @pytest.mark.parametrize("combiner", ["mean", "sum"])
    def test_bag_of_words_sparse_matches_reference(self, backend, combiner):
        rng = np.random.default_rng(1)
        table = rng.normal(size=(11, 4)).astype(np.float32)
        ids = rng.integers(0, 11, (6, 5)).astype(np.int32)
        weights = rng.integers(0, 4, (6, 5)).astype(np.float32)
        weights[2] = 0.0  # an empty bag gives zeros
        out = _np(backend, backend.bag_of_words(table, ids, weights, combiner))
        assert out.shape == (6, 4) and out.dtype == np.float32
        expected = ref.bag_of_words(table, ids, weights, combiner)
        assert_array_close(out, expected, what=f"sparse bag of words ({combiner})")
        np.testing.assert_array_equal(out[2], 0.0)

    @pytest.mark.parametrize("combiner", ["mean", "sum"])
    def test_bag_of_words_dense_matches_reference(self, backend, combiner):
        rng = np.random.default_rng(2)
        table = rng.normal(size=(9, 3)).astype(np.float32)
        counts = rng.integers(0, 3, (7, 9)).astype(np.float32)
        counts[4] = 0.0
        out = _np(backend, backend.bag_of_words(table, None, counts, combiner))
        expected = ref.bag_of_words(table, None, counts, combiner)
        assert_array_close(out, expected, what=f"dense bag of words ({combiner})")

    def test_dense_and_sparse_bags_agree(self, backend):
        # The same bags written both ways: distinct ids with counts, and counts over the vocabulary.
        rng = np.random.default_rng(4)
        table = rng.normal(size=(8, 5)).astype(np.float32)
        ids = np.array([[0, 3, 5, 0], [7, 1, 0, 0]], np.int32)
        w = np.array([[2, 1, 4, 0], [1, 1, 3, 0]], np.float32)
        dense = np.zeros((2, 8), np.float32)
        np.add.at(dense, (np.repeat([0, 1], 4), ids.ravel()), w.ravel())
        a = _np(backend, backend.bag_of_words(table, ids, w))
        b = _np(backend, backend.bag_of_words(table, None, dense))
        assert_array_close(a, b, what="sparse vs dense bags")

    # ------------------------------------------------------------------ losses

    def test_softmax_cross_entropy_matches_reference(self, backend):
        rng = np.random.default_rng(5)
        query = rng.normal(size=(8, 4)).astype(np.float32)
        items = rng.normal(size=(17, 4)).astype(np.float32)
        labels = rng.integers(0, 17, 8).astype(np.int32)
        value = backend.softmax_cross_entropy(query, items, labels)
        arr = _np(backend, value)
        assert arr.shape == () and arr.dtype == np.float32
        expected, _, _ = ref.softmax_cross_entropy(query, items, labels)
        assert_scalar_close(arr, expected, what="softmax cross-entropy")

    @pytest.mark.parametrize("with_log_q", [False, True])
    @pytest.mark.parametrize("remove_hits", [True, False])
    def test_sampled_softmax_matches_reference(self, backend, with_log_q, remove_hits):
        rng = np.random.default_rng(6)
        query = rng.normal(size=(10, 4)).astype(np.float32)
        items = rng.normal(size=(6, 4)).astype(np.float32)
        labels = np.array([0, 1, 1, 2, 3, 3, 3, 4, 5, 0], np.int32)  # accidental hits
        log_q = np.log(rng.dirichlet(np.ones(6))).astype(np.float32) if with_log_q else None
        value = backend.sampled_softmax_loss(query, items, labels, log_q, remove_hits)
        expected, _, _ = ref.sampled_softmax_loss(query, items, labels, log_q, remove_hits)
        assert_scalar_close(_np(backend, value), expected, what="sampled softmax")

    def test_sampled_equals_full_when_the_batch_holds_the_catalogue(self, backend):
        # With every item once in the batch and no correction, the in-batch candidates are the
        # whole catalogue: sampled and full softmax are the same loss.
        rng = np.random.default_rng(7)
        items = rng.normal(size=(12, 3)).astype(np.float32)
        labels = rng.permutation(12).astype(np.int32)
        query = rng.normal(size=(12, 3)).astype(np.float32)
        full = float(_np(backend, backend.softmax_cross_entropy(query, items, labels)))
        sampled = float(_np(backend, backend.sampled_softmax_loss(query, items, labels)))
        assert np.isclose(full, sampled, rtol=RTOL, atol=0), (full, sampled)

    def test_removing_accidental_hits_lowers_the_loss(self, backend):
        rng = np.random.default_rng(8)
        items = rng.normal(size=(4, 3)).astype(np.float32)
        query = rng.normal(size=(6, 3)).astype(np.float32)
        labels = np.array([0, 0, 0, 1, 2, 3], np.int32)
        kept = float(_np(backend, backend.sampled_softmax_loss(query, items, labels, None, False)))
        removed = float(
            _np(backend, backend.sampled_softmax_loss(query, items, labels, None, True))
        )
        assert removed < kept

    @pytest.mark.parametrize("name", sorted(SPECS))
    def test_value_and_grad_matches_reference(self, backend, name):
        spec = SPECS[name]
        params, batch, log_q = make_softmax_problem(spec, seed=11)
        t = _Trainer(backend, spec, SGD(1.0), params)
        (value, _), grads = t.grad(t.params, (t.native(batch), t.native(log_q)))
        expected, ref_grads = ref.softmax_loss_and_grads(spec, params, batch, log_q)
        assert_scalar_close(_np(backend, value), expected, what=f"{name} loss")
        assert set(grads) == set(ref_grads)
        for k in ref_grads:
            assert_array_close(_np(backend, grads[k]), ref_grads[k], what=f"{name} d/d{k}")

    @pytest.mark.parametrize("name", ["two-layers-relu"])
    def test_query_embeddings_match_reference(self, backend, name):
        spec = SPECS[name]
        params, batch, _ = make_softmax_problem(spec, seed=12)
        out = _np(
            backend,
            functional.softmax_query_embeddings(
                backend, spec, params, batch["ids"], batch["weights"]
            ),
        )
        assert out.dtype == np.float32 and out.shape == (9, spec.output_dim)
        expected = ref.softmax_query_embeddings(spec, params, batch["ids"], batch["weights"])
        assert_array_close(out, expected, what=f"{name} query embeddings")

    # ------------------------------------------------------------------ training

    @pytest.mark.parametrize("name", ["notebook-like", "sampled"])
    def test_adagrad_steps_match_reference(self, backend, name):
        spec, opt = SPECS[name], Adagrad(learning_rate=0.5)
        steps = [make_softmax_problem(spec, seed=20 + i) for i in range(3)]
        params, _, log_q = steps[0]
        stacked = _stack([s[1] for s in steps])
        ref_params = {k: v.astype(np.float64) for k, v in params.items()}
        ref_state = ref.init_optimizer_state(opt, ref_params)
        ref_losses, after = [], []
        for _, batch, _ in steps:
            loss, grads = ref.softmax_loss_and_grads(spec, ref_params, batch, log_q)
            ref_losses.append(loss)
            ref_params, ref_state = ref.optimizer_update(opt, ref_params, grads, ref_state)
            after.append(ref_params)
        trainer = _Trainer(backend, spec, opt, params)
        if name == "notebook-like":  # one step in a compiled chunk
            out = trainer.run_chunk(_steps(stacked, 0, 1), log_q)
            assert out.bad_step == -1
            got = backend.params_to_numpy(out.params)
            for k in got:
                assert_array_close(got[k], after[0][k], what=f"{name}: one Adagrad step, {k}")
        out = trainer.run_chunk(stacked, log_q)
        assert out.bad_step == -1
        assert_scalar_close(
            out.loss_sum, sum(ref_losses), what=f"{name}: sum of the chunk's losses"
        )
        got = backend.params_to_numpy(out.params)
        for k in got:
            assert got[k].dtype == np.float32
            assert_array_close(got[k], after[-1][k], what=f"{name}: three Adagrad steps, {k}")
        step_losses = trainer.run_steps(stacked, log_q)
        assert step_losses.shape == (3,)
        for i in range(3):
            assert_scalar_close(step_losses[i], ref_losses[i], what=f"{name}: loss before step {i}")

    def test_chunk_stops_at_first_non_finite_loss(self, backend):
        spec = SPECS["notebook-like"]
        opt = SGD(learning_rate=1e12)  # the logits overflow within a few steps
        params, batch, _ = make_softmax_problem(spec, seed=31)
        k = 12
        stacked = _stack([batch] * k)
        trainer = _Trainer(backend, spec, opt, params)
        # Step by step to the first refused step, then the whole chunk at once.
        history = [backend.params_to_numpy(trainer.params)]
        first_bad = reason = None
        for i in range(k):
            out = trainer.run_chunk(_steps(stacked, i, i + 1))
            if out.bad_step == 0:
                first_bad, reason = i, out.reason
                break
            trainer.params, trainer.opt_state = out.params, out.opt_state
            history.append(backend.params_to_numpy(out.params))
        assert first_bad is not None and first_bad > 0, "SGD with learning rate 1e12 should diverge"
        trainer = _Trainer(backend, spec, opt, params)
        out = trainer.run_chunk(stacked)
        assert (out.bad_step, out.reason) == (first_bad, reason)
        if reason == LOSS_NOT_FINITE:
            kept, expected = out.prev_params, history[first_bad - 1]
        else:
            kept, expected = out.params, history[first_bad]
        for name, v in backend.params_to_numpy(kept).items():
            assert np.all(np.isfinite(v))
            assert_array_close(v, expected[name], what=f"last finite params {name}")

    # ------------------------------------------------------------------ errors

    def test_label_out_of_range_raises(self, backend):
        q = np.zeros((2, 3), np.float32)
        v = np.zeros((5, 3), np.float32)
        with pytest.raises(ValueError, match=r"label 5 is out of range for 5 items"):
            backend.softmax_cross_entropy(q, v, np.array([0, 5]))
        with pytest.raises(ValueError, match=r"label -1 is out of range"):
            backend.sampled_softmax_loss(q, v, np.array([-1, 2]))

    def test_dimension_mismatch_raises(self, backend):
        q = np.zeros((2, 3), np.float32)
        v = np.zeros((5, 4), np.float32)
        with pytest.raises(
            ValueError, match=r"query embedding dimension 3.*item embedding dimension 4"
        ):
            backend.softmax_cross_entropy(q, v, np.array([0, 1]))
        with pytest.raises(ValueError, match="one label per query row"):
            backend.softmax_cross_entropy(q, np.zeros((5, 3), np.float32), np.array([0]))
        with pytest.raises(ValueError, match=r"log_q must have one entry per item"):
            backend.sampled_softmax_loss(
                q, np.zeros((5, 3), np.float32), np.array([0, 1]), np.zeros(4, np.float32)
            )

    def test_bad_bags_raise(self, backend):
        table = np.zeros((4, 2), np.float32)
        with pytest.raises(ValueError, match=r"token id 4 is out of range for 4 tokens"):
            backend.bag_of_words(table, np.array([[0, 4]]), np.ones((1, 2), np.float32))
        with pytest.raises(ValueError, match=r"dense bags need weights \[\.\.\., 4\]"):
            backend.bag_of_words(table, None, np.ones((1, 3), np.float32))
        with pytest.raises(ValueError, match="combiner"):
            backend.bag_of_words(table, None, np.ones((1, 4), np.float32), "max")


class SoftmaxCrossBackend:
    """Two backends, the same initial values and batches: the same softmax trajectory.

    Needs fixtures `backend_pair` (two backends) and `softmax_dataset` (ml-100k for cfcore's own
    suite). Trains the notebook's model (dims 35/3/2, hidden [35], Adagrad 8, batch 200) for
    `STEPS` steps under the notebook protocol.
    """

    STEPS = 200

    def test_notebook_model_trajectory(self, backend_pair, softmax_dataset):
        from ..models.softmax import SoftmaxModel

        runs = []
        for be in backend_pair:
            model = SoftmaxModel()
            history = model.fit(
                softmax_dataset,
                steps=self.STEPS,
                optimizer=Adagrad(8.0),
                backend=be,
                protocol="notebook",
                eval_every=50,
                progress=False,
            )
            runs.append((history, model.embeddings))
        (ha, ea), (hb, eb) = runs
        assert list(ha["step"]) == list(hb["step"]) and ha["step"].iloc[-1] == self.STEPS
        for col in ("train_loss", "test_loss"):
            a, b = ha[col].to_numpy()[1:], hb[col].to_numpy()[1:]
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-4, err_msg=col)
        # Rankings may differ where two scores tie to float32 rounding: allow one test user's hit.
        features = HistoryFeatures.from_dataset(softmax_dataset)
        users = len(split_users(features, "notebook", 0).test_users)
        np.testing.assert_allclose(
            ha["precision@10"], hb["precision@10"], rtol=0, atol=0.1 / users + 1e-12
        )
        for k in ea:
            diff = float(np.max(np.abs(ea[k] - eb[k])))
            scale = float(np.max(np.abs(ea[k])))
            assert diff <= 1e-4 * max(scale, 1.0), f"{k} differs by {diff} (scale {scale})"

    def test_sampled_model_trajectory(self, backend_pair, softmax_dataset):
        # Sampled softmax on the same batches: the logQ correction and accidental hits agree too.
        features = HistoryFeatures.from_dataset(softmax_dataset)
        split = split_users(features, "holdout", 0)
        spec = SoftmaxSpec(
            {"movie_id": 16, "genre": 3, "year": 2}, hidden_dims=(16,), loss="sampled"
        )
        params = init_softmax_params(spec, features.vocab_sizes, 0)
        log_q = label_log_probabilities(features, split.train_users)
        batches = SoftmaxBatcher(features, split.train_users, 128, 0, "holdout").take(50).to_dict()
        out = []
        for be in backend_pair:
            chunked = _Trainer(be, spec, Adagrad(1.0), params).run_chunk(batches, log_q)
            assert chunked.bad_step == -1
            stepped = _Trainer(be, spec, Adagrad(1.0), params)
            losses = stepped.run_steps(batches, log_q)
            a, b = be.params_to_numpy(chunked.params), be.params_to_numpy(stepped.params)
            for k in a:  # the compiled chunk is the same steps
                assert np.max(np.abs(a[k] - b[k])) <= 1e-5 * max(float(np.max(np.abs(a[k]))), 1.0)
            out.append((losses, a))
        (la, pa), (lb, pb) = out
        np.testing.assert_allclose(la, lb, rtol=0, atol=1e-4)
        for k in pa:
            assert np.max(np.abs(pa[k] - pb[k])) <= 1e-4 * max(float(np.max(np.abs(pa[k]))), 1.0), k
