"""Conformance tests every cfcore backend must pass, checked against the float64 NumPy reference.

Use from a test module by subclassing with a `backend` fixture::

    import pytest
    from cfcore.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        @pytest.fixture
        def backend(self):
            return my_backend_instance

Tolerances: float32 results must match the float64 reference to a relative 1e-5 (values) and,
for arrays, element-wise within `1e-5 · max|reference|` (gradients, updated parameters).
"""

from __future__ import annotations

import numpy as np
import pytest

from .. import reference as ref
from ..data.batching import MinibatchSampler
from ..data.ratings import Batch
from ..eval.agreement import largest_differences, train_on_backends
from ..maths import functional
from ..maths import objectives as losses
from ..optim import make_rule
from ..specs import SGD, Adagrad, Adam, MFSpec
from ..train.loop import LOSS_NOT_FINITE, PARAMS_NOT_FINITE, make_chunk, make_step


def _start(backend, spec, opt, params):
    """`(step, params, opt_state, chunk)` of `spec`'s loss and `opt` on `backend`, from `params`."""
    rule = make_rule(backend, opt)
    native = backend.params_from_numpy(params)
    loss = losses.mf_loss(backend, spec)
    full = make_chunk(backend, loss, rule, lambda data, x: data)
    return make_step(backend, loss, rule), native, rule.init(native), full, (loss, rule)


def _take_rows(backend):
    def take(data, idx):
        return {k: backend.xp.take(v, idx) for k, v in data.items()}

    return take


RTOL = 1e-5

SPECS = {
    "mf-gather": MFSpec(embedding_dim=4, init_stddev=0.5, mse="gather"),
    "mf-dense": MFSpec(embedding_dim=4, init_stddev=0.5, mse="dense"),
    "regularized": MFSpec(
        embedding_dim=4, init_stddev=0.5, regularization_coeff=0.1, gravity_coeff=1.0
    ),
    "regularized-dense": MFSpec(
        embedding_dim=4, init_stddev=0.5, mse="dense", regularization_coeff=0.3, gravity_coeff=2.0
    ),
}
OPTIMIZERS = {
    "sgd": SGD(learning_rate=0.5),
    "adagrad": Adagrad(learning_rate=0.3),
    "adam": Adam(learning_rate=0.01),
}


def make_problem(num_users=23, num_items=31, n=200, d=4, seed=0):
    """A small random MF problem: params (float32) and a batch with repeated users and items."""
    rng = np.random.default_rng(seed)
    params = {
        "user": rng.normal(0, 0.5, (num_users, d)).astype(np.float32),
        "item": rng.normal(0, 0.5, (num_items, d)).astype(np.float32),
    }
    batch = Batch(
        rng.integers(0, num_users, n).astype(np.int32),
        rng.integers(0, num_items, n).astype(np.int32),
        rng.integers(1, 6, n).astype(np.float32),
    )
    return params, batch


def assert_scalar_close(actual, expected, rtol=RTOL, what=""):
    actual = float(np.asarray(actual))
    assert np.isclose(actual, expected, rtol=rtol, atol=0.0), (
        f"{what}: backend {actual!r} vs reference {expected!r} (relative error "
        f"{abs(actual - expected) / max(abs(expected), 1e-30):.2e} > {rtol:g})"
    )


def assert_array_close(actual, expected, rtol=RTOL, what=""):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    scale = max(float(np.max(np.abs(expected))), 1e-30)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


class BackendConformance:
    """Checks one backend (the `backend` fixture) against `cfcore.reference`."""

    # ------------------------------------------------------------------ conversion

    def test_params_round_trip(self, backend):
        params, _ = make_problem()
        back = backend.params_to_numpy(backend.params_from_numpy(params))
        assert set(back) == {"user", "item"}
        for k in params:
            assert back[k].dtype == np.float32 and back[k].shape == params[k].shape
            np.testing.assert_array_equal(back[k], params[k])

    def test_loss_is_float32_scalar(self, backend):
        params, b = make_problem()
        for value in (
            backend.sparse_mse(params["user"], params["item"], b.users, b.items, b.values),
            backend.l2_penalty(params["user"], params["item"]),
            backend.gravity(params["user"], params["item"]),
        ):
            arr = backend.to_numpy(value)
            assert arr.shape == () and arr.dtype == np.float32

    def test_accepts_native_arrays(self, backend):
        params, b = make_problem()
        native = backend.params_from_numpy(params)
        value = backend.sparse_mse(
            native["user"],
            native["item"],
            backend.asarray(b.users),
            backend.asarray(b.items),
            backend.asarray(b.values),
        )
        expected, _, _ = ref.sparse_mse(params["user"], params["item"], b.users, b.items, b.values)
        assert_scalar_close(backend.to_numpy(value), expected, what="sparse_mse on native arrays")

    # ------------------------------------------------------------------ losses

    @pytest.mark.parametrize("method", ["gather", "dense"])
    def test_sparse_mse_matches_reference(self, backend, method):
        params, b = make_problem()
        value = backend.sparse_mse(
            params["user"], params["item"], b.users, b.items, b.values, method=method
        )
        expected, _, _ = ref.sparse_mse(params["user"], params["item"], b.users, b.items, b.values)
        assert_scalar_close(backend.to_numpy(value), expected, what=f"sparse_mse[{method}]")

    def test_dense_equals_gather(self, backend):
        params, b = make_problem(num_users=50, num_items=70, n=1000, d=8, seed=3)
        args = (params["user"], params["item"], b.users, b.items, b.values)
        gather = float(backend.to_numpy(backend.sparse_mse(*args, method="gather")))
        dense = float(backend.to_numpy(backend.sparse_mse(*args, method="dense")))
        assert np.isclose(gather, dense, rtol=RTOL, atol=0), (gather, dense)
        assert_scalar_close(dense, ref.dense_mse(*args), what="dense mse vs reference dense form")

    def test_l2_penalty_matches_reference(self, backend):
        params, _ = make_problem()
        expected, _, _ = ref.l2_penalty(params["user"], params["item"])
        assert_scalar_close(
            backend.to_numpy(backend.l2_penalty(params["user"], params["item"])), expected
        )

    def test_gravity_matches_reference_and_brute_force(self, backend):
        params, _ = make_problem(num_users=40, num_items=60, d=6, seed=5)
        value = float(backend.to_numpy(backend.gravity(params["user"], params["item"])))
        expected, _, _ = ref.gravity(params["user"], params["item"])
        assert_scalar_close(value, expected, what="gravity vs Gramian reference")
        # The definition: the mean of <U_i, V_j>^2 over all N*M pairs.
        assert_scalar_close(
            value,
            ref.gravity_brute_force(params["user"], params["item"]),
            what="gravity vs brute force",
        )

    def test_gravity_scale_does_not_overflow(self, backend):
        # N*M above 2**31: the normalisation must be formed in floating point.
        big_n, d = 70_000, 2
        u = np.full((big_n, d), 0.01, np.float32)
        v = np.full((40_000, d), 0.02, np.float32)
        value = float(backend.to_numpy(backend.gravity(u, v)))
        # An int32 overflow of N*M would be off by orders of magnitude or flip the sign; 1e-3 leaves
        # room for float32 accumulation over 70,000 rows, which is not what this test is about.
        assert_scalar_close(value, (d * 0.01 * 0.02) ** 2, rtol=1e-3, what="gravity at N*M > 2**31")

    @pytest.mark.parametrize("name", sorted(SPECS))
    def test_value_and_grad_matches_reference(self, backend, name):
        spec = SPECS[name]
        params, b = make_problem(seed=11)
        grad = backend.value_and_grad(losses.mf_loss(backend, spec))
        (value, _), grads = grad(backend.params_from_numpy(params), backend.device_batch(b))
        terms, ref_grads = ref.mf_objective(spec, params, b.users, b.items, b.values)
        assert_scalar_close(backend.to_numpy(value), terms["total"], what=f"{name} total loss")
        for k in ("user", "item"):
            assert_array_close(backend.to_numpy(grads[k]), ref_grads[k], what=f"{name} d/d{k}")

    @pytest.mark.parametrize("name", sorted(SPECS))
    def test_loss_terms_match_reference(self, backend, name):
        spec = SPECS[name]
        params, b = make_problem(seed=12)
        terms = functional.mf_loss_terms(backend, spec, params, b)
        expected, _ = ref.mf_objective(spec, params, b.users, b.items, b.values)
        keys = (
            ("observed", "regularization", "gravity", "total")
            if spec.regularized
            else ("observed", "total")
        )
        assert set(terms) == set(keys)
        for k in keys:
            assert_scalar_close(backend.to_numpy(terms[k]), expected[k], what=f"{name} term {k}")

    # ------------------------------------------------------------------ pair layout

    @staticmethod
    def _layout_problem(seed: int):
        """Pairs with a heavy user and item (runs longer than any segment), light ones, and
        rows rated by nobody."""
        rng = np.random.default_rng(seed)
        params, b = make_problem(num_users=23, num_items=31, n=300, seed=seed)
        users = np.concatenate([b.users, np.full(150, 3, np.int32), rng.integers(0, 20, 90)])
        items = np.concatenate([b.items, rng.integers(0, 28, 150), np.full(90, 7, np.int32)])
        users[users == 21] = 20  # user 21 and item 30 have no ratings
        items[items == 30] = 29
        values = rng.integers(1, 6, len(users)).astype(np.float32)
        return params, Batch(users.astype(np.int32), items.astype(np.int32), values)

    @pytest.mark.parametrize("name", ["mf-gather", "regularized"])
    def test_pair_layout_gives_the_same_values_and_gradients(self, backend, name):
        spec = SPECS[name]
        params, b = self._layout_problem(seed=13)
        layout = backend.pair_layout(b.users, b.items, 23, 31)
        data = backend.device_batch(b)
        if layout is None:
            return  # nothing to check: pair_dot is never given a layout on this backend
        data["layout"] = layout
        native = backend.params_from_numpy(params)
        pred = backend.pair_dot(native["user"], native["item"], data["users"], data["items"],
                                layout=layout)  # fmt: skip
        expected_pred = np.einsum(
            "nd,nd->n",
            params["user"].astype(np.float64)[b.users],
            params["item"].astype(np.float64)[b.items],
        )
        assert_array_close(backend.to_numpy(pred), expected_pred, what="pair_dot with a layout")
        grad = backend.value_and_grad(losses.mf_loss(backend, spec))
        (value, _), grads = grad(native, data)
        terms, ref_grads = ref.mf_objective(spec, params, b.users, b.items, b.values)
        assert_scalar_close(backend.to_numpy(value), terms["total"], what=f"{name} with layout")
        for k in ("user", "item"):
            assert_array_close(
                backend.to_numpy(grads[k]), ref_grads[k], what=f"{name} d/d{k} with layout"
            )
        mse = backend.sparse_mse(
            params["user"], params["item"], b.users, b.items, b.values, layout=layout
        )
        assert_scalar_close(backend.to_numpy(mse), terms["observed"], what="sparse_mse(layout=)")

    def test_chunk_with_pair_layout_follows_the_reference(self, backend):
        spec, opt = SPECS["regularized"], OPTIMIZERS["adam"]
        params, b = self._layout_problem(seed=17)
        layout = backend.pair_layout(b.users, b.items, 23, 31)
        data = backend.device_batch(b)
        if layout is not None:
            data["layout"] = layout
        _, p, o, run, _ = _start(backend, spec, opt, params)
        out = run(p, o, p, o, data, num_steps=4)
        assert out.bad_step == -1
        ref_params = {k: v.astype(np.float64) for k, v in params.items()}
        ref_state = ref.init_optimizer_state(opt, ref_params)
        for _ in range(4):
            _, g = ref.mf_objective(spec, ref_params, b.users, b.items, b.values)
            ref_params, ref_state = ref.optimizer_update(opt, ref_params, g, ref_state)
        got = backend.params_to_numpy(out.params)
        for k in got:
            assert_array_close(got[k], ref_params[k], what=f"4 Adam steps with a layout, {k}")

    def test_pair_layout_checks_its_input(self, backend):
        with pytest.raises(ValueError, match="item index 31 is out of range for 31 items"):
            backend.pair_layout(np.array([0, 1]), np.array([0, 31]), 23, 31)
        with pytest.raises(ValueError, match="empty"):
            backend.pair_layout(np.array([], np.int32), np.array([], np.int32), 23, 31)
        with pytest.raises(TypeError, match="users must be integers"):
            backend.pair_layout(np.array([0.5]), np.array([0]), 23, 31)

    # ------------------------------------------------------------------ errors

    def test_mismatched_embedding_dimensions_raise(self, backend):
        u = np.zeros((5, 3), np.float32)
        v = np.zeros((6, 4), np.float32)
        with pytest.raises(ValueError, match=r"dimensions differ.*d=3.*d=4"):
            backend.gravity(u, v)
        with pytest.raises(ValueError, match="dimensions differ"):
            backend.sparse_mse(u, v, [0], [0], [1.0])

    def test_mismatched_lengths_raise(self, backend):
        u = np.zeros((5, 3), np.float32)
        with pytest.raises(ValueError, match="one length"):
            backend.sparse_mse(u, u, [0, 1], [0], [1.0, 2.0])

    def test_out_of_range_indices_raise(self, backend):
        u = np.zeros((5, 3), np.float32)
        with pytest.raises(ValueError, match="item index 5 is out of range for 5 items"):
            backend.sparse_mse(u, u, np.array([0]), np.array([5]), np.array([1.0]))
        with pytest.raises(ValueError, match="user index -1"):
            backend.sparse_mse(u, u, np.array([-1]), np.array([0]), np.array([1.0]))

    # ------------------------------------------------------------------ optimizers and steps

    @pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
    @pytest.mark.parametrize("spec_name", ["mf-gather", "regularized"])
    def test_train_steps_match_reference(self, backend, opt_name, spec_name):
        spec, opt = SPECS[spec_name], OPTIMIZERS[opt_name]
        params, b = make_problem(seed=21)
        step, p, o, _, _ = _start(backend, spec, opt, params)
        data = backend.device_batch(b)
        ref_params = {k: v.astype(np.float64) for k, v in params.items()}
        ref_state = ref.init_optimizer_state(opt, ref_params)
        for i in range(3):
            p, o, terms = step(p, o, data)
            ref_terms, ref_grads = ref.mf_objective(spec, ref_params, b.users, b.items, b.values)
            assert_scalar_close(
                backend.to_numpy(terms["total"]), ref_terms["total"], what=f"step {i} loss"
            )
            ref_params, ref_state = ref.optimizer_update(opt, ref_params, ref_grads, ref_state)
            got = backend.params_to_numpy(p)
            for k in ("user", "item"):
                assert_array_close(got[k], ref_params[k], what=f"{opt_name} step {i + 1} {k}")

    @pytest.mark.parametrize("opt_name", ["sgd", "adam"])
    def test_chunk_equals_single_steps(self, backend, opt_name):
        spec, opt = SPECS["regularized"], OPTIMIZERS[opt_name]
        params, b = make_problem(seed=31)
        data = backend.device_batch(b)
        step, p, o, run, _ = _start(backend, spec, opt, params)
        p0, o0 = p, o
        for _ in range(5):
            p, o, _ = step(p, o, data)
        out = run(p0, o0, p0, o0, data, num_steps=5)
        assert out.bad_step == -1
        a, c = backend.params_to_numpy(p), backend.params_to_numpy(out.params)
        for k in a:
            assert_array_close(c[k], a[k], what=f"5 chunked steps vs 5 single steps, {k}")

    def test_compile_loop_needs_xs_or_num_steps(self, backend):
        run = backend.compile_loop(lambda carry, data, x: carry)
        with pytest.raises(ValueError, match="xs .* or num_steps; both are None"):
            run({"w": backend.asarray(np.zeros(2, np.float32))}, None)

    def test_minibatch_chunk_uses_given_batches(self, backend):
        spec, opt = SPECS["mf-gather"], OPTIMIZERS["sgd"]
        params, b = make_problem(seed=41)
        index = MinibatchSampler(len(b.values), 32, seed=0).take(4)
        _, p, o, _, (loss, rule) = _start(backend, spec, opt, params)
        run = make_chunk(backend, loss, rule, _take_rows(backend))
        out = run(p, o, p, o, backend.device_batch(b), xs=backend.asarray(index))
        assert out.bad_step == -1
        ref_params = {k: v.astype(np.float64) for k, v in params.items()}
        for rows in index:
            _, g = ref.mf_objective(spec, ref_params, b.users[rows], b.items[rows], b.values[rows])
            ref_params, _ = ref.optimizer_update(opt, ref_params, g, {})
        got = backend.params_to_numpy(out.params)
        for k in got:
            assert_array_close(got[k], ref_params[k], what=f"minibatch SGD {k}")

    def test_chunk_stops_at_first_non_finite_step(self, backend):
        spec = MFSpec(embedding_dim=4, init_stddev=0.5)
        opt = SGD(learning_rate=1e4)  # diverges within a few steps
        params, b = make_problem(seed=51)
        data = backend.device_batch(b)
        step, p, o, run, _ = _start(backend, spec, opt, params)
        p0, o0 = p, o
        # Find the first refused step one step at a time: a non-finite loss before the update,
        # or non-finite parameters after it. Then compare with the chunk.
        history = [backend.params_to_numpy(p)]
        first_bad = reason = None
        for i in range(50):
            new_p, o, terms = step(p, o, data)
            if not np.isfinite(float(backend.to_numpy(terms["total"]))):
                first_bad, reason = i, LOSS_NOT_FINITE
                break
            host = backend.params_to_numpy(new_p)
            if not all(np.isfinite(v).all() for v in host.values()):
                first_bad, reason = i, PARAMS_NOT_FINITE
                break
            p = new_p
            history.append(host)
        assert first_bad is not None and first_bad > 0, "SGD with learning rate 1e4 should diverge"
        out = run(p0, o0, p0, o0, data, num_steps=50)
        assert (out.bad_step, out.reason) == (first_bad, reason)
        # A non-finite loss at the state reached: the one before it is the last finite one.
        kept_state = out.prev_params if reason == LOSS_NOT_FINITE else out.params
        expected = history[first_bad - 1] if reason == LOSS_NOT_FINITE else history[first_bad]
        kept = backend.params_to_numpy(kept_state)
        for k in kept:
            assert np.all(np.isfinite(kept[k]))
            assert_array_close(kept[k], expected[k], what=f"last finite params {k}")

    def test_chunk_stops_when_an_update_makes_parameters_non_finite(self, backend):
        # A minibatch whose loss is finite but whose update overflows the rows it touches: the
        # loss before the update never sees it, the parameter check does.
        spec = MFSpec(embedding_dim=4, init_stddev=0.5)
        params, b = make_problem(seed=52)
        data = backend.device_batch(b)
        _, p, o, _, (loss, rule) = _start(backend, spec, SGD(learning_rate=3e38), params)
        run = make_chunk(backend, loss, rule, _take_rows(backend))
        index = np.arange(4, dtype=np.int32).reshape(4, 1)  # one rating per step
        out = run(p, o, p, o, data, xs=backend.asarray(index))
        assert (out.bad_step, out.reason) == (0, PARAMS_NOT_FINITE)
        kept = backend.params_to_numpy(out.params)
        for k in kept:
            np.testing.assert_array_equal(kept[k], params[k])

    # ------------------------------------------------------------------ scoring

    def test_predict_and_score_all(self, backend):
        params, b = make_problem(seed=61)
        pred = backend.to_numpy(backend.predict(params, b.users, b.items))
        expected = np.einsum(
            "nd,nd->n", params["user"][b.users].astype(np.float64), params["item"][b.items]
        )
        assert_array_close(pred, expected, what="predict")
        scores = backend.to_numpy(backend.score_all(params["user"][:5], params["item"]))
        assert scores.shape == (5, len(params["item"]))
        assert_array_close(
            scores, params["user"][:5].astype(np.float64) @ params["item"].T, what="score_all"
        )

    def test_top_k_ties_lowest_index_first(self, backend):
        scores = np.array([[1.0, 3.0, 3.0, 0.5, 3.0], [2.0, 2.0, 2.0, 2.0, 2.0]], np.float32)
        values, indices = backend.top_k(scores, 3)
        ref_values, ref_indices = ref.top_k(scores, 3)
        np.testing.assert_array_equal(backend.to_numpy(indices), ref_indices)
        np.testing.assert_array_equal(backend.to_numpy(indices), [[1, 2, 4], [0, 1, 2]])
        assert_array_close(backend.to_numpy(values), ref_values)

    def test_top_k_exclude(self, backend):
        rng = np.random.default_rng(0)
        scores = rng.normal(size=(4, 20)).astype(np.float32)
        exclude = rng.random((4, 20)) < 0.3
        _, indices = backend.top_k(scores, 5, exclude=exclude)
        _, ref_indices = ref.top_k(scores, 5, exclude=exclude)
        np.testing.assert_array_equal(backend.to_numpy(indices), ref_indices)


class CrossBackendConformance:
    """Two backends, the same initial values and batches: the same trajectory.

    Needs fixtures `backend_pair` (two backends) and `trajectory_data` (`(train, test)` Ratings,
    ml-100k for cfcore's own suite). The runs and the tolerances are those of
    `cfcore.eval.agreement`, which `cfcore compare` also uses.
    """

    STEPS = 500

    @staticmethod
    def _assert_agree(runs, quantities) -> None:
        diffs = {d.quantity: d for d in largest_differences(runs)}
        assert set(quantities) <= set(diffs), (quantities, list(diffs))
        for q in quantities:
            d = diffs[q]
            assert d.ok, (
                f"{q} differs by {d.value:.3g} between {d.pair} (tolerance {d.tolerance:g})"
            )

    def test_regularized_full_batch_trajectory(self, backend_pair, trajectory_data):
        from ..models import RegularizedMF

        train, test = trajectory_data
        runs = train_on_backends(
            lambda: RegularizedMF(
                embedding_dim=35, init_stddev=0.05, regularization_coeff=0.1, gravity_coeff=1.0
            ),
            backend_pair,
            train,
            test,
            steps=self.STEPS,
            optimizer=SGD(20.0),
            eval_every=50,
        )
        assert all(len(r.history) == self.STEPS // 50 + 1 for r in runs)
        self._assert_agree(
            runs,
            ["train_mse", "test_mse", "test_mse_history", "embeddings:user", "embeddings:item"],
        )

    def test_minibatch_adagrad_trajectory(self, backend_pair, trajectory_data):
        from ..models import MatrixFactorization

        train, test = trajectory_data
        runs = train_on_backends(
            lambda: MatrixFactorization(embedding_dim=16, init_stddev=0.3),
            backend_pair,
            train,
            test,
            steps=200,
            optimizer=Adagrad(0.5),
            batch_size=4096,
            eval_every=50,
        )
        assert all(len(r.history) == 200 // 50 + 1 for r in runs)
        self._assert_agree(runs, ["test_mse_history"])
