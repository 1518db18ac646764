"""The JAX segment-layout kernel (`cfcore_jax.pair_kernel`) against NumPy float64, and its wiring.

Values and gradients must equal the naive formula's to float32 rounding, for every layout shape
(segment and block sizes, heavy and empty rows), inside `jit`, `fori_loop` and `scan`; the
backend picks the kernel by platform or by request; `fit` trains the same with either kernel.
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy
lax = jax.lax

from cfcore_jax import JaxBackend  # noqa: E402
from cfcore_jax.pair_kernel import LAYOUT_KEYS, make_pair_layout, pair_dot_layout  # noqa: E402

import cfcore  # noqa: E402

RTOL = 1e-5


def _data(n, num_users, num_items, d=8, seed=0, users=None, items=None):
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((num_users, d)).astype(np.float32)
    V = rng.standard_normal((num_items, d)).astype(np.float32)
    if users is None:
        users = rng.integers(0, num_users, n)
    if items is None:
        items = rng.integers(0, num_items, n)
    users, items = np.asarray(users, np.int32), np.asarray(items, np.int32)
    # Residuals of size 1-2 with random signs: a tiny `pred - r` would cancel catastrophically
    # and leave the loss and gradients with no relative precision in any float32 code.
    pred = np.sum(U.astype(np.float64)[users] * V.astype(np.float64)[items], axis=1)
    off = rng.uniform(1.0, 2.0, len(users)) * rng.choice([-1.0, 1.0], len(users))
    r = (pred + off).astype(np.float32)
    return U, V, users, items, r


def _reference(U, V, users, items, r):
    """float64 pred, loss mean((pred - r)^2), and the loss's gradients in U and V."""
    U64, V64 = U.astype(np.float64), V.astype(np.float64)
    pred = np.sum(U64[users] * V64[items], axis=1)
    g = 2.0 * (pred - r) / len(r)
    dU = np.zeros_like(U64)
    dV = np.zeros_like(V64)
    np.add.at(dU, users, g[:, None] * V64[items])
    np.add.at(dV, items, g[:, None] * U64[users])
    return pred, np.mean((pred - r) ** 2), dU, dV


def _close(actual, expected):
    actual = np.asarray(actual, np.float64)
    scale = max(np.max(np.abs(expected)), 1e-30)
    # Relative to the array's magnitude: entries that cancel to ~0 have no relative precision.
    assert np.max(np.abs(actual - expected)) <= RTOL * scale, np.max(np.abs(actual - expected))


def _check(U, V, users, items, r, layout):
    pred, loss, dU, dV = _reference(U, V, users, items, r)

    def f(A, B):
        return jnp.mean(jnp.square(pair_dot_layout(A, B, layout) - r))

    out = pair_dot_layout(jnp.asarray(U), jnp.asarray(V), layout)
    assert out.shape == (len(users),) and out.dtype == jnp.float32
    _close(out, pred)
    value, (gU, gV) = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(U, V)
    _close(value, np.asarray(loss))
    _close(gU, dU)
    _close(gV, dV)


CASES = {
    "random": dict(n=5000, num_users=70, num_items=40),
    "n=1": dict(n=1, num_users=5, num_items=4),
    "n not a multiple of a block": dict(n=1237, num_users=9, num_items=300),
    "more rows than ratings": dict(n=20, num_users=500, num_items=400),
    "all one pair": dict(n=100, num_users=3, num_items=3, users=[1] * 100, items=[2] * 100),
    "over 65,536 users (two radix passes)": dict(n=3000, num_users=70_000, num_items=50),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_numpy(case):
    U, V, users, items, r = _data(**CASES[case])
    _check(U, V, users, items, r, make_pair_layout(users, items, len(U), len(V)))


@pytest.mark.parametrize("seg_len,block_slots", [(1, 4), (3, 7), (8, 64), (32, 16384), (5, 1)])
def test_segment_and_block_sizes(seg_len, block_slots):
    U, V, users, items, r = _data(n=777, num_users=13, num_items=11, seed=3)
    layout = make_pair_layout(users, items, len(U), len(V), seg_len, block_slots)
    _check(U, V, users, items, r, layout)


def test_repeated_ids_heavy_skew():
    rng = np.random.default_rng(5)
    users = np.concatenate([np.zeros(3000, int), rng.integers(0, 50, 500)])
    items = np.concatenate([rng.integers(0, 30, 3000), np.full(500, 7)])
    U, V, users, items, r = _data(0, 50, 30, users=users, items=items)
    _check(U, V, users, items, r, make_pair_layout(users, items, 50, 30))


def test_layout_structure():
    """Every rating sits in exactly one slot per side, its owner's, and `slot` finds it."""
    rng = np.random.default_rng(1)
    users = rng.integers(0, 17, 400).astype(np.int32)
    items = rng.integers(0, 9, 400).astype(np.int32)
    lay = make_pair_layout(users, items, 17, 9, seg_len=8, block_slots=64)
    assert set(lay) == set(LAYOUT_KEYS)
    n = len(users)
    for side, own, other in (("user", users, items), ("item", items, users)):
        owner, oth, src = lay[f"{side}_owner"], lay[f"{side}_other"], lay[f"{side}_src"]
        assert owner.shape == src.shape[:2] and oth.shape == src.shape and src.shape[1:] == (8, 8)
        flat_owner = owner.reshape(-1)
        assert np.all(np.diff(flat_owner) >= 0)  # sorted: the segment sum may say so
        real = src.reshape(-1, 8) < n
        assert np.sort(src.reshape(-1)[real.reshape(-1)]).tolist() == list(range(n))
        seg_of = np.repeat(flat_owner, 8).reshape(-1, 8)
        np.testing.assert_array_equal(own[src.reshape(-1, 8)[real]], seg_of[real])
        np.testing.assert_array_equal(other[src.reshape(-1, 8)[real]], oth.reshape(-1, 8)[real])
    np.testing.assert_array_equal(lay["user_src"].reshape(-1)[lay["slot"]], np.arange(n))


@pytest.mark.parametrize("num_users", [17, (1 << 16) + 3])
def test_layout_of_presorted_ids_skips_no_slot(monkeypatch, num_users):
    """Ids already in order (no sort made) and ids sorted by NumPy's stable argsort (the sort
    forced) give the very same layout."""
    from cfcore_jax import pair_kernel

    rng = np.random.default_rng(2)
    users = np.sort(rng.integers(0, num_users, 600)).astype(np.int32)
    items = rng.integers(0, 9, 600).astype(np.int32)
    fast = make_pair_layout(users, items, num_users, 9, seg_len=8, block_slots=64)
    monkeypatch.setattr(
        pair_kernel, "stable_row_order", lambda ids, _: np.argsort(ids, kind="stable")
    )
    slow = make_pair_layout(users, items, num_users, 9, seg_len=8, block_slots=64)
    assert set(fast) == set(slow)
    for key in fast:
        assert fast[key].dtype == slow[key].dtype == np.int32, key
        np.testing.assert_array_equal(fast[key], slow[key], err_msg=key)


def test_layout_rejects_bad_input():
    with pytest.raises(ValueError, match="non-empty 1-D arrays of one length"):
        make_pair_layout(np.array([0, 1]), np.array([0]), 2, 2)
    with pytest.raises(ValueError, match="non-empty"):
        make_pair_layout(np.array([], int), np.array([], int), 2, 2)
    with pytest.raises(ValueError, match="keys .*'slot'.* missing"):
        pair_dot_layout(jnp.ones((2, 3)), jnp.ones((2, 3)), {"user_owner": np.zeros(1)})


def test_inside_jit_fori_loop_and_scan():
    U, V, users, items, r = _data(n=3001, num_users=40, num_items=25, d=4, seed=7)
    layout = jax.device_put(make_pair_layout(users, items, len(U), len(V)))
    lr, steps = 0.5, 3

    def loss(A, B, lay):
        return jnp.mean(jnp.square(pair_dot_layout(A, B, lay) - r))

    @jax.jit
    def train(A, B, lay):
        def body(_, ab):
            gA, gB = jax.grad(loss, argnums=(0, 1))(*ab, lay)
            return ab[0] - lr * gA, ab[1] - lr * gB

        return lax.fori_loop(0, steps, body, (A, B))

    @jax.jit
    def train_scan(A, B, lay):
        def body(ab, _):
            value, (gA, gB) = jax.value_and_grad(loss, argnums=(0, 1))(*ab, lay)
            return (ab[0] - lr * gA, ab[1] - lr * gB), value

        return lax.scan(body, (A, B), None, length=steps)

    A, B = U.astype(np.float64), V.astype(np.float64)
    values = []
    for _ in range(steps):
        _, value, dU, dV = _reference(A, B, users, items, r)
        values.append(value)
        A, B = A - lr * dU, B - lr * dV
    gotA, gotB = train(jnp.asarray(U), jnp.asarray(V), layout)
    _close(gotA, A)
    _close(gotB, B)
    (scanA, scanB), scan_values = train_scan(jnp.asarray(U), jnp.asarray(V), layout)
    _close(scanA, A)
    _close(scanB, B)
    _close(scan_values, np.asarray(values))


# ------------------------------------------------------------------------------------ the backend


def test_kernel_choice(monkeypatch):
    users, items = np.array([0, 1, 1]), np.array([2, 0, 1])
    monkeypatch.delenv("CFCORE_JAX_PAIR_KERNEL", raising=False)
    auto = "segment" if jax.default_backend() == "cpu" else "gather"
    assert JaxBackend().gather_kernel() == auto
    assert JaxBackend("gather").pair_layout(users, items, 2, 3) is None
    layout = JaxBackend("segment").pair_layout(users, items, 2, 3)
    assert set(layout) == set(LAYOUT_KEYS) and isinstance(layout["slot"], jax.Array)
    monkeypatch.setenv("CFCORE_JAX_PAIR_KERNEL", "gather")
    assert JaxBackend().gather_kernel() == "gather"
    assert JaxBackend("segment").gather_kernel() == "segment"  # the argument wins
    monkeypatch.setenv("CFCORE_JAX_PAIR_KERNEL", "fast")
    with pytest.raises(ValueError, match="CFCORE_JAX_PAIR_KERNEL must be one of auto, segment, "):
        JaxBackend().gather_kernel()
    with pytest.raises(ValueError, match="pair_kernel must be one of .*got 'segments'"):
        JaxBackend("segments")


def test_device_batch_carries_the_layout_only_when_asked():
    ratings = cfcore.synthetic_ratings(30, 20, 500, seed=0)
    be = cfcore.get_backend(JaxBackend("segment"))
    assert "layout" not in be.device_batch(ratings)
    assert set(be.device_batch(ratings, pair_layout=True)["layout"]) == set(LAYOUT_KEYS)
    assert "layout" not in cfcore.get_backend(JaxBackend("gather")).device_batch(
        ratings, pair_layout=True
    )
    with pytest.raises(TypeError, match="needs ratings with num_users and num_items"):
        be.device_batch(
            {"users": ratings.users, "items": ratings.items, "values": ratings.values},
            pair_layout=True,
        )


@pytest.mark.parametrize("batch_size", [None, 128])
def test_fit_is_the_same_with_either_kernel(batch_size):
    ratings = cfcore.synthetic_ratings(60, 45, 2500, seed=1)
    train, test = ratings.split(0.1, seed=0)
    histories, embeddings = [], []
    for kernel in ("segment", "gather"):
        model = cfcore.RegularizedMF(embedding_dim=6, init_stddev=0.3)
        h = model.fit(
            train,
            test=test,
            steps=30,
            optimizer=cfcore.optimizers.Adam(0.05),
            backend=JaxBackend(kernel),
            batch_size=batch_size,
            eval_every=10,
            progress=False,
        )
        histories.append(h)
        embeddings.append(model.embeddings)
    a, b = histories
    assert list(a.columns) == list(b.columns) and len(a) == 4
    np.testing.assert_allclose(a.to_numpy(float), b.to_numpy(float), rtol=1e-4)
    for k in ("user", "item"):
        np.testing.assert_allclose(embeddings[0][k], embeddings[1][k], rtol=1e-4, atol=1e-5)
    assert a["train_mse"].iloc[-1] < a["train_mse"].iloc[0]


def test_large_evaluation_runs_in_one_call_with_a_layout(monkeypatch):
    """With a layout the evaluation is not chunked (its kernel never holds `[n, d]` rows); the
    chunked path without one gives the same number."""
    from cfcore.models import mf

    ratings = cfcore.synthetic_ratings(40, 30, 3000, seed=2)
    spec = cfcore.MFSpec(embedding_dim=4, init_stddev=0.5)
    params = cfcore.init.init_mf_params(spec, 40, 30, seed=0)
    monkeypatch.setattr(mf, "EVAL_CHUNK", 1000)
    out = {}
    for kernel in ("segment", "gather"):
        be = cfcore.get_backend(JaxBackend(kernel))
        data = be.device_batch(ratings, pair_layout=True)
        assert ("layout" in data) == (kernel == "segment")
        out[kernel] = mf.evaluate_terms(be, spec, be.params_from_numpy(params), data)["observed"]
    from cfcore import reference

    expected, _, _ = reference.sparse_mse(
        params["user"], params["item"], ratings.users, ratings.items, ratings.values
    )
    assert out["segment"] == pytest.approx(expected, rel=1e-5)
    assert out["gather"] == pytest.approx(expected, rel=1e-5)
